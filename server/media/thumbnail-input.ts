import type { Duration } from "@bufbuild/protobuf/wkt";
import type { FieldViolation } from "../errors.js";
import type { Offset, ThumbnailFormat } from "./settings.js";

// Input rules of the thumbnail RPCs (pure).

export const MAX_THUMBNAILS_PER_VIDEO = 50;
const MAX_OFFSETS = 10;
const MAX_OFFSET_MS = 24 * 3600_000;

/** GenerateThumbnails' time_offsets: at most 10, each 0 to 24 h; empty means the configured ones. */
export function requestedOffsets(raw: readonly Duration[], fallback: readonly Offset[], out: FieldViolation[]): Offset[] {
  if (raw.length === 0) return [...fallback];
  if (raw.length > MAX_OFFSETS) out.push({ field: "time_offsets", description: `must have at most ${MAX_OFFSETS} entries` });
  return raw.slice(0, MAX_OFFSETS + 1).map((d, i) => {
    const ms = Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6);
    if (!(ms >= 0 && ms <= MAX_OFFSET_MS) || d.nanos < 0) out.push({ field: `time_offsets[${i}]`, description: "must be between 0 and 24 hours" });
    return { ms };
  });
}

const TYPES: Record<string, ThumbnailFormat> = { "image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp" };

/** CreateThumbnail's image: its declared format, and its size within maxBytes. */
export function imageInput(image: { contentType: string; data: Uint8Array } | undefined, maxBytes: number, out: FieldViolation[]): ThumbnailFormat | undefined {
  if (!image || image.data.length === 0) {
    out.push({ field: "image", description: "is required: a JPEG, PNG or WebP image" });
    return undefined;
  }
  const format = TYPES[image.contentType.split(";")[0]!.trim().toLowerCase()];
  if (!format) out.push({ field: "image.content_type", description: "must be image/jpeg, image/png or image/webp" });
  if (image.data.length > maxBytes) out.push({ field: "image.data", description: `must be at most ${maxBytes} bytes (THUMBNAIL_MAX_BYTES)` });
  return format;
}
