import type { AppContext } from "../context.js";
import { KEY_PATTERN } from "../storage/keys.js";
import type { StoredObject } from "../storage/object-store.js";
import { isUuid } from "../videos/rules.js";
import { queueDeletion } from "./finish.js";

// Stored upload objects that nothing refers to any more are found here and
// queued for the janitor: an object at an upload key is live only while its
// session is open, or completed for a video that still exists. What else can
// be there: bytes stored through an S3 URL after its session was closed or its
// video deleted (a presigned URL cannot be revoked), a stream whose process
// died between storing and recording it, a removal lost with its queue row.

// A streamed upload stores its object a moment before it records its session:
// an object this young is never taken for an orphan.
export const ORPHAN_OBJECT_AGE_MS = 10 * 60_000;

/** The upload id of a source key (its last segment), or undefined for a key of any other shape. */
function uploadIdOf(key: string): string | undefined {
  const id = key.slice(key.lastIndexOf("/") + 1);
  return KEY_PATTERN.test(key) && isUuid(id) ? id : undefined;
}

/** The objects of a page that nothing refers to and that are old enough to be sure of it. */
export function orphans(page: StoredObject[], live: ReadonlySet<string>, now: Date): StoredObject[] {
  return page.filter((o) => uploadIdOf(o.key) !== undefined && !live.has(o.key) && now.getTime() - o.lastModified.getTime() >= ORPHAN_OBJECT_AGE_MS);
}

/**
 * Looks at one page of the store's upload objects after `after` (a key, or
 * undefined to start over) and queues the orphans among them for removal.
 * Returns where the next page starts: undefined once the listing is through,
 * so successive calls walk the whole store over and over, a page at a time.
 */
export async function sweepOrphanObjects(
  ctx: Pick<AppContext, "db" | "store" | "clock" | "logger">,
  after: string | undefined,
  pageSize = 1000,
): Promise<{ queued: number; next: string | undefined }> {
  const page = await ctx.store.listObjects("videos/", after, pageSize);
  const ids = page.map((o) => uploadIdOf(o.key)).filter((id): id is string => id !== undefined);
  const rows =
    ids.length === 0
      ? []
      : await ctx.db
          .selectFrom("uploads")
          .leftJoin("videos", "videos.id", "uploads.video_id")
          .select(["uploads.object_key", "uploads.state", "videos.id as video"])
          .where("uploads.id", "in", ids)
          .execute();
  const live = new Set(rows.filter((r) => r.state === "open" || (r.state === "completed" && r.video !== null)).map((r) => r.object_key));
  const now = ctx.clock();
  const candidates = orphans(page, live, now);
  // Already in the janitor's hands — due, or being retried (the store may be
  // down) — is not queued twice; a sweep set for later (after a URL expires)
  // does not count. (A row claimed this very moment may be queued again:
  // removal is idempotent.)
  const waiting =
    candidates.length === 0
      ? new Set<string | null>()
      : new Set(
          (
            await ctx.db
              .selectFrom("storage_deletions")
              .select("object_key")
              .where("object_key", "in", candidates.map((o) => o.key))
              .where((eb) => eb.or([eb("next_attempt_time", "<=", now), eb("attempts", ">", 0)]))
              .execute()
          ).map((r) => r.object_key),
        );
  const found = candidates.filter((o) => !waiting.has(o.key));
  if (found.length > 0) {
    await ctx.db.transaction().execute(async (trx) => {
      for (const o of found) await queueDeletion(trx, o.key, null, now);
    });
    ctx.logger.info("objects no upload refers to queued for removal", { count: found.length });
  }
  return { queued: found.length, next: page.length < pageSize ? undefined : page[page.length - 1]!.key };
}
