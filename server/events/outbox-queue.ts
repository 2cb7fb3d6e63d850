import { sql, type Kysely, type Transaction } from "kysely";
import { Gauge } from "prom-client";
import type { DatabaseHandle } from "../db/database.js";
import type { Database } from "../db/schema.js";
import type { Metrics } from "../metrics.js";
import type { EventsFormat, StoredEvent } from "./cloudevents.js";
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
// Pending and published live in narrow tables of their own (migrations/V7):
// marking deletes outbox_pending rows and inserts outbox_published rows
// instead of rewriting the wide outbox row with all its index entries.
//
// Positions: marking takes one global advisory lock until commit, so the
// outbox_published positions are handed out in commit order — ListEvents can
// page by them without skipping an event that committed late.

const VIDEO_LOCK_NAMESPACE = 0x76_6d_73_01; // "vms" + 1
const POSITION_LOCK = 0x76_6d_73_02;

/**
 * Videos with pending events, oldest waiting first, found among the first
 * `window` pending events of videos not in `skip` (this relay's batches in
 * flight and videos waiting out a backoff: their rows would only fill the
 * window). Each with its pending count up to `cap`, estimated from the first
 * and last pending sequence, where counting would read every pending row of
 * every head. The first is the window's: a video's events are numbered in
 * the order they are inserted, so its oldest pending event is in the window
 * whenever any of its events is. The last is one index probe. A video's
 * pending sequences are contiguous; a parked event among them only makes the
 * estimate high, which the claim's per-video LIMIT absorbs.
 */
export async function queueHeads(db: Kysely<Database>, skip: string[], window: number, cap: number): Promise<Head[]> {
  const { rows } = await sql<{ video_id: string; pending: number }>`
    with heads as (
      select video_id, min(id) as first, min(sequence) as first_sequence
      from (
        select video_id, id, sequence from outbox_pending
        -- NOT IN a subquery is a hashed subplan even in the generic plan a
        -- named statement settles on; "<> all(array)" would then compare each
        -- row with every skipped video. (No NULLs on either side.)
        where video_id not in (select unnest(${skip}::uuid[]))
        order by id limit ${window}
      ) w
      group by video_id
    )
    select h.video_id::text as video_id, least(${cap}::int, s.last - h.first_sequence + 1)::int as pending
    from heads h
    cross join lateral (
      select sequence as last from outbox_pending p
      where p.video_id = h.video_id
      order by sequence desc limit 1
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
export async function claim(trx: Transaction<Database>, plan: Share[], format: EventsFormat): Promise<StoredEvent[]> {
  if (plan.length === 0) return [];
  const { rows: locked } = await sql<{ video_id: string; take: number }>`
    select video_id::text as video_id, take
    from unnest(${plan.map((p) => p.videoId)}::uuid[], ${plan.map((p) => p.take)}::int[]) with ordinality as p(video_id, take, n)
    where pg_try_advisory_xact_lock(${VIDEO_LOCK_NAMESPACE}, hashtext(video_id::text))
    order by n`.execute(trx);
  if (locked.length === 0) return [];
  const { rows } = await sql<StoredEvent>`
    select o.id, o.event_id::text, o.video_id::text, o.sequence, o.type,
      -- The binary payload only where it is sent: decoding it is a third of
      -- reading a row (hex on the wire), wasted when the stored JSON goes.
      case when ${format === "protobuf"} or o.payload_json is null then o.payload end as payload,
      o.payload_json, o.create_time, o.trace_parent, o.trace_state
    from unnest(${locked.map((l) => l.video_id)}::uuid[], ${locked.map((l) => l.take)}::int[]) with ordinality as l(video_id, take, n)
    cross join lateral (
      select p.id, p.sequence from outbox_pending p
      where p.video_id = l.video_id
      order by p.sequence
      limit l.take
    ) e
    join outbox o on o.id = e.id
    order by l.n, e.sequence`.execute(trx);
  return rows;
}

/** Marks events published, handing out positions in the order given (per video: sequence order). */
export async function markPublished(trx: Transaction<Database>, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`select pg_advisory_xact_lock(${POSITION_LOCK})`.execute(trx);
  // Under the lock no one else draws from the sequence, so one draw of
  // ids.length consecutive positions numbers the whole batch in one statement
  // (the CTEs hold volatile calls and a data change, so each runs exactly once).
  await sql`
    with drawn as (
      select setval('outbox_publish_position', nextval('outbox_publish_position') + ${ids.length}::int - 1) as last
    ), marked as (
      delete from outbox_pending p using unnest(${ids}::bigint[]) with ordinality as u(id, n)
      where p.id = u.id
      returning p.id, p.video_id, u.n
    )
    insert into outbox_published (position, id, video_id, publish_time)
    select drawn.last - ${ids.length}::int + m.n, m.id, m.video_id, clock_timestamp()
    from drawn, marked m`.execute(trx);
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
  await trx.deleteFrom("outbox_pending").where("id", "=", id).execute();
  await trx.updateTable("outbox").set({ parked_time: new Date(), last_error: reason.slice(0, 500) }).where("id", "=", id).execute();
}

/**
 * Deletes up to 1000 events published before `cutoff`; bounded so it never
 * holds locks for long. Only the first 1000 positions are looked at: publish
 * times grow with position (both are taken under the position lock), so the
 * expired events are a prefix and no index on publish_time is needed. The
 * retention horizon is raised in the same statement, so a reader sees the
 * events gone and the horizon moved at once, or neither.
 */
export async function deleteExpired(db: Kysely<Database>, cutoff: Date): Promise<void> {
  // Raw: the builder cannot chain a DELETE … RETURNING into another DELETE.
  await sql`
    with expired as (
      delete from outbox_published where position in (
        select position from (select position, publish_time from outbox_published order by position limit 1000) first
        where publish_time < ${cutoff}
      )
      returning id, position
    ), horizon as (
      update outbox_retention set horizon = greatest(horizon, (select max(position) from expired))
      where exists (select 1 from expired)
    )
    delete from outbox where id in (select id from expired)`.execute(db);
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
          .selectFrom("outbox_pending")
          .select((eb) => eb.fn.countAll<string>().as("n"))
          .executeTakeFirst();
        this.set(Number(row?.n ?? 0));
      } catch {
        // Database unreachable: keep the last figure rather than fail the scrape.
      }
    },
  });
}
