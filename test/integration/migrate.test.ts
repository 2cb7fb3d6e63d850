import { appendFile, cp, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import t from "tap";
import { openPGlite, openPostgres, type DatabaseHandle } from "../../server/db/database.js";
import { migrate, pendingMigrations } from "../../server/db/migrate.js";
import { readMigrations } from "../../server/db/migration-files.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";

// The same behaviours run against embedded PGlite and, when TEST_DATABASE_URL
// is set, a fresh PostgreSQL database per test.

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
type Open = (t: TestContext) => Promise<DatabaseHandle>;

const realDir = fileURLToPath(new URL("../../migrations/", import.meta.url));

const openInMemoryPGlite: Open = async (t) => {
  const handle = await openPGlite(undefined);
  t.teardown(() => handle.close());
  return handle;
};

const openFreshPostgres: Open = async (t) => {
  const handle = openPostgres({ url: await createTestDatabase(t), poolMax: 2 });
  t.teardown(() => handle.close());
  return handle;
};

async function tempDir(t: TestContext, files: Record<string, string> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "vms-migrate-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
  return dir;
}

async function copyOfRealMigrations(t: TestContext): Promise<string> {
  const dir = await tempDir(t);
  await cp(realDir, dir, { recursive: true });
  return dir;
}

/**
 * Applies the real migrations before `version` to `handle`; resolves to a
 * function that applies the rest, so a test can put data in the shape an
 * older version left it before a later migration runs.
 */
async function migrateBefore(t: TestContext, handle: DatabaseHandle, version: number): Promise<() => Promise<string[]>> {
  const dir = await copyOfRealMigrations(t);
  const later = (await readMigrations(dir)).filter((f) => Number(f.version) >= version);
  const held = await tempDir(t);
  for (const f of later) await rename(join(dir, f.script), join(held, f.script));
  await migrate(handle, { dir });
  return async () => {
    for (const f of later) await rename(join(held, f.script), join(dir, f.script));
    return (await migrate(handle, { dir })).applied;
  };
}

async function relationExists(handle: DatabaseHandle, name: string): Promise<boolean> {
  const { rows } = await sql<{ found: string | null }>`select to_regclass(${name})::text as found`.execute(handle.db);
  return rows[0].found !== null;
}

function history(handle: DatabaseHandle) {
  return handle.db.selectFrom("flyway_schema_history").selectAll().orderBy("installed_rank").execute();
}

const behaviours: Record<string, (t: TestContext, open: Open) => Promise<void>> = {
  async "V7 moves the outbox's published and pending events into their tables, positions kept"(t, open) {
    const handle = await open(t);
    const rest = await migrateBefore(t, handle, 7);
    // Before V7: two published (positions 7 and 9), one pending, one parked.
    await sql`insert into outbox (event_id, video_id, sequence, type, payload, create_time, publish_position, publish_time, parked_time) values
      ('0198c1e2-0000-7000-8000-000000000001', '0198c1e2-0000-7000-8000-0000000000a1', 1, 'video.v1.VideoCreated', '\\x', now(), 7, now() - interval '1 minute', null),
      ('0198c1e2-0000-7000-8000-000000000002', '0198c1e2-0000-7000-8000-0000000000a1', 2, 'video.v1.VideoUpdated', '\\x', now(), 9, now(), null),
      ('0198c1e2-0000-7000-8000-000000000003', '0198c1e2-0000-7000-8000-0000000000a1', 3, 'video.v1.VideoUpdated', '\\x', now(), null, null, null),
      ('0198c1e2-0000-7000-8000-000000000004', '0198c1e2-0000-7000-8000-0000000000b2', 1, 'video.v1.Exploded', '\\x', now(), null, null, now())`.execute(handle.db);
    const later = (await readMigrations(realDir)).filter((f) => Number(f.version) >= 7);
    t.same(await rest(), later.map((f) => f.script));

    const published = await sql<{ position: string; event_id: string }>`
      select p.position::text, o.event_id::text from outbox_published p join outbox o on o.id = p.id order by p.position`.execute(handle.db);
    t.same(
      published.rows,
      [
        { position: "7", event_id: "0198c1e2-0000-7000-8000-000000000001" },
        { position: "9", event_id: "0198c1e2-0000-7000-8000-000000000002" },
      ],
      "published events keep their positions (ListEvents cursors stay valid)",
    );
    const pending = await sql<{ event_id: string }>`select o.event_id::text from outbox_pending q join outbox o on o.id = q.id`.execute(handle.db);
    t.same(pending.rows, [{ event_id: "0198c1e2-0000-7000-8000-000000000003" }], "the unpublished event is pending; the parked one is not");

    await sql`insert into outbox (event_id, video_id, sequence, type, payload, create_time) values
      ('0198c1e2-0000-7000-8000-000000000005', '0198c1e2-0000-7000-8000-0000000000c3', 1, 'video.v1.VideoCreated', '\\x', now())`.execute(handle.db);
    const queued = await sql<{ n: number }>`select count(*)::int as n from outbox_pending`.execute(handle.db);
    t.equal(queued.rows[0].n, 2, "an event inserted after V7 is pending at once");
  },

  async "V8 starts the retention horizon just before the oldest position left (or at the last position drawn, when none is)"(t, open) {
    const horizon = async (h: DatabaseHandle) => String((await h.db.selectFrom("outbox_retention").select("horizon").executeTakeFirstOrThrow()).horizon);
    const fresh = await open(t);
    await (await migrateBefore(t, fresh, 8))();
    t.equal(await horizon(fresh), "0", "a new database: nothing deleted");

    const retained = await open(t);
    const rest = await migrateBefore(t, retained, 8);
    // Positions 1–4 were deleted by retention before V8 existed; 5 and 6 are left.
    await sql`select setval('outbox_publish_position', 6)`.execute(retained.db);
    await sql`insert into outbox_published (position, id, video_id, publish_time) values
      (5, 1, '0198c1e2-0000-7000-8000-0000000000a1', now()), (6, 2, '0198c1e2-0000-7000-8000-0000000000a1', now())`.execute(retained.db);
    await rest();
    t.equal(await horizon(retained), "4", "the positions before the oldest one left count as deleted");

    const emptied = await open(t);
    const after = await migrateBefore(t, emptied, 8);
    await sql`select setval('outbox_publish_position', 41)`.execute(emptied.db);
    await after();
    t.equal(await horizon(emptied), "41", "everything published was deleted: every position drawn");
  },

  async "applies the real migrations once and records them as Flyway does"(t, open) {
    const handle = await open(t);
    const files = await readMigrations(realDir);
    const scripts = files.map((f) => f.script);
    t.ok(scripts.includes("V1__create_videos.sql"));

    t.same(await pendingMigrations(handle, realDir), scripts, "everything is pending on an empty database");
    t.notOk(await relationExists(handle, "flyway_schema_history"), "pendingMigrations creates nothing");

    const logged: string[] = [];
    const logger = { info: (msg: string) => void logged.push(msg) };
    t.same(await migrate(handle, { dir: realDir, logger }), { applied: scripts });
    t.equal(logged.filter((m) => m === "applied migration").length, scripts.length);
    for (const name of ["videos", "video_create_requests", "flyway_schema_history", "flyway_schema_history_s_idx"]) {
      t.ok(await relationExists(handle, name), `${name} exists`);
    }

    const rows = await history(handle);
    t.equal(rows.length, files.length);
    rows.forEach((row, i) => {
      t.match(row, {
        installed_rank: i + 1,
        version: files[i].version,
        description: files[i].description,
        type: "SQL",
        script: files[i].script,
        checksum: files[i].checksum,
        installed_by: /^\w+$/,
        installed_on: Date,
        success: true,
      });
      t.ok(row.execution_time >= 0);
    });
    t.equal(rows[0].description, "create videos");

    t.same(await migrate(handle, { dir: realDir }), { applied: [] }, "second run applies nothing");
    t.same(await pendingMigrations(handle, realDir), []);
    t.equal((await history(handle)).length, files.length);
  },

  async "orders versions numerically"(t, open) {
    const handle = await open(t);
    // V10 only works after V2, which a string sort would put after it.
    const dir = await tempDir(t, {
      "V1__create_a.sql": "CREATE TABLE a (id int);",
      "V10__fill_b.sql": "INSERT INTO b VALUES (10);",
      "V2__create_b.sql": "CREATE TABLE b (id int);",
      "V1_1__fill_a.sql": "INSERT INTO a VALUES (11);",
    });
    t.same(await migrate(handle, { dir }), {
      applied: ["V1__create_a.sql", "V1_1__fill_a.sql", "V2__create_b.sql", "V10__fill_b.sql"],
    });
    t.same((await history(handle)).map((r) => r.version), ["1", "1.1", "2", "10"]);
  },

  async "refuses a migration changed after it was applied"(t, open) {
    const handle = await open(t);
    const dir = await copyOfRealMigrations(t);
    await migrate(handle, { dir });
    const file = join(dir, "V1__create_videos.sql");

    // Flyway's checksum ignores line endings, so a CRLF checkout is not a change.
    await writeFile(file, (await readFile(file, "utf8")).replaceAll("\n", "\r\n"));
    t.same(await migrate(handle, { dir }), { applied: [] });

    await appendFile(file, "-- edited\n");
    await t.rejects(migrate(handle, { dir }), {
      message: /^Migration V1__create_videos\.sql was changed after it was applied: checksum -?\d+ on disk, -?\d+ in flyway_schema_history$/,
    });
  },

  async "refuses out-of-order, missing and failed migrations"(t, open) {
    const handle = await open(t);
    const dir = await tempDir(t, {
      "V1__one.sql": "CREATE TABLE one (id int);",
      "V3__three.sql": "CREATE TABLE three (id int);",
    });
    await migrate(handle, { dir });

    await writeFile(join(dir, "V2__two.sql"), "CREATE TABLE two (id int);");
    await t.rejects(migrate(handle, { dir }), { message: /^Migration V2__two\.sql \(version 2\) is older than the latest applied version 3/ });
    t.same(await pendingMigrations(handle, dir), ["V2__two.sql"], "not ready while it is refused");
    t.notOk(await relationExists(handle, "two"));
    await rm(join(dir, "V2__two.sql"));

    await rm(join(dir, "V3__three.sql"));
    await t.rejects(migrate(handle, { dir }), { message: /^Migration V3__three\.sql \(version 3\) was applied but is missing/ });
    await writeFile(join(dir, "V3__three.sql"), "CREATE TABLE three (id int);");

    // What Flyway leaves behind when a migration fails on a database without
    // transactional DDL, or what an operator may have written by hand.
    await handle.db
      .insertInto("flyway_schema_history")
      .values({
        installed_rank: 3,
        version: "4",
        description: "four",
        type: "SQL",
        script: "V4__four.sql",
        checksum: 1,
        installed_by: "someone",
        execution_time: 1,
        success: false,
      })
      .execute();
    await t.rejects(migrate(handle, { dir }), { message: /^Migration V4__four\.sql failed earlier/ });
  },

  async "a failing migration leaves no trace and names the file"(t, open) {
    const handle = await open(t);
    const dir = await tempDir(t, {
      "V1__ok.sql": "CREATE TABLE ok (id int);",
      "V2__bad.sql": "CREATE TABLE partial (id int);\nINSERT INTO partial VALUES ('not a number');\n",
    });
    await t.rejects(migrate(handle, { dir }), {
      message: /^Migration V2__bad\.sql failed: invalid input syntax for type integer/,
    });
    t.ok(await relationExists(handle, "ok"), "earlier migrations stay applied");
    t.notOk(await relationExists(handle, "partial"), "no partial table");
    t.same((await history(handle)).map((r) => r.script), ["V1__ok.sql"], "no history row for the failure");
    t.same(await pendingMigrations(handle, dir), ["V2__bad.sql"]);

    await writeFile(join(dir, "V2__bad.sql"), "CREATE TABLE partial (id int);\n");
    t.same(await migrate(handle, { dir }), { applied: ["V2__bad.sql"] }, "the fixed file applies");
  },
};

t.test("PGlite", async (t) => {
  for (const [name, fn] of Object.entries(behaviours)) t.test(name, (t) => fn(t, openInMemoryPGlite));
});

t.test("PostgreSQL", { skip: postgresSkipReason() }, async (t) => {
  for (const [name, fn] of Object.entries(behaviours)) t.test(name, (t) => fn(t, openFreshPostgres));

  t.test("three replicas starting at once migrate exactly once", async (t) => {
    const url = await createTestDatabase(t);
    const replicas = [1, 2, 3].map(() => openPostgres({ url, poolMax: 2 }));
    t.teardown(() => Promise.all(replicas.map((h) => h.close())));
    // The real migrations plus a slow one, so the others really have to wait.
    const dir = await copyOfRealMigrations(t);
    await writeFile(join(dir, "V999999__slow.sql"), "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.3);\n");
    const scripts = (await readMigrations(dir)).map((f) => f.script);

    const results = await Promise.all(replicas.map((h) => migrate(h, { dir })));
    t.same(results.flatMap((r) => r.applied).sort(), [...scripts].sort(), "each file applied by exactly one replica");
    const rows = await history(replicas[0]);
    t.equal(rows.length, scripts.length, "one history row per migration");
    t.same(rows.map((r) => r.script), scripts);
    for (const h of replicas) t.same(await pendingMigrations(h, dir), []);
  });

  t.test("hands the connection back as it found it", async (t) => {
    // poolMax 1: every session below is the connection migrate used.
    const handle = openPostgres({ url: await createTestDatabase(t), poolMax: 1 });
    t.teardown(() => handle.close());
    const dir = await tempDir(t, { "V1__bad.sql": "SELECT 1/0;" });
    await t.rejects(migrate(handle, { dir }), { message: /^Migration V1__bad\.sql failed: division by zero$/ });
    const state = await handle.withSession(async (s) => {
      const [{ statement_timeout }] = await s.query<{ statement_timeout: string }>("SHOW statement_timeout");
      const [{ locks }] = await s.query<{ locks: number }>(
        "SELECT count(*)::int AS locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
      );
      return { statement_timeout, locks };
    });
    t.same(state, { statement_timeout: "30s", locks: 0 }, "statement_timeout restored, advisory lock released");
  });
});
