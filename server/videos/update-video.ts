import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { diff, logAudit, recordAdminAction, type AuditEntry } from "../audit/audit-log.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { appendEvent } from "../events/outbox.js";
import { aborted, invalidArgument, notFound } from "../errors.js";
import { toVideo } from "./convert.js";
import { newEtag, sameEtag } from "./etag.js";
import { videos } from "./repository.js";
import { changedFields, updateMaskFields, videoFields, videoId } from "./rules.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async updateVideo(req, hc) {
    if (!req.video) throw invalidArgument([{ field: "video", description: "is required" }]);
    // default_thumbnail_id changes through the mask only (a PUT from an older
    // client must not clear it); it must name one of the video's thumbnails.
    const paths = req.updateMask?.paths ?? [];
    const setDefault = paths.includes("default_thumbnail_id");
    const rest = paths.filter((p) => p !== "default_thumbnail_id");
    const { fields, violations } = setDefault && rest.length === 0 ? { fields: [], violations: [] } : updateMaskFields(rest);
    const defaultId = req.video.defaultThumbnailId.toLowerCase();
    const id = videoId(req.video.id, "video.id", violations);
    const { value, violations: fieldViolations } = videoFields(req.video, fields);
    violations.push(...fieldViolations);
    if (violations.length > 0) throw invalidArgument(violations);

    let audit: AuditEntry | undefined;
    const updated = await ctx.db.transaction().execute(async (trx) => {
      const current = await videos.findForUpdate(trx, id);
      if (!current) throw notFound(`video ${id}`);
      const access = writeAccess(callerOf(hc), current, id);
      if (req.video!.etag !== "" && !sameEtag(req.video!.etag, current.etag)) {
        throw aborted(`video ${id} was changed since etag ${req.video!.etag} was read`);
      }
      if (setDefault && defaultId !== "" && !current.thumbnails.some((t) => t.id === defaultId)) {
        throw invalidArgument([{ field: "video.default_thumbnail_id", description: "must be the id of one of the video's thumbnails, or empty" }]);
      }
      // Nothing to change (identical values, or a mask of output-only
      // fields): no write, the same etag, no event (AIP-134 no-op).
      const defaultChanges = setDefault && (current.default_thumbnail_id ?? "") !== defaultId;
      if (changedFields(current, value).length === 0 && !defaultChanges) return toVideo(current);
      const { labels, ...others } = value;
      const now = ctx.clock();
      const sequence = BigInt(current.event_sequence) + 1n;
      const row = await videos.update(trx, id, {
        ...others,
        ...(setDefault && { default_thumbnail_id: defaultId || null }),
        ...(labels === undefined ? {} : { labels: JSON.stringify(labels) }),
        etag: newEtag(),
        update_time: now,
        event_sequence: sequence.toString(),
      });
      const video = toVideo(row);
      const payload = create(VideoUpdatedSchema, { video, updateMask: { paths: [...fields, ...(setDefault ? ["default_thumbnail_id"] : [])] } });
      await appendEvent(trx, { videoId: id, sequence: sequence.toString(), schema: VideoUpdatedSchema, payload, time: now });
      if (access === "admin") audit = await recordAdminAction(trx, hc, id, diff(current, row, fields), now);
      return video;
    });
    logAudit(ctx.logger, audit);
    return updated;
  },
});
