// Relay benchmark — the outbox relay against the raw @google-cloud/pubsub
// client on the same Pub/Sub emulator, in the same run.
//
//   throughput  events/s: N events committed to the outbox in one
//               transaction, drained by the service's relay (server/main.ts
//               in its own process, as deployed: claim, publish, mark;
//               RELAY_BATCH_SIZE default) vs the same N messages (same data,
//               attributes, ordering keys, client settings) published straight
//               from the SDK in this process, built before its clock starts.
//               The outbox rows carry the JSON appendEvent stores at write
//               time, as the service writes them. Both sides start warm and
//               the order alternates by round (raw first, then relay first,
//               …) so drift on a shared machine hits both. Also reported: each
//               side's process CPU time per event (user+sys ÷ events; the
//               relay's PostgreSQL work is not in it).
//               target: relay ≥ 0.7 × raw
//   lag         commit-to-publish p50/p99 at a sustained write load: the
//               service (server/main.ts, its own process) takes REST writes
//               at a fixed rate; per event, the write's time stamp (taken in
//               its transaction, just before commit) to the moment the
//               relay marked it published (after Pub/Sub acknowledged it).
//               target: p99 < 250 ms
//
// Environment (all optional):
//   BENCH_DATABASE_URL          admin URL; a scratch database is created and
//                               dropped (default DATABASE_URL, TEST_DATABASE_URL,
//                               then postgres://postgres:postgres@127.0.0.1:5432/postgres)
//   BENCH_PUBSUB_EMULATOR_HOST  a running emulator (unset: a fresh one is started
//                               with gcloud and stopped)
//   BENCH_RELAY_EVENTS          events per throughput run (10000)
//   BENCH_RELAY_KEYS            distinct videos (ordering keys) among them (1000)
//   BENCH_RELAY_ROUNDS          raw/relay pairs, alternated, after the warm-up pairs (5)
//   BENCH_RELAY_WARMUP          raw/relay pairs run first and not counted (8)
//   BENCH_RELAY_BATCH_SIZE      the relay's RELAY_BATCH_SIZE (unset: the service default)
//   BENCH_RELAY_SETTLE_MS       pause before each measured run (1000)
//   BENCH_RELAY_RATE            writes/s in the lag run (200)
//   BENCH_RELAY_LAG_MS          length of the lag run (10000)
//   BENCH_STRICT=1              exit 1 when a target is missed
//
// Standalone: npx tsx test/bench/relay.ts (exit 1 on a missed target with
// BENCH_STRICT=1). From another script: import { relayBench, summary }.

import { randomUUID } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { PubSub } from "@google-cloud/pubsub";
import pg from "pg";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import { Video_State as State, Video_Visibility as Visibility } from "../../gen/video/v1/video_pb.js";
import { loadConfig } from "../../server/config.js";
import { openPostgres } from "../../server/db/database.js";
import { migrate } from "../../server/db/migrate.js";
import { encodeJson, toCloudEvent } from "../../server/events/cloudevents.js";
import { PROJECT_ID, startEmulator, startService, type Emulator, type ServiceProcess } from "../support/pubsub.js";
import { adminQuery, cpuOf, databaseUrl } from "./procs.js";

const env = process.env;
const num = (name: string, fallback: number) => (env[name] ? Number(env[name]) : fallback);
const EVENTS = num("BENCH_RELAY_EVENTS", 10_000);
const KEYS = num("BENCH_RELAY_KEYS", 1000);
const ROUNDS = num("BENCH_RELAY_ROUNDS", 5);
const WARMUP = num("BENCH_RELAY_WARMUP", 8);
const RATE = num("BENCH_RELAY_RATE", 200);
const LAG_MS = num("BENCH_RELAY_LAG_MS", 10_000);
const SETTLE_MS = num("BENCH_RELAY_SETTLE_MS", 1000);
const TARGET_RATIO = 0.7;
const TARGET_P99_MS = 250;

const started = Date.now();
const log = (s: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] relay bench: ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];

const cleanups: (() => Promise<unknown> | unknown)[] = [];
const teardown = { teardown: (fn: () => unknown) => void cleanups.unshift(fn) };
/** Stops what the relay benchmark started (emulator, scratch database, topics); safe to call twice. */
export async function cleanup() {
  for (const fn of cleanups.splice(0)) await Promise.resolve(fn()).catch((e) => log(`cleanup: ${String(e)}`));
}


