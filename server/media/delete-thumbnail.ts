import type { ServiceImpl } from "@connectrpc/connect";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import type { AppContext } from "../context.js";
import { invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { queueDeletion } from "../uploads/finish.js";
import { isUuid, videoId } from "../videos/rules.js";
import { videoToChange } from "./thumbnail-access.js";
import { writeVideo } from "./video-write.js";

// Its objects are queued for the storage janitor in the same transaction; a
// job still rendering it removes what it stores when it finds it gone.
export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async deleteThumbnail(req, hc) {
    const violations: FieldViolation[] = [];
    const id = videoId(req.videoId, "video_id", violations);
    if (!isUuid(req.thumbnailId)) violations.push({ field: "thumbnail_id", description: req.thumbnailId === "" ? "is required" : "must be a thumbnail id (a UUID)" });
    if (violations.length > 0) throw invalidArgument(violations);
    const thumbnailId = req.thumbnailId.toLowerCase();
    await ctx.db.transaction().execute(async (trx) => {
      const current = await videoToChange(trx, hc, id);
      const gone = current.thumbnails.find((t) => t.id === thumbnailId);
      if (!gone) throw notFound(`thumbnail ${thumbnailId} of video ${id}`);
      const now = ctx.clock();
      for (const v of gone.variants) await queueDeletion(trx, v.objectKey, null, now);
      const wasDefault = current.default_thumbnail_id === thumbnailId;
      const rest = current.thumbnails.filter((t) => t.id !== thumbnailId);
      await writeVideo(trx, current, { thumbnails: JSON.stringify(rest), ...(wasDefault && { default_thumbnail_id: null }) }, ["thumbnails", ...(wasDefault ? ["default_thumbnail_id"] : [])], now);
    });
    return {};
  },
});
