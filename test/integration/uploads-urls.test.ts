import t from "tap";
import { Code } from "@connectrpc/connect";
import { Video_State } from "../../gen/video/v1/video_pb.js";
import { createTestBucket } from "../support/s3.js";
import { expectCode } from "../support/server.js";
import { sigV4Accepts } from "../support/sigv4.js";
import { MiB, STORES, bytes, putParts, putSingle, sha256, startUploadServer } from "../support/uploads.js";

// What a presigned upload URL can do once its session is closed, and how
// much a part URL takes, on both stores. The filesystem store's URLs are
// served by the service, which refuses bytes for a closed session. S3's
// presigned URLs cannot be revoked: a single-PUT URL is a conditional write
// (If-None-Match: *, signed), so it never replaces the object a completed
// upload verified, and a key it can still write after its object was removed
// is swept once more when the URL has expired. Part URLs sign their
// Content-Length. The emulator checks no signature, so what S3 would refuse
// is checked here against the URL's signature (support/sigv4.ts).

const DAY = 24 * 3600_000;
const prefixOf = (videoId: string) => `videos/${videoId}/`;

for (const store of STORES) {
  t.test(`${store.kind} store`, { skip: store.skip }, async (t) => {
    const bucket = store.kind === "s3" ? await createTestBucket(t) : undefined;
    const h = await startUploadServer(t, { kind: store.kind, bucket });
    const c = h.s.clients.connect;

    /** A video uploaded through a single presigned PUT, and its session. */
    async function uploaded() {
      const v = await h.newVideo();
      const data = bytes(MiB);
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      t.equal((await putSingle(up, data)).status, 200, "the first PUT is taken");
      const done = await c.completeUpload({ id: v.id, uploadId: up.uploadId });
      return { v: done, up, data };
    }

    /** After the URL has expired the janitor's later sweep runs; nothing is left under the video. */
    async function sweptAfterExpiry(videoId: string, msg: string) {
      h.advance(DAY + 2 * 60_000);
      try {
        await h.drainJanitor();
        t.same(await h.objectKeys(prefixOf(videoId)), [], `${msg}: swept once the URL has expired`);
      } finally {
        h.advance(-(DAY + 2 * 60_000));
      }
    }

    t.test("after CompleteUpload, a second PUT to the same URL does not replace the uploaded bytes", async (t) => {
      const { v, up, data } = await uploaded();
      if (store.kind === "s3") {
        t.equal(up.requiredHeaders["if-none-match"], "*", "If-None-Match: * is a required header");
        t.match(new URL(up.url).searchParams.get("X-Amz-SignedHeaders"), /(^|;)if-none-match(;|$)/, "and signed: S3 refuses the URL without it");
        t.notOk(sigV4Accepts(up.url, "PUT", { "content-type": "video/mp4", "content-length": String(data.length) }), "a PUT leaving the condition out does not match the signature");
      }
      const other = await putSingle(up, bytes(data.length));
      t.equal(other.status, store.kind === "s3" ? 412 : 403, `other bytes of the same size are refused (${await other.text()})`);
      t.equal(await h.s.ctx.store.sha256(v.source!.objectKey), sha256(data), "the stored object still holds the uploaded bytes");
      const after = await c.getVideo({ id: v.id });
      t.equal(after.etag, v.etag, "the video is unchanged");
    });

    t.test("after DeleteVideo and its clean-up, the old URL leaves nothing in the store", async (t) => {
      const { v, up, data } = await uploaded();
      await c.deleteVideo({ id: v.id });
      await h.drainJanitor();
      t.same(await h.objectKeys(prefixOf(v.id)), [], "the janitor removed the object");
      const late = await putSingle(up, bytes(data.length));
      if (store.kind === "filesystem") {
        t.equal(late.status, 403, "the URL's session is closed: refused");
        t.same(await h.objectKeys(prefixOf(v.id)), [], "nothing was stored");
      } else {
        // S3 cannot revoke the URL: the bytes land, and are swept later.
        t.equal(late.status, 200, "S3 takes the PUT while the URL lives");
      }
      await sweptAfterExpiry(v.id, "the late PUT");
    });

    t.test("after AbortUpload, the URL leaves nothing in the store", async (t) => {
      const v = await h.newVideo();
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: 10n });
      t.equal((await putSingle(up, bytes(10))).status, 200);
      await c.abortUpload({ id: v.id, uploadId: up.uploadId });
      await h.drainJanitor();
      t.same(await h.objectKeys(prefixOf(v.id)), [], "the janitor removed what landed");
      const late = await putSingle(up, bytes(10));
      t.equal(late.status, store.kind === "filesystem" ? 403 : 200, store.kind === "filesystem" ? "refused" : "S3 takes the PUT while the URL lives");
      await sweptAfterExpiry(v.id, "the PUT after the abort");
      await expectCode(t, c.completeUpload({ id: v.id, uploadId: up.uploadId }), Code.FailedPrecondition, undefined, "the aborted session stays aborted");
    });

    t.test("a part URL takes at most its part's size", async (t) => {
      const v = await h.newVideo();
      const data = bytes(11 * MiB);
      const up = await c.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      const lengths = [5 * MiB, 5 * MiB, MiB];
      t.equal(up.partSize, BigInt(5 * MiB));
      if (store.kind === "s3") {
        for (const [i, p] of up.parts.entries()) {
          t.match(new URL(p.url).searchParams.get("X-Amz-SignedHeaders"), /(^|;)content-length(;|$)/, `part ${p.partNumber}: Content-Length is signed`);
          t.ok(sigV4Accepts(p.url, "PUT", { "content-length": String(lengths[i]) }), `part ${p.partNumber}: S3 takes exactly ${lengths[i]} bytes`);
          t.notOk(sigV4Accepts(p.url, "PUT", { "content-length": String(200 * MiB) }), `part ${p.partNumber}: and refuses 200 MiB`);
          t.notOk(sigV4Accepts(p.url, "PUT", { "content-length": String(lengths[i]! + 1) }), `part ${p.partNumber}: or one byte more`);
        }
      } else {
        for (const [n, size] of [[1, 5 * MiB + 1], [3, MiB + 1], [3, 6 * MiB]] as const) {
          const res = await fetch(up.parts[n - 1]!.url, { method: "PUT", body: bytes(size) });
          t.equal(res.status, 400, `part ${n}: ${size} bytes are refused (${(await res.text()).slice(0, 120)})`);
        }
      }
      t.same(await putParts(up, data), [200, 200, 200], "parts of their size are taken");
      const done = await c.completeUpload({ id: v.id, uploadId: up.uploadId });
      t.equal(done.state, Video_State.UPLOADED);
      t.equal(await h.s.ctx.store.sha256(done.source!.objectKey), sha256(data), "the object holds the parts of the right size only");
    });
  });
}
