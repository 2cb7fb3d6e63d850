import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type winston from "winston";
import type { Metrics } from "../metrics.js";

// The one interceptor chain every protocol passes through, REST included.

/** The call's request id (x-request-id or generated) and W3C trace id, for logs and the audit trail. */
export const requestInfoKey = createContextKey({ requestId: "", traceId: "" }, { description: "request id and trace id" });

/** Set by the REST layer: the route a call came in on ("GET /videos/{id}"). */
export const restRouteKey = createContextKey<string | undefined>(undefined, { description: "REST route" });

/**
 * Set by the transport when a call reaches its handler in another protocol
 * than the one it arrived in (server.ts runs gRPC unary calls as Connect
 * unary calls): the protocol the caller used.
 */
export const wireProtocolKey = createContextKey<string | undefined>(undefined, { description: "protocol on the wire" });

function protocolOf(contentType: string | null, restRoute: string | undefined, wire: string | undefined): string {
  if (restRoute) return "rest";
  if (wire) return wire;
  if (!contentType) return "unknown";
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/** One JSON log line and one metric sample per call, with the code the caller got. */
export function observe(logger: winston.Logger, metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = req.header.get("x-request-id")?.slice(0, 128) || randomUUID();
    const traceId = /^[\da-f]{2}-([\da-f]{32})-/.exec(req.header.get("traceparent") ?? "")?.[1] ?? "";
    req.contextValues.set(requestInfoKey, { requestId, traceId });
    const restRoute = req.contextValues.get(restRouteKey);
    const protocol = protocolOf(req.header.get("content-type"), restRoute, req.contextValues.get(wireProtocolKey));
    const procedure = `${req.service.typeName}/${req.method.name}`;
    let code = "ok";
    try {
      const res = await next(req);
      res.header.set("x-request-id", requestId);
      return res;
    } catch (e) {
      code = Code[ConnectError.from(e).code];
      throw e;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      metrics.requests.inc({ protocol, procedure, code });
      metrics.duration.observe({ protocol, procedure }, seconds);
      logger.info("call", {
        protocol,
        procedure,
        ...(restRoute ? { route: restRoute } : {}),
        code,
        duration_ms: Math.round(seconds * 1e6) / 1e3,
        request_id: requestId,
      });
    }
  };
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
    try {
      return await next(req);
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      const mapped = fromDependency(e);
      logger.error("call failed", {
        procedure: `${req.service.typeName}/${req.method.name}`,
        code: Code[mapped.code],
        error: e instanceof Error ? { name: e.name, message: e.message, code: (e as { code?: unknown }).code, stack: e.stack } : String(e),
      });
      throw mapped;
    }
  };
}
