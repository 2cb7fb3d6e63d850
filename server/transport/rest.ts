import type * as http from "node:http";
import type * as http2 from "node:http2";
import { createRegistry, fromBinary, fromJson, toJson, type DescMessage, type JsonObject, type JsonValue, type Registry } from "@bufbuild/protobuf";
import type { ConnectRouter, ContextValues } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { callerKey, type Caller } from "../auth/caller.js";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { RequestMappingError, checkRoutes, matchPath, requestJson, routesOf, splitPath, type Route } from "./http-rules.js";
import { authenticatedKey } from "../auth/authenticate.js";
import { requestIdFrom, restRouteKey } from "./interceptors.js";
import { isJsonContentType } from "./browser-rules.js";
import { integerViolations, invalidUtf8Violations, parseStrictJson } from "./strict-json.js";
import type { UniversalRequestFactory } from "./server.js";
import { COMPRESS_MIN_BYTES, decodeBody, negotiateEncoding } from "./compression.js";
import { codeFromConnectName, httpStatusOf, statusNameOf } from "./status.js";

// REST (JSON over HTTP/1.1 or HTTP/2) transcoded onto the very handlers that
// serve gRPC and Connect: a REST call becomes a Connect-protocol unary call
// with an already-parsed JSON body, dispatched to the router's handler, so
// it passes the same interceptors, validation and serialisation.

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface RestOptions {
  maxBodyBytes: number;
  /** Largest raw body of a google.api.HttpBody field (a custom thumbnail). */
  maxImageBytes: number;
  contextValues: (req: NodeRequest) => ContextValues;
  /** Builds the router's request from the Node request (server.ts). */
  universalRequest: UniversalRequestFactory;
  onInternalError: (error: unknown) => void;
  /**
   * Requests refused here, before the interceptor chain (no route, a body
   * that does not decode): counted and logged like every other call.
   */
  onRefused: (call: RefusedCall, values: ContextValues) => void;
  /**
   * With auth on: verifies the Authorization header before the body is read,
   * so a caller without a valid token learns nothing of the validation rules.
   * The caller it yields goes to the interceptor chain, which then does not
   * verify the token again.
   */
  authenticate?: (authorization: string) => Promise<Caller>;
}

export interface RefusedCall {
  /** The route's RPC, or "unmatched". */
  procedure: string;
  route?: string;
  code: Code;
  seconds: number;
  requestId: string;
}

const errorRegistry: Registry = createRegistry(file_google_rpc_error_details);

const SECURITY_HEADERS: Record<string, string> = {
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
};

// Forwarded from the REST request to the handler; everything else stays out
// (content-type, encodings and timeouts belong to the synthetic call).
const FORWARDED_HEADERS = ["authorization", "traceparent", "tracestate", "x-request-id", "user-agent"];

/** Copies the forwarded headers of a REST request onto the synthetic call's headers. */
export function forwardHeaders(req: NodeRequest, header: Headers): Headers {
  for (const name of FORWARDED_HEADERS) {
    const v = req.headers[name];
    if (typeof v === "string") header.set(name, v);
  }
  return header;
}

