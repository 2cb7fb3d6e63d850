import http from "node:http";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Video_State, type Video } from "../../gen/video/v1/video_pb.js";
import { MAX_UPLOAD_BYTES } from "../../server/uploads/rules.js";
import { createTestBucket } from "../support/s3.js";
import { expectCode, expectRestError, rpcClients, type Asserts } from "../support/server.js";
import {
  MiB,
  STORES,
  UPLOADED,
  bytes,
  contentMessages,
  eventually,
  putParts,
  putSingle,
  sha256,
  startUploadServer,
  type UploadHarness,
} from "../support/uploads.js";

// Uploads end to end on each object store (S3 on the emulator, and the
// embedded filesystem store): presigned single and multipart uploads from a
// plain HTTP client, streamed uploads over gRPC and REST, how completion
// verifies what landed, bad input, deleted videos, and clients that leave
// mid-stream (CONTRACT.md §1: CreateUpload, CompleteUpload, UploadVideoContent).

const DAY = 24 * 3600_000;
const prefixOf = (videoId: string) => `videos/${videoId}/`;

async function expectPending(t: Asserts, h: UploadHarness, id: string, msg: string) {
  const v = await h.s.clients.connect.getVideo({ id });
  t.equal(v.state, Video_State.PENDING_UPLOAD, `${msg}: the video still waits for its upload`);
  t.notOk(v.source, `${msg}: no source recorded`);
  t.equal(await h.outbox(id), 0, `${msg}: no VideoUploaded queued`);
}

function checkSource(t: Asserts, v: Video, o: { size: number; type: string; sha?: string; key?: string }) {
  t.equal(v.state, Video_State.UPLOADED, "state is UPLOADED");
  t.equal(v.source?.sizeBytes, BigInt(o.size), "source size");
  t.equal(v.source?.contentType, o.type, "source content type");
  if (o.sha !== undefined) t.equal(v.source?.checksumSha256, o.sha, "source checksum");
  if (o.key !== undefined) t.equal(v.source?.objectKey, o.key, "source object key");
  t.match(v.source?.objectKey ?? "", new RegExp(`^videos/${v.id}/source/[0-9a-f-]{36}$`), "the object key is derived from ids");
  t.ok(v.source?.uploadTime, "upload time");
}

/** The VideoUploaded events ListEvents shows for a video, once the relay has published at least one. */
async function publishedUploads(h: UploadHarness, videoId: string) {
  const list = async () => (await h.events.listEvents({ videoId, pageSize: 100 })).events.filter((e) => e.type === UPLOADED);
  await eventually(async () => (await list()).length > 0, "VideoUploaded to be published");
  await sleep(300);
  return list();
}

