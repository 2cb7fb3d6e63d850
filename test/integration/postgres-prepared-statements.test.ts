import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { sql, type Kysely } from "kysely";
import pg from "pg";
import t from "tap";
import { openPostgres, type DatabaseHandle } from "../../server/db/database.js";
import { migrate } from "../../server/db/migrate.js";
import type { Database } from "../../server/db/schema.js";
import { videoColumns, videos } from "../../server/videos/repository.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";

// The issue's requirement for DATABASE_URL: "pool of at most DB_POOL_MAX
// connections; every query runs as a named server-side prepared statement
// reused across calls". pg_prepared_statements is per session, so with
// poolMax 1 the pool's one connection is the session we inspect — through
// the same pool. pg_stat_statements is not needed (and not installed).

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
const migrations = fileURLToPath(new URL("../../migrations/", import.meta.url));
const APP = "video-management-service";

async function open(t: TestContext, poolMax: number): Promise<{ handle: DatabaseHandle; url: string }> {
  const url = await createTestDatabase(t);
  const handle = openPostgres({ url, poolMax });
  t.teardown(() => handle.close());
  await migrate(handle, { dir: migrations });
  return { handle, url };
}

interface PreparedRow {
  name: string;
  statement: string;
  from_sql: boolean;
  generic_plans: string;
  custom_plans: string;
}

const prepared = (db: Kysely<Database>) =>
  sql<PreparedRow>`select name, statement, from_sql, generic_plans, custom_plans from pg_prepared_statements`.execute(db).then((r) => r.rows);

const backendPid = (handle: DatabaseHandle) => sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(handle.db).then((r) => r.rows[0].pid);

async function insertVideos(handle: DatabaseHandle, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUID());
  const now = new Date();
  await handle.db
    .insertInto("videos")
    .values(ids.map((id, i) => ({ id, title: `Video ${i}`, description: "", tags: [], labels: "{}", visibility: "private", state: "pending_upload", owner_id: "u1", etag: "e", create_time: now, update_time: now })))
    .execute();
  return ids;
}

t.test("every query is a named server-side prepared statement, prepared once and reused", { skip: postgresSkipReason() }, async (t) => {
  const { handle } = await open(t, 1);
  const ids = await insertVideos(handle, 5);
  const pid = await backendPid(handle);

  const calls = 25;
  for (let i = 0; i < calls; i++) {
    // Different parameter values, including a missing id: still one statement.
    const id = i % 5 === 4 ? randomUUID() : ids[i % 5];
    const row = await videos.find(handle.db, id);
    t.equal(row?.id, i % 5 === 4 ? undefined : id);
  }
  t.equal(await backendPid(handle), pid, "poolMax 1: every call ran on the same session");

  const findSql = handle.db.selectFrom("videos").select(videoColumns).where("id", "=", ids[0]).compile().sql;
  t.match(findSql, /\$1/, "the id is a parameter, not part of the SQL text");
  const rows = await prepared(handle.db);
  const find = rows.filter((r) => r.statement === findSql);
  t.equal(find.length, 1, "videos.find is prepared exactly once on the session");
  t.match(find[0]?.name, /^k_[A-Za-z0-9_-]{20}$/, "under a k_… name");
  t.equal(find[0]?.from_sql, false, "prepared through the extended protocol (a Parse message), not an SQL PREPARE");
  t.equal(Number(find[0]?.generic_plans) + Number(find[0]?.custom_plans), calls, `executed ${calls} times from the one prepared statement`);

  t.ok(rows.length > 0 && rows.every((r) => /^k_/.test(r.name)), "every statement this session prepared is named k_…");
  t.equal(new Set(rows.map((r) => r.statement)).size, rows.length, "no SQL text is prepared twice under different names");
  t.ok(rows.some((r) => r.statement.includes("pg_prepared_statements")), "the inspection query itself ran as a named prepared statement");
  t.ok(rows.some((r) => /^insert into "videos"/.test(r.statement)), "so did the insert");

  // Inside a transaction too.
  for (let i = 0; i < 3; i++) {
    await handle.db.transaction().execute((trx) => videos.findForUpdate(trx, ids[0]));
  }
  const forUpdate = (await prepared(handle.db)).filter((r) => /for update$/.test(r.statement));
  t.equal(forUpdate.length, 1, "findForUpdate: one prepared statement");
  t.equal(Number(forUpdate[0]?.generic_plans) + Number(forUpdate[0]?.custom_plans), 3, "reused by each transaction");

  const { rows: ext } = await sql<{ n: string }>`select count(*) as n from pg_extension where extname = 'pg_stat_statements'`.execute(handle.db);
  t.equal(Number(ext[0].n), 0, "pg_stat_statements is not installed, and none of this needed it");
});