/** A realistic event: a VideoUpdated with a full snapshot (≈ 400 bytes as JSON), in the two encodings appendEvent stores. */
function payload(videoId: string, n: number): { binary: Uint8Array; json: string } {
  const now = { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 };
  const message = create(VideoUpdatedSchema, {
      video: {
        id: videoId,
        title: `Bench video ${n}`,
        description: "A description of moderate length, as videos usually have: a sentence or two about what is in it.",
        tags: ["bench", "relay", "events"],
        labels: { team: "bench", lang: "en" },
        visibility: Visibility.PRIVATE,
        state: State.PENDING_UPLOAD,
        ownerId: "bench-user",
        etag: `"${n.toString(16)}"`,
        createTime: now,
        updateTime: now,
      },
      updateMask: { paths: ["title"] },
  });
  return { binary: toBinary(VideoUpdatedSchema, message), json: encodeJson(VideoUpdatedSchema, message) };
}

// The same videos in every run: the emulator keeps a thread per ordering key
// of an ordered subscription, so fresh keys each round would slow it down round by round.
const keys = Array.from({ length: KEYS }, () => randomUUID());

/** EVENTS events over KEYS videos, interleaved (consecutive events belong to different videos). */
function workload() {
  return Array.from({ length: EVENTS }, (_, i) => ({
    videoId: keys[i % KEYS],
    sequence: Math.floor(i / KEYS) + 1,
    ...payload(keys[i % KEYS], i),
  }));
}

interface Run {
  eventsPerSecond: number;
  /** This process's CPU time (user+sys) in the measured window ÷ events. */
  cpuUsPerEvent: number;
}

function cpuSince(start: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / EVENTS;
}

// ------------------------------------------------------------------ raw SDK ---

async function rawRun(client: PubSub, topicName: string): Promise<Run> {
  // The same client settings as server/events/publishers.ts.
  const topic = client.topic(topicName, { messageOrdering: true, batching: { maxMessages: 500, maxMilliseconds: 5 }, gaxOpts: { timeout: 10_000, retry: null } });
  await topic.publishMessage({ data: Buffer.from("warm-up"), orderingKey: "warm-up" });
  const messages = workload().map((w, i) =>
    toCloudEvent({ id: String(i), event_id: randomUUID(), video_id: w.videoId, sequence: String(w.sequence), type: VideoUpdatedSchema.typeName, payload: w.binary, payload_json: w.json, create_time: new Date(), trace_parent: null, trace_state: null }, "json"),
  );
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(messages.map((m) => topic.publishMessage({ data: m.data, attributes: m.attributes, orderingKey: m.orderingKey })));
  const ms = performance.now() - t0;
  const cpuUsPerEvent = cpuSince(cpu);
  await topic.flush();
  return { eventsPerSecond: (EVENTS / ms) * 1000, cpuUsPerEvent };
}

// -------------------------------------------------------------------- relay ---

/**
 * The relay as deployed: the service (server/main.ts) in its own process,
 * with its own settings (RELAY_BATCH_SIZE, DB_POOL_MAX) and nothing else to do.
 * Its own process also keeps each side's garbage collection its own. When
 * both ran in this process, an old-generation collection fell in 4 of 15 raw
 * windows and 8 of 15 relay windows, whichever side's garbage brought it on,
 * and cost that window 8–20 µs of CPU per event.
 */
function startRelayService(databaseUrl: string, topicName: string, emulatorHost: string) {
  return startService(teardown, {
    databaseUrl,
    topic: topicName,
    pubsubHost: emulatorHost,
    quiet: true,
    // The service's default pool (test support gives its services a smaller one).
    env: { DB_POOL_MAX: String(loadConfig({}).database.poolMax), ...(env.BENCH_RELAY_BATCH_SIZE ? { RELAY_BATCH_SIZE: env.BENCH_RELAY_BATCH_SIZE } : {}) },
  });
}

