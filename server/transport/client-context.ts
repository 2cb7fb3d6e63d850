import http2 from "node:http2";
import type { BlockList } from "node:net";
import { createContextValues, type ContextValues } from "@connectrpc/connect";
import { publicBaseUrlKey } from "../storage/object-store.js";
import { clientOf, publicBaseUrl, type ForwardingHeaders } from "./forwarded.js";
import { clientAddressKey } from "./interceptors.js";
import type { NodeRequest } from "./listener.js";

// A call's context values as the transport starts them: who the client is
// (through trusted proxies only, forwarded.ts) and, when trusted proxies may
// say where the client reached us, the base URL for signed object URLs.

const header = (req: NodeRequest, name: string) => {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
};

function forwardingHeaders(req: NodeRequest): ForwardingHeaders {
  return {
    forwarded: header(req, "forwarded"),
    xForwardedFor: header(req, "x-forwarded-for"),
    xForwardedProto: header(req, "x-forwarded-proto"),
    xForwardedHost: header(req, "x-forwarded-host"),
  };
}

/**
 * The factory of a request's context values. urlsFromProxies: forwarded
 * scheme and host make the filesystem store's URLs (no PUBLIC_BASE_URL).
 */
export function clientContext(trustedProxies: BlockList | undefined, urlsFromProxies: boolean): (req: NodeRequest) => ContextValues {
  return (req) => {
    // (An HTTP/1.1 request's socket is null once the connection has closed.)
    const client = clientOf(req.socket?.remoteAddress ?? "", forwardingHeaders(req), trustedProxies);
    const values = createContextValues().set(clientAddressKey, client.address);
    const base = urlsFromProxies ? publicBaseUrl(client, req instanceof http2.Http2ServerRequest ? req.authority : req.headers.host) : undefined;
    return base ? values.set(publicBaseUrlKey, base) : values;
  };
}