export class RestError extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly httpStatus = httpStatusOf(code),
    readonly details: JsonValue[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function sendRestError(res: NodeResponse, httpStatus: number, code: Code, message: string, details: JsonValue[] = [], extraHeaders: Record<string, string> = {}) {
  // RFC 6750 §3: a 401 names the scheme the caller should use.
  if (code === Code.Unauthenticated) extraHeaders = { ...extraHeaders, "www-authenticate": 'Bearer realm="video-management-service"' };
  const body = JSON.stringify({ error: { code: httpStatus, message, status: statusNameOf(code), details } });
  send(res, httpStatus, body, extraHeaders);
}

/**
 * A JSON REST response with the security headers every REST answer carries,
 * gzip-compressed when the request's Accept-Encoding allows it and the body
 * is worth it.
 */
export function send(res: NodeResponse, status: number, body: string, extraHeaders: Record<string, string> = {}) {
  if (res.headersSent) return;
  // Added to a Vary set earlier (the CORS headers' Origin), never replacing it.
  const vary = (res as http.ServerResponse).getHeader("vary");
  const headers: Record<string, string | number> = {
    ...SECURITY_HEADERS,
    ...extraHeaders,
    vary: vary ? `${String(vary)}, accept-encoding` : "accept-encoding",
    "content-type": "application/json; charset=utf-8",
  };
  const bytes = Buffer.from(body);
  const encoding = bytes.length >= COMPRESS_MIN_BYTES ? negotiateEncoding(res.req.headers["accept-encoding"]) : undefined;
  const write = (out: Uint8Array, coding?: string) => {
    if (res.headersSent || res.destroyed) return;
    if (coding) headers["content-encoding"] = coding;
    headers["content-length"] = out.byteLength;
    (res as http.ServerResponse).writeHead(status, headers);
    res.end(out);
  };
  if (!encoding) return write(bytes);
  encoding.compress(bytes).then(
    (zipped) => write(zipped, encoding.name),
    () => write(bytes),
  );
}

const NO_BODY = Buffer.alloc(0);

async function readBody(req: NodeRequest, limit: number): Promise<Buffer> {
  const length = req.headers["content-length"];
  const declared = Number(length ?? NaN);
  if (declared > limit) throw new RestError(Code.InvalidArgument, `request body exceeds ${limit} bytes`, 413);
  // HTTP/1.1 without content-length or transfer-encoding has no body (RFC 9112
  // §6.3): no need to set up a stream iterator for most GETs.
  if (req.httpVersionMajor === 1 && (declared === 0 || (length === undefined && req.headers["transfer-encoding"] === undefined))) return NO_BODY;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new RestError(Code.InvalidArgument, `request body exceeds ${limit} bytes`, 413);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The body per its Content-Encoding, bounded by the body limit once decoded too. */
async function decodeRestBody(bytes: Buffer, contentEncoding: string | undefined, limit: number): Promise<Buffer> {
  try {
    const out = await decodeBody(bytes, contentEncoding, limit);
    return Buffer.isBuffer(out) ? out : Buffer.from(out);
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code === Code.Unimplemented) throw new RestError(Code.InvalidArgument, err.rawMessage, 415);
    if (err.code === Code.ResourceExhausted) throw new RestError(Code.InvalidArgument, `request body exceeds ${limit} bytes once decoded`, 413);
    throw new RestError(Code.InvalidArgument, err.rawMessage);
  }
}

function parseJsonBody(bytes: Buffer, contentType: string | undefined): { value: JsonValue; invalidUtf8: boolean } | undefined {
  if (bytes.length === 0) return undefined;
  // JSON only: text/plain, form and multipart bodies (or none labelled) are
  // what a browser sends cross-site without a preflight (browser-rules.ts).
  if (!isJsonContentType(contentType)) {
    const got = contentType ? `content-type "${contentType.slice(0, 100)}"` : "a body without a content-type";
    throw new RestError(Code.InvalidArgument, `unsupported media type: ${got}; send application/json`, 415);
  }
  try {
    return parseStrictJson(bytes);
  } catch (e) {
    throw new RestError(Code.InvalidArgument, `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

// AIP-154 and AIP-155 over HTTP: If-Match fills the etag, Idempotency-Key the request_id.
function applyHeaders(route: Route, req: NodeRequest, request: JsonObject) {
  const input = route.method.input;
  const ifMatch = req.headers["if-match"];
  if (typeof ifMatch === "string" && ifMatch !== "*") {
    const etag = ifMatch.trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
    if (input.fields.some((f) => f.name === "etag")) {
      request.etag ??= etag;
    } else if (route.body && route.body !== "*") {
      const body = request[input.fields.find((f) => f.name === route.body)!.jsonName];
      if (body && typeof body === "object" && !Array.isArray(body)) body.etag ??= etag;
    }
  }
  const key = req.headers["idempotency-key"];
  if (typeof key === "string" && input.fields.some((f) => f.name === "request_id")) {
    request.requestId ??= key.trim();
  }
  // AIP-134: a PATCH without update_mask updates the fields present in the body.
  const maskField = input.fields.find((f) => f.name === "update_mask");
  if (req.method === "PATCH" && maskField && request.updateMask === undefined && route.body && route.body !== "*") {
    const body = request[input.fields.find((f) => f.name === route.body)!.jsonName];
    if (body && typeof body === "object" && !Array.isArray(body)) {
      const message = input.fields.find((f) => f.name === route.body)!.message as DescMessage;
      // FieldMask's JSON form takes lowerCamelCase paths ("ownerId"), not "owner_id".
      // Unknown keys stay out of the mask; the body's decoding reports them by name.
      request.updateMask = Object.keys(body)
        .flatMap((k) => message.fields.find((f) => f.jsonName === k || f.name === k)?.jsonName ?? [])
        .join(",");
    }
  }
}

const isObject = (v: JsonValue | undefined): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

/** "invalid value: expected string, got 5" from protobuf-es' "cannot decode field video.v1.Video.title from JSON: expected string, got 5". */
function decodeReason(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const at = message.indexOf(" from JSON: ");
  return "invalid value: " + (at < 0 ? message : message.slice(at + " from JSON: ".length)).slice(0, 200);
}

/**
 * The fields of a proto3-JSON request that cannot be decoded, as
 * google.rpc.BadRequest field violations with proto field paths
 * ("video.title"), so a REST caller learns which field is wrong just as a
 * validation error would tell it. Empty when the request decodes.
 */
export function jsonViolations(desc: DescMessage, json: JsonValue, path = ""): { field: string; description: string }[] {
  let whole: unknown;
  try {
    fromJson(desc, json);
    return [];
  } catch (e) {
    whole = e;
  }
  const out: { field: string; description: string }[] = [];
  if (isObject(json)) {
    for (const [key, value] of Object.entries(json)) {
      const field = desc.fields.find((f) => f.jsonName === key || f.name === key);
      const at = (path ? path + "." : "") + (field?.name ?? key.slice(0, 100));
      if (!field) {
        out.push({ field: at, description: "is not a known field" });
        continue;
      }
      try {
        fromJson(desc, { [key]: value });
        continue;
      } catch (e) {
        const nested = field.fieldKind === "message" && !field.message.typeName.startsWith("google.protobuf.") && isObject(value);
        const inner = nested ? jsonViolations(field.message, value, at) : [];
        out.push(...(inner.length > 0 ? inner : [{ field: at, description: decodeReason(e) }]));
      }
    }
  }
  return out.length > 0 ? out : [{ field: path || desc.name, description: decodeReason(whole) }];
}

const badRequest = (fieldViolations: { field: string; description: string }[]): JsonObject => ({
  "@type": "type.googleapis.com/google.rpc.BadRequest",
  fieldViolations,
});

export function errorDetails(details: unknown): JsonValue[] {
  if (!Array.isArray(details)) return [];
  const out: JsonValue[] = [];
  for (const d of details as { type?: string; value?: string }[]) {
    const desc = d.type ? errorRegistry.getMessage(d.type) : undefined;
    if (!desc || typeof d.value !== "string") continue;
    const json = toJson(desc, fromBinary(desc, Buffer.from(d.value, "base64")), { registry: errorRegistry }) as JsonObject;
    out.push({ "@type": `type.googleapis.com/${d.type}`, ...json });
  }
  return out;
}

async function readAll(body: AsyncIterable<Uint8Array> | undefined): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  for await (const c of body) chunks.push(c);
  return Buffer.concat(chunks);
}

export function createRestHandler(router: ConnectRouter, options: RestOptions) {
  const handlers = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.method.parent.typeName + "/" + h.method.name, h]));
  const routes = routesOf([...new Set(router.handlers.map((h) => h.service))]).filter((r) =>
    handlers.has(r.method.parent.typeName + "/" + r.method.name),
  );
  checkRoutes(routes);

  function find(method: string, pathname: string) {
    const { segments, verb } = splitPath(pathname);
    let allowed: string[] = [];
    for (const route of routes) {
      const vars = matchPath(route, segments, verb);
      if (!vars) continue;
      // HEAD is GET without the body (RFC 9110 §9.3.2): Node leaves the body out.
      if (route.httpMethod === method || (method === "HEAD" && route.httpMethod === "GET")) return { route, vars };
      allowed.push(...(route.httpMethod === "GET" ? ["GET", "HEAD"] : [route.httpMethod]));
    }
    return { allowed };
  }

  // What a request was, as far as it got: for the record of refused ones.
  interface Progress {
    procedure: string;
    route?: string;
    dispatched: boolean;
    /** The caller's x-request-id, or one made up: the call's, and on its answer. */
    requestId: string;
  }

  async function handle(req: NodeRequest, res: NodeResponse, progress: Progress, values: ContextValues): Promise<void> {
    const url = new URL(req.url ?? "/", "http://rest.invalid");
    let found;
    try {
      found = find(req.method ?? "GET", url.pathname);
    } catch {
      throw new RestError(Code.InvalidArgument, "the request path is not valid percent-encoding");
    }
    if (!("route" in found) || !found.route) {
      if (found.allowed.length > 0) {
        throw new RestError(Code.Unimplemented, `method ${req.method} is not allowed on ${url.pathname}`, 405, [], {
          allow: [...new Set(found.allowed)].join(", "),
        });
      }
      throw new RestError(Code.NotFound, `no route for ${req.method} ${url.pathname}`, 404);
    }
    const { route, vars } = found;
    progress.procedure = `${route.method.parent.typeName}/${route.method.name}`;
    progress.route = `${route.httpMethod} ${route.template}`;
    const caller = await options.authenticate?.(String(req.headers.authorization ?? ""));
    const hasBody = route.body !== "";
    // A google.api.HttpBody body field takes the raw bytes and their content type (AIP-127).
    const rawBody = hasBody && route.body !== "*" && route.method.input.fields.find((f) => f.name === route.body)?.message?.typeName === "google.api.HttpBody";
    const limit = rawBody ? options.maxImageBytes : options.maxBodyBytes;
    const bytes = await decodeRestBody(await readBody(req, limit), req.headers["content-encoding"], limit);
    const body = rawBody
      ? bytes.length > 0 ? { value: { contentType: String(req.headers["content-type"] ?? ""), data: bytes.toString("base64") }, invalidUtf8: false } : undefined
      : hasBody ? parseJsonBody(bytes, req.headers["content-type"]) : undefined;
    let request: JsonObject;
    try {
      request = requestJson(route, vars, url.searchParams, body?.value);
    } catch (e) {
      if (e instanceof RequestMappingError && e.field) {
        throw new RestError(Code.InvalidArgument, e.message, 400, [badRequest([{ field: e.field, description: e.message }])]);
      }
      if (e instanceof RequestMappingError) throw new RestError(Code.InvalidArgument, e.message);
      throw e;
    }
    applyHeaders(route, req, request);
    // Decoding errors name the field (AIP-193), as validation errors do.
    if (body?.invalidUtf8) {
      const violations = invalidUtf8Violations(route.method.input, request);
      throw new RestError(Code.InvalidArgument, "the request body is not valid UTF-8", 400, [badRequest(violations)]);
    }
    const integers = integerViolations(route.method.input, request);
    const violations = [...integers, ...jsonViolations(route.method.input, request).filter((v) => !integers.some((i) => i.field === v.field))];
    if (violations.length > 0) {
      throw new RestError(Code.InvalidArgument, violations.map((v) => `${v.field}: ${v.description}`).join("; "), 400, [badRequest(violations)]);
    }

    const handler = handlers.get(route.method.parent.typeName + "/" + route.method.name)!;
    const header = forwardHeaders(req, new Headers({ "content-type": "application/json", "connect-protocol-version": "1" }));
    header.set("x-request-id", progress.requestId);
    values.set(restRouteKey, `${route.httpMethod} ${route.template}`);
    if (caller) values.set(callerKey, caller).set(authenticatedKey, true);
    const uReq = options.universalRequest(req, res, { body: request, header, contextValues: values, method: "POST", path: handler.requestPath });
    progress.dispatched = true;
    const uRes = await handler(uReq);
    const out = await readAll(uRes.body);
    if (uRes.status === 200) {
      const text = out.toString("utf8");
      const etag = route.method.output.fields.some((f) => f.name === "etag") ? (JSON.parse(text) as { etag?: string }).etag : undefined;
      return send(res, 200, text, { "x-request-id": progress.requestId, ...(etag ? { etag: `"${etag}"` } : {}) });
    }
    let parsed: { code?: unknown; message?: unknown; details?: unknown } = {};
    try {
      parsed = JSON.parse(out.toString("utf8"));
    } catch {
      // Not a Connect error body; reported as internal below.
    }
    const code = codeFromConnectName(parsed.code);
    const message = typeof parsed.message === "string" ? parsed.message : statusNameOf(code).toLowerCase();
    sendRestError(res, httpStatusOf(code), code, message, errorDetails(parsed.details), { "x-request-id": progress.requestId });
  }

  return {
    routes,
    handle(req: NodeRequest, res: NodeResponse) {
      const started = performance.now();
      const progress: Progress = { procedure: "unmatched", dispatched: false, requestId: requestIdFrom(req.headers["x-request-id"] as string | undefined) };
      // Taken while the connection is there: a refusal may be logged after the client left.
      const values = options.contextValues(req);
      handle(req, res, progress, values).catch((e: unknown) => {
        // A RestError, or a deliberate ConnectError (the bearer check), is the
        // caller's answer; anything else is ours, logged and not shown.
        const deliberate = e instanceof RestError ? e : e instanceof ConnectError && e.code !== Code.Internal ? new RestError(e.code, e.rawMessage) : undefined;
        if (!deliberate) options.onInternalError(e);
        const refused = deliberate ?? new RestError(Code.Internal, "internal error", 500);
        const requestId = progress.requestId;
        if (progress.dispatched) return sendRestError(res, refused.httpStatus, refused.code, refused.message, [], { "x-request-id": requestId });
        // Never reached the interceptor chain: record it here.
        sendRestError(res, refused.httpStatus, refused.code, refused.message, refused.details, { ...refused.headers, "x-request-id": requestId });
        options.onRefused({ procedure: progress.procedure, route: progress.route, code: refused.code, seconds: (performance.now() - started) / 1000, requestId }, values);
      });
    },
  };
}
