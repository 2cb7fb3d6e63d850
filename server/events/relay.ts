import { EventEmitter } from "node:events";
import { context, trace, type Span } from "@opentelemetry/api";
import type { Kysely, Transaction } from "kysely";
import type winston from "winston";
import type { DatabaseHandle } from "../db/database.js";
import type { Database } from "../db/schema.js";
import type { Metrics } from "../metrics.js";
import { UndecodableEvent, toCloudEvent, type CloudEvent, type EventsFormat, type StoredEvent } from "./cloudevents.js";
import { claim, deleteExpired, markPublished, park, queueHeads, recordFailures, registerBacklogGauge } from "./outbox-queue.js";
import { PUBLISH_BATCH_MESSAGES, type EventPublisher } from "./publishers.js";
import { endBatchSpan, startBatchSpan } from "./relay-spans.js";
import { VideoRetries, blame, planBatch, retryDelay, settle, shareCap, type Outcome } from "./relay-rules.js";

// Relays committed outbox events to the publisher, in every replica at once
// (how replicas share the work without reordering a video: outbox-queue.ts).
//
// Pipelined: while one batch waits for the bus's acknowledgements, the next
// is claimed and sent, up to BATCHES_IN_FLIGHT. Each batch is its own
// transaction on its own connection, holding its videos' locks until its
// events are marked, so a video is never in two batches at once; its next
// events are claimed after that batch commits. (On the 2-core bench machine
// 2, 4 and 8 in flight measured alike — CPU-bound; against a bus farther
// away than a local emulator, waiting for acks is more of a batch's life.)

/** Batches published at once by one relay; PGlite has one connection, so one there. */
const BATCHES_IN_FLIGHT = 4;

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

interface Batch {
  videos: string[];
  done: Promise<void>;
}

export class OutboxRelay extends EventEmitter {
  private stopping = false;
  private readonly halt = new AbortController();
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly inFlight = new Set<Batch>();
  /** Consecutive batches that failed as a whole (database errors, bus unreachable), and until when no batch starts. */
  private failures = 0;
  private resumeAt = 0;
  private readonly retries: VideoRetries;
  /** Videos the last claim planned but did not get (another relay holds them): skipped once, so the next claim looks past them. */
  private heldElsewhere: string[] = [];
  private lastRetention = 0;

  constructor(
    private readonly deps: Deps,
    private readonly options: RelayOptions,
  ) {
    super();
    this.retries = new VideoRetries(this.maxBackoffMs);
    registerBacklogGauge(deps.database, deps.metrics);
  }

  private get db(): Kysely<Database> {
    return this.deps.database.db;
  }

  private get maxBackoffMs(): number {
    return this.options.maxBackoffMs ?? 30_000;
  }

  private get maxInFlight(): number {
    return this.deps.database.kind === "pglite" ? 1 : BATCHES_IN_FLIGHT;
  }

  start(): void {
    void this.listen();
    this.loop = this.run();
  }

