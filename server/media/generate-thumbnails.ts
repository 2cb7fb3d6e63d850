import type { ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import type { AppContext } from "../context.js";
import { failedPrecondition, invalidArgument, type FieldViolation } from "../errors.js";
import { videoId } from "../videos/rules.js";
import { enqueueMediaJob } from "./jobs.js";
import { videoToChange } from "./thumbnail-access.js";
import { MAX_THUMBNAILS_PER_VIDEO, requestedOffsets } from "./thumbnail-input.js";
import { toThumbnail } from "./thumbnail-message.js";
import { pendingThumbnails } from "./thumbnail-rules.js";
import { writeVideo } from "./video-write.js";

// Asynchronous: the thumbnails are recorded PENDING with their job, in one
// transaction; a media job renders them.
export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async generateThumbnails(req, hc) {
    const violations: FieldViolation[] = [];
    const id = videoId(req.videoId, "video_id", violations);
    const offsets = requestedOffsets(req.timeOffsets, ctx.cfg.media.offsets, violations);
    if (violations.length > 0) throw invalidArgument(violations);
    const created = await ctx.db.transaction().execute(async (trx) => {
      const current = await videoToChange(trx, hc, id);
      if (!current.source) throw failedPrecondition(`video ${id} has no verified upload yet`);
      if (current.thumbnails.length + offsets.length > MAX_THUMBNAILS_PER_VIDEO) {
        throw failedPrecondition(`video ${id} would have more than ${MAX_THUMBNAILS_PER_VIDEO} thumbnails; delete some first`);
      }
      const now = ctx.clock();
      const ids = offsets.map(() => uuidv7());
      const fresh = pendingThumbnails(offsets, ids, now);
      await writeVideo(trx, current, { thumbnails: JSON.stringify([...current.thumbnails, ...fresh]) }, ["thumbnails"], now);
      await enqueueMediaJob(trx, { videoId: id, kind: "thumbnails", thumbnailIds: ids, now });
      return fresh;
    });
    return { thumbnails: created.map(toThumbnail) };
  },
});
