import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { sql } from "kysely";
import pg from "pg";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import t, { type Test } from "tap";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import { openPostgres, type PostgresOptions } from "../../server/db/database.js";
import { migrate } from "../../server/db/migrate.js";
import type { CloudEvent } from "../../server/events/cloudevents.js";
import { LogPublisher, type EventPublisher } from "../../server/events/publishers.js";
import { deleteExpired, markPublished } from "../../server/events/outbox-queue.js";
import { OutboxRelay } from "../../server/events/relay.js";
import { createLogger } from "../../server/logger.js";
import { querySpans } from "../../server/telemetry/query-spans.js";
import { SERVICE_NAME } from "../../server/telemetry/tracing.js";
import { createMetrics } from "../../server/metrics.js";
import { teeLogger } from "../support/log-capture.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";
import { poll, sleep } from "../support/pubsub.js";

// The relay's own behaviour, in process, on real PostgreSQL: its life cycle,
// and how it shares out the queue when one video fails or has a deep backlog
// (a scripted publisher stands in for the bus).

const skip = postgresSkipReason();

t.test("stop() right after start() closes the LISTEN connection (none is left holding the process)", { skip }, async (t) => {
  const url = await createTestDatabase(t);
  const database = openPostgres({ url, poolMax: 2 });
  t.teardown(() => database.close());
  await migrate(database, { dir: new URL("../../migrations", import.meta.url).pathname });
  const name = new URL(url).pathname.slice(1);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  const listeners = async () =>
    Number((await admin.query("select count(*) from pg_stat_activity where datname = $1 and query ilike 'LISTEN%'", [name])).rows[0].count);

  const logger = teeLogger(createLogger("error", true));
  for (let i = 0; i < 3; i++) {
    const relay = new OutboxRelay({ database, publisher: new LogPublisher(logger), logger, metrics: createMetrics() }, { batchSize: 10, pollMs: 100, retentionMs: 86_400_000, format: "json" });
    relay.start();
    await relay.stop();
  }
  // Give a connect that was still under way time to finish (and, if buggy, to stay).
  await new Promise((r) => setTimeout(r, 500));
  await poll(async () => (await listeners()) === 0, 3000, "no LISTEN connection left").catch(() => {});
  t.equal(await listeners(), 0, "no LISTEN connection is left behind");
});

/** A bus that refuses the videos in `refused` (INVALID_ARGUMENT, as for a message it will never take) and records the rest. */
class ScriptedBus implements EventPublisher {
  readonly name = "scripted";
  readonly telemetry = { "messaging.system": "scripted", "messaging.destination.name": "scripted" };
  readonly refused = new Set<string>();
  readonly sent: { video: string; sequence: number; at: number }[] = [];
  calls = 0;
  constructor(private readonly delayMs = 0) {}

  async publish(events: CloudEvent[]) {
    this.calls++;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    return events.map((e): PromiseSettledResult<unknown> => {
      if (this.refused.has(e.orderingKey)) return { status: "rejected", reason: Object.assign(new Error("refused"), { code: 3 }) };
      this.sent.push({ video: e.orderingKey, sequence: Number(e.attributes["ce-sequence"]), at: Date.now() });
      return { status: "fulfilled", value: undefined };
    });
  }
  async unreadyReason() {
    return undefined;
  }
  async close() {}
}

async function relayOn(t: Test, bus: EventPublisher, batchSize: number, options: Pick<PostgresOptions, "log"> = {}) {
  const url = await createTestDatabase(t);
  const database = openPostgres({ url, poolMax: 8, ...options });
  t.teardown(() => database.close());
  await migrate(database, { dir: new URL("../../migrations", import.meta.url).pathname });
  const db = new pg.Pool({ connectionString: url, max: 2 });
  t.teardown(() => db.end());
  const logger = teeLogger(createLogger("error", true));
  const relay = new OutboxRelay({ database, publisher: bus, logger, metrics: createMetrics() }, { batchSize, pollMs: 200, retentionMs: 86_400_000, format: "json", maxBackoffMs: 1000 });
  relay.start();
  t.teardown(() => relay.stop());
  /** Commits `count` events of `video`, sequences from `from`, written (as far as their trace context says) by the call `traceParent`. */
  const append = async (video: string, count: number, from = 1, traceParent: string | null = null) => {
    const payload = Buffer.from(toBinary(VideoUpdatedSchema, create(VideoUpdatedSchema, { video: { id: video, title: "t" } })));
    await db.query(
      `insert into outbox (event_id, video_id, sequence, type, payload, create_time, trace_parent)
       select gen_random_uuid(), $1, s, $2, $3, now(), $6 from generate_series($4::int, $5::int) as s`,
      [video, VideoUpdatedSchema.typeName, payload, from, from + count - 1, traceParent],
    );
  };
  const row = async (video: string) =>
    (await db.query("select count(p.id)::int as pending, max(o.attempts)::int as attempts from outbox o left join outbox_pending p on p.id = o.id where o.video_id = $1", [video])).rows[0] as { pending: number; attempts: number };
  return { relay, db, append, row };
}

const inOrder = (sent: { video: string; sequence: number }[], video: string) => sent.filter((s) => s.video === video).map((s) => s.sequence);

