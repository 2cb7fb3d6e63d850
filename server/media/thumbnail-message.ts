import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Thumbnail_Source, Thumbnail_State, ThumbnailSchema, type Thumbnail } from "../../gen/video/v1/video_pb.js";
import type { ThumbnailColumn } from "../db/schema.js";

// A stored thumbnail as its message. URLs are left empty here: they are
// signed per response (thumbnail-urls.ts), never stored nor put in events.

const STATES = { pending: Thumbnail_State.PENDING, ready: Thumbnail_State.READY, failed: Thumbnail_State.FAILED } as const;

export function toThumbnail(t: ThumbnailColumn): Thumbnail {
  const largest = t.variants[0];
  return create(ThumbnailSchema, {
    id: t.id,
    objectKey: largest?.objectKey ?? "",
    width: largest?.width ?? 0,
    height: largest?.height ?? 0,
    source: t.source === "generated" ? Thumbnail_Source.GENERATED : Thumbnail_Source.UPLOADED,
    timeOffset: t.timeOffsetMs === undefined ? undefined : durationFromMs(t.timeOffsetMs),
    state: STATES[t.state],
    failureReason: t.failureReason,
    variants: t.variants.map((v) => ({ width: v.width, height: v.height, format: v.format, sizeBytes: BigInt(v.sizeBytes) })),
    createTime: timestampFromDate(new Date(t.createTime)),
  });
}
