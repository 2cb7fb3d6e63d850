import { parseTimeout as parseConnectTimeout } from "@connectrpc/connect/protocol-connect";
import { parseTimeout as parseGrpcTimeout } from "@connectrpc/connect/protocol-grpc";

// A deadline longer than the server allows (MAX_REQUEST_MS) is lowered to
// that limit rather than refused: the caller was willing to wait longer than
// the server will work anyway, and clients add headroom of their own (gRPC
// C-core sends 30100m for a 30 s deadline; `buf curl --timeout 60s` sends 60S
// on its reflection call too). connect-es refuses such a deadline
// (INVALID_ARGUMENT "timeout … must be <= …", its maxTimeoutMs), so the
// header is rewritten before the call reaches it. Values that do not parse
// are left for connect-es to refuse.

const GRPC_TIMEOUT = "grpc-timeout"; // gRPC and gRPC-Web
const CONNECT_TIMEOUT = "connect-timeout-ms";

/** The request headers with a deadline above maxMs lowered to maxMs (in place). */
export function clampDeadline(header: Headers, maxMs: number): Headers {
  const grpc = parseGrpcTimeout(header.get(GRPC_TIMEOUT), maxMs);
  if (grpc.error && grpc.timeoutMs !== undefined) header.set(GRPC_TIMEOUT, `${maxMs}m`);
  const connect = parseConnectTimeout(header.get(CONNECT_TIMEOUT), maxMs);
  if (connect.error && connect.timeoutMs !== undefined) header.set(CONNECT_TIMEOUT, String(maxMs));
  return header;
}
