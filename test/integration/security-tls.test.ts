import https from "node:https";
import http2 from "node:http2";
import type { ConnectionOptions, TLSSocket } from "node:tls";
import t from "tap";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { HealthCheckRequestSchema, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus } from "../../gen/health/v1/health_pb.js";
import { CreateVideoRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { VideoSchema } from "../../gen/video/v1/video_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { bearer, startSecuredServer } from "../support/jwt.js";
import { makePki } from "../support/tls.js";

// TLS on the one port (CONTRACT.md §2, issue: security): TLS_CERT_FILE and
// TLS_KEY_FILE make the service speak TLS with ALPN h2 and http/1.1; REST
// works over both, gRPC works with Connect's transport and with
// @grpc/grpc-js, each trusting the test CA; a client that does not trust it
// gets no answer at all.

interface HttpsAnswer {
  status: number;
  httpVersion: string;
  alpn: string | false;
  body: string;
}

/** One HTTP/1.1 request over TLS; alpn: what to offer (undefined: no ALPN extension at all). */
function https1(port: number, path: string, options: { ca?: Buffer; alpn?: string[]; headers?: Record<string, string>; method?: string; body?: string }): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    // https hands ALPNProtocols to tls.connect; its RequestOptions type does not list it.
    const request: https.RequestOptions & Pick<ConnectionOptions, "ALPNProtocols"> = {
      host: "127.0.0.1",
      port,
      path,
      method: options.method ?? "GET",
      headers: { ...options.headers, ...(options.body ? { "content-type": "application/json" } : {}) },
      ca: options.ca,
      ALPNProtocols: options.alpn,
      agent: false,
    };
    const req = https.request(
      request,
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () =>
          resolve({ status: res.statusCode!, httpVersion: res.httpVersion, alpn: (res.socket as TLSSocket).alpnProtocol ?? false, body }),
        );
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/** One HTTP/2 request over TLS (ALPN h2). */
async function https2(port: number, path: string, options: { ca?: Buffer; headers?: Record<string, string>; method?: string; body?: string }) {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: options.ca });
  try {
    await new Promise<void>((resolve, reject) => {
      session.once("connect", () => resolve());
      session.once("error", reject);
    });
    const alpn = session.alpnProtocol;
    const stream = session.request({
      ":method": options.method ?? "GET",
      ":path": path,
      ...options.headers,
      ...(options.body ? { "content-type": "application/json" } : {}),
    });
    stream.end(options.body);
    const status = await new Promise<number>((resolve, reject) => {
      stream.once("response", (h) => resolve(Number(h[":status"])));
      stream.once("error", reject);
    });
    let body = "";
    stream.setEncoding("utf8");
    for await (const chunk of stream) body += chunk;
    return { status, alpn, body };
  } finally {
    session.close();
  }
}

function grpcJsUnary(client: grpc.Client, path: string, request: Uint8Array, metadata: Record<string, string> = {}): Promise<Buffer> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest<Uint8Array, Buffer>(
      path,
      (b) => Buffer.from(b),
      (b) => b,
      request,
      md,
      { deadline: Date.now() + 10_000 },
      (err, value) => (err ? reject(err) : resolve(value!)),
    ),
  );
}

