import t from "tap";
import {
  devModeRefusal,
  hostIsLoopback,
  isJsonContentType,
  isLoopbackOrigin,
  isPreflight,
  originMayWrite,
  parseOrigins,
  preflightHeaders,
  responseCorsHeaders,
} from "../../server/transport/browser-rules.js";

const APP = "https://app.example.test";

t.test("JSON routes take JSON content types only", async (t) => {
  for (const ok of ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json", " application/json "]) {
    t.ok(isJsonContentType(ok), ok);
  }
  // What a browser sends cross-site without a preflight, and lookalikes.
  for (const no of [undefined, "", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp", "application/json-seq", "text/json", "application/octet-stream"]) {
    t.notOk(isJsonContentType(no), String(no));
  }
});

t.test("Host: loopback names and addresses, any port; everything else is refused with auth off", async (t) => {
  for (const ok of ["localhost", "localhost:8080", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:9", "[::1]", "[::1]:8080", undefined, ""]) {
    t.ok(hostIsLoopback(ok), `${ok} is loopback`);
  }
  for (const no of ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "127.0.0.1.evil.example:80", "0.0.0.0:8080", "10.0.0.1", "[::ffff:127.0.0.1]", "[::2]:8080", "127.0.0.256", "localhost:8080:1", "local host", "::1"]) {
    t.notOk(hostIsLoopback(no), `${no} is not`);
  }
});

t.test("Origin: with auth off a foreign page may read nothing it could not anyway, and change nothing", async (t) => {
  t.ok(isLoopbackOrigin("http://localhost:3000"));
  t.ok(isLoopbackOrigin("https://127.0.0.1"));
  t.ok(isLoopbackOrigin("http://[::1]:5173"));
  for (const no of ["null", "https://evil.example", "http://localhost.evil.example", "file://", "http://", "chrome-extension://abc"]) t.notOk(isLoopbackOrigin(no), no);

  t.ok(originMayWrite("POST", undefined, []), "no Origin: not a browser page's cross-site call");
  t.ok(originMayWrite("GET", "https://evil.example", []), "GET changes nothing");
  t.ok(originMayWrite("HEAD", "https://evil.example", []), "HEAD changes nothing");
  t.ok(originMayWrite("OPTIONS", "https://evil.example", []), "a preflight changes nothing");
  for (const m of ["POST", "PUT", "PATCH", "DELETE"]) t.notOk(originMayWrite(m, "https://evil.example", []), `${m} from a foreign page`);
  t.notOk(originMayWrite("POST", "null", []), '"null" (sandboxed frame, file: page) is foreign');
  t.ok(originMayWrite("POST", "http://localhost:3000", []), "a page on this machine");
  t.ok(originMayWrite("POST", APP, [APP]), "an origin listed in CORS_ALLOWED_ORIGINS");
  t.notOk(originMayWrite("POST", "https://app.example.test.evil.example", [APP]), "exact origins only");

  t.equal(devModeRefusal({ method: "POST", authority: "localhost:8080", origin: undefined }, []), undefined, "curl on this machine");
  t.match(devModeRefusal({ method: "GET", authority: "rebound.evil.example:8080", origin: undefined }, []), /host "rebound\.evil\.example:8080" is not a loopback name/);
  t.match(devModeRefusal({ method: "POST", authority: "127.0.0.1:8080", origin: "https://evil.example" }, []), /origin "https:\/\/evil\.example" may not change anything/);
});

t.test("CORS: preflights and answer headers for listed origins only", async (t) => {
  t.ok(isPreflight("OPTIONS", APP, "POST"));
  t.notOk(isPreflight("OPTIONS", APP, undefined), "OPTIONS without Access-Control-Request-Method is not a preflight");
  t.notOk(isPreflight("OPTIONS", undefined, "POST"));
  const pre = preflightHeaders(APP, [APP])!;
  t.equal(pre["access-control-allow-origin"], APP);
  t.match(pre["access-control-allow-methods"], /\bPATCH\b.*\bDELETE\b/);
  for (const h of ["authorization", "content-type", "if-match", "idempotency-key", "connect-protocol-version", "connect-timeout-ms", "x-grpc-web", "grpc-timeout", "x-user-agent"]) {
    t.match(pre["access-control-allow-headers"], new RegExp(`(^|, )${h}(,|$)`), `allows ${h}`);
  }
  t.match(pre.vary, /^Origin\b/);
  t.equal(preflightHeaders("https://evil.example", [APP]), undefined, "no preflight answer for others");
  t.same(responseCorsHeaders(APP, [APP]), {
    vary: "Origin",
    "access-control-allow-origin": APP,
    "access-control-expose-headers": "etag, x-request-id, grpc-status, grpc-message, grpc-status-details-bin",
  });
  t.same(responseCorsHeaders("https://evil.example", [APP]), { vary: "Origin" }, "others: Vary only");
  t.same(responseCorsHeaders(undefined, [APP]), { vary: "Origin" }, "no Origin: Vary only");
});

t.test("CORS_ALLOWED_ORIGINS is parsed to origins; anything else is named", async (t) => {
  t.same(parseOrigins(""), []);
  t.same(parseOrigins(" https://App.Example.test/ , http://localhost:3000,https://x.example:443"), ["https://app.example.test", "http://localhost:3000", "https://x.example"]);
  for (const bad of ["*", "https://*.example.test", "app.example.test", "https://app.example.test/path", "ftp://app.example.test", "https://user@app.example.test", "https://app.example.test?x"]) {
    t.throws(() => parseOrigins(`${APP},${bad}`), { message: /is not an origin/ }, bad);
  }
});
