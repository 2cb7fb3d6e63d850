import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { pg_trgm } from "@electric-sql/pglite/contrib/pg_trgm";
import { Kysely, PostgresDialect, type LogConfig } from "kysely";
import pg from "pg";
import { NamedStatementClient } from "./pg-named-client.js";
import { PGliteDialect } from "./pglite-dialect.js";
import type { PoolStats } from "./pool-metrics.js";
import { pgliteTemplateFor } from "./pglite-template.js";
import type { Database } from "./schema.js";

// A session that can run multi-statement SQL scripts and hold session state
// (advisory locks) — what the migration runner needs beyond Kysely.
export interface ScriptSession {
  exec(script: string): Promise<void>;
  query<R>(text: string, values?: unknown[]): Promise<R[]>;
}

// The two real databases behind the service: PostgreSQL through a pool, and
// PGlite embedded in-process.
export interface DatabaseHandle {
  readonly kind: "postgres" | "pglite";
  readonly db: Kysely<Database>;
  withSession<T>(fn: (session: ScriptSession) => Promise<T>): Promise<T>;
  ping(): Promise<void>;
  /** LISTEN on a channel; resolves to an unlisten function. onLost fires if the listening connection drops. */
  listen(channel: string, onNotify: () => void, onLost: (error: Error) => void): Promise<() => Promise<void>>;
  /** The connections right now (db_pool_* gauges). */
  poolStats(): PoolStats;
  close(): Promise<void>;
}

export interface PostgresOptions {
  url: string;
  poolMax: number;
  // Applied per connection; a runaway query cannot hold a pooled connection forever.
  statementTimeoutMs?: number;
  // Applied per connection: a session left idle inside a transaction — its
  // replica frozen or cut off mid-batch — is ended by the server, releasing
  // the locks it holds (the relay's per-video locks among them).
  idleInTransactionMs?: number;
  /** Kysely's query log (query metrics and database spans are recorded through it). */
  log?: LogConfig;
  /** Called when a caller asks for a connection while every one is in use. */
  onAcquireWait?: () => void;
}

// On every connection, pooled or listening: a peer that vanished without
// closing (a partition, a dead host) is probed after 30 s idle instead of the
// kernel's default two hours.
const KEEPALIVE = { keepAlive: true, keepAliveInitialDelayMillis: 30_000 } as const;

// pg.Pool with a count of the acquisitions that must queue: no idle
// connection and no room for a new one. Everything goes through connect()
// (Kysely's checkouts, Pool#query, withSession).
class WaitCountingPool extends pg.Pool {
  constructor(config: pg.PoolConfig, private readonly onWait: () => void) {
    super(config);
  }

  override connect(...args: any[]): any {
    if (this.idleCount === 0 && this.totalCount >= (this.options.max ?? 10)) this.onWait();
    return (super.connect as (...a: any[]) => any)(...args);
  }
}

export function openPostgres(options: PostgresOptions): DatabaseHandle {
  const pool = new WaitCountingPool({
    connectionString: options.url,
    max: options.poolMax,
    Client: NamedStatementClient,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statementTimeoutMs ?? 30_000,
    idle_in_transaction_session_timeout: options.idleInTransactionMs ?? 60_000,
    ...KEEPALIVE,
    application_name: "video-management-service",
  }, options.onAcquireWait ?? (() => {}));
  // An idle client losing its connection (database restart) must not crash the
  // process; the pool drops it and the next checkout reconnects.
  pool.on("error", () => {});
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: options.log });
  return {
    kind: "postgres",
    db,
    async withSession(fn) {
      const client = await pool.connect();
      try {
        return await fn({
          exec: async (script) => {
            await client.query(script);
          },
          query: async <R>(text: string, values: unknown[] = []) =>
            (await client.query({ text, values })).rows as R[],
        });
      } finally {
        client.release();
      }
    },
    async ping() {
      // (text, values) form: NamedStatementClient prepares it once per connection.
      await pool.query("select 1", []);
    },
    async listen(channel, onNotify, onLost) {
      // A dedicated connection outside the pool: LISTEN is session state.
      const client = new pg.Client({ connectionString: options.url, application_name: "video-management-service/listen", ...KEEPALIVE });
      client.on("notification", (n) => n.channel === channel && onNotify());
      client.on("error", (e) => onLost(e));
      await client.connect();
      await client.query(`LISTEN "${channel.replace(/"/g, "")}"`);
      return async () => {
        client.removeAllListeners("error");
        client.on("error", () => {});
        await client.end().catch(() => {});
      };
    },
    poolStats() {
      return { inUse: pool.totalCount - pool.idleCount, idle: pool.idleCount, waiting: pool.waitingCount };
    },
    async close() {
      await db.destroy();
    },
  };
}

export async function openPGlite(dataDir: string | undefined, log?: LogConfig, onAcquireWait?: () => void): Promise<DatabaseHandle> {
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const pglite = await PGlite.create({ dataDir, extensions: { pg_trgm }, loadDataDir: pgliteTemplateFor(dataDir) });
  const dialect = new PGliteDialect(pglite, onAcquireWait);
  const db = new Kysely<Database>({ dialect, log });
  return {
    kind: "pglite",
    db,
    async withSession(fn) {
      // One connection: holding Kysely's connection keeps every other query
      // (and transaction) out while fn runs; fn itself must not use `db`.
      return db.connection().execute(() => fn({
        exec: async (script) => {
          await pglite.exec(script);
        },
        query: async <R>(text: string, values: unknown[] = []) =>
          (await pglite.query<R>(text, values)).rows,
      }));
    },
    async ping() {
      await pglite.query("select 1");
    },
    async listen(channel, onNotify) {
      return pglite.listen(channel, () => onNotify());
    },
    poolStats() {
      // One connection: in use by one holder, the rest of the holders queued.
      const holders = dialect.holders();
      return { inUse: Math.min(holders, 1), idle: holders === 0 ? 1 : 0, waiting: Math.max(holders - 1, 0) };
    },
    async close() {
      await db.destroy();
      await pglite.close();
    },
  };
}
