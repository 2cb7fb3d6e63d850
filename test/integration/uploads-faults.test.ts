import t from "tap";
import { Code } from "@connectrpc/connect";
import { Video_State } from "../../gen/video/v1/video_pb.js";
import { reconcileUploads, removeQueuedObjects } from "../../server/uploads/storage-janitor.js";
import { createTestBucket, s3SkipReason, startS3FaultProxy, type S3FaultProxy, type TestBucket } from "../support/s3.js";
import { expectCode, expectRestError, type Asserts, type Teardown } from "../support/server.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { MiB, bytes, contentMessages, eventually, openContentPut, putParts, putSingle, sha256, startUploadServer, type UploadHarness } from "../support/uploads.js";

// Object storage faults, injected between the service and the S3 emulator:
// service → TCP proxy (connection cuts) → HTTP proxy (503 SlowDown, slow or
// reset answers; counts every S3 request) → moto. With S3_MAX_RETRIES=2 every
// storage call is tried exactly 3 times, then the caller gets UNAVAILABLE
// (HTTP 503); nothing is half-written, metadata calls keep working, the
// process stays live, and everything works again once storage is back.

const RETRIES = 2;
const ATTEMPTS = RETRIES + 1;
const prefixOf = (videoId: string) => `videos/${videoId}/`;

interface Faulty {
  h: UploadHarness;
  proxy: S3FaultProxy;
  tcp: TcpProxy;
}

async function startFaulty(t: Teardown, bucket: TestBucket, env: Record<string, string> = {}): Promise<Faulty> {
  const proxy = await startS3FaultProxy(t);
  const tcp = await startTcpProxy(proxy.address);
  t.teardown(() => tcp.close());
  const h = await startUploadServer(t, { kind: "s3", bucket, endpoint: `http://${tcp.address}`, env: { S3_MAX_RETRIES: String(RETRIES), ...env } });
  return { h, proxy, tcp };
}

/** A video with a single-upload session whose object is in the bucket, not yet completed. */
async function landedSession(h: UploadHarness, size = MiB) {
  const v = await h.newVideo();
  const data = bytes(size);
  const up = await h.s.clients.connect.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(size) });
  const res = await putSingle(up, data);
  if (res.status !== 200) throw new Error(`PUT answered ${res.status}`);
  return { v, up, data };
}

async function metric(h: UploadHarness, line: RegExp): Promise<number> {
  const text = await (await fetch(`${h.s.baseUrl}/metrics`)).text();
  const m = text.split("\n").find((l) => line.test(l));
  return m ? Number(m.split(" ").pop()) : 0;
}

async function expectLive(t: Asserts, h: UploadHarness, msg: string) {
  const started = performance.now();
  const live = await fetch(`${h.s.baseUrl}/health`);
  const ready = await fetch(`${h.s.baseUrl}/health/ready`);
  t.equal(live.status, 200, `${msg}: /health answers 200`);
  t.equal(ready.status, 200, `${msg}: /health/ready answers 200 (readiness does not depend on storage)`);
  t.ok(performance.now() - started < 1000, `${msg}: promptly`);
}

async function expectUntouched(t: Asserts, h: UploadHarness, bucket: TestBucket, videoId: string, msg: string) {
  const v = await h.s.clients.connect.getVideo({ id: videoId });
  t.equal(v.state, Video_State.PENDING_UPLOAD, `${msg}: the video still waits for its upload`);
  t.equal(await h.outbox(videoId), 0, `${msg}: no VideoUploaded`);
  const sessions = await h.s.ctx.db.selectFrom("uploads").select("state").where("video_id", "=", videoId).where("state", "!=", "open").execute();
  t.same(sessions, [], `${msg}: no completed upload recorded`);
  t.same(await bucket.multipartUploads(prefixOf(videoId)), [], `${msg}: no multipart upload left open`);
}

