import { createReadStream } from "node:fs";
import http2 from "node:http2";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import type { NodeRequest, NodeResponse } from "../transport/listener.js";
import { FsObjectError, isValidObjectKey, MAX_PART_BYTES, MAX_PART_NUMBER, objectExists, type FsStore } from "./fs-store.js";
import { OBJECTS_PATH, PARAM_PREFIX, SIGNATURE_PARAM, SIGNED_PARAMS } from "./signing.js";

// PUT /_objects/<key>?X-Vms-...&X-Vms-Signature=... : the uploads behind the
// filesystem store's signed URLs. Answers in the spirit of S3: 200 + ETag on
// success, 403 for a missing, bad or expired signature or a closed upload
// session, 412 for a create-only URL whose object is already there, 400 for a
// body that does not match what was signed (a part larger than its signed
// size included), 405 for anything but PUT. Errors are short S3-style XML;
// neither the URL nor the signature is ever logged or echoed.

export interface FsObjectHandlerOptions {
  /** Largest single-PUT object accepted (parts are capped at 5 GiB). */
  maxObjectBytes: number;
  /**
   * Whether bytes may still land at this key — an open, unexpired upload
   * session writes there. A signed URL is not revocable by itself; this is
   * what closes it once its session is completed, aborted or deleted.
   */
  acceptsBytes: (key: string) => Promise<boolean>;
  /** Called with every chunk's size as it is received (e.g. metrics.uploadBytes). */
  onBytes?: (n: number) => void;
  /** Unexpected failures (I/O errors), answered with 500. Never carries the URL. */
  onError?: (err: unknown) => void;
}

class Reject extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const accessDenied = (message: string) => new Reject(403, "AccessDenied", message);
const signatureMismatch = () => new Reject(403, "SignatureDoesNotMatch", "the request signature does not match");

type Signed =
  | { op: "get"; key: string }
  | { op: "put"; key: string; sizeBytes: number; contentType: string; checksumSha256: string | undefined; createOnly: boolean }
  | { op: "part"; key: string; uploadId: string; partNumber: number; sizeBytes: number };

export function createFsObjectHandler(store: FsStore, o: FsObjectHandlerOptions): (req: NodeRequest, res: NodeResponse) => boolean {
  return (req, res) => {
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const rawPath = q < 0 ? url : url.slice(0, q);
    if (!rawPath.startsWith(OBJECTS_PATH)) return false;
    handle(store, o, req, res, rawPath, q < 0 ? "" : url.slice(q + 1)).catch((e: unknown) => {
      o.onError?.(e);
      destroy(req, res);
    });
    return true;
  };
}

async function handle(store: FsStore, o: FsObjectHandlerOptions, req: NodeRequest, res: NodeResponse, rawPath: string, query: string): Promise<void> {
  let signed: Exclude<Signed, { op: "get" }>;
  try {
    if (req.method === "GET" || req.method === "HEAD") return await serveGet(store, req, res, authorize(store, rawPath, query, "GET"));
    if (req.method !== "PUT") {
      res.setHeader("allow", "GET, HEAD, PUT");
      throw new Reject(405, "MethodNotAllowed", "only GET, HEAD and PUT are supported on signed object URLs");
    }
    const put = authorize(store, rawPath, query);
    if (put.op === "get") throw signatureMismatch();
    signed = put;
    if (signed.op === "put") {
      if (req.headers["content-type"] !== signed.contentType) throw signatureMismatch();
      if (signed.sizeBytes > o.maxObjectBytes) throw new Reject(400, "EntityTooLarge", "the object is larger than allowed");
    }
    const declared = contentLength(req);
    if (declared !== undefined) {
      if (declared > signed.sizeBytes) throw new Reject(400, "EntityTooLarge", "the body is larger than allowed");
      if (signed.op === "put" && declared < signed.sizeBytes) throw new Reject(400, "IncompleteBody", "the body is shorter than the signed size");
    }
    if (!(await o.acceptsBytes(signed.key))) throw accessDenied("the upload session of this URL is closed");
    if (signed.op === "put" && signed.createOnly && (await store.head(signed.key))) throw new Reject(412, "PreconditionFailed", objectExists().message);
  } catch (e) {
    return reject(req, res, e);
  }

  // Read through an iterator that leaves the request open when the write
  // gives up, so the error response can still be delivered.
  const body = (req as Readable).iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
  let sha256: string;
  try {
    sha256 =
      signed.op === "put"
        ? (await store.receiveObject(signed, body, o.onBytes)).sha256
        : (await store.receivePart(signed.key, signed.uploadId, signed.partNumber, signed.sizeBytes, body, o.onBytes)).sha256;
  } catch (e) {
    // The client went away mid-body: nobody to answer, and the temp file is already gone.
    if ((req.destroyed && !req.complete) || res.destroyed) return;
    if (e instanceof FsObjectError) return reject(req, res, new Reject(e.status, e.code, e.message));
    o.onError?.(e);
    return reject(req, res, new Reject(500, "InternalError", "the object could not be stored"));
  }
  res.statusCode = 200;
  res.setHeader("etag", `"${sha256}"`);
  res.setHeader("content-length", "0");
  res.end();
}

