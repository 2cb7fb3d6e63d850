import { v7 as uuidv7 } from "uuid";
import type { AppContext } from "../context.js";
import type { SourceColumn, ThumbnailColumn, ThumbnailVariantColumn } from "../db/schema.js";
import { queueDeletion } from "../uploads/finish.js";
import { videos } from "../videos/repository.js";
import { extractFrame, probe } from "./ffmpeg.js";
import { finishJob, setJobThumbnails, type MediaJob } from "./jobs.js";
import { forgetStored, storeVariants } from "./store-variants.js";
import { middleReady, pendingThumbnails, replaceThumbnail, resolveOffsetMs } from "./thumbnail-rules.js";
import { writeVideo } from "./video-write.js";

// One media job: probe the source (kind 'probe', or whenever it has not been
// probed), then render the job's pending thumbnails. Slow work (ffprobe,
// ffmpeg, sharp, the store) runs outside any transaction; each change to the
// video is one short transaction under its row lock, so a job never blocks
// the video's other writes. Re-running a job (a replica died mid-job) reuses
// its thumbnail ids and object keys: no duplicates.

export type JobOutcome = "succeeded" | "failed" | "cancelled";

export async function runJob(ctx: AppContext, job: MediaJob): Promise<{ outcome: JobOutcome; error?: string }> {
  const video = await videos.find(ctx.db, job.video_id);
  if (!video?.source) return { outcome: "cancelled" };
  let source = video.source as SourceColumn;
  const media = ctx.cfg.media;
  const input = await ctx.store.mediaInput(source.objectKey, Math.ceil(media.leaseMs / 1000) + 600);

  let thumbnailIds = job.thumbnail_ids;
  if (job.kind === "probe" || !source.probe) {
    const info = await ctx.store.head(source.objectKey);
    if (!info) throw new Error("the uploaded object is not in the store");
    const verdict = info.sizeBytes === 0 ? { ok: false as const, reason: "the uploaded file is empty (0 bytes); upload the video again" } : await probe(media, input);
    const done = await ctx.db.transaction().execute(async (trx) => {
      const current = await videos.findForUpdate(trx, job.video_id);
      if (!current?.source) return "cancelled" as const;
      const now = ctx.clock();
      if (!verdict.ok) {
        const failedThumbs = current.thumbnails.map((t) => (t.state === "pending" ? { ...t, state: "failed" as const, failureReason: verdict.reason } : t));
        const fails = current.state === "uploaded" || current.state === "processing";
        await writeVideo(trx, current, { ...(fails && { state: "failed", failure_reason: verdict.reason }), thumbnails: JSON.stringify(failedThumbs) }, [...(fails ? ["state", "failure_reason"] : []), "thumbnails"], now);
        await finishJob(trx, job, "failed", verdict.reason, now);
        return "failed" as const;
      }
      const probed = { ...(current.source as SourceColumn), probe: verdict.probe };
      let thumbs = current.thumbnails;
      const mask = ["source"];
      if (job.kind === "probe" && thumbnailIds.length === 0) {
        thumbnailIds = media.offsets.map(() => uuidv7());
        thumbs = [...thumbs, ...pendingThumbnails(media.offsets, thumbnailIds, now)];
        await setJobThumbnails(trx, job, thumbnailIds);
        mask.push("thumbnails");
      }
      await writeVideo(trx, current, { source: JSON.stringify(probed), thumbnails: JSON.stringify(thumbs) }, mask, now);
      source = probed;
      return undefined;
    });
    if (done === "failed") return { outcome: "failed", error: verdict.ok ? undefined : verdict.reason };
    if (done) return { outcome: done };
  }

  // Render outside any transaction; then record what was stored.
  const todo = await pendingOf(ctx, job.video_id, thumbnailIds);
  const rendered = new Map<string, ThumbnailVariantColumn[]>();
  const stored: string[] = [];
  try {
    for (const t of todo) {
      const ms = resolveOffsetMs(t, source.probe!.durationMs);
      let frame = await extractFrame(media, input, ms / 1000);
      // Some files end before their stated duration: take the first frame then.
      if (frame.length === 0) frame = await extractFrame(media, input, 0);
      if (frame.length === 0) throw new Error(`no frame could be decoded at ${ms} ms`);
      rendered.set(t.id, await storeVariants(ctx.thumbnailStore, media, { videoId: job.video_id, thumbnailId: t.id }, frame, stored));
    }
  } catch (e) {
    // The video was deleted meanwhile (its source may be gone already): the
    // job ends, and what it stored goes too.
    if (await videos.find(ctx.db, job.video_id)) throw e;
    await forgetStored(ctx, stored);
    return { outcome: "cancelled" };
  }
  if (todo.length === 0 && thumbnailIds.length === 0) {
    await finishJob(ctx.db, job, "succeeded", null, ctx.clock());
    return { outcome: "succeeded" };
  }
  return ctx.db.transaction().execute(async (trx) => {
    const now = ctx.clock();
    const current = await videos.findForUpdate(trx, job.video_id);
    const orphaned = [...rendered].filter(([id]) => !current?.thumbnails.some((t) => t.id === id));
    // Deleted meanwhile (the video, or the thumbnail): what this job stored goes too.
    for (const [, variants] of orphaned) for (const v of variants) await queueDeletion(trx, v.objectKey, null, now);
    if (!current) return { outcome: "cancelled" as const };
    let thumbs = current.thumbnails;
    for (const [id, variants] of rendered) {
      const t = thumbs.find((x) => x.id === id);
      if (t) thumbs = replaceThumbnail(thumbs, { ...t, state: "ready", failureReason: "", variants, timeOffsetMs: resolveOffsetMs(t, source.probe!.durationMs) });
    }
    const mask = ["thumbnails"];
    const chosen = current.default_thumbnail_id && thumbs.some((t) => t.id === current.default_thumbnail_id);
    const middle = job.kind === "probe" && !chosen ? middleReady(thumbs, thumbnailIds) : undefined;
    if (middle) mask.push("default_thumbnail_id");
    await writeVideo(trx, current, { thumbnails: JSON.stringify(thumbs), ...(middle && { default_thumbnail_id: middle }) }, mask, now);
    await finishJob(trx, job, "succeeded", null, now);
    return { outcome: "succeeded" as const };
  });
}

async function pendingOf(ctx: AppContext, videoId: string, ids: readonly string[]): Promise<ThumbnailColumn[]> {
  const row = await videos.find(ctx.db, videoId);
  return (row?.thumbnails ?? []).filter((t) => ids.includes(t.id) && t.state !== "ready");
}

/** After the last attempt: the job's thumbnails that are still pending fail with its reason. */
export async function failJobThumbnails(ctx: AppContext, job: MediaJob, reason: string): Promise<void> {
  await ctx.db.transaction().execute(async (trx) => {
    const now = ctx.clock();
    const current = await videos.findForUpdate(trx, job.video_id);
    // The probe job records its thumbnails while it runs: read them afresh.
    const ids = (await trx.selectFrom("media_jobs").select("thumbnail_ids").where("id", "=", job.id).executeTakeFirst())?.thumbnail_ids ?? [];
    if (current && current.thumbnails.some((t) => ids.includes(t.id) && t.state === "pending")) {
      const thumbs = current.thumbnails.map((t) => (ids.includes(t.id) && t.state === "pending" ? { ...t, state: "failed" as const, failureReason: reason } : t));
      await writeVideo(trx, current, { thumbnails: JSON.stringify(thumbs) }, ["thumbnails"], now);
    }
    await finishJob(trx, job, "failed", reason, now);
  });
}
