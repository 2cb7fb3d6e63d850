import { create } from "@bufbuild/protobuf";
import type { Transaction, Updateable } from "kysely";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import type { Video } from "../../gen/video/v1/video_pb.js";
import type { Database, VideosTable } from "../db/schema.js";
import { appendEvent } from "../events/outbox.js";
import { toVideo } from "../videos/convert.js";
import { newEtag } from "../videos/etag.js";
import { videos, type VideoRow } from "../videos/repository.js";

// Every media change to a video (state, source, thumbnails, default) is one
// row write with a new etag and a VideoUpdated event naming what changed, in
// the caller's transaction (which holds the row lock from findForUpdate).
export async function writeVideo(trx: Transaction<Database>, current: VideoRow, changes: Updateable<VideosTable>, mask: string[], now: Date): Promise<{ row: VideoRow; video: Video }> {
  const sequence = (BigInt(current.event_sequence) + 1n).toString();
  const row = await videos.update(trx, current.id, { ...changes, etag: newEtag(), update_time: now, event_sequence: sequence });
  const video = toVideo(row);
  const payload = create(VideoUpdatedSchema, { video, updateMask: { paths: mask } });
  await appendEvent(trx, { videoId: current.id, sequence, schema: VideoUpdatedSchema, payload, time: now });
  return { row, video };
}