/** A signed GET (thumbnails): the stored bytes with their content type. */
async function serveGet(store: FsStore, req: NodeRequest, res: NodeResponse, signed: Signed): Promise<void> {
  if (signed.op !== "get") throw signatureMismatch();
  const found = await store.openForGet(signed.key);
  if (!found) throw new Reject(404, "NoSuchKey", "the object does not exist");
  res.statusCode = 200;
  res.setHeader("content-type", found.contentType);
  res.setHeader("content-length", String(found.sizeBytes));
  res.setHeader("cache-control", "private, max-age=300");
  res.setHeader("x-content-type-options", "nosniff");
  if (req.method === "HEAD") return void res.end();
  await pipeline(createReadStream(found.file), res as unknown as NodeJS.WritableStream);
}

/** Checks the key, the parameters, the signature and the expiry, in that order. */
function authorize(store: FsStore, rawPath: string, query: string, method = "PUT"): Signed {
  let key: string;
  try {
    key = decodeURIComponent(rawPath.slice(OBJECTS_PATH.length));
  } catch {
    throw new Reject(400, "InvalidURI", "the object path could not be decoded");
  }
  if (!isValidObjectKey(key)) throw new Reject(400, "InvalidObjectName", "invalid object key");

  const params = new Map<string, string>();
  let presented: string | undefined;
  for (const [name, value] of new URLSearchParams(query)) {
    if (!name.toLowerCase().startsWith(PARAM_PREFIX.toLowerCase())) continue; // not ours: neither signed nor used
    if (name === SIGNATURE_PARAM) {
      if (presented !== undefined) throw accessDenied("malformed signed URL");
      presented = value;
      continue;
    }
    if (!SIGNED_PARAMS.has(name) || params.has(name)) throw accessDenied("malformed signed URL");
    params.set(name, value);
  }
  if (presented === undefined) throw accessDenied("the request is not signed");
  if (!store.signatureValid(key, params, presented, method)) throw signatureMismatch();

  const expires = params.get("X-Vms-Expires");
  if (expires === undefined || !/^[0-9]{1,12}$/.test(expires)) throw accessDenied("malformed signed URL");
  if (Date.now() / 1000 > Number(expires)) throw accessDenied("the signed URL has expired");

  const op = params.get("X-Vms-Op");
  if (method === "GET") {
    if (op === "get" && params.size === 2) return { op, key };
    throw accessDenied("malformed signed URL");
  }
  const has = (...names: string[]) => names.every((n) => params.has(n));
  const none = (...names: string[]) => names.every((n) => !params.has(n));
  const size = params.get("X-Vms-Size") ?? "";
  if (!/^[0-9]{1,16}$/.test(size) || !Number.isSafeInteger(Number(size))) throw accessDenied("malformed signed URL");
  const condition = params.get("X-Vms-If-None-Match");
  if (condition !== undefined && condition !== "*") throw accessDenied("malformed signed URL");
  if (op === "put" && has("X-Vms-Content-Type") && none("X-Vms-Upload", "X-Vms-Part")) {
    const createOnly = condition === "*";
    return { op, key, sizeBytes: Number(size), contentType: params.get("X-Vms-Content-Type")!, checksumSha256: params.get("X-Vms-Sha256"), createOnly };
  }
  if (op === "part" && has("X-Vms-Upload", "X-Vms-Part") && none("X-Vms-Content-Type", "X-Vms-Sha256", "X-Vms-If-None-Match")) {
    const part = params.get("X-Vms-Part")!;
    if (!/^[1-9][0-9]{0,4}$/.test(part) || Number(part) > MAX_PART_NUMBER || Number(size) > MAX_PART_BYTES) throw accessDenied("malformed signed URL");
    return { op, key, uploadId: params.get("X-Vms-Upload")!, partNumber: Number(part), sizeBytes: Number(size) };
  }
  throw accessDenied("malformed signed URL");
}

function contentLength(req: NodeRequest): number | undefined {
  const raw = req.headers["content-length"];
  if (raw === undefined) return undefined;
  if (!/^[0-9]{1,16}$/.test(raw)) throw new Reject(400, "InvalidArgument", "invalid content-length");
  return Number(raw);
}

const DRAIN_BYTES = 256 * 1024;

const xmlEscape = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

function reject(req: NodeRequest, res: NodeResponse, e: unknown): void {
  const r = e instanceof Reject ? e : new Reject(500, "InternalError", "internal error");
  if (res.headersSent) return destroy(req, res);
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${r.code}</Code><Message>${xmlEscape(r.message)}</Message></Error>\n`;
  res.statusCode = r.status;
  res.setHeader("content-type", "application/xml");
  res.setHeader("content-length", String(Buffer.byteLength(body)));
  res.setHeader("cache-control", "no-store");
  if (!req.complete) {
    // The rest of the body is not wanted. A small remainder is read and
    // dropped so the connection can be reused; otherwise (large or unknown
    // length) the connection (HTTP/1.1) or stream (HTTP/2) is closed once
    // the answer is out rather than reading possibly gigabytes.
    const declared = Number(req.headers["content-length"] ?? NaN);
    if (!(declared <= DRAIN_BYTES)) {
      if (req.httpVersionMajor < 2) res.setHeader("connection", "close");
      else res.once("finish", () => closeStream(res));
    }
    req.resume();
  }
  res.end(body);
}

function closeStream(res: NodeResponse): void {
  const stream = (res as http2.Http2ServerResponse).stream;
  if (stream && !stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
}

function destroy(req: NodeRequest, res: NodeResponse): void {
  if (req.httpVersionMajor >= 2) {
    const stream = (res as http2.Http2ServerResponse).stream;
    if (stream && !stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  } else {
    req.socket?.destroy();
  }
}
