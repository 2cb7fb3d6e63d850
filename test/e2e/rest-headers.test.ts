import http from "node:http";
import http2 from "node:http2";
import t from "tap";
import { rawHttp1 } from "../support/raw-http1.js";
import { DATABASES, startTestServer, type Asserts, type TestServer } from "../support/server.js";

// HEAD answers like GET without a body (issue 13 item 9), and every REST
// answer carries the call's x-request-id, the caller's or a generated one
// (item 11), as gRPC and Connect answers do.

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const h1 = (port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> => rawHttp1(port, method, path, headers, body);

function h2(baseUrl: string, method: string, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const stream = session.request({ ":method": method, ":path": path });
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (headers = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      session.close();
      resolve({ status: Number(headers[":status"]), headers, body: Buffer.concat(chunks) });
    });
    stream.on("error", reject);
  });
}

async function behaviours(t: Asserts, s: TestServer) {
  const v = await s.clients.grpc.createVideo({ video: { title: "head" } });

  await t.test("HEAD /videos/{id}, /videos and /health answer like GET without a body, over HTTP/1.1 and HTTP/2", async (t) => {
    for (const path of [`/videos/${v.id}`, "/videos?page_size=1", "/health", "/health/ready"]) {
      for (const [proto, call] of [
        ["HTTP/1.1", (m: string) => h1(s.port, m, path)],
        ["HTTP/2", (m: string) => h2(s.baseUrl, m, path)],
      ] as const) {
        const get = await call("GET");
        const head = await call("HEAD");
        t.equal(head.status, get.status, `${proto} HEAD ${path}: the GET status (${get.status})`);
        t.equal(head.body.length, 0, `${proto} HEAD ${path}: no body`);
        t.equal(head.headers["content-length"], String(get.body.length), `${proto} HEAD ${path}: the GET body's content-length`);
        t.equal(head.headers["content-type"], get.headers["content-type"], `${proto} HEAD ${path}: the GET content-type`);
        if (path.startsWith("/videos/")) t.equal(head.headers.etag, `"${v.etag}"`, `${proto} HEAD ${path}: the ETag`);
      }
    }
    const missing = await h1(s.port, "HEAD", "/videos/00000000-0000-0000-0000-000000000000");
    t.same([missing.status, missing.body.length], [404, 0], "HEAD of an absent video: 404, no body");
    const post = await h1(s.port, "POST", `/videos/${v.id}`, { "content-type": "application/json" }, "{}");
    t.equal(post.status, 405);
    t.match(String(post.headers.allow), /\bHEAD\b/, "HEAD is listed in Allow where GET is");
  });

  await t.test("REST answers carry x-request-id: the caller's, or a generated one", async (t) => {
    const cases: [string, string, string, Record<string, string>, string?][] = [
      ["GET a video", "GET", `/videos/${v.id}`, {}],
      ["GET a list", "GET", "/videos", {}],
      ["PATCH", "PATCH", `/videos/${v.id}`, { "content-type": "application/json" }, '{"description":"d"}'],
      ["a handler's error (404)", "GET", "/videos/00000000-0000-0000-0000-000000000000", {}],
      ["a validation error (400)", "POST", "/videos", { "content-type": "application/json" }, '{"title":""}'],
      ["a refusal before the handler (bad JSON)", "POST", "/videos", { "content-type": "application/json" }, "{"],
      ["a streamed upload's refusal", "PUT", `/videos/${v.id}/content`, { "content-type": "text/plain" }, "x"],
    ];
    for (const [what, method, path, headers, body] of cases) {
      const echoed = await h1(s.port, method, path, { ...headers, "x-request-id": `rid-${what}` }, body);
      t.equal(echoed.headers["x-request-id"], `rid-${what}`, `${what} (${echoed.status}): the caller's id is echoed`);
      const generated = await h1(s.port, method, path, headers, body);
      t.match(generated.headers["x-request-id"], /^[0-9a-f-]{36}$/, `${what}: a generated id`);
    }
  });
}

for (const db of DATABASES) {
  t.test(`REST headers on ${db.kind}`, { skip: db.skip }, async (t) => {
    await behaviours(t, await startTestServer(t, { database: db.kind }));
  });
}
