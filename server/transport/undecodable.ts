import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

// connect-es reports a request message that is not valid protobuf as INTERNAL
// ("parse binary: …"). The fault is the caller's, and a caller retrying on
// INTERNAL would only send the same bytes again: answer INVALID_ARGUMENT, as
// connect-go and grpc-go do. Where the parse fails inside the interceptor
// chain (a stream's request), publicErrors maps it; where it fails before the
// chain, the answer is rewritten on its way out: Connect unary and plain gRPC
// unary in server.ts, gRPC trailers and gRPC-Web trailer frames (gRPC-Web
// unary, gRPC unary with a timeout or compression) by withDecodingErrorsFixed.

const PREFIX = "parse binary: ";

/** The INVALID_ARGUMENT an undecodable request deserves, or undefined for any other error. */
export function undecodableRequest(error: ConnectError | undefined): ConnectError | undefined {
  if (error?.code !== Code.Internal || !error.rawMessage.startsWith(PREFIX)) return undefined;
  return new ConnectError(`the request is not a valid protobuf message: ${error.rawMessage.slice(PREFIX.length)}`, Code.InvalidArgument);
}

/** Rewrites an undecodable-request status in gRPC trailers, in place; the error they end with, if any. */
function fixTrailer(trailer: Headers): ConnectError | undefined {
  const error = findTrailerError(trailer);
  const fixed = undecodableRequest(error);
  if (fixed) setTrailerStatus(trailer, fixed);
  return fixed ?? error;
}

/** A gRPC-Web trailer frame (uncompressed) with an undecodable-request status, rewritten; other chunks as they are. */
function fixTrailerFrame(chunk: Uint8Array, onError: (error: ConnectError) => void): Uint8Array {
  if (chunk.byteLength < 5 || chunk[0] !== trailerFlag) return chunk;
  const trailer = trailerParse(chunk.subarray(5));
  const error = findTrailerError(trailer);
  const fixed = undecodableRequest(error);
  if (error) onError(fixed ?? error);
  if (!fixed) return chunk;
  const data = trailerSerialize(setTrailerStatus(new Headers(), fixed));
  const frame = new Uint8Array(5 + data.byteLength);
  frame[0] = trailerFlag;
  new DataView(frame.buffer).setUint32(1, data.byteLength);
  frame.set(data, 5);
  return frame;
}

/**
 * The response with an undecodable request's INTERNAL turned into
 * INVALID_ARGUMENT: in gRPC trailers (filled in as the body is read, so fixed
 * once it ends) and in a gRPC-Web body's trailer frame. onError is told the
 * error the response ends with, as sent (server.ts counts the calls the
 * interceptors never saw).
 */
export function withDecodingErrorsFixed(uRes: UniversalServerResponse, onError: (error: ConnectError) => void): UniversalServerResponse {
  const { body, trailer } = uRes;
  const grpcWeb = uRes.header?.get("content-type")?.startsWith("application/grpc-web") ?? false;
  const endOfTrailer = () => {
    const error = trailer && fixTrailer(trailer);
    if (error) onError(error);
  };
  if (!body) {
    endOfTrailer();
    return uRes;
  }
  if (!trailer && !grpcWeb) return uRes;
  async function* fixed() {
    for await (const chunk of body!) yield grpcWeb ? fixTrailerFrame(chunk, onError) : chunk;
    endOfTrailer();
  }
  return { ...uRes, body: fixed() };
}
