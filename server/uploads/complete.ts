import type { Video } from "../../gen/video/v1/video_pb.js";
import type { Transaction } from "kysely";
import type { AppContext } from "../context.js";
import type { Database } from "../db/schema.js";
import { failedPrecondition, notFound } from "../errors.js";
import { toVideo } from "../videos/convert.js";
import { videos } from "../videos/repository.js";
import { markUploaded } from "./finish.js";
import { uploads, type UploadRow } from "./repository.js";

// Completion of an upload session, shared by CompleteUpload and the
// reconciler. Storage is checked first (outside the transaction, it may be
// slow); the transaction then re-checks the session under its row lock, so two
// completions race safely and the second one just returns the video.

export async function verifyStoredObject(ctx: AppContext, s: UploadRow): Promise<void> {
  const size = Number(s.size_bytes);
  if (s.kind === "multipart" && s.store_upload_id) {
    const landed = await ctx.store.head(s.object_key);
    if (!landed) {
      try {
        await ctx.store.completeMultipartUpload(s.object_key, s.store_upload_id, size);
      } catch (e) {
        // A concurrent completion may have finished the upload in the
        // meantime (it is then gone from the store): what landed decides.
        if (!(await ctx.store.head(s.object_key))) throw e;
      }
    }
  }
  const info = await ctx.store.head(s.object_key);
  if (!info) throw failedPrecondition(`nothing has been uploaded for upload ${s.id} yet`);
  if (info.sizeBytes !== size) throw failedPrecondition(`the uploaded object is ${info.sizeBytes} bytes, not the declared ${size}`);
  if (s.checksum_sha256) {
    // Stores that verified a checksum report it; otherwise read the object back.
    const actual = info.checksumSha256 ?? (await ctx.store.sha256(s.object_key));
    if (actual !== s.checksum_sha256) throw failedPrecondition(`the uploaded object's SHA-256 is not the declared one`);
  }
}

/**
 * `inTransaction` runs inside the completing transaction, after the state
 * change (the audit entry of an admin acting on someone else's video).
 */
export async function completeSession(
  ctx: AppContext,
  s: UploadRow,
  inTransaction?: (trx: Transaction<Database>, now: Date) => Promise<unknown>,
): Promise<Video> {
  if (s.state === "aborted") throw failedPrecondition(`upload ${s.id} was aborted`);
  if (s.state === "open") {
    if (new Date(s.expire_time).getTime() < ctx.clock().getTime()) throw failedPrecondition(`upload ${s.id} has expired`);
    await verifyStoredObject(ctx, s);
  }
  return ctx.db.transaction().execute(async (trx) => {
    const video = await videos.findForUpdate(trx, s.video_id);
    if (!video) throw notFound(`video ${s.video_id}`);
    const session = await uploads.findForUpdate(trx, s.video_id, s.id);
    if (!session || session.state === "aborted") throw failedPrecondition(`upload ${s.id} was aborted`);
    if (session.state === "completed") return toVideo(video);
    if (video.state !== "pending_upload") throw failedPrecondition(`video ${s.video_id} is ${video.state}, not waiting for an upload`);
    const now = ctx.clock();
    await uploads.setState(trx, s.id, "completed", now);
    const uploaded = await markUploaded(
      trx,
      video,
      {
        objectKey: s.object_key,
        sizeBytes: String(s.size_bytes),
        contentType: s.content_type,
        checksumSha256: s.checksum_sha256 ?? "",
        uploadTime: now.toISOString(),
      },
      now,
    );
    await inTransaction?.(trx, now);
    return uploaded;
  });
}
