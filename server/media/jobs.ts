import { context, defaultTextMapSetter } from "@opentelemetry/api";
import { sql, type Kysely, type Selectable, type Transaction } from "kysely";
import type { Database, MediaJobKind, MediaJobsTable } from "../db/schema.js";
import { traceContext } from "../telemetry/trace-context.js";

// The media job queue in PostgreSQL (V9). Jobs are enqueued in the
// transaction of the change that calls for them, claimed by any replica with
// FOR UPDATE SKIP LOCKED, and leased: while a job runs its next_attempt_time
// is the lease's end, renewed by a heartbeat, so a job whose replica died is
// claimed again once the lease passes. Claiming counts the attempt.

export type MediaJob = Selectable<MediaJobsTable>;

export async function enqueueMediaJob(trx: Transaction<Database>, job: { videoId: string; kind: MediaJobKind; thumbnailIds?: string[]; now: Date }) {
  // The enqueuing call's span (when tracing is on): the job's span links to it.
  const carrier: { traceparent?: string; tracestate?: string } = {};
  traceContext.inject(context.active(), carrier, defaultTextMapSetter);
  await trx
    .insertInto("media_jobs")
    .values({
      video_id: job.videoId,
      kind: job.kind,
      thumbnail_ids: job.thumbnailIds ?? [],
      state: "pending",
      next_attempt_time: job.now,
      trace_parent: carrier.traceparent ?? null,
      trace_state: carrier.tracestate ?? null,
      create_time: job.now,
      update_time: job.now,
    })
    .execute();
}

/** Claims up to `limit` due jobs (pending and due, or running with a lapsed lease) for `holder`. */
export function claimJobs(db: Kysely<Database>, holder: string, limit: number, leaseMs: number, now: Date): Promise<MediaJob[]> {
  return db.transaction().execute(async (trx) => {
    const due = await trx
      .selectFrom("media_jobs")
      .select("id")
      .where("state", "in", ["pending", "running"])
      .where("next_attempt_time", "<=", now)
      .orderBy("next_attempt_time")
      .limit(limit)
      .forUpdate()
      .skipLocked()
      .execute();
    if (due.length === 0) return [];
    return trx
      .updateTable("media_jobs")
      .set((eb) => ({ state: "running", lease_holder: holder, attempts: eb("attempts", "+", 1), next_attempt_time: new Date(now.getTime() + leaseMs), update_time: now }))
      .where("id", "in", due.map((r) => r.id))
      .returningAll()
      .execute();
  });
}

/** Extends a running job's lease; false when another replica has it now (or it is gone). */
export async function renewLease(db: Kysely<Database>, job: MediaJob, leaseMs: number, now: Date): Promise<boolean> {
  const r = await db
    .updateTable("media_jobs")
    .set({ next_attempt_time: new Date(now.getTime() + leaseMs) })
    .where("id", "=", job.id)
    .where("state", "=", "running")
    .where("lease_holder", "=", job.lease_holder)
    .executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

export function setJobThumbnails(trx: Transaction<Database>, job: MediaJob, ids: string[]) {
  return trx.updateTable("media_jobs").set({ thumbnail_ids: ids }).where("id", "=", job.id).execute();
}

export function finishJob(db: Kysely<Database> | Transaction<Database>, job: MediaJob, outcome: "succeeded" | "failed", error: string | null, now: Date) {
  return db
    .updateTable("media_jobs")
    // A success keeps the error of the attempt before it, for the record.
    .set({ state: outcome, ...(error !== null && { last_error: error }), lease_holder: null, update_time: now })
    .where("id", "=", job.id)
    .where("lease_holder", "=", job.lease_holder)
    .execute();
}

/** Back to pending after a failed attempt, due again after a jittered exponential backoff. */
export function retryJob(db: Kysely<Database>, job: MediaJob, error: string, now: Date) {
  const wait = Math.min(600_000, 1000 * 2 ** Math.min(job.attempts - 1, 10)) * (0.75 + Math.random() / 2);
  return db
    .updateTable("media_jobs")
    .set({ state: "pending", last_error: error, lease_holder: null, next_attempt_time: new Date(now.getTime() + wait), update_time: now })
    .where("id", "=", job.id)
    .where("lease_holder", "=", job.lease_holder)
    .execute();
}

/** Jobs waiting (pending) and the age of the oldest one, for /metrics. */
export async function queueStats(db: Kysely<Database>, now: Date): Promise<{ depth: number; oldestAgeS: number }> {
  const r = await db
    .selectFrom("media_jobs")
    .select([sql<string>`count(*)`.as("depth"), sql<Date | null>`min(create_time)`.as("oldest")])
    .where("state", "in", ["pending", "running"])
    .executeTakeFirstOrThrow();
  const oldest = r.oldest ? new Date(r.oldest).getTime() : now.getTime();
  return { depth: Number(r.depth), oldestAgeS: Math.max(0, (now.getTime() - oldest) / 1000) };
}
