import { createHash, randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import { readdir } from "node:fs/promises";
import http from "node:http";
import { join, relative } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import type { Upload, UploadVideoContentRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import type { Video } from "../../gen/video/v1/video_pb.js";
import { CLAIM_MS, removeQueuedObjects } from "../../server/uploads/storage-janitor.js";
import { postgresSkipReason } from "./postgres.js";
import { s3Env, s3SkipReason, type TestBucket } from "./s3.js";
import { startTestServer, type DatabaseKind, type Teardown, type TestServer } from "./server.js";

// Upload tests on either object store: S3 (the emulator, one bucket per test
// file) or the embedded filesystem store. A server per harness, on a clock the
// test can move forward (upload expiry, the reconciler's lease and age rules),
// with what a test needs to look at the store directly.

export type StoreKind = "s3" | "filesystem";

export const STORES: readonly { kind: StoreKind; skip: string | false }[] = [
  { kind: "s3", skip: s3SkipReason() },
  { kind: "filesystem", skip: false },
];

/** Real PostgreSQL when there is one (fast to set up per server), PGlite otherwise. */
export const DATABASE: DatabaseKind = postgresSkipReason() ? "pglite" : "postgres";

export const MiB = 1024 * 1024;
export const UPLOADED = "video.v1.VideoUploaded";
export const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
/** Incompressible test bytes. */
export const bytes = (n: number) => randomBytes(n);

export interface UploadHarness {
  s: TestServer;
  kind: StoreKind;
  /** The server's clock is real time plus this many milliseconds. */
  advance(ms: number): void;
  now(): Date;
  events: Client<typeof EventService>;
  newVideo(title?: string): Promise<Video>;
  /** Size of the stored object, or undefined when there is none (asked of the store itself, not the service). */
  objectSize(key: string): Promise<number | undefined>;
  /** Keys of the objects stored under prefix. */
  objectKeys(prefix: string): Promise<string[]>;
  /** Multipart uploads in progress under prefix, as the store lists them (ListMultipartUploads on S3). */
  multipartUploads(prefix: string): Promise<string[]>;
  /** Temporary files left in the filesystem store (always [] on S3). */
  tempFiles(): Promise<string[]>;
  /** Outbox rows of one type for a video. */
  outbox(videoId: string, type?: string): Promise<number>;
  /** Rows waiting in the storage janitor's queue for a key. */
  queuedDeletions(key?: string): Promise<{ object_key: string | null; attempts: number; last_error: string | null }[]>;
  /**
   * Queued removals that are due by the server's clock, claimed or being retried —
   * all but the sweeps scheduled for later (a deleted video's presigned URL
   * is swept again once it has expired).
   */
  pendingDeletions(): Promise<{ object_key: string | null; attempts: number; last_error: string | null }[]>;
  /** Runs the janitor until no removal is pending (bounded). */
  drainJanitor(timeoutMs?: number): Promise<void>;
  /** Waits until the server's own reconciler has made its first pass (it runs at start). */
  firstReconcileDone(): Promise<void>;
}

export interface HarnessOptions {
  kind: StoreKind;
  bucket?: TestBucket;
  /** Where the service reaches S3 (the emulator, or a fault proxy in front of it). */
  endpoint?: string;
  env?: Record<string, string>;
}

export async function startUploadServer(t: Teardown, o: HarnessOptions): Promise<UploadHarness> {
  let skew = 0;
  const now = () => new Date(Date.now() + skew);
  if (o.kind === "s3" && !o.bucket) throw new Error("an S3 harness needs a bucket");
  const s = await startTestServer(t, {
    database: DATABASE,
    clock: now,
    env: {
      UPLOAD_MULTIPART_THRESHOLD_MB: "5",
      UPLOAD_PART_SIZE_MB: "5",
      S3_MAX_RETRIES: "2",
      ...(o.kind === "s3" ? s3Env(o.bucket!.name, o.endpoint) : {}),
      ...o.env,
    },
  });
  const ctx = s.ctx;
  const fsRoot = join(s.cfg.dataDir, "objects");
  const h: UploadHarness = {
    s,
    kind: o.kind,
    advance: (ms) => void (skew += ms),
    now,
    events: createClient(EventService, s.transports.connect),
    newVideo: (title = "upload test") => s.clients.connect.createVideo({ video: { title } }),
    async objectSize(key) {
      if (o.kind === "s3") return o.bucket!.size(key);
      return (await ctx.store.head(key))?.sizeBytes;
    },
    async objectKeys(prefix) {
      if (o.kind === "s3") return o.bucket!.keys(prefix);
      const dir = join(fsRoot, "objects", prefix);
      const all = (await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) as Dirent[];
      return all
        .filter((e) => e.isFile() && !e.name.endsWith(".meta.json") && !e.name.startsWith(".tmp-"))
        .map((e) => relative(join(fsRoot, "objects"), join(e.parentPath, e.name)));
    },
    async multipartUploads(prefix) {
      if (o.kind === "s3") return (await o.bucket!.multipartUploads(prefix)).map((u) => u.uploadId);
      return (await ctx.store.listMultipartUploads(prefix)).map((u) => u.uploadId);
    },
    async tempFiles() {
      if (o.kind === "s3") return [];
      const all = (await readdir(fsRoot, { recursive: true }).catch(() => [])) as string[];
      return all.filter((p) => p.split("/").pop()!.startsWith(".tmp-"));
    },
    async outbox(videoId, type = UPLOADED) {
      const rows = await ctx.db.selectFrom("outbox").select("id").where("video_id", "=", videoId).where("type", "=", type).execute();
      return rows.length;
    },
    queuedDeletions(key) {
      let q = ctx.db.selectFrom("storage_deletions").select(["object_key", "attempts", "last_error"]);
      if (key) q = q.where("object_key", "=", key);
      return q.execute();
    },
    async firstReconcileDone() {
      // Its last step lists the store's multipart uploads.
      const listed = async () => {
        const text = await ctx.metrics.registry.metrics();
        return /^storage_requests_total\{operation="ListMultipartUploadsCommand"[^}]*\} [1-9]/m.test(text);
      };
      if (o.kind === "s3") await eventually(listed, "the server's first reconciler pass");
      else await sleep(500);
    },
    pendingDeletions() {
      return ctx.db
        .selectFrom("storage_deletions")
        .select(["object_key", "attempts", "last_error"])
        // A row a janitor has claimed is moved CLAIM_MS ahead until its store
        // calls are done; it is still pending. The later sweeps are a day out.
        .where((eb) => eb.or([eb("next_attempt_time", "<=", new Date(now().getTime() + CLAIM_MS)), eb("attempts", ">", 0)]))
        .execute();
    },
    async drainJanitor(timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await removeQueuedObjects(ctx);
        if ((await h.pendingDeletions()).length === 0) return;
        if (Date.now() > deadline) throw new Error(`the storage janitor did not empty its queue in time: ${JSON.stringify(await h.pendingDeletions())}`);
        await sleep(200);
      }
    },
  };
  return h;
}

