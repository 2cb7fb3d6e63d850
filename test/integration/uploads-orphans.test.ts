import { Readable } from "node:stream";
import t from "tap";
import { v7 as uuidv7 } from "uuid";
import { sourceKey } from "../../server/storage/keys.js";
import { ORPHAN_OBJECT_AGE_MS, sweepOrphanObjects } from "../../server/uploads/orphan-objects.js";
import { startStorageUpkeep } from "../../server/uploads/storage-janitor.js";
import { createTestBucket } from "../support/s3.js";
import { MiB, STORES, bytes, eventually, putSingle, startUploadServer, type UploadHarness } from "../support/uploads.js";

// Upload objects no live upload refers to — no session, an aborted one, or a
// completed one whose video is gone — are found by walking the store and
// removed by the janitor; objects of open sessions and of existing videos'
// uploads stay, and so do objects too young to be sure of.

const prefixOf = (videoId: string) => `videos/${videoId}/`;

/** An object stored straight into the store, as a stream whose process died before recording it would leave. */
async function strayObject(h: UploadHarness): Promise<string> {
  const key = sourceKey(uuidv7(), uuidv7());
  await h.s.ctx.store.putStream(key, Readable.from([bytes(1000)]), "video/mp4", new AbortController().signal);
  return key;
}

/** Walks the whole store (small pages, to cross page boundaries), returning how many objects were queued. */
async function sweepAll(h: UploadHarness): Promise<number> {
  let queued = 0;
  let after: string | undefined;
  do {
    const r = await sweepOrphanObjects(h.s.ctx, after, 2);
    queued += r.queued;
    after = r.next;
  } while (after !== undefined);
  return queued;
}

for (const store of STORES) {
  t.test(`${store.kind} store`, { skip: store.skip }, async (t) => {
    const bucket = store.kind === "s3" ? await createTestBucket(t) : undefined;
    const h = await startUploadServer(t, { kind: store.kind, bucket });
    const c = h.s.clients.connect;

    t.test("objects no live upload refers to are found and removed; live ones stay", async (t) => {
      // Live: a completed upload of an existing video, an open session's object.
      const kept = await h.newVideo();
      const data = bytes(MiB);
      const up = await c.createUpload({ id: kept.id, contentType: "video/mp4", sizeBytes: BigInt(data.length) });
      await putSingle(up, data);
      const done = await c.completeUpload({ id: kept.id, uploadId: up.uploadId });
      const pending = await h.newVideo();
      const open = await c.createUpload({ id: pending.id, contentType: "video/mp4", sizeBytes: 10n });
      await putSingle(open, bytes(10));
      // Orphans: a stray object, and a deleted video's object stored again
      // after its clean-up (through S3's irrevocable URL; straight into the
      // filesystem store, whose routes refuse it).
      const stray = await strayObject(h);
      const gone = await h.newVideo();
      const goneUp = await c.createUpload({ id: gone.id, contentType: "video/mp4", sizeBytes: 10n });
      await putSingle(goneUp, bytes(10));
      await c.completeUpload({ id: gone.id, uploadId: goneUp.uploadId });
      await c.deleteVideo({ id: gone.id });
      await h.drainJanitor();
      const goneKey = sourceKey(gone.id, goneUp.uploadId);
      if (store.kind === "s3") t.equal((await putSingle(goneUp, bytes(10))).status, 200, "S3 takes a PUT through the deleted video's URL");
      else await h.s.ctx.store.putStream(goneKey, Readable.from([bytes(10)]), "video/mp4", new AbortController().signal);
      t.equal(await h.objectSize(goneKey), 10, "the deleted video has an object again");

      t.equal(await sweepAll(h), 0, "nothing is taken while the objects are younger than the age limit");
      h.advance(ORPHAN_OBJECT_AGE_MS + 60_000);
      try {
        // The service's own reconciler may walk the store meanwhile: at most the two orphans are queued here.
        t.ok((await sweepAll(h)) <= 2, "the orphans are queued");
        t.equal(await sweepAll(h), 0, "a second walk queues nothing twice");
        await h.drainJanitor();
      } finally {
        h.advance(-(ORPHAN_OBJECT_AGE_MS + 60_000));
      }
      t.equal(await h.objectSize(stray), undefined, "the stray object is removed");
      t.same(await h.objectKeys(prefixOf(gone.id)), [], "the deleted video's object is removed");
      t.equal(await h.objectSize(done.source!.objectKey), data.length, "the uploaded video's object stays");
      t.equal(await h.objectSize(sourceKey(pending.id, open.uploadId)), 10, "the open session's object stays");
    });

    t.test("the upkeep loop's reconciler walks the store and its janitor removes what it finds", async (t) => {
      const stray = await strayObject(h);
      // Past the reconciler lease of the server's own loop too, which this loop then takes.
      h.advance(ORPHAN_OBJECT_AGE_MS + 60_000);
      const upkeep = startStorageUpkeep(h.s.ctx, { janitorMs: 100, reconcilerMs: 200 });
      try {
        await eventually(async () => (await h.objectSize(stray)) === undefined, "the upkeep loop to remove the stray object");
        t.pass("the stray object is removed");
      } finally {
        await upkeep.stop();
        h.advance(-(ORPHAN_OBJECT_AGE_MS + 60_000));
      }
    });
  });
}