async function relayRun(svc: ServiceProcess, pool: pg.Pool): Promise<Run> {
  const w = workload();
  const client = await pool.connect();
  let t0: number;
  let cpu0: number;
  try {
    // One transaction, so the relay sees the whole backlog at once, at commit
    // (its NOTIFY wakes it): the run measures draining a committed backlog.
    await client.query("begin");
    await client.query(
      `insert into outbox (event_id, video_id, sequence, type, payload, payload_json, create_time)
       select gen_random_uuid(), v, s, $1, p, j, now() from unnest($2::uuid[], $3::bigint[], $4::bytea[], $5::text[]) as u(v, s, p, j)`,
      [VideoUpdatedSchema.typeName, w.map((e) => e.videoId), w.map((e) => e.sequence), w.map((e) => Buffer.from(e.binary)), w.map((e) => e.json)],
    );
    // Planner statistics, as autovacuum keeps them in a running service (a
    // bulk-loaded table without them gets poor plans for the first claims).
    // In the transaction, ANALYZE counts its uncommitted rows.
    await client.query("analyze outbox, outbox_pending");
    cpu0 = cpuOf(svc.child.pid);
    t0 = Date.now();
    await client.query("commit");
  } finally {
    client.release();
  }
  for (;;) {
    const { rows } = await pool.query("select count(*)::int as n from outbox_pending");
    if (rows[0].n === 0) break;
    if (Date.now() - t0 > 300_000) throw new Error("the relay did not drain the backlog within 300 s");
    await sleep(50);
  }
  // Includes up to one 50 ms poll interval of idle service: a slight overestimate of the relay's CPU.
  const cpuUsPerEvent = ((cpuOf(svc.child.pid) - cpu0) * 1000) / EVENTS;
  const { rows } = await pool.query("select (extract(epoch from max(publish_time)) * 1000)::float8 as last from outbox_published");
  const ms = rows[0].last - t0;
  // Leave the tables as they were for the next round, vacuumed now rather
  // than by autovacuum during the next measured run (raw or relay).
  await pool.query("delete from outbox");
  await pool.query("delete from outbox_published");
  await pool.query("vacuum outbox, outbox_pending, outbox_published");
  // Its WAL written out now, not by the checkpointer during the next run (needs a superuser or pg_checkpoint; best effort).
  await pool.query("checkpoint").catch(() => {});
  return { eventsPerSecond: (EVENTS / ms) * 1000, cpuUsPerEvent };
}

// ---------------------------------------------------------------------- lag ---

interface LagResult {
  writes: number;
  achievedRate: number;
  writeErrors: number;
  p50: number;
  p99: number;
  max: number;
}

async function lagRun(databaseUrl: string, topicName: string, emulatorHost: string): Promise<LagResult> {
  // quiet: its log lines go to /dev/null, as fast as a container runtime takes them.
  const svc = await startService(teardown, {
    databaseUrl,
    topic: topicName,
    pubsubHost: emulatorHost,
    quiet: true,
    env: env.BENCH_RELAY_BATCH_SIZE ? { RELAY_BATCH_SIZE: env.BENCH_RELAY_BATCH_SIZE } : {},
  });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  try {
    // A pool of videos to update; one write in five creates a new one.
    const videos: string[] = [];
    for (let i = 0; i < 50; i++) videos.push((await svc.rest("POST", "/videos", { title: `lag ${i}` })).json.id);
    await sleep(500);
    const since = new Date();
    let writes = 0;
    let errors = 0;
    const inflight: Promise<void>[] = [];
    const interval = 1000 / RATE;
    const t0 = performance.now();
    // Open loop: each write is sent at its scheduled time, whatever the previous ones do.
    for (let i = 0; performance.now() - t0 < LAG_MS; i++) {
      const due = t0 + i * interval;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      const create = i % 5 === 4;
      const p = (create
        ? svc.rest("POST", "/videos", { title: `lag write ${i}` })
        : svc.rest("PATCH", `/videos/${videos[i % videos.length]}`, { title: `lag write ${i}` })
      ).then(
        (r) => {
          writes++;
          if (r.status !== 200) errors++;
        },
        () => void errors++,
      );
      inflight.push(p);
    }
    await Promise.all(inflight);
    const elapsed = performance.now() - t0;
    for (const deadline = Date.now() + 60_000; ; ) {
      const { rows } = await pool.query("select count(*)::int as n from outbox_pending");
      if (rows[0].n === 0) break;
      if (Date.now() > deadline) throw new Error("events still pending 60 s after the lag run");
      await sleep(100);
    }
    const { rows } = await pool.query(
      "select (extract(epoch from p.publish_time - o.create_time) * 1000)::float8 as ms from outbox o join outbox_published p on p.id = o.id where o.create_time >= $1 order by 1",
      [since],
    );
    const lags = rows.map((r) => r.ms as number);
    return { writes, achievedRate: (writes / elapsed) * 1000, writeErrors: errors, p50: quantile(lags, 0.5), p99: quantile(lags, 0.99), max: lags[lags.length - 1] };
  } finally {
    await pool.end();
    svc.child.kill("SIGTERM");
    await svc.exited;
  }
}

