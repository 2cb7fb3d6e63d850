import { EventEmitter } from "node:events";
import { sql, type Kysely, type Transaction } from "kysely";
import type winston from "winston";
import type { DatabaseHandle } from "../db/database.js";
import type { Database } from "../db/schema.js";
import type { Metrics } from "../metrics.js";
import { Gauge } from "prom-client";
import { UndecodableEvent, toCloudEvent, type CloudEvent, type EventsFormat, type StoredEvent } from "./cloudevents.js";
import type { EventPublisher } from "./publishers.js";

// Relays committed outbox events to the publisher, in every replica at once.
//
// Ordering: a relay publishes a video's events only while it holds that
// video's transaction-scoped advisory lock, taken with try-lock so replicas
// skip videos another relay is working on (the SKIP LOCKED idea, per video
// rather than per row: row locks alone would let a second relay take event 2
// while the first still holds event 1). The claim transaction stays open
// until the batch is published and marked, so a crash anywhere leaves the
// events pending and they are sent again with the same ce-id.
//
// Positions: marking takes one global advisory lock until commit, so the
// publish_position sequence is handed out in commit order — ListEvents can
// page by it without skipping an event that committed late.

const VIDEO_LOCK_NAMESPACE = 0x76_6d_73_01; // "vms" + 1
const POSITION_LOCK = 0x76_6d_73_02;

export interface RelayOptions {
  batchSize: number;
  pollMs: number;
  retentionMs: number;
  format: EventsFormat;
  maxBackoffMs?: number;
}

interface Deps {
  database: DatabaseHandle;
  publisher: EventPublisher;
  logger: winston.Logger;
  metrics: Metrics;
}

const pending = <T extends { where: Function }>(q: T): T =>
  (q as any).where("publish_time", "is", null).where("parked_time", "is", null);

export class OutboxRelay extends EventEmitter {
  private stopping = false;
  private readonly halt = new AbortController();
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private unlisten: (() => Promise<void>) | undefined;
  private failures = 0;
  private lastRetention = 0;

  constructor(
    private readonly deps: Deps,
    private readonly options: RelayOptions,
  ) {
    super();
    // Read at scrape time, so the figure is the database's, across replicas.
    new Gauge({
      name: "events_outbox_backlog",
      help: "Events committed but not yet published (excluding parked ones)",
      registers: [deps.metrics.registry],
      collect: async function (this: Gauge) {
        try {
          const row = await pending(deps.database.db.selectFrom("outbox").select((eb) => eb.fn.countAll<string>().as("n"))).executeTakeFirst();
          this.set(Number(row?.n ?? 0));
        } catch {
          // Database unreachable: keep the last figure rather than fail the scrape.
        }
      },
    });
  }

  private get db(): Kysely<Database> {
    return this.deps.database.db;
  }

  start(): void {
    void this.listen();
    this.loop = this.run();
  }

