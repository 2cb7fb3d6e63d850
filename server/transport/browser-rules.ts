// What a web browser may make this service do (pure). A page on any site can
// make the browser send requests here, and with auth off (loopback
// development) nothing else stands in its way:
//   - simple requests: a POST with text/plain, form or multipart bodies, sent
//     cross-site without a CORS preflight. JSON routes take JSON only
//     (isJsonContentType), so such a body is refused (415) unread;
//   - DNS rebinding: a page whose own name is made to resolve to 127.0.0.1
//     is same-origin with this port. Its requests carry that name in Host,
//     so with auth off only loopback names are answered (hostIsLoopback);
//   - a foreign page's state-changing call: the browser says where it comes
//     from in Origin; with auth off only loopback pages and
//     CORS_ALLOWED_ORIGINS may change anything (originMayWrite).
// CORS (off unless CORS_ALLOWED_ORIGINS lists origins) lets the listed
// origins read answers over REST, Connect and gRPC-Web.

/** application/json or application/<anything>+json, parameters allowed. */
export function isJsonContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/([\w.-]+\+)?json\s*(;|$)/i.test(contentType.trim());
}

/** The host part of a Host header or :authority ("[::1]:8080" → "::1"); undefined when malformed. */
export function hostName(authority: string): string | undefined {
  const m = /^(?:\[([0-9a-f:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/i.exec(authority.trim());
  return m ? (m[1] ?? m[2]).toLowerCase() : undefined;
}

function isLoopbackName(name: string): boolean {
  if (name === "localhost" || name === "::1") return true;
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(name);
  return v4 !== null && v4.slice(1).every((o) => Number(o) <= 255);
}

/**
 * With auth off: the request names this machine (localhost, 127.x.y.z or
 * [::1], any port). Anything else is what DNS rebinding looks like. A request
 * without a Host (HTTP/1.0, or HTTP/2 with no :authority) cannot come from a
 * browser and is let through.
 */
export function hostIsLoopback(authority: string | undefined): boolean {
  if (authority === undefined || authority === "") return true;
  const name = hostName(authority);
  return name !== undefined && isLoopbackName(name);
}

/** A page on this machine: http(s)://localhost, 127.x.y.z or [::1], any port. */
export function isLoopbackOrigin(origin: string): boolean {
  const m = /^https?:\/\/(.+)$/i.exec(origin);
  return m !== null && hostIsLoopback(m[1]) && m[1] !== "";
}

/** Methods that change nothing (RFC 9110 §9.2.1); every RPC is a POST. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * With auth off: whether a request from a browser page (Origin set) may
 * change state. Requests without Origin are not from a cross-site page.
 * "null" (sandboxed frames, file: pages) is foreign.
 */
export function originMayWrite(method: string, origin: string | undefined, allowedOrigins: readonly string[]): boolean {
  if (origin === undefined || SAFE_METHODS.has(method)) return true;
  return isLoopbackOrigin(origin) || allowedOrigins.includes(origin);
}

/** Why a request is refused with auth off, or undefined. */
export function devModeRefusal(
  r: { method: string; authority: string | undefined; origin: string | undefined },
  allowedOrigins: readonly string[],
): string | undefined {
  if (!hostIsLoopback(r.authority)) {
    return `host "${String(r.authority).slice(0, 100)}" is not a loopback name: with auth off the service answers to localhost, 127.0.0.1 and [::1] only`;
  }
  if (!originMayWrite(r.method, r.origin, allowedOrigins)) {
    return `origin "${String(r.origin).slice(0, 100)}" may not change anything: with auth off only pages on localhost and CORS_ALLOWED_ORIGINS may`;
  }
  return undefined;
}

// ---- CORS ------------------------------------------------------------------

const ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE";
// What REST, Connect and gRPC-Web clients send beyond the CORS-safelisted headers.
const ALLOWED_HEADERS = [
  "authorization",
  "content-type",
  "if-match",
  "idempotency-key",
  "x-request-id",
  "x-checksum-sha256",
  "traceparent",
  "tracestate",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-accept-encoding",
  "connect-content-encoding",
  "grpc-timeout",
  "x-grpc-web",
  "x-user-agent",
].join(", ");
const EXPOSED_HEADERS = "etag, x-request-id, grpc-status, grpc-message, grpc-status-details-bin";
const PREFLIGHT_MAX_AGE_S = "7200";

/** Is this an OPTIONS preflight (RFC: Fetch §3.2.2)? */
export function isPreflight(method: string, origin: string | undefined, requestMethod: string | undefined): boolean {
  return method === "OPTIONS" && origin !== undefined && requestMethod !== undefined;
}

/** The headers of a preflight's 204 answer, or undefined when the origin is not allowed. */
export function preflightHeaders(origin: string, allowedOrigins: readonly string[]): Record<string, string> | undefined {
  if (!allowedOrigins.includes(origin)) return undefined;
  return {
    "access-control-allow-origin": origin,
    "access-control-allow-methods": ALLOWED_METHODS,
    "access-control-allow-headers": ALLOWED_HEADERS,
    "access-control-max-age": PREFLIGHT_MAX_AGE_S,
    vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
  };
}

/**
 * The CORS headers of any other answer while CORS is on: Vary: Origin on all
 * of them (caches must not hand one origin's answer to another), the allow
 * and expose headers for an allowed origin only. No credentials: callers
 * send bearer tokens, not cookies.
 */
export function responseCorsHeaders(origin: string | undefined, allowedOrigins: readonly string[]): Record<string, string> {
  if (origin === undefined || !allowedOrigins.includes(origin)) return { vary: "Origin" };
  return { vary: "Origin", "access-control-allow-origin": origin, "access-control-expose-headers": EXPOSED_HEADERS };
}

/** CORS_ALLOWED_ORIGINS' entries as origins ("https://app.example.com:8443"); throws naming a bad one. */
export function parseOrigins(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry) => {
      let url: URL | undefined;
      try {
        url = new URL(entry);
      } catch {
        url = undefined;
      }
      const bare = url && url.pathname === "/" && !url.search && !url.hash && !url.username && !url.password && !entry.includes("*");
      if (!url || !/^https?:$/.test(url.protocol) || !bare) {
        throw new Error(`"${entry.slice(0, 100)}" is not an origin (scheme://host[:port], no path, no "*")`);
      }
      return url.origin;
    });
}
