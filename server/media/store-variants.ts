import type { AppContext } from "../context.js";
import type { ThumbnailVariantColumn } from "../db/schema.js";
import { queueDeletion } from "../uploads/finish.js";
import type { ObjectStore } from "../storage/object-store.js";
import { thumbnailVariantKey } from "../storage/keys.js";
import { CONTENT_TYPES, renderVariants } from "./render.js";
import type { MediaConfig } from "./settings.js";

/**
 * Renders an image into the configured variants and stores each under its
 * id-derived key. Every key is pushed to `stored` before its write, so a
 * caller that gives up midway knows what to remove.
 */
export async function storeVariants(
  store: ObjectStore,
  media: Pick<MediaConfig, "sizes" | "formats">,
  ids: { videoId: string; thumbnailId: string },
  image: Buffer,
  stored: string[] = [],
): Promise<ThumbnailVariantColumn[]> {
  const variants: ThumbnailVariantColumn[] = [];
  for (const v of await renderVariants(image, media.sizes, media.formats)) {
    const objectKey = thumbnailVariantKey(ids.videoId, ids.thumbnailId, v.width, v.height, v.format);
    stored.push(objectKey);
    await store.put(objectKey, v.bytes, CONTENT_TYPES[v.format]);
    variants.push({ width: v.width, height: v.height, format: v.format, sizeBytes: v.bytes.length, objectKey });
  }
  return variants;
}

/** Queues stored objects nothing will record for removal by the storage janitor. */
export function forgetStored(ctx: Pick<AppContext, "db" | "clock">, keys: readonly string[]) {
  return ctx.db.transaction().execute(async (trx) => {
    for (const key of keys) await queueDeletion(trx, key, null, ctx.clock());
  });
}
