import http from "node:http";
import http2 from "node:http2";
import { gunzipSync, gzipSync } from "node:zlib";
import t from "tap";
import { rawHttp1 } from "../support/raw-http1.js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { GetVideoRequestSchema, ListVideosRequestSchema, ListVideosResponseSchema, VideoService } from "../../gen/video/v1/video_service_pb.js";
import { VideoSchema } from "../../gen/video/v1/video_pb.js";
import { expectRestError, firstMessage, startTestServer, type RestResponse } from "../support/server.js";

// Compression over every protocol (gzip; responses from 1 KiB): gRPC
// grpc-encoding / grpc-accept-encoding, gRPC-Web likewise, Connect
// Content-Encoding (unary) and Connect-Content-Encoding (streams), REST
// Accept-Encoding / Content-Encoding. Decoded bodies stay within
// MAX_BODY_BYTES. A transport rule, so PGlite is enough.

const MiB = 1024 * 1024;

function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  out.set(data, 5);
  return out;
}

interface RawGrpc {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
}

/** One gRPC call over a bare HTTP/2 stream: what is on the wire, nothing decoded. */
function rawGrpc(baseUrl: string, path: string, body: Buffer, headers: Record<string, string>): Promise<RawGrpc> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    let got: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (got = h));
    stream.on("trailers", (h) => (trailers = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      session.close();
      resolve({ headers: got, trailers: { ...got, ...trailers }, body: Buffer.concat(chunks) });
    });
    stream.on("error", reject);
    stream.end(body);
  });
}

const rawRest = rawHttp1;

const asRest = (r: { status: number; headers: http.IncomingHttpHeaders; body: Buffer }): RestResponse => {
  const text = r.body.toString("utf8");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: new Headers(r.headers as Record<string, string>), text, json };
};

