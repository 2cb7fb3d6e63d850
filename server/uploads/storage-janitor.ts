import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { isThumbnailKey, sourceKeyTime } from "../storage/keys.js";
import { queueDeletion } from "./finish.js";
import { uploadColumns } from "./repository.js";
import { completeSession } from "./complete.js";
import { sweepOrphanObjects } from "./orphan-objects.js";
import type { AppContext } from "../context.js";

// Background upkeep of stored objects, in every replica:
// - the janitor removes queued objects (deleted videos, aborted uploads),
//   claiming rows with SKIP LOCKED and retrying with backoff until done;
// - the reconciler (one leader at a time, by a lease row) completes open
//   sessions whose object landed without a CompleteUpload call, aborts
//   expired ones, aborts orphaned (idle, unowned) multipart uploads in
//   the store, and walks the store's upload objects a page per pass,
//   queueing those no live upload refers to (orphan-objects.ts).

const ORPHAN_AGE_MS = 60 * 60_000;

// How long a claimed row is kept from other janitors while its store calls
// run; a janitor that dies mid-batch leaves its rows to be claimed again then.
export const CLAIM_MS = 5 * 60_000;

/**
 * Removes the queued objects that are due, at most `batch` of them. The rows
 * are claimed in one short transaction (SKIP LOCKED, then moved CLAIM_MS into
 * the future), so no transaction — and no pooled connection — is held while
 * the store is called; each row is then deleted, or rescheduled with backoff,
 * on its own. Removal is idempotent, so a row claimed again after CLAIM_MS
 * (its janitor died, or is still busy) is harmless. Times are ctx.clock's.
 */
export async function removeQueuedObjects(ctx: Pick<AppContext, "db" | "store" | "thumbnailStore" | "logger" | "clock">, batch = 50): Promise<number> {
  const claimed = await ctx.db.transaction().execute(async (trx) => {
    const now = ctx.clock();
    const due = await trx
      .selectFrom("storage_deletions")
      .select(["id", "object_key", "store_upload_id", "attempts"])
      .where("next_attempt_time", "<=", now)
      .orderBy("next_attempt_time")
      .limit(batch)
      .forUpdate()
      .skipLocked()
      .execute();
    if (due.length > 0) {
      await trx
        .updateTable("storage_deletions")
        .set({ next_attempt_time: new Date(now.getTime() + CLAIM_MS) })
        .where("id", "in", due.map((r) => r.id))
        .execute();
    }
    return due;
  });
  let done = 0;
  for (const row of claimed) {
    try {
      if (row.store_upload_id && row.object_key) await ctx.store.abortMultipartUpload(row.object_key, row.store_upload_id);
      if (row.object_key) await (isThumbnailKey(row.object_key) ? ctx.thumbnailStore : ctx.store).delete(row.object_key);
      await ctx.db.deleteFrom("storage_deletions").where("id", "=", row.id).execute();
      done++;
    } catch (e) {
      const wait = Math.min(3_600_000, 1000 * 2 ** Math.min(row.attempts, 12)) * (0.5 + Math.random() / 2);
      await ctx.db
        .updateTable("storage_deletions")
        .set({ attempts: row.attempts + 1, last_error: (e as Error).message.slice(0, 300), next_attempt_time: new Date(ctx.clock().getTime() + wait) })
        .where("id", "=", row.id)
        .execute();
      ctx.logger.warn("stored object not removed yet; will retry", { object_key: row.object_key, attempts: row.attempts + 1 });
    }
  }
  return done;
}

/** Takes or renews a named lease; true while this process holds it. */
export async function holdLease(ctx: AppContext, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const now = ctx.clock();
  const row = await ctx.db
    .updateTable("leases")
    .set({ holder, expire_time: new Date(now.getTime() + ttlMs) })
    .where("name", "=", name)
    .where((eb) => eb.or([eb("holder", "=", holder), eb("expire_time", "<", now)]))
    .returning("holder")
    .executeTakeFirst();
  return row !== undefined;
}

