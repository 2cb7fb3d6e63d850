import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { VideoCreatedSchema } from "../../gen/video/v1/events_pb.js";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { assertMayCreate } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { appendEvent } from "../events/outbox.js";
import { alreadyExists, invalidArgument, notFound } from "../errors.js";
import { toVideo } from "./convert.js";
import { newEtag } from "./etag.js";
import { createRequests, videos } from "./repository.js";
import { MUTABLE_FIELDS, isUuid, videoFields, type VideoFields } from "./rules.js";

// A request_id replay must carry the same body; the fingerprint is over the
// normalised fields, so cosmetic differences (tag case, spacing) still match.
const fingerprint = (fields: Partial<VideoFields>) =>
  createHash("sha256").update(JSON.stringify(MUTABLE_FIELDS.map((f) => fields[f]))).digest("base64url");

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async createVideo(req, hc) {
    const caller = callerOf(hc);
    assertMayCreate(caller);
    if (!req.video) throw invalidArgument([{ field: "video", description: "is required" }]);
    const { value, violations } = videoFields(req.video, MUTABLE_FIELDS);
    if (req.requestId !== "" && !isUuid(req.requestId)) {
      violations.push({ field: "request_id", description: "must be a UUID" });
    }
    if (violations.length > 0) throw invalidArgument(violations);
    const fields = value as VideoFields;
    const now = ctx.clock();

    return ctx.db.transaction().execute(async (trx) => {
      const id = uuidv7();
      if (req.requestId !== "") {
        const requestId = req.requestId.toLowerCase();
        const claimed = await createRequests.claim(trx, {
          request_id: requestId,
          owner_id: caller.subject,
          fingerprint: fingerprint(fields),
          video_id: id,
          create_time: now,
        });
        if (!claimed) {
          const earlier = await createRequests.find(trx, requestId);
          if (earlier.fingerprint !== fingerprint(fields) || earlier.owner_id !== caller.subject) {
            throw alreadyExists(`request_id ${requestId} was already used for a different request`);
          }
          const original = await videos.find(trx, earlier.video_id);
          if (!original) throw notFound(`video ${earlier.video_id} (created by this request_id)`);
          return toVideo(original);
        }
      }
      const row = await videos.insert(trx, {
        id,
        title: fields.title,
        description: fields.description,
        tags: fields.tags,
        labels: JSON.stringify(fields.labels),
        visibility: fields.visibility,
        state: "pending_upload",
        owner_id: caller.subject,
        etag: newEtag(),
        create_time: now,
        update_time: now,
        event_sequence: 1,
      });
      const video = toVideo(row);
      await appendEvent(trx, { videoId: id, sequence: 1, schema: VideoCreatedSchema, payload: create(VideoCreatedSchema, { video }), time: now });
      return video;
    });
  },
});
