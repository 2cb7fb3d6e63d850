import { isMessage } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { GenerateThumbnailsResponseSchema, ListVideosResponseSchema } from "../../gen/video/v1/video_service_pb.js";
import { Thumbnail_State, ThumbnailSchema, VideoSchema, type Thumbnail } from "../../gen/video/v1/video_pb.js";
import type { ObjectStore } from "../storage/object-store.js";
import type { MediaConfig } from "./settings.js";

// Thumbnail URLs are filled per response, for every protocol: short-lived
// signed GET URLs (THUMBNAIL_URL_EXPIRY), or plain URLs under
// THUMBNAIL_PUBLIC_BASE_URL for a CDN. Never stored, never in events.

const variantKey = (t: Thumbnail, v: { width: number; height: number; format: string }) =>
  `${t.objectKey.slice(0, t.objectKey.lastIndexOf("/") + 1)}${v.width}x${v.height}.${v.format}`;

export function thumbnailUrls(store: ObjectStore, media: Pick<MediaConfig, "urlExpiryMs" | "publicBaseUrl">): Interceptor {
  const urlOf = (key: string) => (media.publicBaseUrl ? Promise.resolve(`${media.publicBaseUrl}/${key}`) : store.presignGet(key, Math.ceil(media.urlExpiryMs / 1000)));
  const sign = async (t: Thumbnail) => {
    if (t.state !== Thumbnail_State.READY || t.objectKey === "") return;
    t.url = await urlOf(t.objectKey);
    for (const v of t.variants) v.url = await urlOf(variantKey(t, v));
  };
  return (next) => async (req) => {
    const res = await next(req);
    if (res.stream) return res;
    const m = res.message;
    const thumbnails: Thumbnail[] = isMessage(m, VideoSchema)
      ? m.thumbnails
      : isMessage(m, ListVideosResponseSchema)
        ? m.videos.flatMap((v) => v.thumbnails)
        : isMessage(m, GenerateThumbnailsResponseSchema)
          ? m.thumbnails
          : isMessage(m, ThumbnailSchema)
            ? [m]
            : [];
    for (const t of thumbnails) await sign(t);
    return res;
  };
}
