import type { ServiceImpl } from "@connectrpc/connect";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { logAudit, recordAdminAction } from "../audit/audit-log.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { failedPrecondition, invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { videos } from "../videos/repository.js";
import { videoId } from "../videos/rules.js";
import { queueDeletion, sweepAfterUrlExpiry } from "./finish.js";
import { uploads } from "./repository.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async abortUpload(req, hc) {
    const out: FieldViolation[] = [];
    const id = videoId(req.id, "id", out);
    const uploadId = videoId(req.uploadId, "upload_id", out);
    if (out.length > 0) throw invalidArgument(out);
    const audit = await ctx.db.transaction().execute(async (trx) => {
      const video = await videos.findForUpdate(trx, id);
      if (!video) throw notFound(`video ${id}`);
      const access = writeAccess(callerOf(hc), video, id);
      const session = await uploads.findForUpdate(trx, id, uploadId);
      if (!session) throw notFound(`upload ${uploadId} of video ${id}`);
      if (session.state === "completed") throw failedPrecondition(`upload ${uploadId} is complete; delete the video instead`);
      if (session.state === "aborted") return undefined;
      const now = ctx.clock();
      await uploads.setState(trx, uploadId, "aborted", now);
      // Whatever landed (a single PUT, or parts of a multipart upload) is removed by the janitor.
      await queueDeletion(trx, session.object_key, session.store_upload_id, now);
      await sweepAfterUrlExpiry(trx, session, now);
      if (access !== "admin") return undefined;
      return recordAdminAction(trx, hc, id, { [`uploads.${uploadId}.state`]: { before: "open", after: "aborted" } }, now);
    });
    logAudit(ctx.logger, audit);
    return {};
  },
});
