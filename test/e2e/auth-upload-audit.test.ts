import t from "tap";
import { createClient } from "@connectrpc/connect";
import { Video_State } from "../../gen/video/v1/video_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { bearer, startSecuredServer } from "../support/jwt.js";
import { DATABASES } from "../support/server.js";

// Upload actions are admin actions too: an admin opening, completing or
// aborting an upload of someone else's video leaves an audit row (in the
// same transaction) and an "audit" log line; the owner doing so leaves none.

for (const { kind, skip } of DATABASES) {
  t.test(`${kind}: admin upload actions on someone else's video are audited`, { skip }, async (t) => {
    const sec = await startSecuredServer(t, { database: kind });
    const videos = createClient(VideoService, sec.s.transports.grpc);
    const owner = await sec.token("editor-alice", ["editor"]);
    const admin = await sec.token("admin-ada", ["admin"]);
    const rows = (id: string) => sec.s.ctx.db.selectFrom("audit_events").select(["action", "actor", "changes"]).where("video_id", "=", id).orderBy("id").execute();

    const v = await videos.createVideo({ video: { title: "Cats" } }, { headers: bearer(owner) });
    const body = Buffer.from("not really a video, but bytes");

    // The owner's own upload session: no audit.
    const own = await videos.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(body.length) }, { headers: bearer(owner) });
    await videos.abortUpload({ id: v.id, uploadId: own.uploadId }, { headers: bearer(owner) });
    t.same(await rows(v.id), [], "the owner's upload actions are not audited");

    // The admin opens, uploads and completes one on alice's video.
    const up = await videos.createUpload({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(body.length) }, { headers: bearer(admin) });
    const put = await fetch(up.url, { method: "PUT", body, headers: up.requiredHeaders });
    t.equal(put.status, 200, "the presigned PUT is accepted");
    const done = await videos.completeUpload({ id: v.id, uploadId: up.uploadId }, { headers: bearer(admin) });
    t.equal(done.state, Video_State.UPLOADED);

    const audit = await rows(v.id);
    t.same(
      audit.map((r) => [r.action, r.actor]),
      [
        ["video.v1.VideoService/CreateUpload", "admin-ada"],
        ["video.v1.VideoService/CompleteUpload", "admin-ada"],
      ],
      "CreateUpload and CompleteUpload by the admin are audited, in order",
    );
    t.match(audit[1].changes, { state: { before: "STATE_PENDING_UPLOAD", after: "STATE_UPLOADED" } }, "the state change is recorded");
    const lines = sec.logs.records().filter((r) => r.channel === "audit" && r.video_id === v.id);
    t.equal(lines.length, 2, "one audit log line per audited action");

    // A repeated completion changes nothing and records nothing.
    await videos.completeUpload({ id: v.id, uploadId: up.uploadId }, { headers: bearer(admin) });
    t.equal((await rows(v.id)).length, 2, "an idempotent replay is not a second action");
  });
}