// --------------------------------------------------------------------- main ---

export interface RelayBenchResult {
  rawEventsPerSecond: number[];
  relayEventsPerSecond: number[];
  rawCpuUsPerEvent: number[];
  relayCpuUsPerEvent: number[];
  /** Median over rounds of relay ÷ raw. */
  ratio: number;
  lag: LagResult;
  pass: { throughput: boolean; lag: boolean };
}

/** Runs the whole benchmark; prints progress on stderr. From another script: import { relayBench, summary }. */
export async function relayBench(): Promise<RelayBenchResult> {
  try {
    return await measure();
  } finally {
    await cleanup();
  }
}

async function measure(): Promise<RelayBenchResult> {
  // A fresh emulator by default: a long-running one slows down with every ordering key it has seen.
  let host = env.BENCH_PUBSUB_EMULATOR_HOST;
  if (!host) {
    log("starting a Pub/Sub emulator (gcloud)");
    const emulator: Emulator = await startEmulator();
    cleanups.unshift(() => emulator.stop());
    host = emulator.host;
  }
  log(`emulator ${host}`);

  const dbName = `vms_bench_relay_${randomUUID().slice(0, 8)}`;
  await adminQuery(`CREATE DATABASE ${dbName}`);
  cleanups.unshift(() => adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
  const scratchUrl = databaseUrl(dbName);
  const database = openPostgres({ url: scratchUrl, poolMax: 2 });
  await migrate(database, { dir: new URL("../../migrations", import.meta.url).pathname });
  await database.close();

  const client = new PubSub({ projectId: PROJECT_ID, apiEndpoint: host, emulatorMode: true });
  cleanups.unshift(() => client.close());
  // Throughput: a topic without subscriptions. The emulator starts a thread
  // per ordering key of an ordered subscription and keeps every unread message,
  // so a subscription would slow it down round by round; without one it
  // does the publish work only, the same for both sides.
  const topicName = `bench-relay-${randomUUID().slice(0, 8)}`;
  const [topic] = await client.createTopic(topicName);
  cleanups.unshift(() => topic.delete().catch(() => {}));
  // Lag: a topic of its own with an ordered subscription, as deployed.
  const lagTopicName = `bench-lag-${randomUUID().slice(0, 8)}`;
  const [lagTopic] = await client.createTopic(lagTopicName);
  const [lagSub] = await lagTopic.createSubscription(`${lagTopicName}-sub`, { enableMessageOrdering: true });
  cleanups.unshift(async () => {
    await lagSub.delete().catch(() => {});
    await lagTopic.delete().catch(() => {});
  });

  // The relay: the service in its own process, and a pool to load and watch its outbox.
  const svc = await startRelayService(scratchUrl, topicName, host);
  const pool = new pg.Pool({ connectionString: scratchUrl, max: 2 });
  cleanups.unshift(() => pool.end());

  // Warm-up, not counted: both clients' connections, both processes' JIT,
  // and the emulator's. The emulator's JIT compiler is the longest: its
  // compiler threads used 10–30 % of its CPU per round until the seventh or
  // eighth pair (measured per thread from /proc), and more in relay rounds
  // than in raw ones.
  for (let i = 0; i < WARMUP; i++) {
    await rawRun(client, topicName);
    await relayRun(svc, pool);
  }
  log("warmed up");
  const raw: Run[] = [];
  const relay: Run[] = [];
  // Each measured run starts from a quiet machine: what the previous run left
  // behind (the emulator's and PostgreSQL's background work, this process's
  // garbage) slowed whichever side came next by up to half.
  const settle = () => sleep(SETTLE_MS);
  const runRaw = async (r: number) => {
    await settle();
    raw.push(await rawRun(client, topicName));
    log(`round ${r + 1}: raw SDK ${raw[r].eventsPerSecond.toFixed(0)} events/s, ${raw[r].cpuUsPerEvent.toFixed(1)} cpu µs/event`);
  };
  const runRelay = async (r: number) => {
    await settle();
    relay.push(await relayRun(svc, pool));
    log(`round ${r + 1}: relay   ${relay[r].eventsPerSecond.toFixed(0)} events/s, ${relay[r].cpuUsPerEvent.toFixed(1)} cpu µs/event`);
  };
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      await runRaw(r);
      await runRelay(r);
    } else {
      await runRelay(r);
      await runRaw(r);
    }
  }
  const ratio = median(relay.map((x, i) => x.eventsPerSecond / raw[i].eventsPerSecond));

  log(`lag run: ${RATE} writes/s for ${LAG_MS / 1000} s`);
  const lag = await lagRun(scratchUrl, lagTopicName, host);
  return {
    rawEventsPerSecond: raw.map((x) => x.eventsPerSecond),
    relayEventsPerSecond: relay.map((x) => x.eventsPerSecond),
    rawCpuUsPerEvent: raw.map((x) => x.cpuUsPerEvent),
    relayCpuUsPerEvent: relay.map((x) => x.cpuUsPerEvent),
    ratio,
    lag,
    pass: { throughput: ratio >= TARGET_RATIO, lag: lag.p99 < TARGET_P99_MS },
  };
}