t.test("compression", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) ids.push((await s.clients.grpc.createVideo({ video: { title: `compressible ${i}`, description: "a description that repeats. ".repeat(10) } })).id);
  const listRequest = toBinary(ListVideosRequestSchema, create(ListVideosRequestSchema, { pageSize: 50 }));
  const listed = (b: Uint8Array) => fromBinary(ListVideosResponseSchema, b).videos.length;

  t.test("gRPC: a gzip request is served; the response is gzip when grpc-accept-encoding allows", async (t) => {
    const zipped = await rawGrpc(s.baseUrl, "/video.v1.VideoService/ListVideos", envelope(1, gzipSync(listRequest)), { "grpc-encoding": "gzip", "grpc-accept-encoding": "gzip" });
    t.equal(zipped.trailers["grpc-status"], "0", String(zipped.trailers["grpc-message"]));
    t.match(String(zipped.headers["grpc-accept-encoding"]), /gzip/, "the answer says gzip is accepted");
    t.equal(zipped.headers["grpc-encoding"], "gzip");
    t.equal(zipped.body[0], 1, "the message is flagged compressed");
    t.equal(listed(gunzipSync(zipped.body.subarray(5))), 12, "and decodes to the page");

    // An uncompressed unary request takes the fast path: its answer is compressed all the same.
    const plain = await rawGrpc(s.baseUrl, "/video.v1.VideoService/ListVideos", envelope(0, listRequest), { "grpc-accept-encoding": "identity, deflate, gzip" });
    t.equal(plain.trailers["grpc-status"], "0", String(plain.trailers["grpc-message"]));
    t.equal(plain.headers["grpc-encoding"], "gzip", "C-core's default grpc-accept-encoding gets gzip");
    t.match(String(plain.headers["grpc-accept-encoding"]), /gzip/);
    t.equal(plain.body[0], 1);
    t.equal(listed(gunzipSync(plain.body.subarray(5))), 12);

    const small = await rawGrpc(s.baseUrl, "/video.v1.VideoService/GetVideo", envelope(0, toBinary(GetVideoRequestSchema, create(GetVideoRequestSchema, { id: ids[0] }))), { "grpc-accept-encoding": "gzip" });
    t.equal(small.trailers["grpc-status"], "0");
    t.equal(small.body[0], 0, "a response under 1 KiB is not compressed");
    t.equal(fromBinary(VideoSchema, small.body.subarray(5)).id, ids[0]);

    const unknown = await rawGrpc(s.baseUrl, "/video.v1.VideoService/ListVideos", envelope(1, listRequest), { "grpc-encoding": "snappy" });
    t.equal(unknown.trailers["grpc-status"], String(Code.Unimplemented), "an encoding the server lacks is UNIMPLEMENTED");
    t.match(String(unknown.trailers["grpc-accept-encoding"]), /gzip/, "naming the ones it has");
  });

  t.test("@grpc/grpc-js with gzip as its default compression", async (t) => {
    const client = new grpc.Client(`127.0.0.1:${s.port}`, grpc.credentials.createInsecure(), { "grpc.default_compression_algorithm": 2 });
    t.teardown(() => client.close());
    const bytes = await new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest<Uint8Array, Buffer>("/video.v1.VideoService/ListVideos", Buffer.from, (b) => b, listRequest, new grpc.Metadata(), {}, (err, v) => (err ? reject(err) : resolve(v!))),
    );
    t.equal(listed(bytes), 12);
  });

  t.test("connect-node clients sending and accepting gzip over gRPC, gRPC-Web and Connect (unary and streaming)", async (t) => {
    const gz = { sendCompression: compressionGzip, acceptCompression: [compressionGzip], compressMinBytes: 0 };
    const transports = {
      grpc: [createGrpcTransport({ baseUrl: s.baseUrl, ...gz }), "grpc-encoding"],
      grpcWeb: [createGrpcWebTransport({ baseUrl: s.baseUrl, httpVersion: "1.1", ...gz }), "grpc-encoding"],
      connect: [createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "1.1", ...gz }), "content-encoding"],
      connectH2: [createConnectTransport({ baseUrl: s.baseUrl, httpVersion: "2", useBinaryFormat: true, ...gz }), "content-encoding"],
    } as const;
    for (const [name, [transport, header]] of Object.entries(transports)) {
      const videos = createClient(VideoService, transport);
      const v = await videos.createVideo({ video: { title: `sent gzipped over ${name}`, description: "x".repeat(2000) } });
      t.equal(v.description.length, 2000, `${name}: a gzip request`);
      let encoding: string | null = null;
      const page = await videos.listVideos({ pageSize: 50 }, { onHeader: (h) => (encoding = h.get(header)) });
      t.ok(page.videos.length >= 13, `${name}: the page`);
      t.equal(encoding, "gzip", `${name}: the response is gzip (${header})`);
      let streamEncoding: string | null = null;
      const first = await firstMessage(createClient(EventService, transport).watchEvents({}, { onHeader: (h) => (streamEncoding = h.get(header.startsWith("grpc") ? header : "connect-content-encoding")) }));
      t.ok(first, `${name}: a server stream with a gzip request`);
      t.equal(streamEncoding, "gzip", `${name}: the stream's messages are gzip`);
    }
  });

  t.test("a gzip bomb is bounded by MAX_BODY_BYTES once decoded (Connect)", async (t) => {
    const bomb = gzipSync(Buffer.from(`{"video":{"title":"bomb","description":"${" ".repeat(2 * MiB)}"}}`));
    const res = await rawRest(s.port, "POST", "/video.v1.VideoService/CreateVideo", { "content-type": "application/json", "content-encoding": "gzip" }, bomb);
    t.equal(res.status, 429, "RESOURCE_EXHAUSTED");
    t.match(res.body.toString(), /resource_exhausted/);
  });

  t.test("REST: Accept-Encoding gzip compresses large responses only", async (t) => {
    const list = await rawRest(s.port, "GET", "/videos?pageSize=50", { "accept-encoding": "br;q=1, gzip;q=0.5" });
    t.equal(list.status, 200);
    t.equal(list.headers["content-encoding"], "gzip");
    t.match(String(list.headers.vary), /accept-encoding/i);
    t.equal(Number(list.headers["content-length"]), list.body.length);
    t.equal(JSON.parse(gunzipSync(list.body).toString()).videos.length, 12 + 4);

    const one = await rawRest(s.port, "GET", `/videos/${ids[0]}`, { "accept-encoding": "gzip" });
    t.equal(one.headers["content-encoding"], undefined, "a small response is sent as is");
    t.equal(JSON.parse(one.body.toString()).id, ids[0]);
    const refused = await rawRest(s.port, "GET", "/videos?pageSize=50", { "accept-encoding": "gzip;q=0, identity" });
    t.equal(refused.headers["content-encoding"], undefined, "gzip;q=0 is respected");
    const none = await rawRest(s.port, "GET", "/videos?pageSize=50", {});
    t.equal(none.headers["content-encoding"], undefined, "no Accept-Encoding, no compression");
  });

  t.test("REST: a gzip request body is decoded; other encodings are 415, bombs 413, garbage 400", async (t) => {
    const json = { "content-type": "application/json" };
    const created = await rawRest(s.port, "POST", "/videos", { ...json, "content-encoding": "gzip" }, gzipSync(JSON.stringify({ title: "gzipped over REST" })));
    t.equal(created.status, 200, created.body.toString());
    t.equal(JSON.parse(created.body.toString()).title, "gzipped over REST");

    const br = await rawRest(s.port, "POST", "/videos", { ...json, "content-encoding": "br" }, Buffer.from("{}"));
    expectRestError(t, asRest(br), 415, "INVALID_ARGUMENT", undefined, "br");
    t.match(asRest(br).json?.error?.message, /gzip/, "the message names what is accepted");

    const bomb = await rawRest(s.port, "POST", "/videos", { ...json, "content-encoding": "gzip" }, gzipSync(Buffer.from(`{"title":"${" ".repeat(2 * MiB)}"}`)));
    expectRestError(t, asRest(bomb), 413, "INVALID_ARGUMENT", undefined, "a body over MAX_BODY_BYTES once decoded");

    const garbage = await rawRest(s.port, "POST", "/videos", { ...json, "content-encoding": "gzip" }, Buffer.from("not gzip at all"));
    expectRestError(t, asRest(garbage), 400, "INVALID_ARGUMENT", undefined, "not gzip");

    const upload = await rawRest(s.port, "PUT", `/videos/${ids[1]}/content`, { "content-type": "video/mp4", "content-encoding": "gzip" }, gzipSync(Buffer.from("video")));
    expectRestError(t, asRest(upload), 415, "INVALID_ARGUMENT", undefined, "a compressed upload body is not stored compressed");
  });
});
