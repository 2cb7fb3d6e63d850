// The bare baseline the service is measured against: node:http and node:http2
// with a pg Pool (max 20) and named prepared statements, no framework, same
// database and rows as the subject. Run as a child process by run.ts:
//
//   DATABASE_URL=… H1_PORT=… H2_PORT=… node --import tsx test/bench/baseline.ts
//
// HTTP/1.1 (H1_PORT):
//   GET  /videos/{id}                        REST GetVideo: JSON + ETag
//   POST /video.v1.VideoService/GetVideo     Connect-style: JSON body in, JSON out
//   POST /videos                             CreateVideo: one INSERT … RETURNING
// HTTP/2 cleartext (H2_PORT), core stream API:
//   POST /video.v1.VideoService/GetVideo     gRPC framing, binary protobuf
//                                             (protobuf-es fromBinary/toBinary)

import { randomBytes } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { VideoSchema, Video_State, Video_Visibility } from "../../gen/video/v1/video_pb.js";
import { GetVideoRequestSchema } from "../../gen/video/v1/video_service_pb.js";

const COLUMNS = "id, title, description, tags, labels, visibility, state, owner_id, source, etag, create_time, update_time";
const GET = { name: "bench_get_video", text: `select ${COLUMNS} from videos where id = $1` };
const INSERT = {
  name: "bench_create_video",
  text: `insert into videos (id, title, description, tags, labels, visibility, state, owner_id, etag, create_time, update_time)
         values ($1, $2, $3, $4, $5, $6, 'pending_upload', 'local-developer', $7, $8, $8) returning ${COLUMNS}`,
};

interface Row {
  id: string;
  title: string;
  description: string;
  tags: string[];
  labels: Record<string, string>;
  visibility: string;
  state: string;
  owner_id: string;
  etag: string;
  create_time: Date;
  update_time: Date;
}

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
pool.on("error", () => {});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function find(id: string): Promise<Row | undefined> {
  if (!UUID.test(id)) return undefined;
  const r = await pool.query<Row>({ ...GET, values: [id] });
  return r.rows[0];
}

// proto3 JSON of video.v1.Video, written by hand.
function toJson(r: Row): string {
  const o: Record<string, unknown> = { id: r.id, title: r.title };
  if (r.description) o.description = r.description;
  if (r.tags.length) o.tags = r.tags;
  if (Object.keys(r.labels).length) o.labels = r.labels;
  o.visibility = "VISIBILITY_" + r.visibility.toUpperCase();
  o.state = "STATE_" + r.state.toUpperCase();
  o.ownerId = r.owner_id;
  o.etag = r.etag;
  o.createTime = r.create_time.toISOString();
  o.updateTime = r.update_time.toISOString();
  return JSON.stringify(o);
}

function toProto(r: Row): Uint8Array {
  return toBinary(
    VideoSchema,
    create(VideoSchema, {
      id: r.id,
      title: r.title,
      description: r.description,
      tags: r.tags,
      labels: r.labels,
      visibility: Video_Visibility[r.visibility.toUpperCase() as keyof typeof Video_Visibility],
      state: Video_State[r.state.toUpperCase() as keyof typeof Video_State],
      ownerId: r.owner_id,
      etag: r.etag,
      createTime: timestampFromDate(r.create_time),
      updateTime: timestampFromDate(r.update_time),
    }),
  );
}

function json(res: http.ServerResponse, status: number, body: string, etag?: string) {
  const headers: http.OutgoingHttpHeaders = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
  if (etag) headers.etag = `"${etag}"`;
  res.writeHead(status, headers);
  res.end(body);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const NOT_FOUND = JSON.stringify({ error: { code: 404, status: "NOT_FOUND", message: "not found" } });

async function h1(req: http.IncomingMessage, res: http.ServerResponse) {
  const url = req.url ?? "/";
  if (req.method === "GET" && url.startsWith("/videos/")) {
    const row = await find(url.slice(8));
    return row ? json(res, 200, toJson(row), row.etag) : json(res, 404, NOT_FOUND);
  }
  if (req.method === "POST" && url === "/video.v1.VideoService/GetVideo") {
    const { id } = JSON.parse(await readBody(req)) as { id: string };
    const row = await find(id);
    return row ? json(res, 200, toJson(row)) : json(res, 404, NOT_FOUND);
  }
  if (req.method === "POST" && url === "/videos") {
    const v = JSON.parse(await readBody(req)) as { title: string; description?: string; tags?: string[]; labels?: Record<string, string>; visibility?: string };
    const visibility = (v.visibility ?? "VISIBILITY_PRIVATE").replace(/^VISIBILITY_/, "").toLowerCase();
    const r = await pool.query<Row>({
      ...INSERT,
      values: [uuidv7(), v.title.trim(), v.description ?? "", v.tags ?? [], JSON.stringify(v.labels ?? {}), visibility, randomBytes(12).toString("base64url"), new Date()],
    });
    return json(res, 200, toJson(r.rows[0]), r.rows[0].etag);
  }
  json(res, 404, NOT_FOUND);
}

const h1Server = http.createServer((req, res) => {
  h1(req, res).catch(() => {
    if (!res.headersSent) json(res, 500, JSON.stringify({ error: { code: 500, status: "INTERNAL", message: "internal error" } }));
  });
});
h1Server.keepAliveTimeout = 5_000;

const h2Server = http2.createServer();
h2Server.on("stream", (stream, headers) => {
  if (headers[":path"] !== "/video.v1.VideoService/GetVideo") {
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
    return;
  }
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("end", () => {
    const body = Buffer.concat(chunks);
    const req = fromBinary(GetVideoRequestSchema, body.subarray(5));
    find(req.id).then(
      (row) => {
        if (!row) {
          stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "5" }, { endStream: true });
          return;
        }
        const msg = toProto(row);
        const out = Buffer.allocUnsafe(5 + msg.length);
        out[0] = 0;
        out.writeUInt32BE(msg.length, 1);
        out.set(msg, 5);
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        stream.end(out);
      },
      () => stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "13" }, { endStream: true }),
    );
  });
  stream.on("error", () => {});
});

h1Server.listen(Number(process.env.H1_PORT), "127.0.0.1", () => {
  h2Server.listen(Number(process.env.H2_PORT), "127.0.0.1", () => process.stdout.write("ready\n"));
});

process.on("SIGTERM", () => {
  h1Server.close();
  h2Server.close();
  void pool.end().finally(() => process.exit(0));
});
