import { create, fromBinary, toBinary, toJsonString } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { ConnectRouter, ContextValues } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { VideoSchema } from "../../gen/video/v1/video_pb.js";
import { UploadVideoContentRequestSchema, VideoService } from "../../gen/video/v1/video_service_pb.js";
import { trackStreamEnd } from "./envelope-framing.js";
import { requestIdFrom, restRouteKey } from "./interceptors.js";
import type { NodeRequest, NodeResponse } from "./listener.js";
import { errorDetails, forwardHeaders, send, sendRestError } from "./rest.js";
import type { UniversalRequestFactory } from "./server.js";
import { codeFromConnectName, httpStatusOf } from "./status.js";

// REST PUT /videos/{id}/content: the raw body becomes a client-streaming
// Connect call to UploadVideoContent (metadata, then one message per body
// chunk), dispatched to the router's own handler — so the streamed upload goes
// through the same interceptors (auth, logging, metrics) as gRPC. Nothing is
// buffered beyond one message; the body is read as the handler asks for more.

const ROUTE = /^\/videos\/([^/]+)\/content$/;
const PATH = `/${VideoService.typeName}/${VideoService.method.uploadVideoContent.name}`;

function envelope(bytes: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(5 + bytes.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

// A read from the request returns everything buffered so far, which can be
// more than one socket read; one message must stay well under the router's
// readMaxBytes (MAX_BODY_BYTES, 1 MiB by default).
const MAX_CHUNK_BYTES = 64 * 1024;

/**
 * The envelope header and protobuf prefix of an UploadVideoContentRequest
 * whose `chunk` holds `length` bytes. The bytes follow as they came from the
 * socket: the envelope decoder copies them into the message once, where
 * toBinary plus envelope() copied them twice before that.
 */
function chunkMessagePrefix(length: number): Uint8Array {
  const field = new BinaryWriter().tag(CHUNK_FIELD, WireType.LengthDelimited).uint32(length).finish();
  const out = new Uint8Array(5 + field.length);
  new DataView(out.buffer).setUint32(1, field.length + length);
  out.set(field, 5);
  return out;
}
const CHUNK_FIELD = UploadVideoContentRequestSchema.field.chunk.number;

async function* requestStream(req: NodeRequest, id: string, contentType: string, checksum: string, end: { clean: boolean }) {
  const metadata = create(UploadVideoContentRequestSchema, { data: { case: "metadata", value: { id, contentType, checksumSha256: checksum } } });
  yield envelope(toBinary(UploadVideoContentRequestSchema, metadata));
  for await (const chunk of req as AsyncIterable<Buffer>) {
    for (let at = 0; at < chunk.length; at += MAX_CHUNK_BYTES) {
      const value = chunk.subarray(at, at + MAX_CHUNK_BYTES);
      yield chunkMessagePrefix(value.length);
      yield value;
    }
  }
  // The HTTP body ended (a cut connection throws above): every message is whole.
  end.clean = true;
}

/** Splits a Connect streaming response body into its envelopes. */
function envelopes(body: Buffer): { flags: number; data: Buffer }[] {
  const out = [];
  for (let at = 0; at + 5 <= body.length; ) {
    const length = body.readUInt32BE(at + 1);
    out.push({ flags: body[at], data: body.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return out;
}

export function createRestUploadHandler(router: ConnectRouter, o: { contextValues: (req: NodeRequest) => ContextValues; universalRequest: UniversalRequestFactory }) {
  const handler = router.handlers.find((h) => h.requestPath === PATH);
  if (!handler) throw new Error(`${PATH} is not registered`);
  return (req: NodeRequest, res: NodeResponse): boolean => {
    const m = ROUTE.exec((req.url ?? "").split("?")[0]);
    if (!m || req.method !== "PUT") return false;
    // The body is stored byte for byte: a compressed one would be stored compressed.
    const coding = String(req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
    if (coding !== "identity") {
      sendRestError(res, 415, Code.InvalidArgument, "content-encoding is not supported here: send the file's bytes as they are");
      return true;
    }
    void (async () => {
      const header = forwardHeaders(req, new Headers({ "content-type": "application/connect+proto" }));
      const requestId = { "x-request-id": requestIdFrom(req.headers["x-request-id"] as string | undefined) };
      header.set("x-request-id", requestId["x-request-id"]);
      const checksum = String(req.headers["x-checksum-sha256"] ?? req.headers["x-amz-checksum-sha256"] ?? "");
      const contextValues = o.contextValues(req).set(restRouteKey, "PUT /videos/{id}/content");
      const end = trackStreamEnd(contextValues);
      const uReq = o.universalRequest(req, res, {
        method: "POST",
        path: PATH,
        header,
        body: requestStream(req, decodeURIComponent(m[1]), String(req.headers["content-type"] ?? ""), checksum, end),
        contextValues,
      });
      const uRes = await handler(uReq);
      const chunks: Uint8Array[] = [];
      for await (const c of uRes.body ?? []) chunks.push(c);
      let video;
      let error: { code?: string; message?: string; details?: unknown } | undefined;
      for (const e of envelopes(Buffer.concat(chunks))) {
        if (e.flags & 0b10) error = (JSON.parse(e.data.toString("utf8") || "{}") as { error?: typeof error }).error;
        else video = fromBinary(VideoSchema, e.data);
      }
      if (video && !error) {
        send(res, 200, toJsonString(VideoSchema, video), { etag: `"${video.etag}"`, ...requestId });
        return;
      }
      const code = error ? codeFromConnectName(error.code) : Code.Internal;
      sendRestError(res, httpStatusOf(code), code, error?.message ?? "internal error", errorDetails(error?.details), requestId);
    })().catch(() => sendRestError(res, 500, Code.Internal, "internal error"));
    return true;
  };
}
