import t from "tap";
import { BlockList } from "node:net";
import { clientOf, parseTrustedProxies, publicBaseUrl } from "../../server/transport/forwarded.js";

// TRUSTED_PROXIES: forwarded headers are believed only as far as trusted
// proxies wrote them (CONTRACT.md §4).

const trusted = (raw: string): BlockList => {
  const parsed = parseTrustedProxies(raw);
  if ("invalid" in parsed) throw new Error(parsed.invalid);
  return parsed;
};
const proxies = trusted("10.0.0.0/8, 127.0.0.1, fd00::/8");

t.test("TRUSTED_PROXIES parsing", async (t) => {
  t.ok(trusted("10.0.0.0/8,192.168.1.7,::1,2001:db8::/32").check("10.2.3.4"));
  t.same(parseTrustedProxies("10.0.0.0/33"), { invalid: "10.0.0.0/33" }, "prefix too long");
  t.same(parseTrustedProxies("10.0.0.0/8, nginx"), { invalid: "nginx" }, "a host name is not an address");
  t.same(parseTrustedProxies("10.0.0.1/8/9"), { invalid: "10.0.0.1/8/9" });
  t.same(parseTrustedProxies("::1/abc"), { invalid: "::1/abc" });
});

t.test("no trusted proxies: the peer is the client and forwarded headers are ignored", async (t) => {
  const h = { forwarded: "for=198.51.100.1;proto=https;host=evil.example", xForwardedFor: "198.51.100.2", xForwardedHost: "evil.example" };
  t.same(clientOf("203.0.113.9", h, undefined), { address: "203.0.113.9" });
  t.same(clientOf("::ffff:203.0.113.9", {}, undefined), { address: "203.0.113.9" }, "IPv4-mapped IPv6 as IPv4");
});

t.test("an untrusted peer's forwarded headers are ignored (a client spoofing them directly)", async (t) => {
  t.same(clientOf("203.0.113.9", { xForwardedFor: "127.0.0.1", xForwardedProto: "https", xForwardedHost: "evil.example" }, proxies), { address: "203.0.113.9" });
  t.same(clientOf("203.0.113.9", { forwarded: "for=10.0.0.1;host=evil.example" }, proxies), { address: "203.0.113.9" });
});

t.test("X-Forwarded-For from a trusted proxy: the nearest untrusted hop is the client", async (t) => {
  t.same(clientOf("10.0.0.5", { xForwardedFor: "198.51.100.7" }, proxies), { address: "198.51.100.7", proto: undefined, host: undefined });
  // The client wrote "6.6.6.6, 127.0.0.1"; the proxy appended the address it saw.
  t.equal(clientOf("10.0.0.5", { xForwardedFor: "6.6.6.6, 127.0.0.1, 198.51.100.7" }, proxies).address, "198.51.100.7", "spoofed hops to the left are never reached");
  t.equal(clientOf("10.0.0.5", { xForwardedFor: "198.51.100.7, 10.1.1.1" }, proxies).address, "198.51.100.7", "a chain of trusted proxies is walked through");
  t.equal(clientOf("10.0.0.5", { xForwardedFor: "10.9.9.9, 10.1.1.1" }, proxies).address, "10.9.9.9", "all trusted: the farthest");
  t.equal(clientOf("10.0.0.5", { xForwardedFor: "2001:db8::7" }, proxies).address, "2001:db8::7");
  t.equal(clientOf("10.0.0.5", { xForwardedFor: "garbage, 198.51.100.7" }, proxies).address, "198.51.100.7");
  t.equal(clientOf("10.0.0.5", { xForwardedFor: "198.51.100.7, garbage" }, proxies).address, "10.0.0.5", "an unreadable hop stops at the proxy that wrote it");
  t.equal(clientOf("10.0.0.5", {}, proxies).address, "10.0.0.5", "no header: the peer");
  const c = clientOf("10.0.0.5", { xForwardedFor: "198.51.100.7", xForwardedProto: "http, https", xForwardedHost: "videos.example.com" }, proxies);
  t.same([c.proto, c.host], ["https", "videos.example.com"], "proto and host: the nearest proxy's value");
  const bad = clientOf("10.0.0.5", { xForwardedProto: "gopher", xForwardedHost: "evil.example/path?x" }, proxies);
  t.same([bad.proto, bad.host], [undefined, undefined], "an unknown scheme or a host with a path is ignored");
});

t.test("Forwarded (RFC 7239) from a trusted proxy", async (t) => {
  t.same(clientOf("127.0.0.1", { forwarded: 'for="[2001:db8:cafe::17]:4711";proto=https;host=videos.example.com' }, proxies), {
    address: "2001:db8:cafe::17",
    proto: "https",
    host: "videos.example.com",
  });
  t.same(clientOf("127.0.0.1", { forwarded: "for=192.0.2.60:8080;proto=http;by=203.0.113.43" }, proxies).address, "192.0.2.60");
  // Two hops: the outer proxy (10.1.1.1, trusted) saw the client over https.
  const two = clientOf("10.0.0.5", { forwarded: "for=198.51.100.7;proto=https;host=videos.example.com, for=10.1.1.1;proto=http;host=inner" }, proxies);
  t.same(two, { address: "198.51.100.7", proto: "https", host: "videos.example.com" }, "the outermost trusted hop's scheme and host");
  const spoof = clientOf("10.0.0.5", { forwarded: "for=127.0.0.1;host=evil.example, for=198.51.100.7;host=videos.example.com" }, proxies);
  t.same(spoof, { address: "198.51.100.7", proto: undefined, host: "videos.example.com" }, "a hop written by the client is not believed");
  t.equal(clientOf("10.0.0.5", { forwarded: "for=unknown" }, proxies).address, "unknown", "an RFC 7239 identifier is kept");
  t.equal(clientOf("10.0.0.5", { forwarded: 'for="_gazonk"' }, proxies).address, "_gazonk");
  t.equal(clientOf("10.0.0.5", { forwarded: 'for="bad\\"value, x"' }, proxies).address, "10.0.0.5", "quoted commas do not split; a bad node is not believed");
  t.equal(clientOf("10.0.0.5", { forwarded: "for=198.51.100.7", xForwardedFor: "203.0.113.1" }, proxies).address, "198.51.100.7", "Forwarded wins over X-Forwarded-For");
});

t.test("the public base URL behind a trusted proxy", async (t) => {
  t.equal(publicBaseUrl({ address: "1.2.3.4" }, "svc:8080"), undefined, "nothing forwarded");
  t.equal(publicBaseUrl({ address: "1.2.3.4", proto: "https", host: "videos.example.com" }, "svc:8080"), "https://videos.example.com");
  t.equal(publicBaseUrl({ address: "1.2.3.4", proto: "https" }, "videos.example.com"), "https://videos.example.com", "the Host header fills in");
  t.equal(publicBaseUrl({ address: "1.2.3.4", host: "videos.example.com:8443" }, undefined), "http://videos.example.com:8443");
  t.equal(publicBaseUrl({ address: "1.2.3.4", proto: "https" }, "bad host/"), undefined, "an unusable Host");
});
