import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { context, isSpanContextValid, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type TextMapGetter, type Tracer } from "@opentelemetry/api";
import type winston from "winston";
import type { Metrics } from "../metrics.js";
import { traceContext } from "../telemetry/trace-context.js";
import { undecodableRequest } from "./undecodable.js";

// The one interceptor chain every protocol passes through, REST included.

/** The call's request id (x-request-id or generated) and W3C trace id, for logs and the audit trail. */
export const requestInfoKey = createContextKey({ requestId: "", traceId: "" }, { description: "request id and trace id" });

/** Set by the transport: the caller's address (forwarded.ts: through trusted proxies only). */
export const clientAddressKey = createContextKey("", { description: "client address" });

/** Set by the REST layer: the route a call came in on ("GET /videos/{id}"). */
export const restRouteKey = createContextKey<string | undefined>(undefined, { description: "REST route" });

/**
 * Set by the transport when a call reaches its handler in another protocol
 * than the one it arrived in (server.ts runs gRPC unary calls as Connect
 * unary calls): the protocol the caller used.
 */
export const wireProtocolKey = createContextKey<string | undefined>(undefined, { description: "protocol on the wire" });

/** The protocol label of a call, by its content type unless the transport said otherwise. */
export function protocolOf(contentType: string | null, restRoute?: string, wire?: string): string {
  if (restRoute) return "rest";
  if (wire) return wire;
  if (!contentType) return "unknown";
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/** The caller's x-request-id (bounded), or a new one. */
export function requestIdFrom(header: string | null | undefined): string {
  return header?.slice(0, 128) || randomUUID();
}

// Codes that mean the service, not the caller, failed: those mark the span as
// an error (OpenTelemetry's RPC conventions for servers).
const SERVER_FAULTS = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

const headerGetter: TextMapGetter<Headers> = {
  get: (h, key) => h.get(key) ?? undefined,
  keys: (h) => [...h.keys()],
};

/**
 * One server span, one JSON log line and one metric sample per call, with the
 * code the caller got. The span continues the caller's W3C trace context, and
 * the handler runs inside it so database spans nest under it.
 */
export function observe(logger: winston.Logger, metrics: Metrics, tracer: Tracer): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = requestIdFrom(req.header.get("x-request-id"));
    const restRoute = req.contextValues.get(restRouteKey);
    const protocol = protocolOf(req.header.get("content-type"), restRoute, req.contextValues.get(wireProtocolKey));
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const clientAddress = req.contextValues.get(clientAddressKey);
    const parent = traceContext.extract(ROOT_CONTEXT, req.header, headerGetter);
    const span = tracer.startSpan(restRoute ?? procedure, {
      kind: SpanKind.SERVER,
      attributes: {
        "rpc.system": protocol === "connect" ? "connect_rpc" : protocol === "rest" ? "http" : "grpc",
        "rpc.service": req.service.typeName,
        "rpc.method": req.method.name,
        ...(restRoute ? { "http.route": restRoute, "http.request.method": req.requestMethod } : {}),
        "vms.protocol": protocol,
        ...(clientAddress ? { "client.address": clientAddress } : {}),
        "vms.request_id": requestId,
      },
    }, parent);
    const spanContext = span.spanContext();
    const traceId = isSpanContextValid(spanContext) ? spanContext.traceId : "";
    req.contextValues.set(requestInfoKey, { requestId, traceId });
    const callContext = trace.setSpan(parent, span);
    const end = (failure: ConnectError | undefined) => {
      const codeName = failure ? Code[failure.code] : "ok";
      span.setAttribute("rpc.response.status_code", codeName);
      if (failure && SERVER_FAULTS.has(failure.code)) span.setStatus({ code: SpanStatusCode.ERROR, message: failure.rawMessage });
      span.end();
      recordCall(logger, metrics, {
        protocol,
        procedure,
        route: restRoute,
        // REST calls reach the chain as the RPC's POST: their HTTP method is the route's.
        method: restRoute ? restRoute.slice(0, restRoute.indexOf(" ")) : req.requestMethod,
        ...(restRoute ? {} : { path: new URL(req.url, "http://localhost").pathname }),
        code: codeName,
        seconds: (performance.now() - started) / 1000,
        requestId,
        clientAddress,
        ...(traceId ? { traceId, spanId: spanContext.spanId } : {}),
      });
    };
    let res;
    try {
      res = await context.with(callContext, () => next(req));
    } catch (e) {
      end(ConnectError.from(e));
      throw e;
    }
    res.header.set("x-request-id", requestId);
    if (!res.stream) {
      end(undefined);
      return res;
    }
    // A server stream's call lasts until its last message: it ends (and is
    // counted, with the code the caller gets) then, and its messages are
    // produced inside the call's span.
    return { ...res, message: untilEnd(res.message, callContext, req.signal, end) };
  };
}

