import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { VideoSchema, type Video } from "../../gen/video/v1/video_pb.js";
import type { SourceColumn } from "../db/schema.js";
import { toThumbnail } from "../media/thumbnail-message.js";
import { stateValue, visibilityValue } from "./enums.js";
import type { VideoRow } from "./repository.js";

const time = (d: Date | string) => timestampFromDate(d instanceof Date ? d : new Date(d));

export function toVideo(row: VideoRow): Video {
  const source = row.source as SourceColumn | null;
  return create(VideoSchema, {
    id: row.id,
    title: row.title,
    description: row.description,
    tags: row.tags,
    labels: row.labels as Record<string, string>,
    visibility: visibilityValue(row.visibility),
    state: stateValue(row.state),
    ownerId: row.owner_id,
    source: source
      ? {
          objectKey: source.objectKey,
          sizeBytes: BigInt(source.sizeBytes),
          contentType: source.contentType,
          checksumSha256: source.checksumSha256,
          uploadTime: time(source.uploadTime),
          ...(source.probe && {
            duration: durationFromMs(source.probe.durationMs),
            width: source.probe.width,
            height: source.probe.height,
            videoCodec: source.probe.videoCodec,
            audioCodec: source.probe.audioCodec,
            container: source.probe.container,
          }),
        }
      : undefined,
    thumbnails: row.thumbnails.map(toThumbnail),
    defaultThumbnailId: row.default_thumbnail_id ?? "",
    failureReason: row.failure_reason,
    etag: row.etag,
    createTime: time(row.create_time),
    updateTime: time(row.update_time),
  });
}