  /** Finishes the batch in flight (published and marked, or left pending), then stops. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.halt.abort();
    this.wake();
    await this.loop;
    await this.unlisten?.();
  }

  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  // LISTEN/NOTIFY wakes the relay the moment events commit; polling covers a
  // lost listening connection and notifications sent while reconnecting.
  private async listen(): Promise<void> {
    while (!this.stopping) {
      try {
        let lost: (e: Error) => void = () => {};
        const gone = new Promise<Error>((resolve) => (lost = resolve));
        this.unlisten = await this.deps.database.listen("outbox", () => this.wake(), (e) => lost(e));
        // stop() may have come while connecting: the abort event is already past.
        const halted = new Promise<undefined>((resolve) =>
          this.halt.signal.aborted ? resolve(undefined) : this.halt.signal.addEventListener("abort", () => resolve(undefined), { once: true }),
        );
        const error = await Promise.race([gone, halted]);
        if (error) this.deps.logger.warn("outbox listener lost; polling until it reconnects", { error: error.message });
        await this.unlisten();
      } catch (e) {
        this.deps.logger.warn("outbox listener cannot connect; polling", { error: (e as Error).message });
      }
      await this.pause(1000 + Math.random() * 1000);
    }
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      let relayed = 0;
      try {
        relayed = await this.relayBatch();
        if (Date.now() - this.lastRetention > 60_000) await this.deleteExpired();
      } catch (e) {
        this.failures++;
        this.deps.logger.error("outbox relay batch failed", { error: (e as Error).message, consecutive_failures: this.failures });
      }
      // New events must not cut a backoff short: under write load that would
      // retry a failing bus once per commit.
      if (this.failures > 0) await this.pause(this.backoff());
      else if (relayed === 0) await this.sleep(this.options.pollMs);
    }
  }

  // Exponential backoff with full jitter, capped; retried forever, never dropped.
  private backoff(): number {
    const cap = this.options.maxBackoffMs ?? 30_000;
    return Math.random() * Math.min(cap, 100 * 2 ** Math.min(this.failures, 16));
  }

  /** Waits ms; only stop() ends it early. */
  private pause(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.halt.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.halt.signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Waits ms, or until wake() (an outbox notification) or stop(). */
  private sleep(ms: number): Promise<void> {
    if (this.woken || this.stopping) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wakeUp = undefined;
        self.woken = false;
        resolve();
      }
      this.wakeUp = done;
    });
  }

  /** One claim-publish-mark cycle; returns how many events were published. */
  async relayBatch(): Promise<number> {
    const { metrics, publisher, logger } = this.deps;
    const result = await this.db.transaction().execute(async (trx) => {
      const events = await this.claim(trx);
      if (events.length === 0) return { published: 0, failed: 0 };
      metrics.relayBatchSize.observe(events.length);

      const sendable: { event: StoredEvent; cloudEvent: CloudEvent }[] = [];
      for (const event of events) {
        try {
          sendable.push({ event, cloudEvent: toCloudEvent(event, this.options.format) });
        } catch (e) {
          if (!(e instanceof UndecodableEvent)) throw e;
          await this.park(trx, event, e.message);
        }
      }
      const results = await publisher.publish(sendable.map((s) => s.cloudEvent));

      // Per video, only the prefix before the first failure counts as
      // published; what follows is retried after it, in order.
      const blocked = new Set<string>();
      const published: StoredEvent[] = [];
      const failed: { event: StoredEvent; error: string }[] = [];
      results.forEach((r, i) => {
        const { event } = sendable[i];
        if (r.status === "fulfilled" && !blocked.has(event.video_id)) {
          published.push(event);
        } else {
          blocked.add(event.video_id);
          failed.push({ event, error: r.status === "rejected" ? String((r.reason as Error)?.message ?? r.reason) : "an earlier event of the video failed" });
        }
      });
      await this.markPublished(trx, published);
      if (failed.length > 0) {
        await trx
          .updateTable("outbox")
          .set((eb) => ({ attempts: eb("attempts", "+", 1), last_error: failed[0].error.slice(0, 500) }))
          .where(sql<boolean>`id = any(${failed.map((f) => f.event.id)}::bigint[])`)
          .execute();
      }
      const now = Date.now();
      for (const e of published) {
        metrics.eventsPublished.inc({ type: e.type, publisher: publisher.name });
        metrics.publishLag.observe((now - new Date(e.create_time).getTime()) / 1000);
      }
      for (const f of failed) metrics.eventsFailed.inc({ type: f.event.type, publisher: publisher.name });
      if (failed.length > 0) logger.warn("events not published; will retry", { count: failed.length, error: failed[0].error });
      return { published: published.length, failed: failed.length };
    });
    if (result.published > 0) this.emit("published");
    this.failures = result.failed > 0 ? this.failures + 1 : 0;
    return result.published;
  }

  private async claim(trx: Transaction<Database>): Promise<StoredEvent[]> {
    const { batchSize } = this.options;
    const heads = await pending(trx.selectFrom("outbox").select("video_id")).orderBy("id").limit(batchSize).execute();
    const candidates = [...new Set(heads.map((h) => h.video_id))];
    if (candidates.length === 0) return [];
    // Raw SQL: the builder has no way to say "the ids whose lock I got".
    const locked = await sql<{ id: string }>`
      select id::text as id from unnest(${candidates}::uuid[]) as id
      where pg_try_advisory_xact_lock(${VIDEO_LOCK_NAMESPACE}, hashtext(id::text))`.execute(trx);
    if (locked.rows.length === 0) return [];
    return pending(
      trx
        .selectFrom("outbox")
        .select(["id", "event_id", "video_id", "sequence", "type", "payload", "create_time"])
        .where(sql<boolean>`video_id = any(${locked.rows.map((r) => r.id)}::uuid[])`),
    )
      .orderBy("id")
      .limit(batchSize)
      .execute() as Promise<StoredEvent[]>;
  }

  private async markPublished(trx: Transaction<Database>, events: StoredEvent[]): Promise<void> {
    if (events.length === 0) return;
    await sql`select pg_advisory_xact_lock(${POSITION_LOCK})`.execute(trx);
    const positions = await sql<{ p: string }>`select nextval('outbox_publish_position')::text as p from generate_series(1, ${events.length}::int)`.execute(trx);
    const sorted = positions.rows.map((r) => BigInt(r.p)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    await sql`
      update outbox set publish_time = clock_timestamp(), publish_position = u.pos
      from unnest(${events.map((e) => e.id)}::bigint[], ${sorted.map(String)}::bigint[]) as u(id, pos)
      where outbox.id = u.id`.execute(trx);
  }

  private async park(trx: Transaction<Database>, event: StoredEvent, reason: string): Promise<void> {
    await trx.updateTable("outbox").set({ parked_time: new Date(), last_error: reason.slice(0, 500) }).where("id", "=", event.id).execute();
    this.deps.metrics.eventsParked.inc({ type: event.type });
    this.deps.logger.error("outbox event parked: it cannot be published", { event_id: event.event_id, video_id: event.video_id, type: event.type, reason });
  }

  private async deleteExpired(): Promise<void> {
    this.lastRetention = Date.now();
    const cutoff = new Date(Date.now() - this.options.retentionMs);
    await this.db
      .deleteFrom("outbox")
      .where("id", "in", (eb) => eb.selectFrom("outbox").select("id").where("publish_time", "<", cutoff).limit(1000))
      .execute();
  }
}
