import http from "node:http";
import http2 from "node:http2";
import t from "tap";
import { create, toBinary } from "@bufbuild/protobuf";
import { ListVideosRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { bearer, startSecuredServer } from "../support/jwt.js";
import { countVideos, startTestServer, type Asserts, type TestServer } from "../support/server.js";

// What a web page can make a browser do to the service (issue 12 item 4,
// issue 13 item 10). With auth off (loopback development): a JSON route takes
// JSON only (415 for the bodies a browser sends cross-site without a
// preflight), a Host that is not a loopback name is refused (DNS rebinding),
// and a foreign Origin may not change anything — over REST, Connect, gRPC-Web
// and gRPC. CORS is off by default; CORS_ALLOWED_ORIGINS turns it on for the
// origins it lists.

const APP = "https://app.example.test";
const EVIL = "https://evil.example";
const LIST = "/video.v1.VideoService/ListVideos";
const CREATE = "/video.v1.VideoService/CreateVideo";

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function h1(port: number, method: string, path: string, headers: Record<string, string>, body?: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers, agent: false, setHost: !("host" in headers) }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** A gRPC unary call over HTTP/2 with the given :authority; the status from headers or trailers. */
function grpcCall(baseUrl: string, authority: string, path: string, message: Uint8Array, extra: Record<string, string> = {}): Promise<{ grpcStatus: string | undefined; headers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    const stream = session.request({ ":method": "POST", ":path": path, ":authority": authority, "content-type": "application/grpc", te: "trailers", ...extra });
    let headers: http2.IncomingHttpHeaders = {};
    let status: string | undefined;
    stream.on("response", (h) => {
      headers = h;
      status = h["grpc-status"] as string | undefined;
    });
    stream.on("trailers", (tr) => (status ??= tr["grpc-status"] as string | undefined));
    stream.on("data", () => {});
    stream.on("end", () => {
      session.close();
      resolve({ grpcStatus: status, headers });
    });
    stream.on("error", reject);
    stream.end(frame);
  });
}

const LIST_MESSAGE = toBinary(ListVideosRequestSchema, create(ListVideosRequestSchema, { pageSize: 1 }));
const grpcWebFrame = () => {
  const frame = Buffer.alloc(5 + LIST_MESSAGE.length);
  frame.writeUInt32BE(LIST_MESSAGE.length, 1);
  frame.set(LIST_MESSAGE, 5);
  return frame;
};