  /** Finishes the batches in flight (each published and marked, or left pending), then stops. */
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
      // New events must not cut a backoff short: under write load that would
      // retry a failing bus once per commit.
      const backoff = this.resumeAt - Date.now();
      if (backoff > 0) {
        await this.pause(backoff);
        continue;
      }
      if (this.inFlight.size >= this.maxInFlight) {
        await Promise.race([...this.inFlight].map((b) => b.done));
        continue;
      }
      let claimed = 0;
      try {
        claimed = await this.startBatch();
        if (claimed === 0 && this.inFlight.size === 0) this.failures = 0;
        if (Date.now() - this.lastRetention > 60_000) {
          this.lastRetention = Date.now();
          await deleteExpired(this.db, new Date(Date.now() - this.options.retentionMs));
        }
      } catch (e) {
        this.failed("outbox relay batch failed", e);
      }
      // Nothing claimed: wait for news — unless other relays held what was
      // planned, when there may be more behind it.
      if (claimed === 0 && this.heldElsewhere.length === 0 && this.resumeAt <= Date.now()) await this.sleep(this.idleWait());
    }
    await Promise.all([...this.inFlight].map((b) => b.done));
  }

  /** Until the poll interval, or until the first video waiting out a backoff may be tried again. */
  private idleWait(): number {
    const now = Date.now();
    const due = this.retries.nextDue(now);
    return due === undefined ? this.options.pollMs : Math.max(1, Math.min(this.options.pollMs, due - now));
  }

  private failed(message: string, e: unknown): void {
    this.backOff();
    this.deps.logger.error(message, { error: (e as Error)?.message ?? String(e), consecutive_failures: this.failures });
  }

  private backOff(): void {
    this.failures++;
    this.resumeAt = Date.now() + retryDelay(this.failures, this.maxBackoffMs);
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

  /** Waits ms, or until wake() (an outbox notification, a batch finished) or stop(). */
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

  /**
   * Claims a batch and sets it going: resolves with the number of events
   * claimed once they are claimed (0: nothing to do), while the batch goes on
   * to publish, mark and commit in the background. Rejects if claiming failed.
   */
  private async startBatch(): Promise<number> {
    const { batchSize } = this.options;
    const skip = [...this.retries.waiting(Date.now()), ...[...this.inFlight].flatMap((b) => b.videos), ...this.heldElsewhere];
    this.heldElsewhere = [];
    const cap = shareCap(batchSize, PUBLISH_BATCH_MESSAGES);
    // Outside the claim's transaction: most wake-ups find nothing (or only
    // videos in flight), and then no transaction is opened at all. The plan
    // is only a hint; claim() re-reads under the locks.
    const plan = planBatch(await queueHeads(this.db, skip, batchSize, cap), batchSize, cap);
    if (plan.length === 0) return 0;

    let claimed!: (n: number) => void;
    const claim$ = new Promise<number>((resolve) => (claimed = resolve));
    const batch: Batch = { videos: [], done: Promise.resolve() };
    const began = performance.timeOrigin + performance.now();
    let span: Span | undefined;
    const work = this.db.transaction().execute(async (trx) => {
      const events = await claim(trx, plan, this.options.format);
      const got = new Set(events.map((e) => e.video_id));
      batch.videos = [...got];
      if (events.length > 0) this.inFlight.add(batch);
      if (got.size < plan.length) this.heldElsewhere = plan.map((p) => p.videoId).filter((v) => !got.has(v));
      claimed(events.length);
      if (events.length === 0) return undefined;
      // Started once there is something to send, so contended claims that got nothing leave no trace.
      span = startBatchSpan(this.deps.publisher, events, began);
      const outcome = await context.with(trace.setSpan(context.active(), span), () => this.publishClaimed(trx, events));
      return { outcome, sent: events.length };
    });
    batch.done = work
      .then(
        (result) => {
          if (result === undefined) return;
          endBatchSpan(span!, result);
          this.account(result.outcome);
          if (result.outcome.published.length > 0) this.emit("published");
        },
        (e) => {
          if (span) endBatchSpan(span, { error: e });
          // A claim that failed is counted by run(), which it rejects.
          if (this.inFlight.has(batch)) this.failed("outbox relay batch failed", e);
        },
      )
      .finally(() => {
        if (!this.inFlight.delete(batch)) return;
        // Its videos may have more events, held back while it was in flight.
        this.wake();
      });
    // Rejects if the transaction failed before the claim was made.
    return Promise.race([claim$, work.then(() => 0)]);
  }

  /** Publishes claimed events, records what happened, in the claim's transaction. */
  private async publishClaimed(trx: Transaction<Database>, events: StoredEvent[]): Promise<Outcome<StoredEvent>> {
    const { metrics, publisher, logger } = this.deps;
    metrics.relayBatchSize.observe(events.length);
    const sendable: StoredEvent[] = [];
    const cloudEvents: CloudEvent[] = [];
    for (const event of events) {
      try {
        cloudEvents.push(toCloudEvent(event, this.options.format));
        sendable.push(event);
      } catch (e) {
        if (!(e instanceof UndecodableEvent)) throw e;
        await park(trx, event.id, e.message);
        metrics.eventsParked.inc({ type: event.type });
        logger.error("outbox event parked: it cannot be published", { event_id: event.event_id, video_id: event.video_id, type: event.type, reason: e.message });
      }
    }
    const outcome = settle(sendable, await publisher.publish(cloudEvents));
    if (outcome.failed.length > 0) {
      const error = outcome.failed[0].error;
      await recordFailures(trx, outcome.failed.map((f) => f.event.id), String((error as Error)?.message ?? error));
    }
    await markPublished(trx, outcome.published.map((e) => e.id));
    return outcome;
  }

  /** After commit: metrics, logs, and who backs off. */
  private account(outcome: Outcome<StoredEvent>): void {
    const { metrics, publisher, logger } = this.deps;
    const now = Date.now();
    // Counted per type and batch: a labelled inc per event costs more than the rest of this bookkeeping.
    const published = new Map<string, number>();
    for (const e of outcome.published) {
      published.set(e.type, (published.get(e.type) ?? 0) + 1);
      metrics.publishLag.observe((now - new Date(e.create_time).getTime()) / 1000);
    }
    for (const [type, n] of published) metrics.eventsPublished.inc({ type, publisher: publisher.name }, n);
    for (const v of new Set(outcome.published.map((e) => e.video_id))) this.retries.succeeded(v);
    for (const f of outcome.failed) metrics.eventsFailed.inc({ type: f.event.type, publisher: publisher.name });
    const who = blame(outcome);
    if (who === "none" || who === "videos") this.failures = 0;
    if (who === "none") return;
    const videos = [...new Set(outcome.failed.map((f) => f.event.video_id))];
    const error = outcome.failed[0].error;
    logger.warn("events not published; will retry", {
      count: outcome.failed.length,
      videos: videos.length,
      error: String((error as Error)?.message ?? error),
      backoff: who === "bus" ? "relay" : "video",
    });
    if (who === "bus") this.backOff();
    else for (const v of videos) this.retries.failed(v, now);
  }
}