for (const store of STORES) {
  t.test(`${store.kind} store`, { skip: store.skip }, async (t) => {
    const bucket = store.kind === "s3" ? await createTestBucket(t) : undefined;
    const h = await startUploadServer(t, { kind: store.kind, bucket });
    const { connect: c, grpc, rest } = h.s.clients;

    t.test("a single presigned PUT from a plain HTTP client, then CompleteUpload: UPLOADED, VideoUploaded once", async (t) => {
      const v = await h.newVideo();
      const data = bytes(3 * MiB + 11);
      const requestId = randomUUID();
      const init = { id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length), checksumSha256: sha256(data), requestId };
      // PutObject only: the server's reconciler may call the store meanwhile (ListMultipartUploads…).
      const storageCalls = async () => (await h.s.ctx.metrics.s3Requests.get()).values.filter((v) => v.labels.operation === "PutObjectCommand").reduce((n, v) => n + v.value, 0);
      const callsBefore = await storageCalls();
      const up = await c.createUpload(init);
      t.equal(await storageCalls(), callsBefore, "presigning the URL is no PutObject call, and is not counted as one");
      t.ok(up.url.startsWith("http"), "one URL to PUT to");
      t.same(up.parts, [], "no parts");
      t.equal(up.partSize, 0n);
      t.equal(up.requiredHeaders["content-type"], "video/mp4", "the content type is a required header");
      const expires = timestampDate(up.expireTime!).getTime() - Date.now();
      t.ok(expires > DAY - 60_000 && expires <= DAY + 1000, "the session expires after UPLOAD_EXPIRY (24 h)");

      const replay = await c.createUpload(init);
      t.equal(replay.uploadId, up.uploadId, "a replayed request_id returns the same session");
      await expectCode(t, c.createUpload({ ...init, sizeBytes: 5n }), Code.AlreadyExists, undefined, "request_id reused for another upload");

      const res = await putSingle(up, data);
      t.equal(res.status, 200, `the store took the PUT (${await res.text()})`);
      const done = await c.completeUpload({ id: v.id, uploadId: up.uploadId });
      checkSource(t, done, { size: data.length, type: "video/mp4", sha: sha256(data) });
      t.not(done.etag, v.etag, "etag changed");
      t.equal(await h.objectSize(done.source!.objectKey), data.length, "the object is in the store");
      t.same(await c.getVideo({ id: v.id }), done, "GetVideo shows the uploaded video");

      const again = await grpc.completeUpload({ id: v.id, uploadId: up.uploadId });
      t.same(again, done, "completing again returns the same video (idempotent)");
      const viaRest = await rest("POST", `/videos/${v.id}/uploads/${up.uploadId}:complete`, { json: {} });
      t.equal(viaRest.status, 200, "and over REST");
      t.equal(viaRest.json?.etag, done.etag, "same etag: nothing was written");
      t.equal(await h.outbox(v.id), 1, "exactly one VideoUploaded in the outbox");
      const published = await publishedUploads(h, v.id);
      t.equal(published.length, 1, "ListEvents shows one VideoUploaded");
      const payload = published[0]?.payload;
      t.equal(payload?.case === "videoUploaded" && payload.value.video?.source?.checksumSha256, sha256(data), "carrying the source");

      await expectCode(t, c.createUpload({ ...init, requestId: "" }), Code.FailedPrecondition, undefined, "a second upload for an uploaded video");
    });

    t.test("a multipart presigned upload, parts PUT out of order, concurrent completions emit one VideoUploaded", async (t) => {
      const v = await h.newVideo();
      const data = bytes(11 * MiB + 17);
      const up = await c.createUpload({ id: v.id, contentType: "video/quicktime", sizeBytes: BigInt(data.length), checksumSha256: sha256(data) });
      t.equal(up.url, "", "no single URL");
      t.equal(up.partSize, BigInt(5 * MiB), "UPLOAD_PART_SIZE_MB");
      t.same(up.parts.map((p) => p.partNumber), [1, 2, 3], "ceil(size / part_size) parts, numbered from 1");
      t.equal(new Set(up.parts.map((p) => p.url)).size, 3, "one URL per part");
      t.equal((await h.multipartUploads(prefixOf(v.id))).length, 1, "a multipart upload is open in the store");

      t.same(await putParts(up, data, [3, 1, 2]), [200, 200, 200], "every part was taken");
      const results = await Promise.allSettled([1, 2, 3, 4].map(() => c.completeUpload({ id: v.id, uploadId: up.uploadId })));
      const ok = results.filter((r): r is PromiseFulfilledResult<Video> => r.status === "fulfilled").map((r) => r.value);
      t.equal(ok.length, 4, `every concurrent CompleteUpload succeeds (${results.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")).join("; ")})`);
      t.equal(new Set(ok.map((x) => x.etag)).size, 1, "all of them return the same video");
      checkSource(t, ok[0]!, { size: data.length, type: "video/quicktime", sha: sha256(data) });
      t.equal(await h.outbox(v.id), 1, "exactly one VideoUploaded");
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "no multipart upload is left open");
      t.equal(await h.objectSize(ok[0]!.source!.objectKey), data.length, "the object is whole");
      t.equal(await h.s.ctx.store.sha256(ok[0]!.source!.objectKey), sha256(data), "and holds the bytes, in order");
    });

    t.test("a streamed upload over gRPC", async (t) => {
      const v = await h.newVideo();
      const data = bytes(6 * MiB + 5);
      const done = await grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4", checksumSha256: sha256(data) }, data));
      checkSource(t, done, { size: data.length, type: "video/mp4", sha: sha256(data) });
      t.equal(await h.s.ctx.store.sha256(done.source!.objectKey), sha256(data), "the stored bytes are the streamed ones");
      t.equal(await h.outbox(v.id), 1, "one VideoUploaded");
      await expectCode(t, grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, data)), Code.FailedPrecondition, undefined, "a second stream");
      t.same(await h.objectKeys(prefixOf(v.id)), [done.source!.objectKey], "the refused stream stored nothing");
    });

    t.test("UploadVideoContent takes chunks of up to 4 MiB over gRPC, Connect and gRPC-Web; a larger one is RESOURCE_EXHAUSTED", async (t) => {
      const data = bytes(9 * MiB + 7);
      for (const [name, client] of rpcClients(h.s).filter(([n]) => !n.includes("grpc-js"))) {
        const v = await h.newVideo();
        const done = await client.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, data, 4 * MiB));
        checkSource(t, done, { size: data.length, type: "video/mp4", sha: sha256(data) });
        const w = await h.newVideo();
        await expectCode(t, client.uploadVideoContent(contentMessages({ id: w.id, contentType: "video/mp4" }, data, 4 * MiB + 1024)), Code.ResourceExhausted, undefined, `${name}: a 4 MiB + 1 KiB chunk`);
        await expectPending(t, h, w.id, `${name}: the refused stream`);
      }
    });

    t.test("a streamed upload over REST: PUT /videos/{id}/content", async (t) => {
      const v = await h.newVideo();
      // Over lib-storage's 8 MiB part size, so S3 sees a multipart upload.
      const data = bytes(9 * MiB + 3);
      const res = await fetch(`${h.s.baseUrl}/videos/${v.id}/content`, {
        method: "PUT",
        headers: { "content-type": "video/webm", "x-checksum-sha256": sha256(data) },
        body: data,
      });
      const body = await res.json();
      t.equal(res.status, 200, JSON.stringify(body).slice(0, 300));
      t.equal(body.state, "STATE_UPLOADED");
      t.equal(body.source?.sizeBytes, String(data.length), "size as proto3 JSON (int64 as a string)");
      t.equal(body.source?.checksumSha256, sha256(data));
      t.equal(res.headers.get("etag"), `"${body.etag}"`, "ETag header");
      checkSource(t, await c.getVideo({ id: v.id }), { size: data.length, type: "video/webm", sha: sha256(data) });
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "no multipart upload is left open");
      t.equal(await h.outbox(v.id), 1, "one VideoUploaded");

      const other = await h.newVideo();
      const wrong = await fetch(`${h.s.baseUrl}/videos/${other.id}/content`, {
        method: "PUT",
        headers: { "content-type": "video/webm", "x-checksum-sha256": sha256(Buffer.from("something else")) },
        body: data.subarray(0, MiB),
      });
      expectRestError(t, { status: wrong.status, headers: wrong.headers, text: "", json: await wrong.json() }, 400, "FAILED_PRECONDITION", undefined, "a declared checksum that does not match");
      await expectPending(t, h, other.id, "checksum mismatch");
      await h.drainJanitor();
      t.same(await h.objectKeys(prefixOf(other.id)), [], "the mismatching object was removed");
    });

    t.test("CompleteUpload before the object exists is FAILED_PRECONDITION; the session stays usable", async (t) => {
      const v = await h.newVideo();
      const data = bytes(2 * MiB);
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      await expectCode(t, c.completeUpload({ id: v.id, uploadId: up.uploadId }), Code.FailedPrecondition, undefined, "nothing uploaded (single)");
      const viaRest = await rest("POST", `/videos/${v.id}/uploads/${up.uploadId}:complete`, { json: {} });
      expectRestError(t, viaRest, 400, "FAILED_PRECONDITION", undefined, "over REST");
      await expectPending(t, h, v.id, "single");
      t.equal((await putSingle(up, data)).status, 200);
      t.equal((await c.completeUpload({ id: v.id, uploadId: up.uploadId })).state, Video_State.UPLOADED, "completes once the object is there");

      const m = await h.newVideo();
      const big = bytes(11 * MiB);
      const mp = await c.createUpload({ id: m.id, contentType: "video/mp4", sizeBytes: BigInt(big.length) });
      await expectCode(t, c.completeUpload({ id: m.id, uploadId: mp.uploadId }), Code.FailedPrecondition, undefined, "no parts yet");
      await putParts(mp, big, [1, 2]);
      await expectCode(t, c.completeUpload({ id: m.id, uploadId: mp.uploadId }), Code.FailedPrecondition, undefined, "a part missing");
      await expectPending(t, h, m.id, "multipart");
      t.equal((await h.multipartUploads(prefixOf(m.id))).length, 1, "the multipart upload stays open for the missing part");
      await putParts(mp, big, [3]);
      const done = await c.completeUpload({ id: m.id, uploadId: mp.uploadId });
      t.equal(done.state, Video_State.UPLOADED, "completes once every part is there");
      t.equal(await h.s.ctx.store.sha256(done.source!.objectKey), sha256(big));
    });

    t.test("a size or checksum mismatch is FAILED_PRECONDITION and can be corrected", async (t) => {
      const v = await h.newVideo();
      const data = bytes(2 * MiB);
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      // S3 checks the signed Content-Length; the emulator does not, so the
      // short object lands and completion must catch it. The filesystem
      // store refuses it at the door.
      const short = await putSingle(up, data.subarray(1));
      t.equal(short.status, store.kind === "s3" ? 200 : 400, "a short body");
      const err = await expectCode(t, c.completeUpload({ id: v.id, uploadId: up.uploadId }), Code.FailedPrecondition, undefined, "short object");
      if (store.kind === "s3") t.match(err?.rawMessage, /2097151 bytes, not the declared 2097152/, "the message says why");
      await expectPending(t, h, v.id, "short object");
      if (store.kind === "s3") {
        // The URL only creates (If-None-Match: *): what landed is not replaced
        // through it. On S3 nothing short lands at all; here a new session
        // carries the right bytes.
        t.equal((await putSingle(up, data)).status, 412, "the URL does not replace the object that landed");
        const again = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
        t.equal((await putSingle(again, data)).status, 200, "a new session takes the right bytes");
        t.equal((await c.completeUpload({ id: v.id, uploadId: again.uploadId })).state, Video_State.UPLOADED);
      } else {
        t.equal((await putSingle(up, data)).status, 200, "the right bytes, after the short body was refused");
        t.equal((await c.completeUpload({ id: v.id, uploadId: up.uploadId })).state, Video_State.UPLOADED);
      }

      // Parts: a last part too long, then parts that add up but are too small.
      const m = await h.newVideo();
      const big = bytes(11 * MiB);
      const mp = await c.createUpload({ id: m.id, contentType: "video/mp4", sizeBytes: BigInt(big.length), checksumSha256: sha256(big) });
      await putParts(mp, big, [1, 2]);
      // S3 refuses a part longer than the Content-Length signed into its URL
      // (the emulator does not check); the filesystem store refuses it too.
      const tooLong = await fetch(mp.parts[2]!.url, { method: "PUT", body: bytes(5 * MiB) });
      t.equal(tooLong.status, store.kind === "s3" ? 200 : 400, "a last part longer than its size");
      await expectCode(t, c.completeUpload({ id: m.id, uploadId: mp.uploadId }), Code.FailedPrecondition, undefined, "parts add up to more (or, refused, less) than declared");
      await expectPending(t, h, m.id, "parts too long");
      await putParts(mp, big, [3]);
      t.equal((await c.completeUpload({ id: m.id, uploadId: mp.uploadId })).state, Video_State.UPLOADED, "a corrected part completes");

      const small = await h.newVideo();
      const sp = await c.createUpload({ id: small.id, contentType: "video/mp4", sizeBytes: BigInt(big.length) });
      // 1 + 5 + 5 MiB: the right total, but part 1 is under S3's 5 MiB minimum
      // (only the emulator takes 5 MiB into the last, 1 MiB part).
      for (const [n, size] of [[1, MiB], [2, 5 * MiB], [3, 5 * MiB]] as const) {
        t.equal((await fetch(sp.parts[n - 1]!.url, { method: "PUT", body: bytes(size) })).status, n === 3 && store.kind !== "s3" ? 400 : 200);
      }
      await expectCode(t, c.completeUpload({ id: small.id, uploadId: sp.uploadId }), Code.FailedPrecondition, undefined, "a part under 5 MiB that is not the last");
      await expectPending(t, h, small.id, "part too small");

      const sum = await h.newVideo();
      const cp = await c.createUpload({ id: sum.id, contentType: "video/mp4", sizeBytes: BigInt(big.length), checksumSha256: sha256(big) });
      await putParts(cp, bytes(big.length));
      await expectCode(t, c.completeUpload({ id: sum.id, uploadId: cp.uploadId }), Code.FailedPrecondition, undefined, "the right size, other bytes");
      await expectPending(t, h, sum.id, "checksum mismatch");
    });

    t.test("an expired session cannot be completed", async (t) => {
      const v = await h.newVideo();
      const data = bytes(MiB);
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      t.equal((await putSingle(up, data)).status, 200);
      h.advance(DAY + 60_000);
      try {
        const err = await expectCode(t, c.completeUpload({ id: v.id, uploadId: up.uploadId }), Code.FailedPrecondition, undefined, "expired");
        t.match(err?.rawMessage, /expired/);
        await expectPending(t, h, v.id, "expired");
      } finally {
        h.advance(-(DAY + 60_000));
      }
    });

    t.test("bad input is INVALID_ARGUMENT naming each field, and nothing is written", async (t) => {
      const v = await h.newVideo();
      const ok = { id: v.id, contentType: "video/mp4", sizeBytes: 1000n };
      for (const sizeBytes of [-1n, 0n, BigInt(MAX_UPLOAD_BYTES) + 1n, 2n ** 62n]) {
        await expectCode(t, c.createUpload({ ...ok, sizeBytes }), Code.InvalidArgument, ["size_bytes"], `size ${sizeBytes}`);
      }
      for (const contentType of ["", "image/png", "audio/mpeg", "application/octet-stream", "video", "video/", "text/html"]) {
        await expectCode(t, c.createUpload({ ...ok, contentType }), Code.InvalidArgument, ["content_type"], `content type "${contentType}"`);
      }
      await expectCode(
        t,
        c.createUpload({ id: "not-a-uuid", contentType: "image/gif", sizeBytes: -5n, checksumSha256: "abc", requestId: "again" }),
        Code.InvalidArgument,
        ["checksum_sha256", "content_type", "id", "request_id", "size_bytes"],
        "everything wrong at once",
      );
      const viaRest = await rest("POST", `/videos/${v.id}/uploads`, { json: { contentType: "image/gif", sizeBytes: "-1" } });
      expectRestError(t, viaRest, 400, "INVALID_ARGUMENT", ["content_type", "size_bytes"], "over REST");
      const sessions = await h.s.ctx.db.selectFrom("uploads").select("id").where("video_id", "=", v.id).execute();
      t.same(sessions, [], "no session was recorded");
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "no multipart upload was started");

      // Streams: the same rules for the metadata, and the framing of the stream.
      const data = bytes(64 * 1024);
      await expectCode(t, grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "image/png" }, data)), Code.InvalidArgument, ["metadata.content_type"], "stream content type");
      await expectCode(
        t,
        grpc.uploadVideoContent((async function* () { yield { data: { case: "chunk" as const, value: data } }; })()),
        Code.InvalidArgument,
        ["metadata"],
        "a stream that starts with bytes",
      );
      await expectCode(
        t,
        grpc.uploadVideoContent((async function* () {
          yield* contentMessages({ id: v.id, contentType: "video/mp4" }, data);
          yield { data: { case: "metadata" as const, value: { id: v.id, contentType: "video/mp4" } } };
        })()),
        Code.InvalidArgument,
        ["data"],
        "metadata in the middle of the bytes",
      );
      await expectCode(t, grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, new Uint8Array(0))), Code.InvalidArgument, ["data"], "an empty stream");
      const text = await rest("PUT", `/videos/${v.id}/content`, { body: data, headers: { "content-type": "text/plain" } });
      expectRestError(t, text, 400, "INVALID_ARGUMENT", ["metadata.content_type"], "REST content type");
      const empty = await rest("PUT", `/videos/${v.id}/content`, { body: new Uint8Array(0), headers: { "content-type": "video/mp4" } });
      expectRestError(t, empty, 400, "INVALID_ARGUMENT", ["data"], "REST empty body");
      await expectPending(t, h, v.id, "after bad streams");
      await h.drainJanitor();
      t.same(await h.objectKeys(prefixOf(v.id)), [], "nothing is left in the store");
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "no multipart upload is left open");
    });

    t.test("the largest upload is presigned in at most 1,000 parts of 5 MiB to 5 GiB", async (t) => {
      const v = await h.newVideo();
      const size = MAX_UPLOAD_BYTES;
      const started = performance.now();
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(size) });
      const part = Number(up.partSize);
      t.ok(up.parts.length <= 1_000, `${up.parts.length} parts, answered in ${Math.round(performance.now() - started)} ms`);
      t.ok(part >= 5 * MiB && part <= 5 * 1024 * MiB && part % MiB === 0, `part size ${part / MiB} MiB`);
      t.ok(part * up.parts.length >= size && part * (up.parts.length - 1) < size, "the parts cover the file, the last one partly");
      t.same(up.parts.map((p) => p.partNumber), Array.from({ length: up.parts.length }, (_, i) => i + 1), "numbered 1..n");
      await c.abortUpload({ id: v.id, uploadId: up.uploadId });
      await h.drainJanitor();
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "AbortUpload ends the multipart upload");
    });

    t.test("AbortUpload abandons a session and what was uploaded for it", async (t) => {
      const v = await h.newVideo();
      const big = bytes(11 * MiB);
      const mp = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(big.length) });
      await putParts(mp, big, [1]);
      const single = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: 10n });
      t.equal((await putSingle(single, bytes(10))).status, 200);
      t.equal((await c.abortUpload({ id: v.id, uploadId: mp.uploadId })).$typeName, "google.protobuf.Empty", "aborted");
      t.same(await rest("DELETE", `/videos/${v.id}/uploads/${mp.uploadId}`).then((r) => r.status), 200, "aborting again is fine (REST)");
      await c.abortUpload({ id: v.id, uploadId: single.uploadId });
      const err = await expectCode(t, c.completeUpload({ id: v.id, uploadId: mp.uploadId }), Code.FailedPrecondition, undefined, "complete after abort");
      t.match(err?.rawMessage, /aborted/);
      await h.drainJanitor();
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "the multipart upload and its parts are gone");
      t.same(await h.objectKeys(prefixOf(v.id)), [], "the single upload's object is gone");
      await expectPending(t, h, v.id, "after abort");
      const data = bytes(MiB);
      const next = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      await putSingle(next, data);
      t.equal((await c.completeUpload({ id: v.id, uploadId: next.uploadId })).state, Video_State.UPLOADED, "a new session works");
      await expectCode(t, c.abortUpload({ id: v.id, uploadId: next.uploadId }), Code.FailedPrecondition, undefined, "a completed upload cannot be aborted");
    });

    t.test("uploads to a deleted video are NOT_FOUND and its open multipart upload is ended", async (t) => {
      const v = await h.newVideo();
      const big = bytes(11 * MiB);
      const mp = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(big.length) });
      await putParts(mp, big, [1]);
      await c.deleteVideo({ id: v.id });
      await expectCode(t, c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: 10n }), Code.NotFound, undefined, "CreateUpload");
      await expectCode(t, c.completeUpload({ id: v.id, uploadId: mp.uploadId }), Code.NotFound, undefined, "CompleteUpload");
      await expectCode(t, c.abortUpload({ id: v.id, uploadId: mp.uploadId }), Code.NotFound, undefined, "AbortUpload");
      await expectCode(t, grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, big.subarray(0, MiB))), Code.NotFound, undefined, "stream");
      const put = await rest("PUT", `/videos/${v.id}/content`, { body: big.subarray(0, MiB), headers: { "content-type": "video/mp4" } });
      expectRestError(t, put, 404, "NOT_FOUND", undefined, "REST PUT content");
      await h.drainJanitor();
      t.same(await h.multipartUploads(prefixOf(v.id)), [], "the janitor ended the multipart upload");
      const [late] = await putParts(mp, big, [2]);
      t.ok(late! >= 400, `its part URLs no longer take bytes (${late})`);
      t.same(await h.objectKeys(prefixOf(v.id)), [], "nothing is stored for the deleted video");
    });

    t.test("a client that disconnects mid-stream leaves no object, no multipart upload, no temp file", async (t) => {
      // REST: a raw HTTP/1.1 request, destroyed once the service is writing to the store.
      const v = await h.newVideo();
      const url = new URL(`${h.s.baseUrl}/videos/${v.id}/content`);
      const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: "PUT", headers: { "content-type": "video/mp4" } });
      req.on("error", () => {});
      let answer: string | undefined;
      req.on("response", (r) => {
        answer = String(r.statusCode);
        r.on("data", (d) => (answer += " " + String(d).slice(0, 200)));
      });
      const chunk = bytes(MiB);
      let sent = 0;
      const writing = (async () => {
        while (!req.destroyed && sent < 64) {
          if (!req.write(chunk)) await drainOrClose(req);
          sent++;
        }
      })();
      await eventually(async () => (await inFlight(h, v.id)) || sent >= 64 || answer !== undefined, "the service to start writing to the store");
      t.equal(answer, undefined, "no answer while the body is still coming");
      t.ok(sent < 64, `cut after ${sent} MiB, while the service was writing`);
      req.destroy();
      await writing;
      await settled(t, h, v.id, "REST");

      // gRPC: the client cancels its stream.
      const g = await h.newVideo();
      const abort = new AbortController();
      const piece = bytes(256 * 1024);
      let streamed = 0;
      let settledEarly: unknown;
      const call = grpc.uploadVideoContent(
        (async function* () {
          yield { data: { case: "metadata" as const, value: { id: g.id, contentType: "video/mp4" } } };
          while (streamed < 256) {
            yield { data: { case: "chunk" as const, value: piece } };
            streamed++;
          }
        })(),
        { signal: abort.signal },
      );
      call.then((v) => (settledEarly = v), (e) => (settledEarly = e));
      await eventually(async () => (await inFlight(h, g.id)) || streamed >= 256 || settledEarly !== undefined, "the service to start writing to the store");
      t.equal(settledEarly, undefined, "the call is still running");
      t.ok(streamed < 256, `cancelled after ${streamed / 4} MiB`);
      abort.abort();
      await expectCode(t, call, Code.Canceled, undefined, "the cancelled call");
      await settled(t, h, g.id, "gRPC");

      const data = bytes(MiB);
      const retry = await grpc.uploadVideoContent(contentMessages({ id: g.id, contentType: "video/mp4" }, data));
      t.equal(retry.state, Video_State.UPLOADED, "the video can still be uploaded");
    });
  });
}

function drainOrClose(req: http.ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      req.off("drain", done).off("close", done);
      resolve();
    };
    req.on("drain", done).on("close", done);
  });
}

/** True once the service has begun writing a stream to the store (an S3 multipart upload, or a temp file). */
async function inFlight(h: UploadHarness, videoId: string): Promise<boolean> {
  if (h.kind === "s3") return (await h.multipartUploads(prefixOf(videoId))).length > 0;
  return (await h.tempFiles()).length > 0;
}

/** After a client left mid-stream: nothing of it remains, and the video is untouched. */
async function settled(t: Asserts, h: UploadHarness, videoId: string, msg: string) {
  await eventually(
    async () => (await h.multipartUploads(prefixOf(videoId))).length === 0 && (await h.tempFiles()).length === 0,
    `${msg}: the abandoned upload to be cleaned up`,
  );
  t.pass(`${msg}: no multipart upload and no temp file remain`);
  t.same(await h.objectKeys(prefixOf(videoId)), [], `${msg}: no object was stored`);
  t.same(await h.s.ctx.db.selectFrom("uploads").select("id").where("video_id", "=", videoId).execute(), [], `${msg}: no upload was recorded`);
  await expectPending(t, h, videoId, msg);
}