t.test("object storage faults (S3 emulator behind fault proxies)", { skip: s3SkipReason() }, async (t) => {
  const bucket = await createTestBucket(t);

  t.test("503 SlowDown: exactly S3_MAX_RETRIES retries, then UNAVAILABLE (503 over REST); nothing half-written; metadata and health keep working; recovery", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket);
    const { connect: c, grpc, rest } = h.s.clients;
    const single = await landedSession(h);
    const forMultipart = await h.newVideo();
    const forStream = await h.newVideo();
    const retriesBefore = await metric(h, /^storage_retries_total\{operation="HeadObjectCommand"\}/);

    proxy.inject({ kind: "slowdown" });
    let mark = proxy.requests.length;
    await expectCode(t, c.completeUpload({ id: single.v.id, uploadId: single.up.uploadId }), Code.Unavailable, undefined, "CompleteUpload");
    t.equal(proxy.count("HeadObject", mark), ATTEMPTS, `HeadObject tried ${ATTEMPTS} times`);

    mark = proxy.requests.length;
    const viaRest = await rest("POST", `/videos/${single.v.id}/uploads/${single.up.uploadId}:complete`, { json: {} });
    expectRestError(t, viaRest, 503, "UNAVAILABLE", undefined, "CompleteUpload over REST");
    t.notMatch(viaRest.text, /127\.0\.0\.1|X-Amz|SlowDown|Signature/i, "the error names no endpoint, signature or storage detail");
    t.equal(proxy.count("HeadObject", mark), ATTEMPTS, `HeadObject tried ${ATTEMPTS} times`);

    mark = proxy.requests.length;
    await expectCode(t, c.createUpload({ id: forMultipart.id, contentType: "video/mp4", sizeBytes: BigInt(11 * MiB) }), Code.Unavailable, undefined, "multipart CreateUpload");
    t.equal(proxy.count("CreateMultipartUpload", mark), ATTEMPTS, `CreateMultipartUpload tried ${ATTEMPTS} times`);
    const sessions = await h.s.ctx.db.selectFrom("uploads").select("id").where("video_id", "=", forMultipart.id).execute();
    t.same(sessions, [], "no session was recorded for it");

    mark = proxy.requests.length;
    await expectCode(t, grpc.uploadVideoContent(contentMessages({ id: forStream.id, contentType: "video/mp4" }, bytes(MiB))), Code.Unavailable, undefined, "gRPC stream");
    t.equal(proxy.count("PutObject", mark), ATTEMPTS, `PutObject tried ${ATTEMPTS} times`);
    mark = proxy.requests.length;
    const put = await rest("PUT", `/videos/${forStream.id}/content`, { body: bytes(MiB), headers: { "content-type": "video/mp4" } });
    expectRestError(t, put, 503, "UNAVAILABLE", undefined, "PUT /videos/{id}/content");
    t.equal(proxy.count("PutObject", mark), ATTEMPTS, `PutObject tried ${ATTEMPTS} times`);
    mark = proxy.requests.length;
    await expectCode(t, grpc.uploadVideoContent(contentMessages({ id: forStream.id, contentType: "video/mp4" }, bytes(9 * MiB))), Code.Unavailable, undefined, "gRPC stream over the part size");
    t.equal(proxy.count("CreateMultipartUpload", mark), ATTEMPTS, `CreateMultipartUpload tried ${ATTEMPTS} times`);
    t.equal(proxy.count("UploadPart", mark), 0, "no part was sent");

    // The service itself is fine: metadata, health, metrics.
    const meta = await c.createVideo({ video: { title: "during the outage" } });
    const renamed = await c.updateVideo({ video: { id: meta.id, title: "renamed during the outage" }, updateMask: { paths: ["title"] } });
    t.equal(renamed.title, "renamed during the outage", "UpdateVideo works");
    t.equal((await c.getVideo({ id: meta.id })).title, "renamed during the outage", "GetVideo works");
    t.ok((await c.listVideos({ pageSize: 1000 })).videos.some((v) => v.id === meta.id), "ListVideos works");
    await c.deleteVideo({ id: meta.id });
    await expectCode(t, c.getVideo({ id: meta.id }), Code.NotFound, undefined, "DeleteVideo works");
    await expectLive(t, h, "during the outage");
    const retries = (await metric(h, /^storage_retries_total\{operation="HeadObjectCommand"\}/)) - retriesBefore;
    t.equal(retries, 2 * RETRIES, "storage_retries_total counts the retries");

    await expectUntouched(t, h, bucket, single.v.id, "failed CompleteUpload");
    await expectUntouched(t, h, bucket, forMultipart.id, "failed CreateUpload");
    await expectUntouched(t, h, bucket, forStream.id, "failed streams");
    t.same(await bucket.keys(prefixOf(forStream.id)), [], "the failed streams stored nothing");

    proxy.clear();
    const done = await c.completeUpload({ id: single.v.id, uploadId: single.up.uploadId });
    t.equal(done.state, Video_State.UPLOADED, "CompleteUpload succeeds once storage is back");
    t.equal(await h.outbox(single.v.id), 1, "one VideoUploaded");
    const mp = await c.createUpload({ id: forMultipart.id, contentType: "video/mp4", sizeBytes: BigInt(11 * MiB) });
    t.equal(mp.parts.length, 3, "CreateUpload works again");
    const data = bytes(9 * MiB);
    const streamed = await grpc.uploadVideoContent(contentMessages({ id: forStream.id, contentType: "video/mp4" }, data));
    t.equal(streamed.source?.checksumSha256, sha256(data), "streaming works again");
  });

  t.test("throttling and dropped connections within the retry budget are absorbed", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket);
    const c = h.s.clients.connect;
    for (const kind of ["slowdown", "reset"] as const) {
      const { v, up } = await landedSession(h);
      const mark = proxy.requests.length;
      proxy.inject({ kind, ops: ["HeadObject"], times: RETRIES });
      const done = await c.completeUpload({ id: v.id, uploadId: up.uploadId });
      t.equal(done.state, Video_State.UPLOADED, `${kind} ×${RETRIES}: CompleteUpload succeeds`);
      t.equal(proxy.count("HeadObject", mark), ATTEMPTS, `${kind}: ${RETRIES} failed tries and one that worked`);
    }
  });

  t.test("a long outage does not use up the retries: every call keeps its S3_MAX_RETRIES", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket);
    const c = h.s.clients.connect;
    const { v, up } = await landedSession(h);
    proxy.inject({ kind: "slowdown" });
    const tries: number[] = [];
    for (let i = 0; i < 25; i++) {
      const mark = proxy.requests.length;
      await c.completeUpload({ id: v.id, uploadId: up.uploadId }).catch(() => {});
      tries.push(proxy.count("HeadObject", mark));
    }
    t.same(tries, Array(25).fill(ATTEMPTS), `each of 25 failing calls was tried ${ATTEMPTS} times`);
    // Back, with a last hiccup: still retried.
    proxy.inject({ kind: "slowdown", ops: ["HeadObject"], times: 1 });
    const mark = proxy.requests.length;
    const done = await c.completeUpload({ id: v.id, uploadId: up.uploadId }).catch((e: unknown) => e);
    t.equal((done as { state?: unknown }).state, Video_State.UPLOADED, `after the outage a throttled call is still retried (${String(done)})`);
    t.equal(proxy.count("HeadObject", mark), 2);
  });

  t.test("connection cut: UNAVAILABLE after the retries, recovery; a stream cut mid-way leaves nothing behind", async (t) => {
    const { h, proxy, tcp } = await startFaulty(t, bucket);
    const c = h.s.clients.connect;
    const { v, up } = await landedSession(h);
    tcp.cut();
    const before = tcp.stats.connections;
    await expectCode(t, c.completeUpload({ id: v.id, uploadId: up.uploadId }), Code.Unavailable, undefined, "CompleteUpload with the link cut");
    t.equal(tcp.stats.connections - before, ATTEMPTS, `${ATTEMPTS} connection attempts`);
    await expectLive(t, h, "link cut");
    tcp.restore();
    t.equal((await c.completeUpload({ id: v.id, uploadId: up.uploadId })).state, Video_State.UPLOADED, "recovers once the link is back");

    // A REST stream, cut once parts are on their way.
    const s = await h.newVideo();
    const mark = proxy.requests.length;
    const { req, answer } = openContentPut(t, h, s.id);
    void (async () => {
      const chunk = bytes(MiB);
      for (let i = 0; i < 48 && !req.destroyed; i++) if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
      req.end();
    })();
    await eventually(async () => proxy.count("UploadPart", mark) > 0, "a part to be sent");
    tcp.cut();
    const res = await answer;
    req.destroy();
    t.equal(res.status, 503, `the client gets 503 (${res.body.slice(0, 200)})`);
    t.equal(JSON.parse(res.body).error?.status, "UNAVAILABLE");
    tcp.restore();
    const sessions = await h.s.ctx.db.selectFrom("uploads").select("id").where("video_id", "=", s.id).execute();
    t.same(sessions, [], "no upload recorded");
    t.equal((await c.getVideo({ id: s.id })).state, Video_State.PENDING_UPLOAD, "the video still waits for its upload");
    // lib-storage could not abort its multipart upload while the link was
    // down; the reconciler aborts such orphans once they are an hour old.
    const orphans = (await bucket.multipartUploads(prefixOf(s.id))).length;
    h.advance(61 * 60_000);
    const swept = await reconcileUploads(h.s.ctx, "faults-test");
    t.ok(swept, "the reconciler ran");
    t.same(await bucket.multipartUploads(prefixOf(s.id)), [], `no multipart upload is left (${orphans} orphaned by the cut, swept)`);
    t.same(await bucket.keys(prefixOf(s.id)), [], "no object is left");
  });

  t.test("slow answers are waited for without holding anything else up", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket);
    const c = h.s.clients.connect;
    const { v, up } = await landedSession(h);
    proxy.inject({ kind: "delay", delayMs: 1500 });
    const started = performance.now();
    const completing = c.completeUpload({ id: v.id, uploadId: up.uploadId });
    await expectLive(t, h, "while storage is slow");
    t.equal((await c.getVideo({ id: v.id })).id, v.id, "GetVideo is not held up");
    const done = await completing;
    t.equal(done.state, Video_State.UPLOADED, "the slow CompleteUpload succeeds");
    t.ok(performance.now() - started >= 1500, "after the store answered");
    const s = await h.newVideo();
    const data = bytes(2 * MiB);
    t.equal((await h.s.clients.grpc.uploadVideoContent(contentMessages({ id: s.id, contentType: "video/mp4" }, data))).source?.checksumSha256, sha256(data), "a stream succeeds too");
  });

  t.test("a store that stops answering times out as UNAVAILABLE; the process stays live", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket, { S3_MAX_RETRIES: "0" });
    const { v, up } = await landedSession(h);
    proxy.inject({ kind: "delay", delayMs: 60_000, ops: ["HeadObject"] });
    const started = performance.now();
    const completing = expectCode(t, h.s.clients.connect.completeUpload({ id: v.id, uploadId: up.uploadId }), Code.Unavailable, undefined, "CompleteUpload");
    await expectLive(t, h, "while a storage call hangs");
    await completing;
    const waited = performance.now() - started;
    t.ok(waited >= 9_000 && waited < 20_000, `gave up after the 10 s request timeout (${Math.round(waited)} ms)`);
    proxy.clear();
  });

  t.test("a CompleteMultipartUpload answered too late: its retry finds the upload gone, the object is checked, the upload completes once", async (t) => {
    // The store completes the upload but its answer is held past
    // S3_TRANSFER_TIMEOUT; the SDK retries, and the retry answers
    // NoSuchUpload. The object is there with the ETag of exactly those parts:
    // success, once — for a stream (lib-storage's Complete) and for
    // CompleteUpload of a presigned multipart session.
    const { h, proxy } = await startFaulty(t, bucket, { S3_TRANSFER_TIMEOUT: "2s" });
    // moto answers a repeated Complete with 200; S3 answers NoSuchUpload.
    const lateComplete = async <T>(call: () => Promise<T>) => {
      const mark = proxy.requests.length;
      proxy.inject({ kind: "delay", ops: ["CompleteMultipartUpload"], times: 1, delayMs: 4_000 });
      const result = call();
      await eventually(async () => proxy.count("CompleteMultipartUpload", mark) === 1, "the first Complete");
      proxy.inject({ kind: "nosuchupload", ops: ["CompleteMultipartUpload"], times: 1 });
      const value = await result;
      await eventually(async () => proxy.requests.slice(mark).filter((r) => r.op === "CompleteMultipartUpload" && r.status).length === 2, "both Completes to be answered");
      t.same(
        proxy.requests.slice(mark).filter((r) => r.op === "CompleteMultipartUpload").map((r) => [r.fault, r.status]),
        [["delay", 200], ["nosuchupload", 404]],
        "the first Complete completed the upload but its answer came too late; the retry got NoSuchUpload",
      );
      return value;
    };

    const streamed = await h.newVideo();
    const data = bytes(20 * MiB);
    const put = await lateComplete(() => h.s.clients.rest("PUT", `/videos/${streamed.id}/content`, { body: data, headers: { "content-type": "video/mp4" } }));
    t.equal(put.status, 200, `the stream succeeds (${put.text.slice(0, 200)})`);
    const source = (put.json as { source?: { objectKey?: string; checksumSha256?: string } }).source;
    t.equal(source?.checksumSha256, sha256(data));
    t.equal(await bucket.size(source!.objectKey!), data.length, "the object is whole");
    t.equal(await h.outbox(streamed.id), 1, "one VideoUploaded");

    const presigned = await h.newVideo();
    const big = bytes(11 * MiB);
    const mp = await h.s.clients.connect.createUpload({ id: presigned.id, contentType: "video/mp4", sizeBytes: BigInt(big.length), checksumSha256: sha256(big) });
    await putParts(mp, big);
    const done = await lateComplete(() => h.s.clients.connect.completeUpload({ id: presigned.id, uploadId: mp.uploadId }));
    t.equal(done.state, Video_State.UPLOADED, "CompleteUpload succeeds");
    t.equal(await h.outbox(presigned.id), 1, "one VideoUploaded");
    for (const v of [streamed, presigned]) t.same(await bucket.multipartUploads(prefixOf(v.id)), [], "no multipart upload is left open");
    await expectLive(t, h, "after the late answers");
  });

  t.test("a store that accepts a Complete and never answers: UNAVAILABLE after S3_TRANSFER_TIMEOUT, not retried past the retry window", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket, { S3_TRANSFER_TIMEOUT: "3s", S3_MAX_RETRIES: "20" });
    const v = await h.newVideo();
    const big = bytes(11 * MiB);
    const mp = await h.s.clients.connect.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(big.length) });
    await putParts(mp, big);
    // Held before the store sees it: nothing is completed.
    proxy.inject({ kind: "late", ops: ["CompleteMultipartUpload"], delayMs: 60_000 });
    const mark = proxy.requests.length;
    const started = performance.now();
    await expectCode(t, h.s.clients.connect.completeUpload({ id: v.id, uploadId: mp.uploadId }), Code.Unavailable, undefined, "CompleteUpload");
    const waited = performance.now() - started;
    const tries = proxy.count("CompleteMultipartUpload", mark);
    t.ok(waited < 30_000, `gave up after ${Math.round(waited)} ms (${tries} tries of 3 s; S3_MAX_RETRIES=20 would be over a minute)`);
    t.ok(tries >= 2 && tries <= 8, `retried within the 20 s window only (${tries} tries)`);
    proxy.clear();
    t.equal((await h.s.clients.connect.completeUpload({ id: v.id, uploadId: mp.uploadId })).state, Video_State.UPLOADED, "and completes once the store answers");
  });

  t.test("DeleteVideo while storage is down: the janitor retries until the objects are gone", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket);
    const c = h.s.clients.connect;
    const v = await h.newVideo();
    const uploaded = await h.s.clients.grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, bytes(MiB)));
    const key = uploaded.source!.objectKey;
    const open = await h.newVideo();
    const big = bytes(11 * MiB);
    const mp = await c.createUpload({ id: open.id, contentType: "video/mp4", sizeBytes: BigInt(big.length) });
    await putParts(mp, big, [1]);

    proxy.inject({ kind: "slowdown" });
    await c.deleteVideo({ id: v.id });
    await c.deleteVideo({ id: open.id });
    t.pass("DeleteVideo succeeds while storage is down");
    const mark = proxy.requests.length;
    t.equal(await removeQueuedObjects(h.s.ctx), 0, "the janitor removes nothing yet");
    const deletes = proxy.count("DeleteObject", mark);
    t.ok(deletes >= ATTEMPTS && deletes % ATTEMPTS === 0, `each removal was tried ${ATTEMPTS} times (${deletes} DeleteObject)`);
    const queued = await h.queuedDeletions(key);
    t.equal(queued.length, 1, "the removal stays queued");
    t.ok(queued[0]!.attempts >= 1 && queued[0]!.last_error, `with its attempts and last error recorded (${queued[0]?.last_error})`);
    t.equal(await bucket.size(key), MiB, "the object is still there");
    t.equal((await bucket.multipartUploads(prefixOf(open.id))).length, 1, "so is the multipart upload");

    proxy.clear();
    await h.drainJanitor(20_000);
    t.equal(await bucket.size(key), undefined, "the object is removed once storage is back");
    t.same(await bucket.multipartUploads(prefixOf(open.id)), [], "the multipart upload is aborted");
    t.same(await h.queuedDeletions(), [], "nothing is left queued");
  });

  t.test("the janitor holds no database connection while it waits for storage", async (t) => {
    // One pooled connection: a janitor that kept a transaction open across
    // its S3 calls would hold every other query back until it finished.
    const { h, proxy } = await startFaulty(t, bucket, { DB_POOL_MAX: "1" });
    const c = h.s.clients.connect;
    const videos = [];
    for (let i = 0; i < 2; i++) {
      const v = await h.newVideo();
      await h.s.clients.grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, bytes(MiB)));
      videos.push(v);
    }
    const kept = await h.newVideo();
    for (const v of videos) await c.deleteVideo({ id: v.id });
    proxy.inject({ kind: "delay", ops: ["DeleteObject"], delayMs: 1500 });
    const mark = proxy.requests.length;
    const janitor = h.drainJanitor(20_000);
    await eventually(async () => proxy.count("DeleteObject", mark) > 0, "the janitor to call DeleteObject");
    const started = performance.now();
    t.equal((await c.getVideo({ id: kept.id })).id, kept.id, "GetVideo answers while the janitor waits for S3");
    const ms = performance.now() - started;
    t.ok(ms < 1000, `within ${ms.toFixed(0)} ms, not after the janitor's batch (≥ 1.5 s per object)`);
    await janitor;
    t.same(await h.queuedDeletions(), [], "and the janitor finishes its batch");
    proxy.clear();
  });

  t.test("two CompleteUpload calls racing the multipart completion both succeed, one VideoUploaded", async (t) => {
    const { h, proxy } = await startFaulty(t, bucket);
    const c = h.s.clients.connect;
    const v = await h.newVideo();
    const data = bytes(11 * MiB);
    const mp = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
    await putParts(mp, data);
    // The first call's ListParts reaches the store only after the second
    // call has completed the multipart upload.
    proxy.inject({ kind: "late", ops: ["ListParts"], times: 1, delayMs: 1000 });
    const first = c.completeUpload({ id: v.id, uploadId: mp.uploadId });
    await eventually(async () => proxy.requests.some((r) => r.fault === "late"), "the first call to reach ListParts");
    const second = await c.completeUpload({ id: v.id, uploadId: mp.uploadId });
    const late = await first.catch((e: unknown) => e);
    t.equal(second.state, Video_State.UPLOADED, "the second call completes the upload");
    t.equal((late as { etag?: string }).etag, second.etag, `the first call returns the same video (${String(late)})`);
    t.equal(await h.outbox(v.id), 1, "one VideoUploaded");
  });
});