async function* untilEnd<T>(messages: AsyncIterable<T>, ctx: Context, signal: AbortSignal, end: (failure: ConnectError | undefined) => void): AsyncGenerator<T> {
  const it = messages[Symbol.asyncIterator]();
  let done = false;
  let failure: ConnectError | undefined;
  try {
    for (;;) {
      const r = await context.with(ctx, () => it.next());
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } catch (e) {
    done = true;
    failure = ConnectError.from(e);
    throw e;
  } finally {
    // Stopped early (the caller went away): stop the handler too.
    if (!done) await it.return?.().catch(() => {});
    end(failure ?? (signal.aborted ? new ConnectError("the caller cancelled the call", Code.Canceled) : undefined));
  }
}

export interface CallRecord {
  protocol: string;
  procedure: string;
  route?: string;
  /** The HTTP method and, for RPC protocols, the request path (ECS http.request.method, url.path). */
  method?: string;
  path?: string;
  /** "ok" or the Code name. */
  code: string;
  seconds: number;
  requestId: string;
  clientAddress?: string;
  traceId?: string;
  spanId?: string;
}

/**
 * The call's metric samples and its log line. The REST transcoder calls it
 * too, for requests it refuses before they reach the chain (no route,
 * malformed JSON, unknown fields), so every request is counted and logged.
 */
export function recordCall(logger: winston.Logger, metrics: Metrics, c: CallRecord): void {
  metrics.requests.inc({ protocol: c.protocol, procedure: c.procedure, code: c.code });
  metrics.duration.observe({ protocol: c.protocol, procedure: c.procedure }, c.seconds);
  logger.info("call", {
    protocol: c.protocol,
    procedure: c.procedure,
    ...(c.route ? { route: c.route } : {}),
    ...(c.method ? { method: c.method } : {}),
    ...(c.path ? { path: c.path } : {}),
    code: c.code,
    duration_ms: Math.round(c.seconds * 1e6) / 1e3,
    request_id: c.requestId,
    ...(c.clientAddress ? { client_address: c.clientAddress } : {}),
    ...(c.traceId ? { trace_id: c.traceId, span_id: c.spanId } : {}),
  });
}

// Errors from dependencies, by what a caller can do about them. Nothing of the
// original (SQL, stack, connection strings) reaches the caller.
function fromDependency(e: unknown): ConnectError {
  const err = e as { code?: unknown; message?: unknown };
  const pgCode = typeof err.code === "string" ? err.code : "";
  const message = typeof err.message === "string" ? err.message : "";
  if (pgCode === "57014") return new ConnectError("the database did not answer in time", Code.DeadlineExceeded);
  if (pgCode === "40001" || pgCode === "40P01") return new ConnectError("a concurrent change conflicted; retry", Code.Aborted);
  if (
    pgCode.startsWith("08") ||
    pgCode === "57P01" ||
    pgCode === "57P03" ||
    pgCode === "53300" ||
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE"].includes(pgCode) ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message)
  ) {
    return new ConnectError("the database is unavailable; retry later", Code.Unavailable);
  }
  return new ConnectError("internal error", Code.Internal);
}

/** Maps anything that is not a deliberate ConnectError to a safe one, logging the original. */
export function publicErrors(logger: winston.Logger): Interceptor {
  return (next) => async (req) => {
    const publicError = (e: unknown): ConnectError => {
      // A request that did not decode, where that surfaces inside the chain
      // (the request of a stream): the caller's fault, not ours.
      if (e instanceof ConnectError) return undecodableRequest(e) ?? e;
      const mapped = fromDependency(e);
      logger.error("call failed", {
        procedure: `${req.service.typeName}/${req.method.name}`,
        code: Code[mapped.code],
        error: e instanceof Error ? { name: e.name, message: e.message, code: (e as { code?: unknown }).code, stack: e.stack } : String(e),
      });
      return mapped;
    };
    try {
      const res = await next(req);
      // A server stream fails while it is read (WatchEvents' database reads): mapped alike.
      return res.stream ? { ...res, message: mapErrors(res.message, publicError) } : res;
    } catch (e) {
      throw publicError(e);
    }
  };
}

async function* mapErrors<T>(messages: AsyncIterable<T>, publicError: (e: unknown) => ConnectError): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (e) {
    throw publicError(e);
  }
}
