import t from "tap";
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { sql } from "kysely";
import { ListVideosRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { startTestServer } from "../support/server.js";

// Calls abandoned while a large response is on its way (a short deadline, a
// cancel) must not poison the connection they were made on: the calls after
// them on that same connection are answered, over gRPC and Connect alike.

const frame = (message: Uint8Array) => {
  const f = Buffer.alloc(5 + message.length);
  f.writeUInt32BE(message.length, 1);
  f.set(message, 5);
  return f;
};

const PROTOCOLS = {
  grpc: {
    headers: { "content-type": "application/grpc", te: "trailers" },
    body: (m: Uint8Array) => frame(m),
  },
  "connect (http/2)": {
    headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
    body: (m: Uint8Array) => Buffer.from(m),
  },
} as const;

t.test("abandoned large responses do not poison an HTTP/2 connection", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  // 1,000 videos with 5,000-character descriptions: a full page is ~5 MB.
  await sql`
    INSERT INTO videos (id, title, description, visibility, state, owner_id, etag, create_time, update_time)
    SELECT ('01890000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'bulk ' || g, repeat('d', 5000), 'private', 'ready', 'bulk', 'e' || g,
           timestamptz '2031-01-01' + g * interval '1 second', timestamptz '2031-01-01' + g * interval '1 second'
    FROM generate_series(1, 1000) AS g`.execute(s.ctx.db);
  const bigPage = toBinary(ListVideosRequestSchema, create(ListVideosRequestSchema, { ownerId: "bulk", pageSize: 1000 }));
  const smallPage = toBinary(ListVideosRequestSchema, create(ListVideosRequestSchema, { ownerId: "bulk", pageSize: 1 }));

  for (const [name, p] of Object.entries(PROTOCOLS)) {
    t.test(name, async (t) => {
      const client = http2.connect(s.baseUrl);
      client.on("error", () => {});
      t.teardown(() => client.destroy());
      let goaway = false;
      client.on("goaway", () => (goaway = true));
      const call = (body: Uint8Array, abandon: boolean) =>
        new Promise<{ status: number; rstCode: number | undefined; bytes: number }>((resolve) => {
          const req = client.request({ ":method": "POST", ":path": "/video.v1.VideoService/ListVideos", ...p.headers });
          let status = 0;
          let bytes = 0;
          req.on("response", (h) => (status = Number(h[":status"])));
          req.on("data", (d: Buffer) => {
            bytes += d.length;
            // Gone after the first bytes of the answer, as a client whose deadline passed.
            if (abandon) req.close(http2.constants.NGHTTP2_CANCEL);
          });
          req.on("error", () => {});
          req.on("close", () => resolve({ status, rstCode: req.rstCode, bytes }));
          req.end(p.body(body));
        });
      for (let i = 0; i < 6; i++) {
        const a = await call(bigPage, true);
        t.not(a.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, `abandoned call ${i + 1} was answered before it was cancelled`);
      }
      const after = await call(smallPage, false);
      t.equal(after.status, 200, "a call after them on the same connection is answered");
      t.not(after.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      t.ok(after.bytes > 0, "with its page");
      t.notOk(goaway, "the connection did not need replacing");
    });
  }
});
