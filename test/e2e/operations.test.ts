import t from "tap";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { sql } from "kysely";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/health/v1/health_pb.js";
import { migrate } from "../../server/db/migrate.js";
import { DATABASES, expectCode, rpcClients, startTestServer, type Asserts, type TestServer } from "../support/server.js";

// What operators depend on (CONTRACT.md §2 "Serving"): liveness, readiness,
// Prometheus metrics, gRPC health, and a shutdown that lets in-flight calls
// finish.

type T = Asserts;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, probe: () => boolean, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The value of one sample in Prometheus text, or 0 when absent. */
function sample(metrics: string, name: string, labels: Record<string, string>): number {
  for (const line of metrics.split("\n")) {
    if (!line.startsWith(name + "{")) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf("}"));
    const got = Object.fromEntries([...body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) {
      return Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return 0;
}

async function grpcJsHealth(s: TestServer, service: string): Promise<Status> {
  const bytes = await s.grpcJsRaw.call("/grpc.health.v1.Health/Check", toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service })));
  return fromBinary(HealthCheckResponseSchema, bytes).status;
}

function behaviours(server: () => TestServer) {
  return {
    async "GET /health is 200 while the process serves"(t: T) {
      const res = await server().clients.rest("GET", "/health");
      t.equal(res.status, 200);
      t.match(res.headers.get("content-type"), /^application\/json/);
      t.same(res.json, { status: "SERVING" });
    },

    async "GET /health/ready is 200 with the database up and migrations applied"(t: T) {
      const res = await server().clients.rest("GET", "/health/ready");
      t.equal(res.status, 200, res.text);
      t.same(res.json, { status: "SERVING" });
    },

    async "grpc.health.v1.Health/Check and List answer SERVING for every service over gRPC, Connect and gRPC-Web"(t: T) {
      const s = server();
      for (const [name, transport] of Object.entries(s.transports)) {
        const health = createClient(Health, transport);
        t.equal((await health.check({})).status, Status.SERVING, `${name}: the server`);
        for (const service of ["video.v1.VideoService", "video.v1.EventService", "video.v1.AuditService"]) {
          t.equal((await health.check({ service })).status, Status.SERVING, `${name}: ${service}`);
        }
        t.same(Object.keys((await health.list({})).statuses).sort(), ["", "video.v1.AuditService", "video.v1.EventService", "video.v1.VideoService"], `${name}: List names every service`);
        await expectCode(t, health.check({ service: "no.such.Service" }), Code.NotFound, undefined, `${name}: an unknown service`);
      }
      t.equal(await grpcJsHealth(s, ""), Status.SERVING, "@grpc/grpc-js");
      t.equal(await grpcJsHealth(s, "video.v1.VideoService"), Status.SERVING, "@grpc/grpc-js, the video service");
      const watch = createClient(Health, s.transports.grpc).watch({ service: "video.v1.VideoService" });
      for await (const first of watch) {
        t.equal(first.status, Status.SERVING, "Watch starts with the current status");
        break;
      }
    },

    async "GET /metrics is Prometheus text counting every call by protocol, procedure and code"(t: T) {
      const s = server();
      const before = await (await fetch(`${s.baseUrl}/metrics`)).text();
      const missing = "00000000-0000-7000-8000-000000000000";
      const calls = 3;
      for (let i = 0; i < calls; i++) {
        for (const [, c] of rpcClients(s)) {
          await c.listVideos({ pageSize: 1 });
          await c.getVideo({ id: missing }).catch(() => {});
        }
        await s.clients.rest("GET", "/videos?page_size=1");
        await s.clients.rest("GET", `/videos/${missing}`);
      }
      const res = await fetch(`${s.baseUrl}/metrics`);
      t.equal(res.status, 200);
      t.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
      const after = await res.text();
      t.match(after, /^# HELP rpc_server_requests_total /m);
      t.match(after, /^# TYPE rpc_server_requests_total counter$/m);
      t.match(after, /^# TYPE rpc_server_duration_seconds histogram$/m);
      // grpc: two clients (connect-node and @grpc/grpc-js); connect: HTTP/1.1 and HTTP/2.
      const perProtocol: Record<string, number> = { grpc: 2, connect: 2, "grpc-web": 1, rest: 1 };
      for (const [protocol, clients] of Object.entries(perProtocol)) {
        const ok = { protocol, procedure: "video.v1.VideoService/ListVideos", code: "ok" };
        const notFound = { protocol, procedure: "video.v1.VideoService/GetVideo", code: "NotFound" };
        t.equal(sample(after, "rpc_server_requests_total", ok) - sample(before, "rpc_server_requests_total", ok), calls * clients, `${protocol}: ListVideos ok`);
        t.equal(sample(after, "rpc_server_requests_total", notFound) - sample(before, "rpc_server_requests_total", notFound), calls * clients, `${protocol}: GetVideo NotFound`);
        const count = { protocol, procedure: "video.v1.VideoService/ListVideos" };
        t.ok(sample(after, "rpc_server_duration_seconds_count", count) >= calls * clients, `${protocol}: durations observed`);
      }
      t.match(after, /^process_cpu_seconds_total /m, "process metrics");
    },

    async "a server stream is counted when it ends, with the code its caller got; a database error mid-stream reaches the caller as a public error"(t: T) {
      const s = server();
      const watchEvents = { procedure: "video.v1.EventService/WatchEvents", protocol: "grpc" };
      const metrics = () => s.ctx.metrics.registry.metrics();
      const before = await metrics();
      const events = createClient(EventService, s.transports.grpc);
      await s.clients.grpc.createVideo({ video: { title: "streamed" } });

      // Its database reads fail while it is open: INTERNAL, with nothing of the database's message.
      const failing = events.watchEvents({})[Symbol.asyncIterator]();
      t.ok(!(await failing.next()).done, "the stream delivers the published event");
      await sql`alter table outbox_published rename to outbox_published_gone`.execute(s.ctx.db);
      let error: ConnectError | undefined;
      try {
        for (let r = await failing.next(); !r.done; r = await failing.next());
      } catch (e) {
        error = ConnectError.from(e);
      } finally {
        await sql`alter table outbox_published_gone rename to outbox_published`.execute(s.ctx.db);
      }
      t.equal(error?.code, Code.Internal, "the stream ends INTERNAL");
      t.equal(error?.rawMessage, "internal error");
      t.notMatch(error?.rawMessage ?? "", /outbox|relation|select/i, "nothing of the database's error reaches the caller");

      // The caller cancels: counted as CANCELED once the stream has stopped.
      const cancel = new AbortController();
      for await (const _ of events.watchEvents({}, { signal: cancel.signal })) {
        cancel.abort();
        break;
      }
      const count = (text: string, code: string) => sample(text, "rpc_server_requests_total", { ...watchEvents, code });
      let after = await metrics();
      for (let i = 0; i < 50 && count(after, "Canceled") === count(before, "Canceled"); i++) {
        await sleep(100);
        after = await metrics();
      }
      t.equal(count(after, "Internal") - count(before, "Internal"), 1, "the failed stream: one INTERNAL");
      t.equal(count(after, "Canceled") - count(before, "Canceled"), 1, "the cancelled stream: one CANCELED");
      t.equal(count(after, "ok") - count(before, "ok"), 0, "neither was counted ok when it started");
    },

    async "an in-flight call finishes while close() drains; new connections are refused"(t: T) {
      const s = server();
      const v = await s.clients.grpc.createVideo({ video: { title: "in flight" } });
      const watch = createClient(Health, s.transports.grpc).watch({ service: "" });
      const watched: Status[] = [];
      const watching = (async () => {
        for await (const m of watch) watched.push(m.status);
      })().catch(() => {});
      await until("the first Watch message", () => watched.length > 0);

      // Hold the video's row (on PGlite: the one connection) so both calls
      // below stay in flight until the gate opens.
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const holder = s.ctx.db.transaction().execute(async (trx) => {
        await trx.selectFrom("videos").select("id").where("id", "=", v.id).forUpdate().execute();
        locked();
        await gate;
      });
      await isLocked;
      const active = s.server.listener.activeRequests;
      const viaGrpc = s.clients.grpc.updateVideo({ video: { id: v.id, title: "finished over gRPC" }, updateMask: { paths: ["title"] } });
      const viaRest = s.clients.rest("PATCH", `/videos/${v.id}`, { json: { description: "finished over REST" } });
      await until("both calls to be in flight", () => s.server.listener.activeRequests >= active + 2);

      const started = Date.now();
      let closed = false;
      const closing = s.server.close(10_000).then(() => (closed = true));
      await sleep(300);
      t.notOk(closed, "close() waits for in-flight calls");
      t.ok(s.ctx.draining, "the server reports itself draining (readiness false)");
      const refused = await fetch(`${s.baseUrl}/health`).then(
        (r) => `HTTP ${r.status}`,
        (e: Error) => String((e.cause as Error | undefined)?.message ?? e),
      );
      t.match(refused, /ECONNREFUSED|ECONNRESET|other side closed|socket/i, "a new connection is refused while draining");

      open();
      await holder;
      const [updated, patched] = await Promise.all([viaGrpc, viaRest]);
      t.equal(updated.title, "finished over gRPC", "the gRPC call completed");
      t.equal(patched.status, 200, "the REST call completed");
      t.equal(patched.json?.description, "finished over REST");
      await closing;
      t.ok(Date.now() - started < 9_000, "close() returned once the calls were done, before the grace period");
      t.equal(s.server.listener.activeRequests, 0, "nothing left in flight");
      await watching;
      t.equal(watched[0], Status.SERVING);
      t.equal(watched.at(-1), Status.NOT_SERVING, "a Watch stream hears NOT_SERVING before the server goes");
      const row = await s.ctx.db.selectFrom("videos").select(["title", "description"]).where("id", "=", v.id).executeTakeFirstOrThrow();
      t.same(row, { title: "finished over gRPC", description: "finished over REST" }, "both writes are stored");
    },
  };
}

for (const db of DATABASES) {
  t.test(`operations on ${db.kind}`, { skip: db.skip }, async (t) => {
    const s = await startTestServer(t, { database: db.kind });
    for (const [name, fn] of Object.entries(behaviours(() => s))) {
      await t.test(name, fn);
    }
  });

  t.test(`readiness on ${db.kind} waits for the migrations`, { skip: db.skip }, async (t) => {
    const s = await startTestServer(t, { database: db.kind, migrate: false });
    const live = await s.clients.rest("GET", "/health");
    t.equal(live.status, 200, "live before the migrations");
    const ready = await s.clients.rest("GET", "/health/ready");
    t.equal(ready.status, 503, "not ready before the migrations");
    t.equal(ready.json?.status, "NOT_SERVING");
    t.match(ready.json?.reason, /migrations pending: V1__create_videos\.sql/);
    t.equal((await createClient(Health, s.transports.grpc).check({})).status, Status.NOT_SERVING, "gRPC health agrees");
    await migrate(s.ctx.database, { dir: s.cfg.migrationsDir });
    const after = await s.clients.rest("GET", "/health/ready");
    t.equal(after.status, 200, "ready once they are applied");
    t.equal((await createClient(Health, s.transports.grpc).check({})).status, Status.SERVING);
  });
}
