import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { UploadVideoContentRequestSchema, VideoService } from "../../gen/video/v1/video_service_pb.js";

// Client-streaming calls written byte by byte over a plain HTTP/2 stream
// (node:http2, no RPC library), for framings no client library would send:
// a stream that ends right after an envelope header, or inside a message.

export type EnvelopedProtocol = "grpc" | "grpc-web" | "connect";

const CONTENT_TYPE: Record<EnvelopedProtocol, string> = {
  grpc: "application/grpc+proto",
  "grpc-web": "application/grpc-web+proto",
  connect: "application/connect+proto",
};

/** A 5-byte envelope header: flags, then the big-endian length of the message that should follow. */
export function envelopeHeader(length: number, flags = 0): Buffer {
  const b = Buffer.alloc(5);
  b[0] = flags;
  b.writeUInt32BE(length, 1);
  return b;
}

export const envelope = (message: Uint8Array) => Buffer.concat([envelopeHeader(message.length), message]);

/** The enveloped UploadVideoContent messages: metadata, then one message per chunk. */
export function uploadEnvelopes(meta: { id: string; contentType: string; checksumSha256?: string }, chunks: Uint8Array[]): Buffer {
  const msg = (data: Parameters<typeof create<typeof UploadVideoContentRequestSchema>>[1]) => envelope(toBinary(UploadVideoContentRequestSchema, create(UploadVideoContentRequestSchema, data)));
  return Buffer.concat([msg({ data: { case: "metadata", value: meta } }), ...chunks.map((c) => msg({ data: { case: "chunk", value: c } }))]);
}

export interface RawOutcome {
  /** gRPC status code as a number (0 = OK); Connect's error code mapped to the same numbers. */
  code: number;
  message: string;
}

const CONNECT_CODES = ["ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"];

/** Sends body as the whole request stream of UploadVideoContent, then reads how the call ended. */
export async function rawUploadCall(baseUrl: string, protocol: EnvelopedProtocol, body: Buffer): Promise<RawOutcome> {
  const session = http2.connect(baseUrl);
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": `/${VideoService.typeName}/${VideoService.method.uploadVideoContent.name}`,
      "content-type": CONTENT_TYPE[protocol],
      ...(protocol === "grpc" ? { te: "trailers" } : {}),
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    req.on("response", (h) => (headers = h));
    req.on("trailers", (h) => (trailers = h));
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve, reject) => {
      req.on("end", resolve);
      req.on("error", reject);
    });
    req.end(body);
    await ended;
    const data = Buffer.concat(chunks);
    if (protocol === "grpc") {
      const status = trailers["grpc-status"] ?? headers["grpc-status"];
      return { code: Number(status), message: decodeURIComponent(String(trailers["grpc-message"] ?? headers["grpc-message"] ?? "")) };
    }
    for (let at = 0; at + 5 <= data.length; at += 5 + data.readUInt32BE(at + 1)) {
      const flags = data[at]!;
      const payload = data.subarray(at + 5, at + 5 + data.readUInt32BE(at + 1)).toString("utf8");
      if (protocol === "grpc-web" && flags & 0x80) {
        const fields = Object.fromEntries(payload.split("\r\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
        return { code: Number(fields["grpc-status"]), message: decodeURIComponent(fields["grpc-message"] ?? "") };
      }
      if (protocol === "connect" && flags & 0x02) {
        const error = (JSON.parse(payload || "{}") as { error?: { code: string; message?: string } }).error;
        return { code: error ? CONNECT_CODES.indexOf(error.code) : 0, message: error?.message ?? "" };
      }
    }
    if (protocol === "grpc-web" && headers["grpc-status"] !== undefined) {
      return { code: Number(headers["grpc-status"]), message: decodeURIComponent(String(headers["grpc-message"] ?? "")) };
    }
    throw new Error(`no status in the ${protocol} response (HTTP ${headers[":status"]}, ${data.length} bytes)`);
  } finally {
    session.close();
  }
}
