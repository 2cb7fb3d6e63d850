import type * as http from "node:http";
import http2 from "node:http2";
import { Code } from "@connectrpc/connect";
import { devModeRefusal, isPreflight, preflightHeaders, responseCorsHeaders } from "./browser-rules.js";
import { protocolOf, requestIdFrom } from "./interceptors.js";
import type { NodeRequest, NodeResponse } from "./listener.js";
import { sendRestError } from "./rest.js";

// The browser rules of browser-rules.ts at the edge, before any protocol
// handler: the dev-mode Host and Origin checks (auth off only), CORS
// preflights, and the CORS headers every answer then carries (set on the
// response here, so each writer's writeHead merges them in).

export interface BrowserGuardOptions {
  /** Auth is off: apply the Host and Origin checks. */
  devMode: boolean;
  /** CORS_ALLOWED_ORIGINS; empty: CORS off. */
  allowedOrigins: readonly string[];
  /** Whether a path is an RPC's (/package.Service/Method). */
  isRpcPath: (path: string) => boolean;
  /** A request refused here, for the call log and metrics. */
  onRefused: (c: { protocol: string; procedure: string; code: Code; requestId: string }) => void;
}

const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);

/** Returns true when it has answered the request itself. */
export function createBrowserGuard(o: BrowserGuardOptions) {
  return (req: NodeRequest, res: NodeResponse, path: string): boolean => {
    const method = req.method ?? "GET";
    const origin = one(req.headers.origin);
    if (o.devMode) {
      const authority = req instanceof http2.Http2ServerRequest ? (req.authority ?? one(req.headers.host)) : req.headers.host;
      const reason = devModeRefusal({ method, authority, origin }, o.allowedOrigins);
      if (reason) {
        refuse(req, res, path, reason);
        return true;
      }
    }
    if (o.allowedOrigins.length === 0) return false;
    if (isPreflight(method, origin, one(req.headers["access-control-request-method"]))) {
      const headers = preflightHeaders(origin!, o.allowedOrigins);
      if (!headers) {
        refuse(req, res, path, `origin "${origin!.slice(0, 100)}" is not in CORS_ALLOWED_ORIGINS`, { vary: "Origin" });
        return true;
      }
      (res as http.ServerResponse).writeHead(204, headers);
      res.end();
      return true;
    }
    for (const [k, v] of Object.entries(responseCorsHeaders(origin, o.allowedOrigins))) res.setHeader(k, v);
    return false;
  };

  // PERMISSION_DENIED in the caller's protocol: gRPC and gRPC-Web as a
  // trailers-only answer, Connect as its JSON error, anything else as REST.
  function refuse(req: NodeRequest, res: NodeResponse, path: string, message: string, extra: Record<string, string> = {}) {
    const requestId = requestIdFrom(one(req.headers["x-request-id"]));
    const contentType = String(req.headers["content-type"] ?? "");
    const rpc = o.isRpcPath(path);
    const protocol = rpc || contentType.startsWith("application/grpc") ? protocolOf(contentType) : "rest";
    o.onRefused({ protocol, procedure: rpc ? path.slice(1) : "unmatched", code: Code.PermissionDenied, requestId });
    const headers = { ...extra, "x-request-id": requestId, "cache-control": "no-store" };
    if (contentType.startsWith("application/grpc")) {
      (res as http.ServerResponse).writeHead(200, { ...headers, "content-type": contentType, "grpc-status": String(Code.PermissionDenied), "grpc-message": encodeURIComponent(message) });
      res.end();
    } else if (rpc) {
      const body = JSON.stringify({ code: "permission_denied", message });
      (res as http.ServerResponse).writeHead(403, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    } else {
      sendRestError(res, 403, Code.PermissionDenied, message, [], headers);
    }
    // The body, if any, is not read: let it drain rather than stall the connection.
    req.resume();
  }
}