export function summary(r: RelayBenchResult): string {
  const f0 = (n: number) => n.toFixed(0);
  const mark = (ok: boolean) => (ok ? "PASS" : "MISS");
  const ratios = r.relayEventsPerSecond.map((x, i) => x / r.rawEventsPerSecond[i]);
  return [
    `Relay benchmark: ${EVENTS} events over ${KEYS} ordering keys per run (interleaved), ${r.rawEventsPerSecond.length} rounds (raw, relay; relay, raw; …) after ${WARMUP} warm-up pairs,` +
      ` RELAY_BATCH_SIZE ${loadConfig({ RELAY_BATCH_SIZE: env.BENCH_RELAY_BATCH_SIZE }).events.relayBatchSize}, one emulator, node ${process.version}`,
    `  throughput  raw @google-cloud/pubsub  median ${f0(median(r.rawEventsPerSecond))} events/s   [${r.rawEventsPerSecond.map(f0).join(", ")}]` +
      `   cpu µs/event ${f0(median(r.rawCpuUsPerEvent))}`,
    `              outbox relay              median ${f0(median(r.relayEventsPerSecond))} events/s   [${r.relayEventsPerSecond.map(f0).join(", ")}]` +
      `   cpu µs/event ${f0(median(r.relayCpuUsPerEvent))}`,
    `              relay / raw               median ${r.ratio.toFixed(2)}  [${ratios.map((x) => x.toFixed(2)).join(", ")}]   target ≥ ${TARGET_RATIO}   ${mark(r.pass.throughput)}`,
    `  lag         ${r.lag.writes} writes at ${f0(r.lag.achievedRate)}/s (${r.lag.writeErrors} failed), commit → published and marked:`,
    `              p50 ${r.lag.p50.toFixed(1)} ms   p99 ${r.lag.p99.toFixed(1)} ms   max ${r.lag.max.toFixed(1)} ms   target p99 < ${TARGET_P99_MS} ms   ${mark(r.pass.lag)}`,
  ].join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      log(`${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    const r = await relayBench();
    process.stdout.write("\n" + summary(r) + "\n");
    log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    process.exit(env.BENCH_STRICT === "1" && !(r.pass.throughput && r.pass.lag) ? 1 : 0);
  } catch (e) {
    log(`failed: ${e instanceof Error ? e.stack : String(e)}`);
    process.exit(1);
  }
}
