import { readFileSync } from "node:fs";
import type * as http from "node:http";
import http2 from "node:http2";
import type { JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, createConnectRouter, type ContextValues } from "@connectrpc/connect";
import { universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { compressedFlag, type UniversalHandler, type UniversalServerRequest, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeFromHttpStatus, codeToHttpStatus, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { contentTypeProto as grpcContentTypeProto, parseTimeout as parseGrpcTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { Health } from "../../gen/health/v1/health_pb.js";
import { AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import auditRoutes from "../audit/audit-service.js";
import { authenticate, verifyAuthorization } from "../auth/authenticate.js";
import { localDeveloper } from "../auth/caller.js";
import { createVerifier } from "../auth/jwt.js";
import type { AppContext } from "../context.js";
import eventRoutes from "../events/event-service.js";
import { OutboxRelay } from "../events/relay.js";
import { createFsObjectHandler } from "../storage/fs-object-routes.js";
import { FsStore } from "../storage/fs-store.js";
import { thumbnailUrls } from "../media/thumbnail-urls.js";
import { startMediaWorker } from "../media/worker.js";
import { startStorageUpkeep } from "../uploads/storage-janitor.js";
import { uploads } from "../uploads/repository.js";
import { MAX_UPLOAD_BYTES } from "../uploads/rules.js";
import videoRoutes from "../videos/index.js";
import { checkedRequestStream } from "./envelope-framing.js";
import healthRoutes, { readinessProbe } from "./health.js";
import { clientContext } from "./client-context.js";
import { clientAddressKey, observe, protocolOf, publicErrors, recordCall, requestIdFrom, requestInfoKey, wireProtocolKey } from "./interceptors.js";
import { ACCEPTED_ENCODINGS, COMPRESS_MIN_BYTES, COMPRESSIONS, decodeBody } from "./compression.js";
import { clampDeadline } from "./deadline.js";
import { createBrowserGuard } from "./browser-guard.js";
import { isConnectUnaryJson, strictJsonBody } from "./connect-json.js";
import { createListener, type NodeRequest, type NodeResponse } from "./listener.js";
import { bodyDeadlineMs } from "./body-deadline.js";
import { reflectionRoutes } from "./reflection.js";
import { endWith, headersIfQuiet } from "./response-body.js";
import { createRestUploadHandler } from "./rest-upload.js";
import { createRestHandler } from "./rest.js";
import { undecodableRequest, withDecodingErrorsFixed } from "./undecodable.js";

// Wires one handler set to every protocol: gRPC, gRPC-Web and Connect through
// the Connect router, REST through the transcoder onto the same router, plus
// the operational endpoints, all behind one listener.

export function createServer(ctx: AppContext) {
  const shutdown = new AbortController();
  const relay = new OutboxRelay(ctx, {
    batchSize: ctx.cfg.events.relayBatchSize,
    pollMs: ctx.cfg.events.relayPollMs,
    retentionMs: ctx.cfg.events.retentionMs,
    format: ctx.cfg.events.format,
  });
  const probe = readinessProbe(ctx);
  // One verifier (and its cached key set) for the interceptor chain and the REST transcoder.
  const verifier = ctx.cfg.auth.jwt ? createVerifier(ctx.cfg.auth.jwt) : undefined;
  const router = createConnectRouter({
    interceptors: [
      observe(ctx.logger, ctx.metrics, ctx.tracer),
      publicErrors(ctx.logger),
      verifier ? authenticate(verifier) : localDeveloper(),
      thumbnailUrls(ctx.thumbnailStore, ctx.cfg.media),
    ],
    readMaxBytes: ctx.cfg.limits.maxBodyBytes,
    maxTimeoutMs: ctx.cfg.limits.maxRequestMs,
    acceptCompression: COMPRESSIONS,
    compressMinBytes: COMPRESS_MIN_BYTES,
    // An unknown JSON field is refused (INVALID_ARGUMENT), as REST refuses it,
    // rather than silently dropped: a misspelt field must not look like success.
    jsonOptions: { ignoreUnknownFields: false },
  });
  videoRoutes(ctx)(router);
  eventRoutes(() => ctx.db, relay, shutdown.signal)(router);
  auditRoutes(() => ctx.db)(router);
  healthRoutes(probe, shutdown.signal, ctx.cfg.connections.maxHealthWatches)(router);
  reflectionRoutes([VideoService, EventService, AuditService, Health])(router);

  // Forwarded proto/host make the filesystem store's URLs when the operator
  // has not fixed them with PUBLIC_BASE_URL.
  const urlsFromProxies = ctx.cfg.trustedProxies !== undefined && !ctx.cfg.storage.publicBaseUrlSet && ctx.store instanceof FsStore;
  const contextValues = clientContext(ctx.cfg.trustedProxies, urlsFromProxies);
  const rest = createRestHandler(router, {
    maxBodyBytes: ctx.cfg.limits.maxBodyBytes,
    maxImageBytes: ctx.cfg.media.maxBytes,
    contextValues,
    universalRequest,
    onInternalError: (e) => ctx.logger.error("rest call failed", { error: e instanceof Error ? e.stack : String(e) }),
    onRefused: (c, values) => recordCall(ctx.logger, ctx.metrics, { ...c, protocol: "rest", code: Code[c.code], clientAddress: values.get(clientAddressKey) }),
    authenticate: verifier && verifyAuthorization(verifier),
  });
  const rpc = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const contentUpload = createRestUploadHandler(router, { contextValues, universalRequest });
  // The filesystem store's signed URLs point back at this service.
  const storedObjects =
    ctx.store instanceof FsStore
      ? createFsObjectHandler(ctx.store, {
          maxObjectBytes: MAX_UPLOAD_BYTES,
          acceptsBytes: (key) => uploads.openAt(ctx.db, key, ctx.clock()),
          onBytes: (n) => ctx.metrics.uploadBytes.inc({ path: "filesystem" }, n),
          onError: (e) => ctx.logger.error("stored object upload failed", { error: (e as Error).message }),
        })
      : () => false;
  let upkeep: { stop(): Promise<void> } | undefined;
  let mediaWorker: { stop(graceMs?: number): Promise<void> } | undefined;
  const maxTimeoutMs = ctx.cfg.limits.maxRequestMs;
  const grpcUnary = grpcUnaryTranscoder({ readMaxBytes: ctx.cfg.limits.maxBodyBytes, maxTimeoutMs });

  async function operational(path: string, res: NodeResponse): Promise<boolean> {
    if (path === "/health") {
      send(res, 200, "application/json", JSON.stringify({ status: "SERVING" }));
    } else if (path === "/health/ready") {
      const r = await probe();
      send(res, r.ready ? 200 : 503, "application/json", JSON.stringify(r.ready ? { status: "SERVING" } : { status: "NOT_SERVING", reason: r.reason }));
    } else if (path === "/metrics") {
      send(res, 200, ctx.metrics.registry.contentType, await ctx.metrics.registry.metrics());
    } else {
      return false;
    }
    return true;
  }

  const browser = createBrowserGuard({
    devMode: ctx.cfg.auth.disabled,
    allowedOrigins: ctx.cfg.cors.allowedOrigins,
    isRpcPath: (path) => rpc.has(path),
    onRefused: (c) => recordCall(ctx.logger, ctx.metrics, { ...c, code: Code[c.code], seconds: 0 }),
  });

  function handler(req: NodeRequest, res: NodeResponse) {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    if (browser(req, res, path)) return;
    const uHandler = rpc.get(path);
    if (uHandler) {
      const started = performance.now();
      const values = contextValues(req);
      const plainGrpc = grpcUnary.accepts(req, uHandler);
      // gRPC: every response says which message encodings requests may use.
      if (String(req.headers["content-type"]).startsWith("application/grpc")) res.setHeader("grpc-accept-encoding", ACCEPTED_ENCODINGS);
      // connect-es refuses some requests before the interceptor chain runs (a
      // unary request that does not parse, a body over the limit, a bad
      // timeout): counted and logged here, as the chain does for the rest.
      const ended = (error: ConnectError) => {
        if (values.get(requestInfoKey).requestId !== "") return;
        recordCall(ctx.logger, ctx.metrics, {
          protocol: plainGrpc ? "grpc" : protocolOf(String(req.headers["content-type"] ?? "")),
          procedure: `${uHandler.service.typeName}/${uHandler.method.name}`,
          code: Code[error.code],
          seconds: (performance.now() - started) / 1000,
          requestId: requestIdFrom(req.headers["x-request-id"] as string | undefined),
          clientAddress: values.get(clientAddressKey),
        });
      };
      const header = clampDeadline(webHeaders(req), ctx.cfg.limits.maxRequestMs);
      const settled = singleResponse(uHandler) ? undefined : headersIfQuiet(req, res);
      const call = plainGrpc
        ? grpcUnary.serve(req, res, uHandler, header, values, ended)
        : uHandler(universalRequest(req, res, { body: callBody(req, uHandler, values, bodyDeadlineMs(req.headers, maxTimeoutMs), ctx.cfg.limits.maxBodyBytes), header, contextValues: values }))
            .finally(settled)
            .then((uRes) => sendUniversalResponse(uRes, res, singleResponse(uHandler), ended));
      call.catch((e: unknown) => ctx.logger.warn("response not delivered", { procedure: path, error: String(e) }));
      return;
    }
    const contentType = String(req.headers["content-type"] ?? "");
    if (contentType.startsWith("application/grpc")) {
      // An unknown method over gRPC answers in gRPC (a trailers-only
      // response), not with a REST 404.
      const headers = { ":status": 200, "content-type": contentType, "grpc-status": "12", "grpc-message": encodeURIComponent(`unknown method ${path}`) };
      if (res instanceof http2.Http2ServerResponse) res.stream.respond(headers, { endStream: true });
      else {
        const { ":status": _, ...h1 } = headers;
        (res as http.ServerResponse).writeHead(200, h1);
        res.end();
      }
      return;
    }
    if (storedObjects(req, res) || contentUpload(req, res)) return;
    if (((req.method === "GET" || req.method === "HEAD") && path.startsWith("/health")) || path === "/metrics") {
      operational(path, res)
        .then((done) => done || rest.handle(req, res))
        .catch((e: unknown) => {
          ctx.logger.error("operational endpoint failed", { path, error: String(e) });
          send(res, 500, "application/json", JSON.stringify({ error: { code: 500, status: "INTERNAL", message: "internal error" } }));
        });
      return;
    }
    rest.handle(req, res);
  }

  const tls = ctx.cfg.tls && { cert: readFileSync(ctx.cfg.tls.certFile), key: readFileSync(ctx.cfg.tls.keyFile) };
  const limits = ctx.cfg.connections;
  const listener = createListener({
    handler,
    tls,
    maxConnections: limits.max,
    maxActiveRequests: limits.maxStreams,
    idleTimeoutMs: limits.idleTimeoutMs,
    pingIntervalMs: limits.pingIntervalMs,
    onError: (err, where) => ctx.logger.debug("connection error", { where, error: err.message }),
  });

  return {
    listener,
    routes: rest.routes,
    relay,
    async listen(port: number, host: string) {
      const address = await listener.listen(port, host);
      if (ctx.store instanceof FsStore) ctx.store.listeningOn(address.port);
      relay.start();
      upkeep = startStorageUpkeep(ctx);
      mediaWorker = startMediaWorker(ctx);
      return address;
    },
    /**
     * Stops accepting, reports not ready, lets in-flight calls finish within
     * graceMs, then lets the relay finish its batch (published and marked, or
     * left pending).
     */
    async close(graceMs: number) {
      ctx.draining = true;
      shutdown.abort();
      await listener.close(graceMs);
      await mediaWorker?.stop(graceMs);
      await relay.stop();
      await upkeep?.stop();
    },
  };
}

function send(res: NodeResponse, status: number, contentType: string, body: string) {
  if (res.headersSent) return;
  (res as http.ServerResponse).writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
  res.end(body);
}

// ---- Node request/response <-> the router's universal request/response ------
//
// What @connectrpc/connect-node's universalRequestFromNodeRequest and
// universalResponseToNodeResponse do, minus per-request work a profile showed
// to be a large share of a small call:
//   - the call's AbortSignal is aborted only when the client goes away before
//     the response was ended, and with a reason; connect-node aborts it on
//     every request's 'close' without one, which costs an event dispatch and
//     a DOMException (with its stack trace) per call;
//   - the request body is read with plain stream events instead of the
//     stream's async iterator wrapped in a down-levelled async generator;
//   - a unary or client-streaming method's response (one message) is written
//     with one end() call and a content-length, instead of writeHead + a
//     promise per chunk + end(); streaming responses keep connect-node's writer.
// The router, its handlers and its interceptors are untouched: every protocol
// still reaches the same handler through the same chain.

export interface UniversalRequestInit {
  body: JsonValue | AsyncIterable<Uint8Array>;
  header: Headers;
  contextValues: ContextValues;
  /** Defaults to the Node request's method. */
  method?: string;
  /** Path (and query) of the call; defaults to the Node request's URL. */
  path?: string;
}

export type UniversalRequestFactory = (req: NodeRequest, res: NodeResponse, init: UniversalRequestInit) => UniversalServerRequest;

export const universalRequest: UniversalRequestFactory = (req, res, init) => {
  const encrypted = "encrypted" in req.socket && (req.socket as { encrypted?: boolean }).encrypted;
  const authority = req instanceof http2.Http2ServerRequest ? req.authority : req.headers.host;
  if (authority === undefined) {
    throw new ConnectError("unable to determine request authority from Node.js server request", Code.Internal);
  }
  return {
    httpVersion: req.httpVersion,
    method: init.method ?? req.method ?? "",
    url: new URL(init.path ?? req.url ?? "", `${encrypted ? "https" : "http"}://${authority}`).toString(),
    header: init.header,
    body: init.body,
    signal: callSignal(req, res),
    contextValues: init.contextValues,
  };
};

/** Aborted (with a reason) only if the client leaves before the response is ended. */
function callSignal(req: NodeRequest, res: NodeResponse): AbortSignal {
  const controller = new AbortController();
  res.once("close", () => {
    if (res.writableEnded) return;
    controller.abort(closeReason(req));
  });
  return controller.signal;
}

function closeReason(req: NodeRequest): ConnectError {
  if (req instanceof http2.Http2ServerRequest) {
    const rst = req.stream.rstCode;
    const c = http2.constants;
    const code =
      rst === c.NGHTTP2_REFUSED_STREAM
        ? Code.Unavailable
        : rst === c.NGHTTP2_ENHANCE_YOUR_CALM
          ? Code.ResourceExhausted
          : rst === c.NGHTTP2_INADEQUATE_SECURITY || rst === c.NGHTTP2_HTTP_1_1_REQUIRED
            ? Code.PermissionDenied
            : rst === c.NGHTTP2_NO_ERROR || rst === c.NGHTTP2_CANCEL || rst === undefined
              ? Code.Canceled
              : Code.Internal;
    return new ConnectError(`http/2 stream closed with error code 0x${(rst ?? 0).toString(16)}`, code);
  }
  return req.errored ? new ConnectError("the connection was reset", Code.Aborted) : new ConnectError("the client closed the connection", Code.Canceled);
}

/** Node's request headers as web Headers, HTTP/2 pseudo-headers left out. */
export function webHeaders(req: NodeRequest): Headers {
  const header = new Headers();
  const h = req.headers;
  for (const k in h) {
    const v = h[k];
    if (v === undefined || k.charCodeAt(0) === 58 /* ":" */) continue;
    if (typeof v === "string") header.append(k, v);
    else for (const e of v) header.append(k, e);
  }
  return header;
}

/** The request body as an async iterable, read lazily, with backpressure. */
/** deadlineMs: the body must have arrived by then, or reading it fails with DEADLINE_EXCEEDED. */
export function requestBody(req: NodeRequest, deadlineMs?: number): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => new BodyReader(req, deadlineMs) };
}

class BodyReader implements AsyncIterator<Uint8Array> {
  private chunks: Buffer[] = [];
  private ended = false;
  private error: unknown;
  private wake: (() => void) | undefined;
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    private readonly req: NodeRequest,
    deadlineMs?: number,
  ) {
    if (req.readableEnded) {
      this.ended = true;
      return;
    }
    req.on("data", this.onData);
    req.on("end", this.onEnd);
    req.on("error", this.onError);
    req.on("close", this.onClose);
    if (deadlineMs !== undefined) {
      this.deadline = setTimeout(() => this.onError(new ConnectError(`the request body did not arrive within the deadline (${deadlineMs} ms)`, Code.DeadlineExceeded)), deadlineMs);
    }
  }

  private readonly onData = (chunk: Buffer) => {
    this.chunks.push(chunk);
    if (this.chunks.length >= 16) this.req.pause();
    this.notify();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.detach();
    this.notify();
  };
  private readonly onError = (e: unknown) => {
    this.error ??= e;
    this.onEnd();
  };
  // Closed without 'end': the client went away mid-body.
  private readonly onClose = () => {
    if (!this.ended) this.onError(new ConnectError("the request body was cut short", Code.Canceled));
  };

  private notify() {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private detach() {
    clearTimeout(this.deadline);
    const req = this.req;
    req.off("data", this.onData);
    req.off("end", this.onEnd);
    req.off("error", this.onError);
    req.off("close", this.onClose);
  }

  async next(): Promise<IteratorResult<Uint8Array>> {
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk !== undefined) {
        if (this.chunks.length === 0 && this.req.isPaused() && !this.ended) this.req.resume();
        return { value: chunk, done: false };
      }
      if (this.error !== undefined) throw this.error;
      if (this.ended) return { value: undefined, done: true };
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async return(): Promise<IteratorResult<Uint8Array>> {
    // The caller stopped reading: drop what is left rather than hold the stream paused.
    if (!this.ended) {
      this.detach();
      this.ended = true;
      this.req.resume();
    }
    this.chunks = [];
    return { value: undefined, done: true };
  }
}

/** The request body; a streaming input is checked to end where a message ends (envelope-framing.ts). */
// A call's request body, read within its deadline: client streams are followed
// envelope by envelope (a cut stream is refused, never committed), Connect unary
// JSON is held to strict JSON (connect-json.ts).
function callBody(req: NodeRequest, h: UniversalHandler, values: ContextValues, deadlineMs: number | undefined, maxBodyBytes: number): AsyncIterable<Uint8Array> {
  const body = requestBody(req, deadlineMs);
  const streamingInput = h.method.methodKind === "client_streaming" || h.method.methodKind === "bidi_streaming";
  if (streamingInput) return checkedRequestStream(body, String(req.headers["content-type"] ?? ""), values);
  return isConnectUnaryJson(req, h) ? strictJsonBody(body, h.method.input, maxBodyBytes) : body;
}

/** True when the method answers with exactly one message. */
const singleResponse = (h: UniversalHandler) => h.method.methodKind === "unary" || h.method.methodKind === "client_streaming";

function nodeHeaders(h: Headers): Record<string, string | string[]> {
  const o: Record<string, string | string[]> = {};
  h.forEach((v, k) => {
    const e = o[k];
    o[k] = e === undefined ? v : Array.isArray(e) ? [...e, v] : [e, v];
  });
  return o;
}

/**
 * Writes the router's response. One-message responses are written in one go;
 * streams, and HTTP/1.1 responses with trailers, go through connect-node's writer.
 */
/** onError is told the error the response ends with, as sent. */
export async function sendUniversalResponse(response: UniversalServerResponse, res: NodeResponse, single: boolean, onError: (error: ConnectError) => void): Promise<void> {
  const uRes = withDecodingErrorsFixed(response, onError);
  const h2 = res instanceof http2.Http2ServerResponse;
  if (!single || (!h2 && uRes.trailer !== undefined)) return universalResponseToNodeResponse(uRes, res as http.ServerResponse);
  let body: Uint8Array | undefined;
  if (uRes.body) {
    for await (const chunk of uRes.body) body = body === undefined ? chunk : Buffer.concat([body, chunk]);
  }
  // The client left; the call's signal has told the handler.
  if (res.writableEnded || (h2 ? res.stream.destroyed : res.destroyed)) return;
  let status = uRes.status;
  const headers = nodeHeaders(uRes.header ?? new Headers());
  if (status !== 200 && uRes.trailer === undefined) {
    // A Connect unary error: its status and JSON body (compressed if large).
    const error = connectError(await decodedBody(uRes, body), status);
    const fixed = undecodableRequest(error);
    if (fixed) {
      status = codeToHttpStatus(fixed.code);
      body = errorToJsonBytes(fixed, {});
      delete headers["content-encoding"];
    }
    onError(fixed ?? error);
    if (res.writableEnded || (h2 ? res.stream.destroyed : res.destroyed)) return;
  }
  if (uRes.trailer === undefined) headers["content-length"] = String(body?.byteLength ?? 0);
  (res as http.ServerResponse).writeHead(status, headers);
  if (uRes.trailer !== undefined) res.addTrailers(nodeHeaders(uRes.trailer));
  if (body === undefined) res.end();
  else endWith(res, body);
}

// ---- gRPC unary calls, run as Connect unary calls ---------------------------
//
// connect-es serves gRPC by running every call, unary ones included, through
// its streaming pipeline (a chain of down-levelled async generators): a
// profile puts that at roughly three times the cost of the same unary call in
// the Connect protocol. A gRPC unary call carries one length-prefixed message
// each way, so it is transcoded here, the way REST is: the message is handed
// to the same router handler as a Connect unary call (application/proto), and
// the answer is framed back into gRPC (message envelope, grpc-status,
// grpc-message and grpc-status-details-bin trailers, by connect-es's own
// setTrailerStatus). Handler, interceptors and serialisation are the ones
// every other protocol uses; the interceptors see the call as "grpc"
// (wireProtocolKey).
//
// Only the plain case is transcoded: HTTP/2, POST, application/grpc or
// application/grpc+proto, no message compression, exactly one uncompressed
// message (the response is compressed as a Connect unary response would be,
// grpc-accept-encoding standing in for accept-encoding), a grpc-timeout (if
// any) of at least 1 ms within the limit. Anything else (streaming methods,
// gRPC-JSON, compression, malformed framing, too large) goes to connect-es's
// gRPC handler unchanged, with the bytes already read replayed in front of
// the rest of the body.

const GRPC_BINARY = /^application\/grpc(?:\+proto)?$/i;

// Request fields that belong to the gRPC framing, not to the call's metadata.
const GRPC_ONLY_HEADERS = ["te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "accept-encoding", "content-encoding", "content-length"];
// Response fields of the Connect call that the gRPC response states its own way.
const CONNECT_ONLY_HEADERS = ["content-type", "content-length", "content-encoding", "accept-encoding"];

function grpcUnaryTranscoder(opt: { readMaxBytes: number; maxTimeoutMs: number }) {
  function accepts(req: NodeRequest, h: UniversalHandler): req is http2.Http2ServerRequest {
    if (!(req instanceof http2.Http2ServerRequest) || h.method.methodKind !== "unary" || req.method !== "POST") return false;
    const type = req.headers["content-type"];
    const encoding = req.headers["grpc-encoding"];
    return type !== undefined && GRPC_BINARY.test(type) && (encoding === undefined || encoding === "identity");
  }

  async function serve(req: NodeRequest, res: NodeResponse, h: UniversalHandler, header: Headers, values: ContextValues, onError: (error: ConnectError) => void): Promise<void> {
    // Read at most one message's worth; anything bigger is connect-es's to refuse.
    const reader = new BodyReader(req, bodyDeadlineMs(req.headers, opt.maxTimeoutMs));
    const chunks: Buffer[] = [];
    let size = 0;
    let complete = false;
    for (;;) {
      let r: IteratorResult<Uint8Array>;
      try {
        r = await reader.next();
      } catch (e) {
        // Answered by connect-es in gRPC's terms, as any failure to read a body.
        const uRes = await h(universalRequest(req, res, { body: failing(e), header, contextValues: values }));
        return sendUniversalResponse(uRes, res, true, onError);
      }
      if (r.done) {
        complete = true;
        break;
      }
      chunks.push(r.value as Buffer);
      size += r.value.byteLength;
      if (size > opt.readMaxBytes + 5) break;
    }
    const bytes = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    const timeout = parseGrpcTimeout(header.get("grpc-timeout"), opt.maxTimeoutMs);
    const plain =
      complete &&
      bytes.length >= 5 &&
      bytes[0] === 0 &&
      bytes.readUInt32BE(1) === bytes.length - 5 &&
      !timeout.error &&
      (timeout.timeoutMs === undefined || timeout.timeoutMs >= 1);
    if (!plain) {
      const body = complete ? oneChunk(bytes) : replay(bytes, reader);
      const uRes = await h(universalRequest(req, res, { body, header, contextValues: values }));
      return sendUniversalResponse(uRes, res, true, onError);
    }

    const message = bytes.subarray(5);
    for (const name of GRPC_ONLY_HEADERS) header.delete(name);
    header.set("content-type", "application/proto");
    header.set("content-length", String(message.length));
    if (timeout.timeoutMs !== undefined) header.set("connect-timeout-ms", String(Math.floor(timeout.timeoutMs)));
    const accepted = req.headers["grpc-accept-encoding"];
    if (accepted) header.set("accept-encoding", String(accepted));
    const uRes = await h(universalRequest(req, res, { body: oneChunk(message), header, contextValues: values.set(wireProtocolKey, "grpc") }));
    let out: Uint8Array | undefined;
    if (uRes.body) for await (const chunk of uRes.body) out = out === undefined ? chunk : Buffer.concat([out, chunk]);

    const responseHeader = new Headers();
    const trailer = new Headers();
    uRes.header?.forEach((value, key) => {
      if (key.startsWith("trailer-")) trailer.append(key.slice(8), value);
      else if (!CONNECT_ONLY_HEADERS.includes(key)) responseHeader.append(key, value);
    });
    let data: Buffer | undefined;
    const encoding = uRes.header?.get("content-encoding");
    if (uRes.status === 200) {
      setTrailerStatus(trailer, undefined);
      const payload = out ?? new Uint8Array(0);
      // The Connect body compressed whole is the gRPC message compressed.
      if (encoding) responseHeader.set("grpc-encoding", encoding);
      data = Buffer.allocUnsafe(5 + payload.byteLength);
      data[0] = encoding ? compressedFlag : 0;
      data.writeUInt32BE(payload.byteLength, 1);
      data.set(payload, 5);
    } else {
      const error = connectError(await decodedBody(uRes, out), uRes.status);
      const sent = undecodableRequest(error) ?? error;
      onError(sent);
      setTrailerStatus(trailer, sent);
    }
    if (res.writableEnded || (res as http2.Http2ServerResponse).stream.destroyed) return;
    (res as http.ServerResponse).writeHead(200, { "content-type": grpcContentTypeProto, ...nodeHeaders(responseHeader) });
    res.addTrailers(nodeHeaders(trailer));
    if (data === undefined) res.end();
    else endWith(res, data);
  }

  return { accepts, serve };
}

/** A Connect unary response body as sent, decompressed (errors are read, not passed on). */
function decodedBody(uRes: UniversalServerResponse, body: Uint8Array | undefined): Promise<Uint8Array> {
  const bytes = body ?? new Uint8Array(0);
  return decodeBody(bytes, uRes.header?.get("content-encoding") ?? undefined, 16 * 1024 * 1024).catch(() => bytes);
}

/** The error a Connect unary error response (status and JSON body) states. */
function connectError(body: Uint8Array, status: number): ConnectError {
  const fallback = new ConnectError(`HTTP ${status}`, codeFromHttpStatus(status));
  try {
    return errorFromJsonBytes(body, undefined, fallback);
  } catch (e) {
    return e instanceof ConnectError ? e : fallback;
  }
}

function oneChunk(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      let done = false;
      return {
        async next(): Promise<IteratorResult<Uint8Array>> {
          if (done) return { value: undefined, done: true };
          done = true;
          return { value: bytes, done: false };
        },
      };
    },
  };
}

/** A body whose reading fails with `error`. */
function failing(error: unknown): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(error) }),
  };
}

/** The bytes already read, then the rest of the body. */
function replay(head: Uint8Array, rest: AsyncIterator<Uint8Array>): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      let first = true;
      return {
        next(): Promise<IteratorResult<Uint8Array>> {
          if (first) {
            first = false;
            return Promise.resolve({ value: head, done: false });
          }
          return rest.next();
        },
        return: () => rest.return?.() ?? Promise.resolve({ value: undefined, done: true }),
      };
    },
  };
}