/** The same read over REST, Connect, gRPC-Web (HTTP/1.1, Host header) and gRPC (HTTP/2, :authority). */
async function readEverywhere(s: TestServer, host: string, headers: Record<string, string> = {}) {
  const rest = await h1(s.port, "GET", "/videos?page_size=1", { host, ...headers });
  const connect = await h1(s.port, "POST", LIST, { host, "content-type": "application/json", ...headers }, "{}");
  const grpcWeb = await h1(s.port, "POST", LIST, { host, "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...headers }, grpcWebFrame());
  const grpc = await grpcCall(s.baseUrl, host, LIST, LIST_MESSAGE, headers);
  return { rest, connect, grpcWeb, grpc };
}

t.test("auth off (loopback development)", async (dev) => {
  const devServer = await startTestServer(dev, { database: "pglite" });
await dev.test("auth off: JSON routes answer 415 to what a browser sends cross-site without a preflight; nothing is created", async (t) => {
  const s = devServer;
  const v = await s.clients.grpc.createVideo({ video: { title: "target" } });
  const before = await countVideos(s.ctx);
  const json = '{"title":"csrf"}';
  for (const contentType of ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", undefined]) {
    const headers: Record<string, string> = contentType ? { "content-type": contentType } : {};
    const post = await h1(s.port, "POST", "/videos", headers, json);
    t.equal(post.status, 415, `REST POST /videos with ${contentType ?? "no content-type"}: 415 (${post.body.slice(0, 120)})`);
    t.match(post.body, /"status":"INVALID_ARGUMENT"/);
    const patch = await h1(s.port, "PATCH", `/videos/${v.id}`, headers, json);
    t.equal(patch.status, 415, `REST PATCH with ${contentType ?? "no content-type"}: 415`);
    const connect = await h1(s.port, "POST", CREATE, headers, '{"video":{"title":"csrf"}}');
    t.equal(connect.status, 415, `Connect CreateVideo with ${contentType ?? "no content-type"}: 415`);
  }
  t.equal(await countVideos(s.ctx), before, "no video was created");
  t.equal((await s.clients.grpc.getVideo({ id: v.id })).title, "target", "none was changed");
  const upload = await h1(s.port, "PUT", `/videos/${v.id}/content`, { "content-type": "video/mp4" }, Buffer.from("not really a video"));
  t.equal(upload.status, 200, `the streamed upload route keeps its raw video content type (${upload.body.slice(0, 120)})`);
});

await dev.test("auth off: a Host that is not a loopback name is refused over every protocol (DNS rebinding)", async (t) => {
  const s = devServer;
  for (const host of [`localhost:${s.port}`, `127.0.0.1:${s.port}`, `[::1]:${s.port}`]) {
    const r = await readEverywhere(s, host);
    t.same([r.rest.status, r.connect.status, r.grpcWeb.headers["grpc-status"] ?? "0", r.grpc.grpcStatus], [200, 200, "0", "0"], `${host}: served`);
  }
  for (const host of [`rebound.evil.example:${s.port}`, "127.0.0.1.nip.io", `localhost.evil.example:${s.port}`]) {
    const r = await readEverywhere(s, host);
    t.equal(r.rest.status, 403, `${host}: REST 403`);
    t.match(JSON.parse(r.rest.body).error, { status: "PERMISSION_DENIED", message: /not a loopback name/ }, `${host}: REST says why`);
    t.ok(r.rest.headers["x-request-id"], `${host}: REST answer has a request id`);
    t.equal(r.connect.status, 403, `${host}: Connect 403`);
    t.match(r.connect.body, /"code":"permission_denied"/, `${host}: Connect error body`);
    t.equal(r.grpcWeb.headers["grpc-status"], "7", `${host}: gRPC-Web PERMISSION_DENIED`);
    t.equal(r.grpc.grpcStatus, "7", `${host}: gRPC PERMISSION_DENIED`);
    t.equal((await h1(s.port, "GET", "/health", { host })).status, 403, `${host}: /health too`);
  }
  const before = await countVideos(s.ctx);
  t.equal((await h1(s.port, "POST", "/videos", { host: "rebound.evil.example", "content-type": "application/json" }, '{"title":"x"}')).status, 403, "a rebound write");
  t.equal(await countVideos(s.ctx), before, "creates nothing");
});

await dev.test("auth off: a foreign Origin may read (the browser hides the answer) but not change anything", async (t) => {
  const s = devServer;
  const before = await countVideos(s.ctx);
  const origin = { origin: EVIL };
  const post = await h1(s.port, "POST", "/videos", { ...origin, "content-type": "application/json" }, '{"title":"x"}');
  t.equal(post.status, 403, "REST POST from a foreign page: 403");
  t.match(JSON.parse(post.body).error?.message, /origin "https:\/\/evil\.example" may not change anything/, "it says why");
  t.equal((await h1(s.port, "POST", CREATE, { ...origin, "content-type": "application/json" }, '{"video":{"title":"x"}}')).status, 403, "Connect CreateVideo: 403");
  const web = await h1(s.port, "POST", LIST, { ...origin, "content-type": "application/grpc-web+proto" }, grpcWebFrame());
  t.equal(web.headers["grpc-status"], "7", "gRPC-Web (every RPC is a POST): PERMISSION_DENIED");
  t.equal((await grpcCall(s.baseUrl, `127.0.0.1:${s.port}`, LIST, LIST_MESSAGE, origin)).grpcStatus, "7", "gRPC with an Origin: PERMISSION_DENIED");
  t.equal((await h1(s.port, "POST", "/videos", { origin: "null", "content-type": "application/json" }, '{"title":"x"}')).status, 403, 'Origin "null": 403');
  t.equal(await countVideos(s.ctx), before, "nothing created");
  const get = await h1(s.port, "GET", "/videos", origin);
  t.equal(get.status, 200, "a GET is answered");
  t.equal(get.headers["access-control-allow-origin"], undefined, "without CORS headers: the page cannot read it");
  const local = await h1(s.port, "POST", "/videos", { origin: "http://localhost:3000", "content-type": "application/json" }, '{"title":"from my own page"}');
  t.equal(local.status, 200, "a page on this machine may write");
  t.equal((await h1(s.port, "POST", "/videos", { "content-type": "application/json" }, '{"title":"curl"}')).status, 200, "no Origin (curl, SDKs): served");
});

await dev.test("CORS is off by default: no CORS headers, preflights are not answered", async (t) => {
  const s = devServer;
  const get = await h1(s.port, "GET", "/videos", { origin: "http://localhost:3000" });
  t.equal(get.headers["access-control-allow-origin"], undefined);
  t.notMatch(String(get.headers.vary ?? ""), /origin/i, "no Vary: Origin (Vary: accept-encoding is compression's)");
  const pre = await h1(s.port, "OPTIONS", "/videos", { origin: APP, "access-control-request-method": "POST" });
  t.equal(pre.headers["access-control-allow-origin"], undefined, `preflight: no CORS answer (${pre.status})`);
});

});

t.test("CORS_ALLOWED_ORIGINS: preflights answered and answers readable for the listed origins only, over REST, Connect and gRPC-Web", async (t) => {
  const s = await startTestServer(t, { database: "pglite", env: { CORS_ALLOWED_ORIGINS: `${APP},http://localhost:5173` } });
  const v = await s.clients.grpc.createVideo({ video: { title: "cors" } });
  for (const [what, path, method, requestHeaders] of [
    ["REST PATCH", `/videos/${v.id}`, "PATCH", "content-type, if-match, authorization"],
    ["Connect", CREATE, "POST", "content-type, connect-protocol-version, connect-timeout-ms"],
    ["gRPC-Web", LIST, "POST", "content-type, x-grpc-web, x-user-agent, grpc-timeout"],
  ]) {
    const pre = await h1(s.port, "OPTIONS", path, { origin: APP, "access-control-request-method": method, "access-control-request-headers": requestHeaders });
    t.equal(pre.status, 204, `${what} preflight: 204`);
    t.equal(pre.headers["access-control-allow-origin"], APP, `${what} preflight: the origin is allowed`);
    t.match(pre.headers["access-control-allow-methods"], new RegExp(`\\b${method}\\b`), `${what} preflight: ${method} allowed`);
    for (const h of requestHeaders.split(", ")) t.match(pre.headers["access-control-allow-headers"], new RegExp(`\\b${h}\\b`), `${what} preflight: ${h} allowed`);
    t.match(pre.headers.vary, /Origin/, `${what} preflight: Vary: Origin`);
    const other = await h1(s.port, "OPTIONS", path, { origin: EVIL, "access-control-request-method": method });
    t.equal(other.status, 403, `${what} preflight from another origin: 403`);
    t.equal(other.headers["access-control-allow-origin"], undefined, `${what} preflight from another origin: not allowed`);
  }
  const expose = "etag, x-request-id, grpc-status, grpc-message, grpc-status-details-bin";
  const calls: [string, () => Promise<Answer>][] = [
    ["REST GET", () => h1(s.port, "GET", `/videos/${v.id}`, { origin: APP })],
    ["REST POST", () => h1(s.port, "POST", "/videos", { origin: APP, "content-type": "application/json" }, '{"title":"from the app"}')],
    ["REST error", () => h1(s.port, "GET", "/videos/00000000-0000-0000-0000-000000000000", { origin: APP })],
    ["Connect", () => h1(s.port, "POST", LIST, { origin: APP, "content-type": "application/json" }, "{}")],
    ["gRPC-Web", () => h1(s.port, "POST", LIST, { origin: APP, "content-type": "application/grpc-web+proto", "x-grpc-web": "1" }, grpcWebFrame())],
  ];
  for (const [what, call] of calls) {
    const r = await call();
    t.equal(r.headers["access-control-allow-origin"], APP, `${what} (${r.status}): allowed origin`);
    t.equal(r.headers["access-control-expose-headers"], expose, `${what}: exposes etag, x-request-id and the gRPC-Web trailers`);
    t.match(r.headers.vary, /Origin/, `${what}: Vary: Origin`);
    t.equal(r.headers["access-control-allow-credentials"], undefined, `${what}: no credentials (bearer tokens, not cookies)`);
  }
  const other = await h1(s.port, "GET", `/videos/${v.id}`, { origin: EVIL });
  t.equal(other.headers["access-control-allow-origin"], undefined, "another origin: no allow-origin");
  t.match(other.headers.vary, /Origin/, "another origin: still Vary: Origin");
});

t.test("auth on (production): Host and Origin are not the service's business, the bearer token is", async (t) => {
  const sec = await startSecuredServer(t, { database: "pglite" });
  const token = bearer(await sec.token("editor-e", ["editor"]));
  const post = await h1(sec.s.port, "POST", "/videos", { host: "videos.example.com", origin: EVIL, "content-type": "application/json", ...token }, '{"title":"x"}');
  t.equal(post.status, 200, `any Host and Origin with a valid token (${post.body.slice(0, 120)})`);
  const anonymous = await h1(sec.s.port, "POST", "/videos", { host: "videos.example.com", origin: EVIL, "content-type": "application/json" }, '{"title":"x"}');
  t.equal(anonymous.status, 401, "without one: 401");
  const plain = await h1(sec.s.port, "POST", "/videos", { "content-type": "text/plain", ...token }, '{"title":"x"}');
  t.equal(plain.status, 415, "JSON routes still take JSON only");
});
