import type { IncomingHttpHeaders } from "node:http";
import { parseTimeout as parseConnectTimeout } from "@connectrpc/connect/protocol-connect";
import { parseTimeout as parseGrpcTimeout } from "@connectrpc/connect/protocol-grpc";

/**
 * How long the request body may take to arrive, in ms: the deadline the
 * client states (gRPC and gRPC-Web `grpc-timeout`, Connect
 * `connect-timeout-ms`), at most maxMs. connect-es starts a call's deadline
 * only once its handler runs and never applies it to reading the body, so a
 * client that stops sending mid-body held the call open whatever its deadline.
 * Undefined when the client states none (or a malformed one, which connect-es
 * refuses itself).
 */
export function bodyDeadlineMs(headers: IncomingHttpHeaders, maxMs: number): number | undefined {
  const grpc = headers["grpc-timeout"];
  const connect = headers["connect-timeout-ms"];
  const parsed =
    typeof grpc === "string"
      ? parseGrpcTimeout(grpc, Number.MAX_SAFE_INTEGER)
      : typeof connect === "string"
        ? parseConnectTimeout(connect, Number.MAX_SAFE_INTEGER)
        : undefined;
  if (parsed?.timeoutMs === undefined || parsed.error) return undefined;
  return Math.min(parsed.timeoutMs, maxMs);
}
