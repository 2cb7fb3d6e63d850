// Object keys are built from server-issued UUIDs only, so no caller string can
// steer where an object lands (no traversal, no collisions across videos).

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function uuid(s: string): string {
  if (!UUID.test(s)) throw new Error(`not a server-issued id: ${JSON.stringify(s.slice(0, 40))}`);
  return s;
}

export const videoPrefix = (videoId: string) => `videos/${uuid(videoId)}/`;

/** The raw upload of one upload session. */
export const sourceKey = (videoId: string, uploadId: string) => `${videoPrefix(videoId)}source/${uuid(uploadId)}`;

export const KEY_PATTERN = /^videos\/[0-9a-f-]{36}\/source\/[0-9a-f-]{36}$/;

/**
 * When the upload id in a source key was issued — upload ids are UUIDv7,
 * which carry their creation time in milliseconds — or undefined for a key
 * of any other shape.
 */
export function sourceKeyTime(key: string): Date | undefined {
  const uploadId = key.slice(key.lastIndexOf("/") + 1);
  if (!KEY_PATTERN.test(key) || uploadId[14] !== "7") return undefined;
  return new Date(parseInt(uploadId.slice(0, 8) + uploadId.slice(9, 13), 16));
}

/** One stored rendition of a thumbnail; rerunning a job writes the same keys. */
export const thumbnailVariantKey = (videoId: string, thumbnailId: string, width: number, height: number, format: string) =>
  `${videoPrefix(videoId)}thumbnails/${uuid(thumbnailId)}/${width}x${height}.${format}`;

const THUMBNAIL_KEY = /^videos\/[0-9a-f-]{36}\/thumbnails\/[0-9a-f-]{36}\/\d+x\d+\.(webp|jpeg|png)$/;

/** Thumbnail objects live in the thumbnail bucket (S3_THUMBNAIL_BUCKET). */
export const isThumbnailKey = (key: string) => THUMBNAIL_KEY.test(key);
