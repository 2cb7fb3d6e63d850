import t from "tap";
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { Health } from "../../gen/health/v1/health_pb.js";
import { Video_State } from "../../gen/video/v1/video_pb.js";
import { UploadVideoContentRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { poll } from "../support/pubsub.js";
import { expectCode, firstMessage, startTestServer, type TestServer } from "../support/server.js";

// A call's deadline holds while its body is still arriving, and the
// unauthenticated Health/Watch streams are bounded per process.

interface RawAnswer {
  status: number;
  grpcStatus: string | undefined;
  ms: number;
}

/** Sends the headers and `body`, then nothing more (the body never ends), and waits for the answer. */
function stalledCall(s: TestServer, headers: http2.OutgoingHttpHeaders, body: Uint8Array): Promise<RawAnswer> {
  const client = http2.connect(s.baseUrl);
  client.on("error", () => {});
  const started = Date.now();
  return new Promise<RawAnswer>((resolve) => {
    const req = client.request({ ":method": "POST", te: "trailers", ...headers });
    let status = 0;
    let grpcStatus: string | undefined;
    // The answer is complete at its trailers (or its end): the stream itself
    // stays open while this side's body does.
    const answered = () => resolve({ status, grpcStatus, ms: Date.now() - started });
    req.on("response", (h) => {
      status = Number(h[":status"]);
      grpcStatus = h["grpc-status"] as string | undefined;
    });
    req.on("trailers", (h) => (grpcStatus = h["grpc-status"] as string | undefined));
    req.on("data", () => {});
    req.on("end", answered);
    req.on("error", () => {});
    req.on("close", answered);
    req.write(body);
    // Bounded: a server that never answers fails the test instead of hanging it.
    setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 8000).unref();
  }).finally(() => client.destroy());
}

const grpcFrame = (message: Uint8Array) => {
  const f = Buffer.alloc(5 + message.length);
  f.writeUInt32BE(message.length, 1);
  f.set(message, 5);
  return f;
};

t.test("a deadline holds while the request body is still arriving", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });

  t.test("gRPC unary: a message cut short ends with DEADLINE_EXCEEDED at grpc-timeout", async (t) => {
    const partial = grpcFrame(new Uint8Array(40)).subarray(0, 12);
    const a = await stalledCall(s, { ":path": "/video.v1.VideoService/GetVideo", "content-type": "application/grpc", "grpc-timeout": "1S" }, partial);
    t.equal(a.grpcStatus, String(Code.DeadlineExceeded), `grpc-status ${a.grpcStatus} after ${a.ms} ms`);
    t.ok(a.ms < 4000, `answered after ${a.ms} ms`);
  });

  t.test("gRPC client streaming: an upload whose client stops sending ends with DEADLINE_EXCEEDED at grpc-timeout", async (t) => {
    const video = await s.clients.grpc.createVideo({ video: { title: "stalled upload" } });
    const first = toBinary(UploadVideoContentRequestSchema, create(UploadVideoContentRequestSchema, { data: { case: "metadata", value: { id: video.id, contentType: "video/mp4" } } }));
    const a = await stalledCall(s, { ":path": "/video.v1.VideoService/UploadVideoContent", "content-type": "application/grpc", "grpc-timeout": "1S" }, grpcFrame(first));
    t.equal(a.grpcStatus, String(Code.DeadlineExceeded), `grpc-status ${a.grpcStatus} after ${a.ms} ms`);
    t.ok(a.ms < 4000, `answered after ${a.ms} ms`);
  });

  t.test("Connect unary: a JSON body cut short ends with 504 deadline_exceeded at connect-timeout-ms", async (t) => {
    const a = await stalledCall(
      s,
      { ":path": "/video.v1.VideoService/GetVideo", "content-type": "application/json", "connect-protocol-version": "1", "connect-timeout-ms": "1000" },
      Buffer.from('{"id":"'),
    );
    t.equal(a.status, 504, `HTTP status after ${a.ms} ms`);
    t.ok(a.ms < 4000, `answered after ${a.ms} ms`);
  });
});

t.test("an upload whose client closes its connection (TCP FIN) mid-stream ends at once", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  const video = await s.clients.grpc.createVideo({ video: { title: "cut upload" } });
  let raw: net.Socket | undefined;
  const client = http2.connect(s.baseUrl, { createConnection: () => (raw = net.connect(s.port, "127.0.0.1")) });
  client.on("error", () => {});
  t.teardown(() => client.destroy());
  const req = client.request({ ":method": "POST", ":path": "/video.v1.VideoService/UploadVideoContent", "content-type": "application/grpc", te: "trailers" });
  req.on("error", () => {});
  const first = toBinary(UploadVideoContentRequestSchema, create(UploadVideoContentRequestSchema, { data: { case: "metadata", value: { id: video.id, contentType: "video/mp4" } } }));
  req.write(grpcFrame(first));
  req.write(grpcFrame(toBinary(UploadVideoContentRequestSchema, create(UploadVideoContentRequestSchema, { data: { case: "chunk", value: new Uint8Array(64 * 1024) } }))));
  await poll(() => s.server.listener.activeRequests === 1 || undefined, 5000, "the upload to be in progress");
  const cut = Date.now();
  raw!.end();
  await poll(() => s.server.listener.activeRequests === 0 || undefined, 5000, "the upload to end");
  t.ok(Date.now() - cut < 3000, `ended ${Date.now() - cut} ms after the FIN`);
  t.equal((await s.clients.grpc.getVideo({ id: video.id })).state, Video_State.PENDING_UPLOAD, "the video still waits for its upload");
});

t.test("Health/Watch streams are bounded per process (MAX_HEALTH_WATCHES)", async (t) => {
  const s = await startTestServer(t, { database: "pglite", env: { MAX_HEALTH_WATCHES: "2" } });
  const health = createClient(Health, s.transports.grpc);
  const held = [new AbortController(), new AbortController()];
  const streams = held.map((c) => health.watch({ service: "" }, { signal: c.signal })[Symbol.asyncIterator]());
  for (const st of streams) t.ok((await st.next()).value, "a watch within the bound starts");
  await expectCode(t, firstMessage(health.watch({ service: "" })), Code.ResourceExhausted, undefined, "one more is refused");
  held[0].abort();
  await streams[0].next().catch(() => {});
  await new Promise((r) => setTimeout(r, 200));
  t.ok(await firstMessage(health.watch({ service: "" })), "accepted again once a watch ended");
  held[1].abort();
});