t.test("TLS_CERT_FILE / TLS_KEY_FILE", async (t) => {
  const pki = await makePki(t);
  const sec = await startSecuredServer(t, { env: { TLS_CERT_FILE: pki.certFile, TLS_KEY_FILE: pki.keyFile } });
  const port = sec.s.port;

  await t.test("REST over HTTP/1.1 and HTTP/2 (ALPN), gRPC with Connect and @grpc/grpc-js", async (t) => {
    const token = await sec.token("tls-user", ["editor"]);
    const auth = bearer(token);

    // REST, HTTP/1.1: offered through ALPN, and by a client that sends no ALPN at all.
    const created = await https1(port, "/videos", { ca: pki.ca, alpn: ["http/1.1"], headers: { ...auth, "content-type": "application/json" }, method: "POST", body: JSON.stringify({ title: "over TLS" }) });
    t.equal(created.status, 200, `POST /videos over TLS, HTTP/1.1 (${created.body.slice(0, 200)})`);
    t.equal(created.alpn, "http/1.1", "ALPN chose http/1.1");
    t.equal(created.httpVersion, "1.1");
    const video = JSON.parse(created.body) as { id: string; ownerId: string };
    t.equal(video.ownerId, "tls-user", "the bearer token went through");
    const noAlpn = await https1(port, `/videos/${video.id}`, { ca: pki.ca, headers: auth });
    t.equal(noAlpn.status, 200, "a client without ALPN gets HTTP/1.1");
    t.equal(noAlpn.httpVersion, "1.1");
    t.equal(noAlpn.alpn, false, "no protocol was negotiated");
    const unauth = await https1(port, `/videos/${video.id}`, { ca: pki.ca, alpn: ["http/1.1"] });
    t.equal(unauth.status, 401, "over TLS, still no token → 401");
    const health = await https1(port, "/health/ready", { ca: pki.ca, alpn: ["http/1.1"] });
    t.equal(health.status, 200, "GET /health/ready over TLS, no token");

    // REST, HTTP/2.
    const h2 = await https2(port, `/videos/${video.id}`, { ca: pki.ca, headers: auth });
    t.equal(h2.alpn, "h2", "ALPN chose h2");
    t.equal(h2.status, 200, "GET /videos/{id} over TLS, HTTP/2");
    t.equal((JSON.parse(h2.body) as { id: string }).id, video.id);
    const h2post = await https2(port, "/videos", { ca: pki.ca, headers: { ...auth, "content-type": "application/json" }, method: "POST", body: JSON.stringify({ title: "h2" }) });
    t.equal(h2post.status, 200, "POST /videos over TLS, HTTP/2");

    // gRPC with Connect's transport, trusting the test CA.
    const sessions = new Http2SessionManager(`https://127.0.0.1:${port}`, undefined, { ca: pki.ca });
    t.teardown(() => sessions.abort());
    const connect = createClient(VideoService, createGrpcTransport({ baseUrl: `https://127.0.0.1:${port}`, sessionManager: sessions }));
    const viaConnect = await connect.createVideo({ video: { title: "connect over TLS" } }, { headers: auth });
    t.equal(viaConnect.ownerId, "tls-user", "gRPC (connect-node) CreateVideo over TLS");
    t.equal((await connect.getVideo({ id: video.id }, { headers: auth })).id, video.id, "gRPC (connect-node) GetVideo over TLS");
    await t.rejects(connect.getVideo({ id: video.id }), { code: Code.Unauthenticated }, "gRPC over TLS without a token → UNAUTHENTICATED");

    // gRPC with @grpc/grpc-js, createSsl(ca).
    const grpcJs = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(pki.ca));
    t.teardown(() => grpcJs.close());
    const bytes = await grpcJsUnary(
      grpcJs,
      "/video.v1.VideoService/CreateVideo",
      toBinary(CreateVideoRequestSchema, create(CreateVideoRequestSchema, { video: { title: "grpc-js over TLS" } })),
      auth,
    );
    const viaGrpcJs = fromBinary(VideoSchema, bytes);
    t.equal(viaGrpcJs.title, "grpc-js over TLS", "gRPC (@grpc/grpc-js) CreateVideo over TLS");
    t.equal(viaGrpcJs.ownerId, "tls-user");
    const hc = fromBinary(
      HealthCheckResponseSchema,
      await grpcJsUnary(grpcJs, "/grpc.health.v1.Health/Check", toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, {}))),
    );
    t.equal(hc.status, HealthCheckResponse_ServingStatus.SERVING, "grpc.health.v1.Health/Check over TLS, no token");
  });

  await t.test("a client that does not trust the CA gets nothing", async (t) => {
    const auth = bearer(await sec.token("tls-user", ["editor"]));
    const untrusted = /UNABLE_TO_VERIFY|SELF_SIGNED|unable to verify|self.signed|certificate/i;

    for (const [name, ca] of [
      ["the system roots only", undefined],
      ["an unrelated CA", pki.otherCa],
    ] as const) {
      await t.rejects(https1(port, "/health", { ca, alpn: ["http/1.1"] }), { message: untrusted }, `HTTPS/1.1 trusting ${name}`);
      await t.rejects(https2(port, "/health", { ca }), { message: untrusted }, `HTTP/2 trusting ${name}`);

      const sessions = new Http2SessionManager(`https://127.0.0.1:${port}`, undefined, ca ? { ca } : {});
      t.teardown(() => sessions.abort());
      const connect = createClient(VideoService, createGrpcTransport({ baseUrl: `https://127.0.0.1:${port}`, sessionManager: sessions }));
      const err = await connect.listVideos({}, { headers: auth }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      t.ok(err, `gRPC (connect-node) trusting ${name} fails`);
      t.match(err?.message ?? "", untrusted, `gRPC (connect-node) trusting ${name}: the certificate is not trusted (${err?.message})`);

      const grpcJs = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(ca ?? null));
      t.teardown(() => grpcJs.close());
      const e = await grpcJsUnary(grpcJs, "/grpc.health.v1.Health/Check", new Uint8Array()).then(
        () => undefined,
        (x: grpc.ServiceError) => x,
      );
      t.equal(e?.code, grpc.status.UNAVAILABLE, `gRPC (@grpc/grpc-js) trusting ${name}: UNAVAILABLE`);
      t.match(e?.details ?? "", untrusted, `gRPC (@grpc/grpc-js) trusting ${name}: the certificate is not trusted (${e?.details})`);
    }

    // And cleartext to the TLS port is not served either.
    const plain = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.status,
      () => "failed",
    );
    t.equal(plain, "failed", "cleartext HTTP/1.1 to the TLS port gets no answer");
  });
});
