import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { AuditEventSchema, AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { assertMayReadAudit } from "../auth/policy.js";
import type { Database } from "../db/schema.js";
import { invalidArgument, type FieldViolation } from "../errors.js";
import { videoId } from "../videos/rules.js";

// AuditService.ListAuditEvents: newest first, keyset-paginated on the row id.
// The page token is the last id seen, bound to the filters it was issued for.

const PAGE = { default: 50, max: 1000 };

function filterKey(video: string | undefined, actor: string | undefined) {
  return Buffer.from(JSON.stringify([video ?? null, actor ?? null])).toString("base64url").slice(0, 24);
}

export default (db: () => Kysely<Database>) => (router: ConnectRouter) =>
  router.service(AuditService, {
    async listAuditEvents(req, hc) {
      assertMayReadAudit(callerOf(hc));
      const out: FieldViolation[] = [];
      const video = req.videoId === "" ? undefined : videoId(req.videoId, "video_id", out);
      const actor = req.actor === "" ? undefined : req.actor;
      if (actor && (actor.length > 256 || actor.includes("\u0000"))) out.push({ field: "actor", description: "is not a valid subject" });
      if (req.pageSize < 0) out.push({ field: "page_size", description: "must not be negative" });
      let before: string | undefined;
      if (req.pageToken !== "") {
        const [key, id] = req.pageToken.split(".");
        if (key !== filterKey(video, actor) || !/^\d{1,18}$/.test(id ?? "")) out.push({ field: "page_token", description: "is not a valid page token for these filters" });
        else before = id;
      }
      if (out.length > 0) throw invalidArgument(out);
      const size = req.pageSize === 0 ? PAGE.default : Math.min(req.pageSize, PAGE.max);

      let q = db()
        .selectFrom("audit_events")
        .select(["id", "event_id", "actor", "actor_roles", "action", "video_id", "changes", "request_id", "trace_id", "create_time"]);
      if (video) q = q.where("video_id", "=", video);
      if (actor) q = q.where("actor", "=", actor);
      if (before) q = q.where("id", "<", before);
      const rows = await q.orderBy("id", "desc").limit(size + 1).execute();
      const pageRows = rows.slice(0, size);
      return {
        auditEvents: pageRows.map((r) =>
          create(AuditEventSchema, {
            id: r.event_id,
            actor: r.actor,
            actorRoles: r.actor_roles,
            action: r.action,
            videoId: r.video_id,
            // Struct is a JSON object in protobuf-es; undefined "after" values (deletes) drop out.
            changes: JSON.parse(JSON.stringify(r.changes)) as JsonObject,
            requestId: r.request_id,
            traceId: r.trace_id,
            time: timestampFromDate(new Date(r.create_time)),
          }),
        ),
        nextPageToken: rows.length > size ? `${filterKey(video, actor)}.${pageRows[pageRows.length - 1].id}` : "",
      };
    },
  });