t.test("each pooled connection prepares a statement once", { skip: postgresSkipReason() }, async (t) => {
  const { handle } = await open(t, 2);
  const [id] = await insertVideos(handle, 1);
  // Keep both connections busy at once so the pool opens both.
  await Promise.all(Array.from({ length: 20 }, () => videos.find(handle.db, id)));
  const findSql = handle.db.selectFrom("videos").select(videoColumns).where("id", "=", id).compile().sql;
  // Ask each pooled session in turn, holding it so the other one answers next.
  const seen = new Map<number, PreparedRow[]>();
  await Promise.all(
    [0, 1].map(() =>
      handle.db.connection().execute(async (conn) => {
        const pid = (await sql<{ pid: number }>`select pg_backend_pid() as pid, pg_sleep(0.1)`.execute(conn)).rows[0].pid;
        seen.set(pid, (await prepared(conn)).filter((r) => r.statement === findSql));
      }),
    ),
  );
  t.equal(seen.size, 2, "two sessions");
  let total = 0;
  for (const [pid, rows] of seen) {
    t.ok(rows.length <= 1, `session ${pid} prepared videos.find at most once`);
    for (const r of rows) total += Number(r.generic_plans) + Number(r.custom_plans);
  }
  t.equal(total, 20, "all 20 calls ran from prepared statements, none re-parsed");
});

t.test("the pool never holds more than poolMax connections", { skip: postgresSkipReason() }, async (t) => {
  const poolMax = 3;
  const { handle, url } = await open(t, poolMax);
  const observer = new pg.Client({ connectionString: url, application_name: "pool-observer" });
  await observer.connect();
  t.teardown(() => observer.end());
  const count = async () =>
    Number(
      (
        await observer.query<{ n: string }>(
          "select count(*) as n from pg_stat_activity where application_name = $1 and datname = current_database()",
          [APP],
        )
      ).rows[0].n,
    );

  let max = 0;
  let samples = 0;
  let running = true;
  const watch = (async () => {
    while (running) {
      max = Math.max(max, await count());
      samples++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();

  const pids = await Promise.all(
    Array.from({ length: 50 }, () => sql<{ pid: number }>`select pg_backend_pid() as pid, pg_sleep(0.05)`.execute(handle.db).then((r) => r.rows[0].pid)),
  );
  running = false;
  await watch;

  t.ok(samples >= 10, `the observer sampled pg_stat_activity while the queries ran (${samples} samples)`);
  t.ok(max <= poolMax, `never more than ${poolMax} backends (max seen ${max})`);
  t.equal(max, poolMax, "and the pool did use all of them (the observer can see them)");
  const distinct = new Set(pids);
  t.ok(distinct.size <= poolMax, `50 queries ran on ${distinct.size} backends`);
  t.equal(distinct.size, poolMax);
  t.ok(await count() <= poolMax, "after the burst, still within poolMax");
});

t.test("the readiness ping is a named prepared statement too", { skip: postgresSkipReason() }, async (t) => {
  const { handle } = await open(t, 1);
  for (let i = 0; i < 3; i++) await handle.ping();
  const rows = (await prepared(handle.db)).filter((r) => /^select 1$/i.test(r.statement.trim()));
  t.equal(rows.length, 1, "select 1 is prepared once");
  t.match(rows[0]?.name, /^k_/);
});
