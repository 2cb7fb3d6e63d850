import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { VideoDeletedSchema } from "../../gen/video/v1/events_pb.js";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { logAudit, recordAdminAction, diff } from "../audit/audit-log.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { appendEvent } from "../events/outbox.js";
import { aborted, invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { sameEtag } from "./etag.js";
import { queueDeletion, sweepAfterUrlExpiry } from "../uploads/finish.js";
import { uploads } from "../uploads/repository.js";
import { videos } from "./repository.js";
import { videoId } from "./rules.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async deleteVideo(req, hc) {
    const violations: FieldViolation[] = [];
    const id = videoId(req.id, "id", violations);
    if (violations.length > 0) throw invalidArgument(violations);
    const audit = await ctx.db.transaction().execute(async (trx) => {
      const current = await videos.findForUpdate(trx, id);
      if (!current) throw notFound(`video ${id}`);
      const access = writeAccess(callerOf(hc), current, id);
      if (req.etag !== "" && !sameEtag(req.etag, current.etag)) {
        throw aborted(`video ${id} was changed since etag ${req.etag} was read`);
      }
      await videos.remove(trx, id);
      const now = ctx.clock();
      // Stored objects go with the video, reliably: queued here, removed (and
      // retried until they are) by the storage janitor. Open sessions end
      // here too: aborted, their multipart uploads aborted by the janitor.
      for (const u of await uploads.ofVideo(trx, id)) {
        if (u.state === "aborted") continue;
        await queueDeletion(trx, u.object_key, u.state === "open" ? u.store_upload_id : null, now);
        // Open or completed: its URL may still store bytes until it expires.
        await sweepAfterUrlExpiry(trx, u, now);
        if (u.state === "open") await uploads.setState(trx, u.id, "aborted", now);
      }
      // Its thumbnails' objects go the same way; its media jobs went with the
      // row (ON DELETE CASCADE), and a job still running removes what it
      // stores when it finds the video gone.
      for (const t of current.thumbnails) for (const v of t.variants) await queueDeletion(trx, v.objectKey, null, now);
      const sequence = (BigInt(current.event_sequence) + 1n).toString();
      const payload = create(VideoDeletedSchema, { videoId: id, ownerId: current.owner_id });
      await appendEvent(trx, { videoId: id, sequence, schema: VideoDeletedSchema, payload, time: now });
      if (access !== "admin") return undefined;
      const { event_sequence: _, ...before } = current;
      return recordAdminAction(trx, hc, id, diff(before, {}, Object.keys(before)), now);
    });
    logAudit(ctx.logger, audit);
    return {};
  },
});