t.test("a video whose publish keeps failing backs off alone: other videos flow past it, and it goes out in order once accepted", { skip }, async (t) => {
  const bus = new ScriptedBus();
  const bad = randomUUID();
  bus.refused.add(bad);
  const { append, row } = await relayOn(t, bus, 10);
  await append(bad, 3);

  // Fresh videos keep arriving behind it; each must go out promptly, not wait for the failing one's backoff.
  const lags: number[] = [];
  const start = Date.now();
  while (Date.now() - start < 2500) {
    const v = randomUUID();
    const committed = Date.now();
    await append(v, 2);
    await poll(async () => inOrder(bus.sent, v).length === 2, 2000, `video ${v} published`);
    lags.push(bus.sent.filter((s) => s.video === v)[1].at - committed);
    await sleep(50);
  }
  lags.sort((a, b) => a - b);
  t.ok(lags[lags.length - 1] < 500, `${lags.length} other videos published meanwhile, slowest ${lags[lags.length - 1]} ms after commit`);
  const failing = await row(bad);
  t.equal(failing.pending, 3, "the refused video's events stay pending");
  t.ok(failing.attempts >= 2 && failing.attempts <= 12, `and are retried with backoff (${failing.attempts} attempts in 2.5 s)`);

  bus.refused.delete(bad);
  await poll(async () => (await row(bad)).pending === 0, 5000, "the refused video published once accepted");
  t.same(inOrder(bus.sent, bad), [1, 2, 3], "in sequence order, each once");
});

t.test("a video with a deep backlog does not hold back videos committed after it", { skip }, async (t) => {
  // A slow bus: each publish takes 30 ms, so draining the deep video takes many round trips.
  const bus = new ScriptedBus(30);
  const { append, row } = await relayOn(t, bus, 20);
  const deep = randomUUID();
  const other = randomUUID();
  await append(deep, 400);
  await append(other, 1);
  await poll(async () => (await row(other)).pending === 0, 5000, "the other video published");
  const deepSent = inOrder(bus.sent, deep).length;
  t.ok(deepSent < 100, `the other video went out while the deep one was still draining (${deepSent} of 400 sent by then)`);
  await poll(async () => (await row(deep)).pending === 0, 20_000, "the deep video drained");
  t.same(inOrder(bus.sent, deep), Array.from({ length: 400 }, (_, i) => i + 1), "the deep video's events in order, each once");
});

t.test("retention deletes the events published before the cutoff, with their positions; later and pending ones stay", { skip }, async (t) => {
  const url = await createTestDatabase(t);
  const database = openPostgres({ url, poolMax: 2 });
  t.teardown(() => database.close());
  await migrate(database, { dir: new URL("../../migrations", import.meta.url).pathname });
  const db = database.db;
  const video = randomUUID();
  const payload = toBinary(VideoUpdatedSchema, create(VideoUpdatedSchema, { video: { id: video, title: "t" } }));
  const ids: string[] = [];
  for (let sequence = 1; sequence <= 4; sequence++) {
    const row = await db
      .insertInto("outbox")
      .values({ event_id: randomUUID(), video_id: video, sequence, type: VideoUpdatedSchema.typeName, payload, create_time: new Date() })
      .returning("id")
      .executeTakeFirstOrThrow();
    ids.push(row.id);
  }
  await db.transaction().execute((trx) => markPublished(trx, ids.slice(0, 3)));
  // The first two were published ten days ago.
  await sql`update outbox_published set publish_time = now() - interval '10 days' where id = any(${ids.slice(0, 2)}::bigint[])`.execute(db);

  await deleteExpired(db, new Date(Date.now() - 7 * 86_400_000));
  const left = await db.selectFrom("outbox").select("id").orderBy("id").execute();
  t.same(left.map((r) => r.id), ids.slice(2), "the expired events are gone; the recent and the pending one stay");
  const positions = await db.selectFrom("outbox_published").select("id").execute();
  t.same(positions.map((r) => r.id), [ids[2]], "so are their positions");
  const pending = await db.selectFrom("outbox_pending").select("id").execute();
  t.same(pending.map((r) => r.id), [ids[3]], "the pending event is still queued");
});

t.test("each batch is a PRODUCER span linked to the calls that wrote its events, with its statements under it; refused events make it an error", { skip }, async (t) => {
  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  provider.register();
  t.teardown(async () => {
    trace.disable();
    await provider.shutdown();
  });
  const bus = new ScriptedBus();
  const bad = randomUUID();
  bus.refused.add(bad);
  const { append, row } = await relayOn(t, bus, 10, { log: querySpans(trace.getTracer(SERVICE_NAME), "postgresql") });
  const spans = () => exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.PRODUCER);

  const call = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
  const good = randomUUID();
  await append(good, 2, 1, `00-${call.traceId}-${call.spanId}-01`);
  await poll(async () => (await row(good)).pending === 0, 5000, "published");
  const sent = await poll(async () => spans().find((s) => s.links.some((l) => l.context.spanId === call.spanId)), 5000, "its batch span");
  t.equal(sent.name, "send scripted");
  t.not(sent.spanContext().traceId, call.traceId, "a trace of its own: a batch publishes the events of many calls");
  t.equal(sent.links[0].context.traceId, call.traceId, "linked to the call's trace");
  t.equal(sent.links.length, 1, "one link per call, not per event");
  t.match(sent.attributes, { "messaging.system": "scripted", "messaging.operation.type": "send", "messaging.batch.message_count": 2, "vms.events.published": 2, "vms.events.failed": 0 });
  t.equal(sent.status.code, SpanStatusCode.UNSET);
  const under = exporter.getFinishedSpans().filter((s) => s.parentSpanContext?.spanId === sent.spanContext().spanId);
  t.ok(under.some((s) => /insert into outbox_published/.test(String(s.attributes["db.query.text"]))), "the marking statement is recorded under the batch");

  await append(bad, 1);
  const refused = await poll(async () => spans().find((s) => s.attributes["vms.events.failed"] === 1), 5000, "the refused batch's span");
  t.equal(refused.status.code, SpanStatusCode.ERROR, "refused events make the batch span an error");
  t.equal(refused.attributes["error.type"], "3", "with the bus's code");
  t.equal(refused.status.message, "events not published, to be retried: 1");
});