// ---- clients' side of an upload ------------------------------------------------

/** PUT the whole file to a single-upload session's URL, as a plain HTTP client does. */
export async function putSingle(up: Upload, body: Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(up.url, { method: "PUT", headers: { ...up.requiredHeaders, ...headers }, body: body as Buffer<ArrayBuffer> });
}

/** PUT the given parts (all by default) of a multipart session, in the order given. */
export async function putParts(up: Upload, body: Uint8Array, only?: number[]): Promise<number[]> {
  const size = Number(up.partSize);
  const statuses = [];
  for (const n of only ?? up.parts.map((p) => p.partNumber)) {
    const part = up.parts.find((p) => p.partNumber === n)!;
    const slice = body.subarray((n - 1) * size, n * size);
    const res = await fetch(part.url, { method: "PUT", body: slice as Buffer<ArrayBuffer> });
    await res.arrayBuffer();
    statuses.push(res.status);
  }
  return statuses;
}

/** A client stream for UploadVideoContent: metadata, then the body in chunks. */
/**
 * A raw HTTP/1.1 PUT /videos/{id}/content that the test writes itself (to
 * pause, pace or cut the stream), and the answer it gets.
 */
export function openContentPut(t: Teardown, h: UploadHarness, videoId: string): { req: http.ClientRequest; answer: Promise<{ status: number; body: string }> } {
  const req = http.request({ host: "127.0.0.1", port: h.s.port, method: "PUT", path: `/videos/${videoId}/content`, headers: { "content-type": "video/mp4" } });
  t.teardown(() => req.destroy());
  const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.on("response", (res) => {
      let body = "";
      res.on("data", (d) => (body += d)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
  });
  return { req, answer };
}

export async function* contentMessages(
  meta: { id: string; contentType: string; checksumSha256?: string },
  body: Uint8Array,
  chunk = 256 * 1024,
): AsyncGenerator<MessageInitShape<typeof UploadVideoContentRequestSchema>> {
  yield { data: { case: "metadata", value: meta } };
  for (let at = 0; at < body.length; at += chunk) yield { data: { case: "chunk", value: body.subarray(at, at + chunk) } };
}

/** Polls until fn() returns a truthy value (bounded). */
export async function eventually<T>(fn: () => Promise<T>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
