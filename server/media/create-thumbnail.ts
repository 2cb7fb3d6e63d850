import { ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import type { ThumbnailColumn, ThumbnailVariantColumn } from "../db/schema.js";
import { failedPrecondition, invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { videos } from "../videos/repository.js";
import { videoId } from "../videos/rules.js";
import { MAX_INPUT_PIXELS, inspectImage } from "./render.js";
import { forgetStored, storeVariants } from "./store-variants.js";
import { videoToChange } from "./thumbnail-access.js";
import { MAX_THUMBNAILS_PER_VIDEO, imageInput } from "./thumbnail-input.js";
import { toThumbnail } from "./thumbnail-message.js";
import { writeVideo } from "./video-write.js";

// A custom image, checked from its header before any pixel is decoded (type,
// pixel count: a decompression bomb is refused, not processed), rendered into
// the configured variants without its metadata, stored, then recorded READY.
export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async createThumbnail(req, hc) {
    const violations: FieldViolation[] = [];
    const id = videoId(req.videoId, "video_id", violations);
    const format = imageInput(req.image, ctx.cfg.media.maxBytes, violations);
    if (violations.length > 0) throw invalidArgument(violations);
    const existing = await videos.find(ctx.db, id);
    if (!existing) throw notFound(`video ${id}`);
    writeAccess(callerOf(hc), existing, id);

    const data = Buffer.from(req.image!.data);
    const header = await inspectImage(data);
    if (!header || header.format !== format) {
      throw invalidArgument([{ field: "image.data", description: `is not a ${format!.toUpperCase()} image as image.content_type says` }]);
    }
    if (header.width * header.height > MAX_INPUT_PIXELS) {
      throw invalidArgument([{ field: "image.data", description: `has ${header.width}x${header.height} pixels; at most ${MAX_INPUT_PIXELS} are accepted` }]);
    }
    const thumbnailId = uuidv7();
    const stored: string[] = [];
    let variants: ThumbnailVariantColumn[];
    try {
      variants = await storeVariants(ctx.thumbnailStore, ctx.cfg.media, { videoId: id, thumbnailId }, data, stored);
    } catch (e) {
      await forgetStored(ctx, stored);
      if (e instanceof ConnectError) throw e;
      throw invalidArgument([{ field: "image.data", description: `cannot be decoded: ${(e as Error).message.split("\n")[0]!.slice(0, 200)}` }]);
    }
    try {
      const thumbnail = await ctx.db.transaction().execute(async (trx) => {
        const current = await videoToChange(trx, hc, id);
        if (current.thumbnails.length >= MAX_THUMBNAILS_PER_VIDEO) throw failedPrecondition(`video ${id} has ${MAX_THUMBNAILS_PER_VIDEO} thumbnails; delete some first`);
        const now = ctx.clock();
        const t: ThumbnailColumn = { id: thumbnailId, source: "uploaded", state: "ready", failureReason: "", variants, createTime: now.toISOString() };
        await writeVideo(trx, current, { thumbnails: JSON.stringify([...current.thumbnails, t]) }, ["thumbnails"], now);
        return t;
      });
      return toThumbnail(thumbnail);
    } catch (e) {
      // Not recorded (the video went, or a rule refused it): its objects go too.
      await forgetStored(ctx, stored);
      throw e;
    }
  },
});