export async function reconcileUploads(ctx: AppContext, holder: string): Promise<{ completed: number; aborted: number; orphans: number } | undefined> {
  if (!(await holdLease(ctx, "upload-reconciler", holder, 5 * 60_000))) return undefined;
  const now = ctx.clock();
  let completed = 0;
  let aborted = 0;
  // Open sessions older than a minute: landed → complete; expired → abort.
  const open = await ctx.db
    .selectFrom("uploads")
    .select(uploadColumns)
    .where("state", "=", "open")
    .where("create_time", "<", new Date(now.getTime() - 60_000))
    .orderBy("expire_time")
    .limit(100)
    .execute();
  for (const s of open) {
    if (new Date(s.expire_time).getTime() >= now.getTime()) {
      try {
        await completeSession(ctx, s);
        completed++;
        ctx.logger.info("upload completed by the reconciler", { video_id: s.video_id, upload_id: s.id });
      } catch {
        // Not landed (or not whole) yet: left open until it expires.
      }
      continue;
    }
    const changed = await ctx.db.transaction().execute(async (trx) => {
      const r = await trx.updateTable("uploads").set({ state: "aborted", update_time: now }).where("id", "=", s.id).where("state", "=", "open").executeTakeFirst();
      if (r.numUpdatedRows === 0n) return false;
      await queueDeletion(trx, s.object_key, s.store_upload_id, now);
      return true;
    });
    if (changed) {
      aborted++;
      ctx.logger.info("expired upload aborted", { video_id: s.video_id, upload_id: s.id });
    }
  }
  // Multipart uploads in the store that no open session owns and that have
  // shown no sign of life for an hour: a CreateUpload whose row was never
  // written, a stream whose process died or lost the store. A streamed upload
  // in progress has no session row either, so being unowned is not enough: it
  // is alive while parts keep landing, however long it runs. Signs of life:
  // the store's Initiated, the time the key's upload id was issued, and the
  // newest part (moto reports every upload as initiated on 2010-11-10).
  let orphans = 0;
  const idle = (t: Date | undefined) => !t || now.getTime() - t.getTime() >= ORPHAN_AGE_MS;
  for (const u of await ctx.store.listMultipartUploads("videos/")) {
    if (!idle(u.initiated) || !idle(sourceKeyTime(u.key))) continue;
    const owner = await ctx.db.selectFrom("uploads").select("id").where("store_upload_id", "=", u.uploadId).where("state", "=", "open").executeTakeFirst();
    if (owner) continue;
    if (!idle(await ctx.store.lastPartTime(u.key, u.uploadId))) continue;
    await ctx.store.abortMultipartUpload(u.key, u.uploadId);
    orphans++;
  }
  return { completed, aborted, orphans };
}

/** Runs both loops until stopped. */
export function startStorageUpkeep(ctx: AppContext, intervals = { janitorMs: 5_000, reconcilerMs: 60_000 }) {
  const holder = `${hostname()}/${process.pid}/${randomUUID()}`;
  let stopping = false;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());
  const loop = async (every: number, work: () => Promise<unknown>, what: string) => {
    while (!stopping) {
      try {
        await work();
      } catch (e) {
        ctx.logger.warn(`${what} failed; will retry`, { error: (e as Error).message });
      }
      await sleep(every * (0.75 + Math.random() / 2));
    }
  };
  // Where the leader's walk over the store's upload objects stands (orphan-objects.ts).
  let orphanCursor: string | undefined;
  const running = Promise.all([
    loop(intervals.janitorMs, () => removeQueuedObjects(ctx), "storage janitor"),
    loop(
      intervals.reconcilerMs,
      async () => {
        if (!(await reconcileUploads(ctx, holder))) return;
        orphanCursor = (await sweepOrphanObjects(ctx, orphanCursor)).next;
      },
      "upload reconciler",
    ),
  ]);
  return {
    async stop() {
      stopping = true;
      await Promise.race([running, sleep(100)]);
    },
  };
}

