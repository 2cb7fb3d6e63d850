import { sql, type Kysely, type Transaction } from "kysely";
import { Gauge } from "prom-client";
import type { DatabaseHandle } from "../db/database.js";
import type { Database } from "../db/schema.js";
import type { Metrics } from "../metrics.js";
import type { StoredEvent } from "./cloudevents.js";
import type { Head, Share } from "./relay-rules.js";

// The outbox as the relay's queue: the SQL of claiming, marking and cleaning
// up. Raw SQL where the builder cannot say it (advisory locks, LATERAL with a
// per-row LIMIT, positions from a sequence), each with why.
//
// Ordering: a relay publishes a video's events only while it holds that
// video's transaction-scoped advisory lock, taken with try-lock so relays —
// other replicas, and this replica's other batches in flight, each on its own
// connection — skip videos someone else is working on (the SKIP LOCKED idea,
// per video rather than per row: row locks alone would let a second relay
// take event 2 while the first still holds event 1). The claim transaction
// stays open until the batch is published and marked, so a crash anywhere
// leaves the events pending and they are sent again with the same ce-id.
//
// Positions: marking takes one global advisory lock until commit, so the
// publish_position sequence is handed out in commit order — ListEvents can
// page by it without skipping an event that committed late.

const VIDEO_LOCK_NAMESPACE = 0x76_6d_73_01; // "vms" + 1
const POSITION_LOCK = 0x76_6d_73_02;

/**
 * Videos with pending events, oldest waiting first, found among the first
 * `window` pending events of videos not in `skip` (this relay's batches in
 * flight and videos waiting out a backoff: their rows would only fill the
 * window). Each with its pending count up to `cap`, estimated from the first
 * and last pending sequence — two index probes, where counting would read
 * every pending row of every head. A video's pending sequences are
 * contiguous; a parked event among them only makes the estimate high, which
 * the claim's per-video LIMIT absorbs.
 */
export async function queueHeads(db: Kysely<Database>, skip: string[], window: number, cap: number): Promise<Head[]> {
  const { rows } = await sql<{ video_id: string; pending: number }>`
    with heads as (
      select video_id, min(id) as first
      from (
        select video_id, id from outbox
        -- NOT IN a subquery is a hashed subplan even in the generic plan a
        -- named statement settles on; "<> all(array)" would then compare each
        -- row with every skipped video. (No NULLs on either side.)
        where publish_time is null and parked_time is null and video_id not in (select unnest(${skip}::uuid[]))
        order by id limit ${window}
      ) w
      group by video_id
    )
    select h.video_id::text as video_id, least(${cap}::int, s.last - s.first + 1)::int as pending
    from heads h
    cross join lateral (
      select
        (select sequence from outbox o where o.video_id = h.video_id and o.publish_time is null and o.parked_time is null order by sequence limit 1) as first,
        (select sequence from outbox o where o.video_id = h.video_id and o.publish_time is null and o.parked_time is null order by sequence desc limit 1) as last
    ) s
    order by h.first`.execute(db);
  return rows.map((r) => ({ videoId: r.video_id, pending: r.pending }));
}

/**
 * Takes the planned videos whose lock is free and returns their first
 * `take` pending events each, in sequence order per video.
 *
 * Two statements, on purpose. Under READ COMMITTED a statement reads from the
 * snapshot taken when it starts: were the try-locks and the read one
 * statement, a lock another relay frees after marking its batch could be won
 * mid-statement and the rows read as they were before that relay's commit —
 * its events published a second time. Reading after the locks are held sees
 * every batch committed by their previous holders.
 */
export async function claim(trx: Transaction<Database>, plan: Share[]): Promise<StoredEvent[]> {
  if (plan.length === 0) return [];
  const { rows: locked } = await sql<{ video_id: string; take: number }>`
    select video_id::text as video_id, take
    from unnest(${plan.map((p) => p.videoId)}::uuid[], ${plan.map((p) => p.take)}::int[]) with ordinality as p(video_id, take, n)
    where pg_try_advisory_xact_lock(${VIDEO_LOCK_NAMESPACE}, hashtext(video_id::text))
    order by n`.execute(trx);
  if (locked.length === 0) return [];
  const { rows } = await sql<StoredEvent>`
    select e.id, e.event_id, e.video_id, e.sequence, e.type, e.payload, e.payload_json, e.create_time, e.trace_parent, e.trace_state
    from unnest(${locked.map((l) => l.video_id)}::uuid[], ${locked.map((l) => l.take)}::int[]) with ordinality as l(video_id, take, n)
    cross join lateral (
      select id, event_id::text, video_id::text, sequence, type, payload, payload_json, create_time, trace_parent, trace_state
      from outbox o
      where o.video_id = l.video_id and o.publish_time is null and o.parked_time is null
      order by o.sequence
      limit l.take
    ) e
    order by l.n, e.sequence`.execute(trx);
  return rows;
}

/** Marks events published, handing out positions in the order given (per video: sequence order). */
export async function markPublished(trx: Transaction<Database>, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`select pg_advisory_xact_lock(${POSITION_LOCK})`.execute(trx);
  // Under the lock no one else draws from the sequence, so one draw of
  // ids.length consecutive positions numbers the whole batch in one statement
  // (the CTE holds volatile calls, so it runs exactly once).
  await sql`
    with drawn as (
      select setval('outbox_publish_position', nextval('outbox_publish_position') + ${ids.length}::int - 1) as last
    )
    update outbox set publish_time = clock_timestamp(), publish_position = drawn.last - ${ids.length}::int + u.n
    from drawn, unnest(${ids}::bigint[]) with ordinality as u(id, n)
    where outbox.id = u.id`.execute(trx);
}

export async function recordFailures(trx: Transaction<Database>, ids: string[], error: string): Promise<void> {
  if (ids.length === 0) return;
  await trx
    .updateTable("outbox")
    .set((eb) => ({ attempts: eb("attempts", "+", 1), last_error: error.slice(0, 500) }))
    .where(sql<boolean>`id = any(${ids}::bigint[])`)
    .execute();
}

/** Sets an event aside for good: it can never be published (undecodable). */
export async function park(trx: Transaction<Database>, id: string, reason: string): Promise<void> {
  await trx.updateTable("outbox").set({ parked_time: new Date(), last_error: reason.slice(0, 500) }).where("id", "=", id).execute();
}

/** Deletes up to 1000 events published before `cutoff`; bounded so it never holds locks for long. */
export async function deleteExpired(db: Kysely<Database>, cutoff: Date): Promise<void> {
  await db
    .deleteFrom("outbox")
    .where("id", "in", (eb) => eb.selectFrom("outbox").select("id").where("publish_time", "<", cutoff).limit(1000))
    .execute();
}

/** events_outbox_backlog, read at scrape time, so the figure is the database's, across replicas. */
export function registerBacklogGauge(database: DatabaseHandle, metrics: Metrics): void {
  new Gauge({
    name: "events_outbox_backlog",
    help: "Events committed but not yet published (excluding parked ones)",
    registers: [metrics.registry],
    collect: async function (this: Gauge) {
      try {
        const row = await database.db
          .selectFrom("outbox")
          .select((eb) => eb.fn.countAll<string>().as("n"))
          .where("publish_time", "is", null)
          .where("parked_time", "is", null)
          .executeTakeFirst();
        this.set(Number(row?.n ?? 0));
      } catch {
        // Database unreachable: keep the last figure rather than fail the scrape.
      }
    },
  });
}
