import type { ServiceImpl } from "@connectrpc/connect";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { logAudit, recordAdminAction, type AuditEntry } from "../audit/audit-log.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { videos } from "../videos/repository.js";
import { videoId } from "../videos/rules.js";
import { completeSession } from "./complete.js";
import { uploads } from "./repository.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async completeUpload(req, hc) {
    const out: FieldViolation[] = [];
    const id = videoId(req.id, "id", out);
    const uploadId = videoId(req.uploadId, "upload_id", out);
    if (out.length > 0) throw invalidArgument(out);
    const video = await videos.find(ctx.db, id);
    if (!video) throw notFound(`video ${id}`);
    const access = writeAccess(callerOf(hc), video, id);
    const session = await uploads.find(ctx.db, id, uploadId);
    if (!session) throw notFound(`upload ${uploadId} of video ${id}`);
    let audit: AuditEntry | undefined;
    const completed = await completeSession(ctx, session, async (trx, now) => {
      if (access === "admin") audit = await recordAdminAction(trx, hc, id, { state: { before: "STATE_PENDING_UPLOAD", after: "STATE_UPLOADED" }, upload_id: { before: null, after: uploadId } }, now);
    });
    logAudit(ctx.logger, audit);
    return completed;
  },
});
