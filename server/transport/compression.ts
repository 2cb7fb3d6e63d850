import { Code, ConnectError } from "@connectrpc/connect";
import { compressionGzip } from "@connectrpc/connect-node";
import type { Compression } from "@connectrpc/connect/protocol";

// Message and body compression, one policy for every protocol. gRPC,
// gRPC-Web and Connect negotiate it in connect-es (the router's
// acceptCompression and compressMinBytes); the gRPC unary transcoder and REST
// use the same Compression objects and threshold.
//
// gzip only: it is the one every gRPC implementation, browser and curl
// speaks. connect-node's brotli compresses at quality 11: a 6 MB ListVideos
// page took 4.2 s of CPU (gzip: 82 ms), too much to offer any caller.

export const COMPRESSIONS: Compression[] = [compressionGzip];

/** Responses smaller than this are sent as they are: compressing them saves next to nothing. */
export const COMPRESS_MIN_BYTES = 1024;

/** The names, for grpc-accept-encoding and error messages. */
export const ACCEPTED_ENCODINGS = COMPRESSIONS.map((c) => c.name).join(",");

const byName = (name: string) => COMPRESSIONS.find((c) => c.name === name);

/**
 * The compression to answer with, from an Accept-Encoding header (RFC 9110
 * §12.5.3): the supported coding with the highest q (q=0 refuses; "*"
 * matches any), or undefined for identity.
 */
export function negotiateEncoding(accept: string | undefined): Compression | undefined {
  if (!accept) return undefined;
  const weights = new Map<string, number>();
  for (const item of accept.split(",")) {
    const [coding, ...params] = item.trim().toLowerCase().split(";");
    const qParam = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    weights.set(coding.trim(), Number.isNaN(q) ? 0 : q);
  }
  let best: { c: Compression; q: number } | undefined;
  for (const c of COMPRESSIONS) {
    // A coding named explicitly overrides "*", a refusal (q=0) included.
    const q = weights.get(c.name) ?? weights.get("*") ?? 0;
    if (q > 0 && (!best || q > best.q)) best = { c, q };
  }
  return best?.c;
}

/**
 * A body decoded per its Content-Encoding, at most limit bytes once decoded
 * (a small gzip body can expand a thousandfold). Throws UNIMPLEMENTED for a
 * coding this server does not speak, RESOURCE_EXHAUSTED past the limit and
 * INVALID_ARGUMENT for bytes that do not decode.
 */
export async function decodeBody(bytes: Uint8Array, contentEncoding: string | undefined, limit: number): Promise<Uint8Array> {
  const coding = contentEncoding?.trim().toLowerCase();
  if (!coding || coding === "identity") return bytes;
  const c = byName(coding);
  if (!c) throw new ConnectError(`unsupported content-encoding "${coding.slice(0, 40)}": send ${ACCEPTED_ENCODINGS} or identity`, Code.Unimplemented);
  try {
    return await c.decompress(bytes, limit);
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code === Code.ResourceExhausted) throw err;
    throw new ConnectError(`the body is not valid ${c.name}`, Code.InvalidArgument);
  }
}
