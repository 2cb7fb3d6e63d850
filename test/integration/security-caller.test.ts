import t from "tap";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import auditRoutes from "../../server/audit/audit-service.js";
import eventRoutes from "../../server/events/event-service.js";
import videoRoutes from "../../server/videos/index.js";
import { countVideos, rpcClients, startTestServer } from "../support/server.js";

// Fail closed (issue 12 item 8): a handler reached without authentication
// has no caller, and refuses the call; it never runs as an admin. With auth
// off, the local developer is set by an interceptor of its own, over every
// protocol.

t.test("a path that skips authentication does not run as admin: the call is UNAUTHENTICATED", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  const existing = await s.clients.connect.createVideo({ video: { title: "someone's" } });
  // The same handlers on a router with no interceptor at all: what a new
  // path that forgot the auth interceptor would run.
  const transport = createRouterTransport((router) => {
    videoRoutes(s.ctx)(router);
    eventRoutes(() => s.ctx.db, s.server.relay, new AbortController().signal)(router);
    auditRoutes(() => s.ctx.db)(router);
  });
  const videos = createClient(VideoService, transport);
  const before = await countVideos(s.ctx);
  await t.rejects(videos.createVideo({ video: { title: "nobody" } }), { code: Code.Unauthenticated }, "CreateVideo");
  await t.rejects(videos.getVideo({ id: existing.id }), { code: Code.Unauthenticated }, "GetVideo");
  await t.rejects(videos.listVideos({}), { code: Code.Unauthenticated }, "ListVideos");
  await t.rejects(videos.updateVideo({ video: { id: existing.id, title: "taken over" } }), { code: Code.Unauthenticated }, "UpdateVideo");
  await t.rejects(videos.deleteVideo({ id: existing.id }), { code: Code.Unauthenticated }, "DeleteVideo");
  await t.rejects(createClient(AuditService, transport).listAuditEvents({}), { code: Code.Unauthenticated }, "ListAuditEvents (admin only)");
  await t.rejects(createClient(EventService, transport).listEvents({}), { code: Code.Unauthenticated }, "ListEvents");
  t.equal(await countVideos(s.ctx), before, "nothing was created");
  t.equal((await s.clients.connect.getVideo({ id: existing.id })).title, "someone's", "nothing was changed");
});

t.test("with auth off, every protocol's caller is the local developer", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  for (const [name, client] of rpcClients(s)) {
    t.equal((await client.createVideo({ video: { title: name } })).ownerId, "local-developer", name);
  }
  const res = await s.clients.rest("POST", "/videos", { json: { title: "rest" } });
  t.equal(res.json?.ownerId, "local-developer", "REST");
  t.ok((await createClient(AuditService, s.transports.connect).listAuditEvents({})), "the local developer is an admin (reads the audit log)");
});
