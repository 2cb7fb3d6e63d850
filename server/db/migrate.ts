import { createHash } from "node:crypto";
import type { DatabaseHandle, ScriptSession } from "./database.js";
import { planMigrations, readMigrations, type HistoryRow, type MigrationFile } from "./migration-files.js";

// Built-in migration runner that keeps the database Flyway-compatible: same
// history table, same checksums, same validation, so the official Flyway image
// can take over (or hand back) the same database at any time.

export interface MigrateOptions {
  dir: string;
  logger?: { info(msg: string, meta?: object): void };
}

// One advisory lock key for every replica of the service. Derived from a fixed
// string so it is stable across releases and unlikely to collide with locks
// taken by other code in the same database.
const LOCK_KEY = createHash("sha256")
  .update("video-management-service/flyway_schema_history")
  .digest()
  .readBigInt64BE(0)
  .toString();

// Flyway's own DDL for PostgreSQL (names included), so Flyway recognises the table.
const CREATE_HISTORY = `
CREATE TABLE IF NOT EXISTS flyway_schema_history (
  installed_rank integer       NOT NULL,
  version        varchar(50),
  description    varchar(200)  NOT NULL,
  type           varchar(20)   NOT NULL,
  script         varchar(1000) NOT NULL,
  checksum       integer,
  installed_by   varchar(100)  NOT NULL,
  installed_on   timestamp     NOT NULL DEFAULT now(),
  execution_time integer       NOT NULL,
  success        boolean       NOT NULL,
  CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank)
);
CREATE INDEX IF NOT EXISTS flyway_schema_history_s_idx ON flyway_schema_history (success);
`;

// installed_rank is computed inside the transaction; the advisory lock makes
// this session the only writer, so max()+1 cannot race.
const INSERT_HISTORY = `
INSERT INTO flyway_schema_history
  (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success)
SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, 'SQL', $3, $4, left(current_user, 100), $5, true
FROM flyway_schema_history`;

export async function migrate(handle: DatabaseHandle, options: MigrateOptions): Promise<{ applied: string[] }> {
  // Read and parse the files before touching the database: a bad file name or
  // duplicate version fails fast without waiting for the lock.
  const files = await readMigrations(options.dir);
  return handle.withSession(async (session) => {
    // Waiting for another replica's migration and running a long one (index
    // builds) can both outlast the pool's statement_timeout; RESET in finally
    // restores the connection default before the connection goes back to the pool.
    await session.exec("SET statement_timeout = 0");
    await session.query("SELECT pg_advisory_lock($1::bigint)", [LOCK_KEY]);
    let ok = false;
    try {
      await session.exec(CREATE_HISTORY);
      const { pending, problems } = planMigrations(files, await readHistory(session));
      if (problems.length > 0) throw new Error(problems[0]);
      const applied: string[] = [];
      for (const file of pending) {
        const ms = await apply(session, file);
        options.logger?.info("applied migration", { script: file.script, version: file.version, executionTimeMs: ms });
        applied.push(file.script);
      }
      if (applied.length === 0) options.logger?.info("database schema is up to date", { migrations: files.length });
      ok = true;
      return { applied };
    } finally {
      // If the run already failed (possibly because the connection broke), an
      // error while unlocking must not hide the original one; the lock dies
      // with the connection anyway.
      try {
        await session.query("SELECT pg_advisory_unlock($1::bigint)", [LOCK_KEY]);
        await session.exec("RESET statement_timeout");
      } catch (err) {
        if (ok) throw err;
      }
    }
  });
}

// Script names of the migrations migrate() would apply; non-empty means the
// schema is behind the code. Takes no lock and creates nothing, so it is cheap
// enough for a readiness probe. Validation problems are migrate()'s to report.
export async function pendingMigrations(handle: DatabaseHandle, dir: string): Promise<string[]> {
  const files = await readMigrations(dir);
  const history = await handle.withSession(readHistory);
  return planMigrations(files, history).pending.map((f) => f.script);
}

async function readHistory(session: ScriptSession): Promise<HistoryRow[]> {
  // to_regclass resolves through search_path, as Flyway's default schema does.
  const [{ found }] = await session.query<{ found: string | null }>(
    "SELECT to_regclass('flyway_schema_history')::text AS found",
  );
  if (found === null) return [];
  return session.query<HistoryRow>(
    "SELECT installed_rank, version, description, type, script, checksum, success FROM flyway_schema_history ORDER BY installed_rank",
  );
}

// One transaction per migration: a failing script leaves neither partial
// schema changes nor a history row behind (PostgreSQL DDL is transactional).
// Returns the script's execution time in milliseconds.
async function apply(session: ScriptSession, file: MigrationFile): Promise<number> {
  await session.exec("BEGIN");
  try {
    const started = performance.now();
    await session.exec(file.sql);
    const ms = Math.round(performance.now() - started);
    await session.query(INSERT_HISTORY, [file.version, file.description, file.script, file.checksum, ms]);
    await session.exec("COMMIT");
    return ms;
  } catch (err) {
    await session.exec("ROLLBACK").catch(() => {});
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`Migration ${file.script} failed: ${reason.replace(/\s*\n\s*/g, " ")}`, { cause: err });
  }
}
