import t from "tap";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { sql } from "kysely";
import { AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { Video_Visibility } from "../../gen/video/v1/video_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { bearer, startSecuredServer } from "../support/jwt.js";
import { DATABASES, expectRestError, storedRow, type Asserts } from "../support/server.js";

// The audit trail (issue: security): an admin's update or delete of someone
// else's video writes one audit_events row in the same transaction as the
// change and, once committed, one line on the "audit" log channel; admins read
// the trail through AuditService.ListAuditEvents over gRPC and REST.

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const traceparent = (span = "00f067aa0ba902b7") => `00-${TRACE_ID}-${span}-01`;

const OWNER = { sub: "editor-alice", roles: ["editor"] };
const ADMIN = { sub: "admin-ada", roles: ["editor", "admin"] };
const ADMIN2 = { sub: "admin-bo", roles: ["admin"] };

async function setup(t: Asserts, database: (typeof DATABASES)[number]["kind"]) {
  const sec = await startSecuredServer(t, { database });
  const videos = createClient(VideoService, sec.s.transports.grpc);
  const audit = createClient(AuditService, sec.s.transports.grpc);
  const tok = {
    owner: await sec.token(OWNER.sub, OWNER.roles),
    admin: await sec.token(ADMIN.sub, ADMIN.roles),
    admin2: await sec.token(ADMIN2.sub, ADMIN2.roles),
    viewer: await sec.token("viewer-vera", ["viewer"]),
    editor: await sec.token("editor-bob", ["editor"]),
    service: await sec.token("svc-transcoder", ["service"]),
  };
  const make = (title: string, token = tok.owner) =>
    videos.createVideo({ video: { title, description: "as uploaded", tags: ["cats"], visibility: Video_Visibility.PRIVATE } }, { headers: bearer(token) });
  const rows = (videoId: string) => sec.s.ctx.db.selectFrom("audit_events").selectAll().where("video_id", "=", videoId).orderBy("id").execute();
  const auditLines = () => sec.logs.records().filter((r) => r.channel === "audit");
  const outboxCount = async (videoId: string) =>
    Number(
      (
        await sec.s.ctx.db
          .selectFrom("outbox")
          .select((eb) => eb.fn.countAll<string>().as("n"))
          .where("video_id", "=", videoId)
          .executeTakeFirstOrThrow()
      ).n,
    );
  return { sec, videos, audit, tok, make, rows, auditLines, outboxCount };
}

const headers = (token: string, requestId: string, span?: string) => ({ ...bearer(token), "x-request-id": requestId, traceparent: traceparent(span) });

for (const { kind, skip } of DATABASES) {
  t.test(`${kind}: admin writes to someone else's video are audited, in the change's transaction`, { skip }, async (t) => {
    const { sec, videos, tok, make, rows, auditLines, outboxCount } = await setup(t, kind);
    const v = await make("Original title");

    // An admin retitles alice's video over gRPC.
    const updated = await videos.updateVideo(
      { video: { id: v.id, title: "Moderated title", description: "as uploaded" }, updateMask: { paths: ["title", "description"] } },
      { headers: headers(tok.admin, "req-admin-update") },
    );
    const [row, ...more] = await rows(v.id);
    t.same(more, [], "one audit row");
    t.ok(row, "an audit row was written");
    t.match(row, {
      actor: ADMIN.sub,
      actor_roles: ADMIN.roles,
      action: "video.v1.VideoService/UpdateVideo",
      video_id: v.id,
      request_id: "req-admin-update",
      trace_id: TRACE_ID,
    });
    t.same(row?.changes, { title: { before: "Original title", after: "Moderated title" } }, "changes: each changed field with before and after (unchanged ones left out)");
    t.equal(row && new Date(row.create_time).getTime(), timestampDate(updated.updateTime!).getTime(), "the time of the change");

    // The log line, after the commit, carries the same record.
    const lines = auditLines();
    t.equal(lines.length, 1, "one audit log line");
    t.match(lines[0], {
      message: "audit",
      channel: "audit",
      event_id: row?.event_id,
      actor: ADMIN.sub,
      actor_roles: ADMIN.roles,
      action: "video.v1.VideoService/UpdateVideo",
      video_id: v.id,
      changes: { title: { before: "Original title", after: "Moderated title" } },
      request_id: "req-admin-update",
      trace_id: TRACE_ID,
    });

    // A failed write leaves no audit row and no audit line: stale etag → ABORTED.
    const before = await storedRow(sec.s.ctx, v.id);
    await t.rejects(
      videos.updateVideo({ video: { id: v.id, title: "Stale", etag: "stale-etag" }, updateMask: { paths: ["title"] } }, { headers: headers(tok.admin, "req-stale") }),
      { code: Code.Aborted },
      "stale etag → ABORTED",
    );
    const stale = await sec.s.clients.rest("DELETE", `/videos/${v.id}`, { headers: { ...headers(tok.admin, "req-stale-rest"), "if-match": '"stale-etag"' } });
    expectRestError(t, stale, 409, "ABORTED", undefined, "REST delete with a stale If-Match");
    t.equal((await rows(v.id)).length, 1, "no audit row for the aborted writes");
    t.equal(auditLines().length, 1, "no audit line for the aborted writes");

    // The audit insert fails → the change is rolled back with it.
    const outboxBefore = await outboxCount(v.id);
    await sql`ALTER TABLE audit_events ADD CONSTRAINT refuse_for_test CHECK (request_id <> 'req-refuse-audit')`.execute(sec.s.ctx.db);
    const refused = await videos
      .updateVideo({ video: { id: v.id, title: "Never stored" }, updateMask: { paths: ["title"] } }, { headers: headers(tok.admin, "req-refuse-audit") })
      .then(() => undefined, (e: unknown) => ConnectError.from(e));
    t.equal(refused && Code[refused.code], "Internal", "the failed audit insert fails the call");
    t.notMatch(refused?.rawMessage ?? "", /refuse_for_test|constraint|audit_events/i, "without leaking the database error");
    await sql`ALTER TABLE audit_events DROP CONSTRAINT refuse_for_test`.execute(sec.s.ctx.db);
    t.same(await storedRow(sec.s.ctx, v.id), before, "the video is unchanged: the update was rolled back with the audit row");
    t.equal(await outboxCount(v.id), outboxBefore, "and so was its outbox event");

    // The commit itself fails after the audit row was inserted → neither survives, and nothing is logged.
    await sql`CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.request_id = 'req-refuse-commit' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$`.execute(sec.s.ctx.db);
    await sql`CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON audit_events DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()`.execute(sec.s.ctx.db);
    await t.rejects(
      videos.deleteVideo({ id: v.id }, { headers: headers(tok.admin, "req-refuse-commit") }),
      { code: Code.Internal },
      "a commit that fails fails the call",
    );
    await sql`DROP TRIGGER refuse_at_commit ON audit_events`.execute(sec.s.ctx.db);
    t.same(await storedRow(sec.s.ctx, v.id), before, "the video is still there, unchanged");
    t.equal((await rows(v.id)).length, 1, "no audit row for the failed commits");
    t.equal(auditLines().length, 1, "no audit line for the failed commits: lines are written after the commit");

    // An admin deletes someone else's video over REST: audited, the whole video as "before".
    const del = await sec.s.clients.rest("DELETE", `/videos/${v.id}`, { headers: headers(tok.admin, "req-admin-delete", "b7ad6b7169203331") });
    t.equal(del.status, 200, "REST delete by an admin");
    const deleted = (await rows(v.id))[1];
    t.match(deleted, { actor: ADMIN.sub, action: "video.v1.VideoService/DeleteVideo", request_id: "req-admin-delete", trace_id: TRACE_ID });
    t.match(deleted?.changes, {
      title: { before: "Moderated title" },
      description: { before: "as uploaded" },
      tags: { before: ["cats"] },
      owner_id: { before: OWNER.sub },
    });
    t.notOk(deleted && "after" in deleted.changes.title, "a deleted field has no after");
    t.equal(auditLines().length, 2, "and its audit line");
    t.match(auditLines()[1], { action: "video.v1.VideoService/DeleteVideo", request_id: "req-admin-delete", trace_id: TRACE_ID });

    // A REST PATCH by an admin: audited with the REST call's request id.
    const w = await make("Patched title");
    const patched = await sec.s.clients.rest("PATCH", `/videos/${w.id}`, { json: { title: "Patched by admin" }, headers: headers(tok.admin, "req-rest-patch") });
    t.equal(patched.status, 200, "REST PATCH by an admin");
    t.match(await rows(w.id), [{ action: "video.v1.VideoService/UpdateVideo", request_id: "req-rest-patch", changes: { title: { before: "Patched title", after: "Patched by admin" } } }]);

    // Not audited: an admin on its own video, an owner on its own.
    const own = await make("Admin's own", tok.admin);
    await videos.updateVideo({ video: { id: own.id, title: "Admin's own, renamed" }, updateMask: { paths: ["title"] } }, { headers: headers(tok.admin, "req-own") });
    await videos.deleteVideo({ id: own.id }, { headers: headers(tok.admin, "req-own-delete") });
    t.same(await rows(own.id), [], "an admin acting on its own video is not audited");
    const x = await make("Alice's");
    await videos.updateVideo({ video: { id: x.id, title: "Alice's, renamed" }, updateMask: { paths: ["title"] } }, { headers: headers(tok.owner, "req-owner") });
    await videos.deleteVideo({ id: x.id }, { headers: headers(tok.owner, "req-owner-delete") });
    t.same(await rows(x.id), [], "an owner acting on its own video is not audited");
    t.equal(auditLines().length, 3, "and nothing of theirs on the audit channel");
    t.notOk(
      auditLines().some((l) => ["req-own", "req-own-delete", "req-owner", "req-owner-delete", "req-stale", "req-refuse-audit", "req-refuse-commit"].includes(l.request_id as string)),
      "no audit line for unaudited or failed calls",
    );
  });
}

t.test("ListAuditEvents: admins only, filters and page tokens, over gRPC and REST", async (t) => {
  const { sec, videos, audit, tok, make } = await setup(t, DATABASES.find((d) => !d.skip && d.kind === "postgres") ? "postgres" : "pglite");
  const v1 = await make("one");
  const v2 = await make("two");
  const edit = (id: string, token: string, title: string, requestId: string) =>
    videos.updateVideo({ video: { id, title }, updateMask: { paths: ["title"] } }, { headers: headers(token, requestId) });
  await edit(v1.id, tok.admin, "one a", "r1");
  await edit(v2.id, tok.admin, "two a", "r2");
  await edit(v1.id, tok.admin, "one b", "r3");
  await edit(v1.id, tok.admin2, "one c", "r4");
  await edit(v2.id, tok.admin, "two b", "r5");
  await edit(v1.id, tok.admin, "one d", "r6");

  const all = await audit.listAuditEvents({}, { headers: bearer(tok.admin) });
  t.same(all.auditEvents.map((e) => e.requestId), ["r6", "r5", "r4", "r3", "r2", "r1"], "newest first");
  t.equal(all.nextPageToken, "", "one page");
  const first = all.auditEvents[5];
  t.match(first, { actor: ADMIN.sub, actorRoles: ADMIN.roles, action: "video.v1.VideoService/UpdateVideo", videoId: v1.id, requestId: "r1", traceId: TRACE_ID });
  t.same(first.changes, { title: { before: "one", after: "one a" } }, "changes as a Struct");
  t.ok(first.time && first.id, "time and id");

  const ids = async (req: { videoId?: string; actor?: string }) =>
    (await audit.listAuditEvents(req, { headers: bearer(tok.admin) })).auditEvents.map((e) => e.requestId);
  t.same(await ids({ videoId: v1.id }), ["r6", "r4", "r3", "r1"], "filtered by video_id");
  t.same(await ids({ actor: ADMIN2.sub }), ["r4"], "filtered by actor");
  t.same(await ids({ videoId: v2.id, actor: ADMIN.sub }), ["r5", "r2"], "both filters");
  t.same(await ids({ actor: "nobody" }), [], "an actor with no entries");

  // Page tokens over gRPC.
  const paged: string[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await audit.listAuditEvents({ videoId: v1.id, pageSize: 3, pageToken }, { headers: bearer(tok.admin2) });
    paged.push(...page.auditEvents.map((e) => e.requestId));
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken && pages < 10);
  t.same(paged, ["r6", "r4", "r3", "r1"], "pages of 3 add up to the filtered list, in order, once each");
  t.equal(pages, 2, "in two pages");
  const page1 = await audit.listAuditEvents({ videoId: v1.id, pageSize: 1 }, { headers: bearer(tok.admin) });
  await t.rejects(
    audit.listAuditEvents({ videoId: v2.id, pageSize: 1, pageToken: page1.nextPageToken }, { headers: bearer(tok.admin) }),
    { code: Code.InvalidArgument },
    "a page token used with other filters → INVALID_ARGUMENT",
  );

  // The same over REST, snake_case and lowerCamelCase query parameters alike.
  const r1 = await sec.s.clients.rest("GET", `/audit-events?video_id=${v1.id}&pageSize=2`, { headers: bearer(tok.admin) });
  t.equal(r1.status, 200, "REST GET /audit-events");
  t.same(r1.json.auditEvents.map((e: { requestId: string }) => e.requestId), ["r6", "r4"], "REST first page");
  t.match(r1.json.auditEvents[1], { actor: ADMIN2.sub, actorRoles: ADMIN2.roles, videoId: v1.id, traceId: TRACE_ID, changes: { title: { before: "one b", after: "one c" } } });
  t.ok(r1.json.nextPageToken, "REST next page token");
  const r2 = await sec.s.clients.rest("GET", `/audit-events?videoId=${v1.id}&page_size=2&pageToken=${encodeURIComponent(r1.json.nextPageToken)}`, {
    headers: bearer(tok.admin),
  });
  t.same(r2.json.auditEvents.map((e: { requestId: string }) => e.requestId), ["r3", "r1"], "REST second page");
  t.notOk(r2.json.nextPageToken, "REST last page has no token");
  const r3 = await sec.s.clients.rest("GET", `/audit-events?actor=${ADMIN2.sub}`, { headers: bearer(tok.admin) });
  t.same(r3.json.auditEvents.map((e: { requestId: string }) => e.requestId), ["r4"], "REST actor filter");

  // Not readable by anyone but admins, filters or not.
  for (const who of ["viewer", "editor", "owner", "service"] as const) {
    await t.rejects(audit.listAuditEvents({ videoId: v1.id }, { headers: bearer(tok[who]) }), { code: Code.PermissionDenied }, `${who}: PERMISSION_DENIED over gRPC`);
    const res = await sec.s.clients.rest("GET", `/audit-events?videoId=${v1.id}`, { headers: bearer(tok[who]) });
    expectRestError(t, res, 403, "PERMISSION_DENIED", undefined, `${who}: REST`);
  }
  await t.rejects(audit.listAuditEvents({}), { code: Code.Unauthenticated }, "no token: UNAUTHENTICATED");
});
