import t from "tap";
import { sql } from "kysely";
import { metricValue } from "../support/pubsub.js";
import { DATABASES, startTestServer, type TestServer } from "../support/server.js";

// Database latency and pool saturation, as an on-call engineer reads them on
// /metrics (issue 17): a latency histogram per statement summary and outcome,
// and the pool's connections, queue and waits, on PostgreSQL and PGlite.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function scrape(s: TestServer): Promise<string> {
  return (await fetch(`${s.baseUrl}/metrics`)).text();
}

// The pool series only: a full scrape asks the database for the outbox
// backlog, which would queue behind the connections these tests hold.
async function pool(s: TestServer) {
  const r = s.ctx.metrics.registry;
  const text = (await r.getSingleMetricAsString("db_pool_connections")) + "\n" + (await r.getSingleMetricAsString("db_pool_waiting_clients")) + "\n" + (await r.getSingleMetricAsString("db_pool_acquire_waits_total"));
  return {
    inUse: metricValue(text, "db_pool_connections", { state: "in_use" }),
    idle: metricValue(text, "db_pool_connections", { state: "idle" }),
    waiting: metricValue(text, "db_pool_waiting_clients"),
    waits: metricValue(text, "db_pool_acquire_waits_total"),
  };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

for (const db of DATABASES) {
  t.test(`database metrics on ${db.kind}`, { skip: db.skip }, async (t) => {
    const s = await startTestServer(t, { database: db.kind });

    await t.test("each statement's latency is observed by its summary and outcome, never its values", async (t) => {
      const created = await s.clients.rest("POST", "/videos", { json: { title: "Secret harbour cats", description: "do-not-label-me" } });
      t.equal(created.status, 200, created.text);
      t.equal((await s.clients.rest("GET", `/videos/${created.json.id}`)).status, 200);
      await t.rejects(s.ctx.db.selectFrom("no_such_table" as "videos").selectAll().execute(), "a failing statement");
      const text = await scrape(s);
      t.match(text, /^# TYPE db_query_duration_seconds histogram$/m);
      t.ok(metricValue(text, "db_query_duration_seconds_count", { operation: "INSERT videos", outcome: "ok" }) >= 1, "the INSERT of CreateVideo");
      t.ok(metricValue(text, "db_query_duration_seconds_count", { operation: "SELECT videos", outcome: "ok" }) >= 1, "the SELECT of GetVideo");
      t.equal(metricValue(text, "db_query_duration_seconds_count", { operation: "SELECT no_such_table", outcome: "error" }), 1, "the failure, as an error");
      t.ok(metricValue(text, "db_query_duration_seconds_sum", { operation: "INSERT videos", outcome: "ok" }) > 0, "durations are summed");
      t.notMatch(text, /Secret harbour cats|do-not-label-me|\$1/, "no value and no SQL text in a label");
    });

    await t.test("pool gauges show connections in use, callers waiting, and count each acquisition that had to wait", async (t) => {
      // Hold every connection in an open transaction (PostgreSQL: the pool's
      // five; PGlite: its one), then ask for one more.
      const size = db.kind === "postgres" ? 5 : 1;
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const before = await pool(s);
      const holders = Array.from({ length: size }, () =>
        s.ctx.db.transaction().execute(async (trx) => {
          await sql`select 1`.execute(trx);
          await gate;
        }),
      );
      const held = await until("every connection in use", async () => ((await pool(s)).inUse >= size ? pool(s) : undefined));
      t.equal(held.inUse, size, "all in use");
      t.equal(held.idle, 0, "none idle");
      const queued = s.ctx.db.selectFrom("videos").select("id").limit(1).execute();
      const waiting = await until("a caller waiting", async () => ((await pool(s)).waiting >= 1 ? pool(s) : undefined));
      t.ok(waiting.waiting >= 1, "the extra caller waits");
      t.ok(waiting.waits >= before.waits + 1, "and its acquisition is counted as a wait");
      open();
      await Promise.all([...holders, queued]);
      const after = await until("the queue drained", async () => {
        const p = await pool(s);
        return p.waiting === 0 && p.inUse === 0 ? p : undefined;
      });
      t.equal(after.idle, size, "the connections are idle again");
      const text = await scrape(s);
      t.match(text, /^# TYPE db_pool_connections gauge$/m);
      t.match(text, /^# TYPE db_pool_waiting_clients gauge$/m);
      t.match(text, /^# TYPE db_pool_acquire_waits_total counter$/m);
    });
  });
}
