import { create } from "@bufbuild/protobuf";
import type { Transaction } from "kysely";
import { VideoUploadedSchema } from "../../gen/video/v1/events_pb.js";
import type { Video } from "../../gen/video/v1/video_pb.js";
import type { Database, SourceColumn } from "../db/schema.js";
import { appendEvent } from "../events/outbox.js";
import { enqueueMediaJob } from "../media/jobs.js";
import { toVideo } from "../videos/convert.js";
import { newEtag } from "../videos/etag.js";
import type { VideoRow } from "../videos/repository.js";
import { videos } from "../videos/repository.js";

// The one way a video becomes UPLOADED: source recorded, state moved, etag
// renewed, VideoUploaded queued and the probe-and-thumbnails media job
// enqueued — all in the caller's transaction.
export async function markUploaded(trx: Transaction<Database>, current: VideoRow, source: SourceColumn, now: Date): Promise<Video> {
  const sequence = (BigInt(current.event_sequence) + 1n).toString();
  const row = await videos.update(trx, current.id, {
    state: "uploaded",
    source: JSON.stringify(source),
    etag: newEtag(),
    update_time: now,
    event_sequence: sequence,
  });
  const video = toVideo(row);
  await appendEvent(trx, { videoId: current.id, sequence, schema: VideoUploadedSchema, payload: create(VideoUploadedSchema, { video }), time: now });
  await enqueueMediaJob(trx, { videoId: current.id, kind: "probe", now });
  return video;
}

/**
 * A presigned single-PUT URL cannot be revoked on S3: it works until it
 * expires, and once the session's object is removed a PUT through it can
 * store an object again. Its key is swept once more after that.
 */
export async function sweepAfterUrlExpiry(trx: Transaction<Database>, s: { kind: string; object_key: string; expire_time: Date | string }, now: Date) {
  const expiry = new Date(s.expire_time);
  if (s.kind === "single" && expiry > now) await queueDeletion(trx, s.object_key, null, now, new Date(expiry.getTime() + 60_000));
}

/** Queues stored objects for removal by the storage janitor (retried until done), from `notBefore` on. */
export function queueDeletion(trx: Transaction<Database>, objectKey: string, storeUploadId: string | null, now: Date, notBefore = now) {
  return trx.insertInto("storage_deletions").values({ object_key: objectKey, store_upload_id: storeUploadId, next_attempt_time: notBefore, create_time: now }).execute();
}
