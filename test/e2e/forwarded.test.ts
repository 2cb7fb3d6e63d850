import t from "tap";
import { createClient } from "@connectrpc/connect";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { captureLogs } from "../support/jwt.js";
import { startTestServer, type TestServer } from "../support/server.js";

// Behind a gateway (CONTRACT.md §4 TRUSTED_PROXIES): forwarded headers from
// a trusted proxy give the client's address (logged on every call line) and
// the public scheme and host the filesystem store's signed URLs point at;
// from anyone else they are ignored. The test client connects from
// 127.0.0.1, so it plays the proxy when 127.0.0.1 is trusted. PGlite: a
// transport rule.

const GATEWAY = { "x-forwarded-for": "198.51.100.7", "x-forwarded-proto": "https", "x-forwarded-host": "videos.example.com" };

/** The signed URLs CreateUpload returns over each protocol, with these request headers. */
async function uploadUrls(s: TestServer, headers: Record<string, string>, sizeBytes = 100): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  const urls = (u: { url: string; parts: { url: string }[] }) => (u.url ? [u.url] : u.parts.map((p) => p.url));
  for (const [name, transport] of Object.entries(s.transports)) {
    const client = createClient(VideoService, transport);
    const v = await client.createVideo({ video: { title: "forwarded" } });
    out[name] = urls(await client.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(sizeBytes) }, { headers }));
  }
  const v = await s.clients.connect.createVideo({ video: { title: "forwarded" } });
  const res = await s.clients.rest("POST", `/videos/${v.id}/uploads`, { json: { contentType: "video/mp4", sizeBytes: String(sizeBytes) }, headers });
  out.rest = urls({ url: res.json?.url ?? "", parts: res.json?.parts ?? [] });
  return out;
}

t.test("a trusted proxy's X-Forwarded-Proto/Host make the signed upload URLs; its X-Forwarded-For is the logged client", async (t) => {
  const s = await startTestServer(t, { database: "pglite", env: { TRUSTED_PROXIES: "127.0.0.1, ::1", UPLOAD_MULTIPART_THRESHOLD_MB: "5", UPLOAD_PART_SIZE_MB: "5" } });
  const logs = captureLogs(s.ctx.logger, "info");
  for (const size of [100, 6 * 1024 * 1024]) {
    for (const [name, urls] of Object.entries(await uploadUrls(s, GATEWAY, size))) {
      t.ok(urls.length > 0 && urls.every((u) => u.startsWith("https://videos.example.com/_objects/videos/")), `${name}, ${size} bytes: ${urls[0]}`);
    }
  }
  // The URL is signed over its path and query, not its host: the gateway passes it through as is.
  const [url] = (await uploadUrls(s, GATEWAY)).rest;
  const put = await fetch(url.replace("https://videos.example.com", s.baseUrl), { method: "PUT", headers: { "content-type": "video/mp4" }, body: "x".repeat(100) });
  t.equal(put.status, 200, "the URL works through the gateway");

  // Forwarded (RFC 7239) is read too.
  const forwarded = await uploadUrls(s, { forwarded: 'for="[2001:db8::9]";proto=https;host=media.example.org' });
  t.ok(Object.values(forwarded).every((u) => u[0].startsWith("https://media.example.org/_objects/")), "Forwarded: proto and host");

  const calls = logs.records().filter((r) => r.message === "call");
  const createUploads = calls.filter((r) => r.procedure === "video.v1.VideoService/CreateUpload");
  t.equal(createUploads.length, 2 * 5 + 5 + 5, "every CreateUpload logged");
  t.equal(createUploads.filter((r) => r.client_address === "198.51.100.7").length, 2 * 5 + 5, "X-Forwarded-For: the client's address");
  t.equal(createUploads.filter((r) => r.client_address === "2001:db8::9").length, 5, "Forwarded for=");
  t.ok(calls.every((r) => typeof r.client_address === "string" && r.client_address !== ""), "every call line has client_address");
  t.ok(calls.some((r) => r.client_address === "127.0.0.1"), "calls without forwarded headers: the peer");

  // Refused before the interceptors (REST route refusal, connect-es body refusal): logged alike.
  await s.clients.rest("GET", "/no/such/route", { headers: GATEWAY });
  await fetch(`${s.baseUrl}/video.v1.VideoService/GetVideo`, { method: "POST", headers: { ...GATEWAY, "content-type": "application/proto" }, body: new Uint8Array([0xff, 0xff]) });
  const refused = logs.records().filter((r) => r.message === "call").slice(-2);
  t.same(refused.map((r) => [r.procedure, r.client_address]), [["unmatched", "198.51.100.7"], ["video.v1.VideoService/GetVideo", "198.51.100.7"]]);
});

t.test("without TRUSTED_PROXIES forwarded headers are ignored: a client cannot spoof its address or the URLs", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  const logs = captureLogs(s.ctx.logger, "info");
  for (const [name, urls] of Object.entries(await uploadUrls(s, GATEWAY))) {
    t.ok(urls[0].startsWith(`${s.baseUrl}/_objects/`), `${name}: the service's own address`);
  }
  const calls = logs.records().filter((r) => r.message === "call");
  t.ok(calls.length > 0 && calls.every((r) => r.client_address === "127.0.0.1"), "the connection's address is logged");
});

t.test("PUBLIC_BASE_URL wins over forwarded headers", async (t) => {
  const s = await startTestServer(t, { database: "pglite", env: { TRUSTED_PROXIES: "127.0.0.0/8", PUBLIC_BASE_URL: "https://cdn.example.net/vms" } });
  for (const [name, urls] of Object.entries(await uploadUrls(s, GATEWAY))) {
    t.ok(urls[0].startsWith("https://cdn.example.net/vms/_objects/"), `${name}: ${urls[0]}`);
  }
});
