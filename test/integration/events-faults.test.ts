import pg from "pg";
import t, { type Test } from "tap";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";
import { Consumer, poll, pubsubSkipReason, sleep, startService, subscribedTopic, type ServiceProcess } from "../support/pubsub.js";
import { startTcpProxy } from "../support/tcp-proxy.js";

// The relay under faults, with the service talking to the Pub/Sub emulator
// through a TCP proxy (the test's consumer connects directly):
//   - bus outage: writes go on succeeding; after the link is back every event
//     arrives, once each after de-duplication by ce-id, in per-video order;
//   - SIGKILL between publish and mark: the event is sent again with the same
//     ce-id by the next instance; nothing is lost;
//   - SIGTERM while a batch is in flight, and while the bus is down: every
//     event ends either published-and-marked or pending, and a later instance
//     publishes the pending ones.
//   - one of three replicas SIGKILLed with a batch published but not marked
//     while the other two keep writing and relaying: they send its batch
//     again (same ce-ids), nothing is lost, per-video order holds.

const skip = postgresSkipReason() || pubsubSkipReason();

async function setup(t: Test) {
  const { name, consumer } = await subscribedTopic(t);
  const url = await createTestDatabase(t);
  const db = new pg.Pool({ connectionString: url, max: 2 });
  t.teardown(() => db.end());
  const proxy = await startTcpProxy(process.env.TEST_PUBSUB_EMULATOR_HOST!);
  t.teardown(() => proxy.close());
  return { consumer, name, url, db, proxy };
}

interface Row {
  event_id: string;
  video_id: string;
  sequence: number;
  published: boolean;
  attempts: number;
}

async function rows(db: pg.Pool): Promise<Row[]> {
  return (
    await db.query(
      "select o.event_id::text, o.video_id::text, o.sequence::int, p.id is not null as published, o.attempts from outbox o left join outbox_published p on p.id = o.id order by o.video_id, o.sequence",
    )
  ).rows;
}

/** After de-duplication by ce-id: exactly the outbox's events, each video's in sequence order. */
function checkComplete(t: Test, consumer: Consumer, all: Row[]) {
  const unique = consumer.unique();
  t.equal(unique.length, all.length, `${all.length} distinct ce-ids, one per outbox event (${consumer.deliveries.length} deliveries)`);
  t.same(new Set(unique.map((d) => d.id)), new Set(all.map((r) => r.event_id)), "the same ce-ids as the outbox");
  for (const video of new Set(all.map((r) => r.video_id))) {
    t.same(
      unique.filter((d) => d.attributes["ce-subject"] === video).map((d) => d.id),
      all.filter((r) => r.video_id === video).map((r) => r.event_id),
      `video ${video}: in commit order`,
    );
  }
}

async function write(svc: ServiceProcess, method: string, path: string, body?: unknown) {
  const r = await svc.rest(method, path, body);
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
  return r.json;
}

t.test("bus outage: writes keep succeeding; once the link is back every event arrives, none twice after de-duplication", { skip }, async (t) => {
  const { consumer, name, url, db, proxy } = await setup(t);
  const svc = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address });

  const videos = [(await write(svc, "POST", "/videos", { title: "a" })).id, (await write(svc, "POST", "/videos", { title: "b" })).id];
  await consumer.untilAll((await rows(db)).map((r) => r.event_id), 15_000, "the events before the outage");

  proxy.cut();
  const failedBefore = await svc.metric("events_publish_failures_total");
  const outageStart = Date.now();
  let writes = 0;
  const statuses = new Set<number>();
  while (Date.now() - outageStart < 3000) {
    const video = videos[writes % 2];
    const r = writes % 5 === 4 ? await svc.rest("POST", "/videos", { title: `during ${writes}` }) : await svc.rest("PATCH", `/videos/${video}`, { title: `during ${writes}` });
    statuses.add(r.status);
    if (r.status === 200 && writes % 5 === 4) videos.push(r.json.id);
    writes++;
    await sleep(50);
  }
  t.same([...statuses], [200], `${writes} writes during the outage all succeeded`);
  const during = await rows(db);
  const pending = during.filter((r) => !r.published).length;
  t.ok(pending > 0, `${pending} events pending while the bus is unreachable`);
  t.ok((await svc.metric("events_publish_failures_total")) > failedBefore, "failed publish attempts are counted");
  t.ok((await svc.metric("events_outbox_backlog")) > 0, "the backlog shows in metrics");
  // Backoff (100 ms × 2^n, full jitter) allows about 6 attempts in 3 s; one
  // attempt per write would mean the outbox notifications cut it short.
  const attempts = Math.max(...during.map((r) => r.attempts));
  t.ok(attempts <= 15, `the relay backs off: ${attempts} attempts on the oldest pending event during ${writes} writes`);

  proxy.restore();
  const restored = Date.now();
  const all = await rows(db);
  await consumer.untilAll(all.map((r) => r.event_id), 60_000, "every event after the outage");
  t.comment(`all ${all.length} events arrived ${Date.now() - restored} ms after the link came back; ${consumer.deliveries.length - consumer.unique().length} duplicate deliveries`);
  await poll(async () => (await rows(db)).every((r) => r.published), 15_000, "every event marked published");
  await sleep(500);
  checkComplete(t, consumer, await rows(db));
  t.ok(svc.logs().some((l) => l.message === "events not published; will retry"), "the failures are logged");
});

t.test("SIGKILL between publish and mark: the next instance sends the event again with the same ce-id; nothing is lost", { skip }, async (t) => {
  const { consumer, name, url, db, proxy } = await setup(t);
  const first = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address, name: "first" });
  const video = (await write(first, "POST", "/videos", { title: "before" })).id;
  await consumer.untilAll((await rows(db)).map((r) => r.event_id), 15_000, "the first event");

  // Requests reach the emulator; its answers do not reach the service.
  proxy.hold();
  await write(first, "PATCH", `/videos/${video}`, { title: "in flight" });
  const inFlight = (await rows(db)).find((r) => r.sequence === 2)!;
  await consumer.untilAll([inFlight.event_id], 15_000, "the held publish to reach the topic");
  t.ok(proxy.stats.heldBytes > 0, "the publish response is held back");
  t.notOk((await rows(db)).find((r) => r.event_id === inFlight.event_id)!.published, "published, not yet marked");

  first.child.kill("SIGKILL");
  t.equal((await first.exited).signal, "SIGKILL", "the first instance is gone");
  proxy.dropConnections();
  proxy.restore();
  t.notOk((await rows(db)).find((r) => r.event_id === inFlight.event_id)!.published, "still pending after the crash");

  const second = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address, name: "second" });
  await consumer.until(() => consumer.of(inFlight.event_id).length >= 2, 20_000, "the event sent again");
  const [a, b] = consumer.of(inFlight.event_id);
  t.equal(b.id, a.id, "the same ce-id");
  t.not(b.messageId, a.messageId, "as a new Pub/Sub message (a re-send, not a redelivery)");
  t.same(b.attributes, a.attributes, "with the same attributes");
  t.ok(b.data.equals(a.data), "and the same data");
  await write(second, "PATCH", `/videos/${video}`, { title: "after" });
  const all = await rows(db);
  await consumer.untilAll(all.map((r) => r.event_id), 15_000, "the event written after the restart");
  await poll(async () => (await rows(db)).every((r) => r.published), 10_000, "every event marked published");
  checkComplete(t, consumer, all);
});

t.test("SIGTERM while a batch is in flight, and while the bus is down: every event is published-and-marked or pending", { skip }, async (t) => {
  const { consumer, name, url, db, proxy } = await setup(t);

  // 1. SIGTERM while the publish is in flight: the batch is finished, not abandoned.
  const first = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address, name: "first" });
  const video = (await write(first, "POST", "/videos", { title: "v" })).id;
  await consumer.untilAll((await rows(db)).map((r) => r.event_id), 15_000, "the first event");
  proxy.hold();
  for (let i = 0; i < 3; i++) await write(first, "PATCH", `/videos/${video}`, { title: `held ${i}` });
  await consumer.until(() => consumer.unique().length >= 2, 15_000, "a held publish to reach the topic");
  first.child.kill("SIGTERM");
  await sleep(500);
  t.equal(first.child.exitCode, null, "the process waits for the batch in flight");
  proxy.restore();
  const exit1 = await first.exited;
  t.equal(exit1.code, 0, "then exits 0");
  invariant(t, consumer, await rows(db));

  // 2. SIGTERM while the bus is down: the pending events stay pending, the process still exits promptly.
  const second = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address, name: "second" });
  await poll(async () => (await rows(db)).every((r) => r.published), 15_000, "the first instance's leftovers published");
  proxy.cut();
  for (let i = 0; i < 3; i++) await write(second, "PATCH", `/videos/${video}`, { title: `down ${i}` });
  await poll(async () => (await second.metric("events_publish_failures_total")) > 0, 10_000, "a failed attempt").catch((e) => t.fail(String(e)));
  const stopAt = Date.now();
  second.child.kill("SIGTERM");
  const exit2 = await second.exited;
  t.equal(exit2.code, 0, "exits 0");
  t.ok(Date.now() - stopAt < 8000, `exits within the shutdown grace (${Date.now() - stopAt} ms)`);
  const left = await rows(db);
  t.ok(left.filter((r) => !r.published).length >= 1, "events written while the bus was down are pending");
  invariant(t, consumer, left);

  // 3. The next instance publishes what was left.
  proxy.restore();
  await startService(t, { databaseUrl: url, topic: name, name: "third" });
  const all = await rows(db);
  await consumer.untilAll(all.map((r) => r.event_id), 20_000, "the pending events");
  await poll(async () => (await rows(db)).every((r) => r.published), 10_000, "every event marked published");
  checkComplete(t, consumer, all);
});

/** Each event is either marked published (and then it is on the topic) or pending. */
function invariant(t: Test, consumer: Consumer, all: Row[]) {
  const onTopic = new Set(consumer.deliveries.map((d) => d.id));
  const markedNotSent = all.filter((r) => r.published && !onTopic.has(r.event_id));
  t.same(markedNotSent.map((r) => r.event_id), [], "no event is marked published without having been published");
  t.comment(`after SIGTERM: ${all.filter((r) => r.published).length} published-and-marked, ${all.filter((r) => !r.published).length} pending`);
}

t.test("one of three replicas killed mid-relay while the others go on: its batch is sent again by them, nothing is lost, per-video order holds", { skip }, async (t) => {
  const { consumer, name, url, db, proxy } = await setup(t);
  // Small batches: many hand-overs of the same videos between the relays.
  const env = { RELAY_BATCH_SIZE: "4" };
  const doomed = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address, env, name: "doomed" });
  const survivors = await Promise.all(["b", "c"].map((n) => startService(t, { databaseUrl: url, topic: name, env, name: n })));
  const videos: string[] = [];
  for (let i = 0; i < 6; i++) videos.push((await write(survivors[i % 2], "POST", "/videos", { title: `v${i}` })).id);

  // Writers through the survivors all along; the doomed replica relays what it can claim.
  let writing = true;
  const failures: string[] = [];
  const writers = Array.from({ length: 8 }, async (_, w) => {
    for (let n = 0; writing; n++) {
      const r = await survivors[n % 2].rest("PATCH", `/videos/${videos[(w + n) % videos.length]}`, { title: `w${w} n${n}` });
      if (r.status !== 200) failures.push(`${r.status} ${r.text}`);
    }
  });
  await poll(async () => (await doomed.metric("events_published_total")) > 0, 15_000, "the doomed replica to take part");

  // Its next publishes reach the bus, their acknowledgements do not reach it:
  // killed then, its batch is published but not marked, its videos still locked.
  proxy.hold();
  await poll(() => proxy.stats.heldBytes > 0, 15_000, "a publish of the doomed replica in flight");
  await sleep(200);
  doomed.child.kill("SIGKILL");
  t.equal((await doomed.exited).signal, "SIGKILL", "killed mid-relay");
  proxy.dropConnections();
  const killedAt = Date.now();
  const before = await Promise.all(survivors.map((s) => s.metric("events_published_total")));
  await sleep(1500);
  writing = false;
  await Promise.all(writers);
  t.same(failures, [], "every write through the other replicas succeeded");

  const all = await rows(db);
  await consumer.untilAll(all.map((r) => r.event_id), 30_000, "every event after the kill");
  await poll(async () => (await rows(db)).every((r) => r.published), 15_000, "every event marked published");
  t.comment(`all ${all.length} events arrived ${Date.now() - killedAt} ms after the kill`);
  const after = await Promise.all(survivors.map((s) => s.metric("events_published_total")));
  t.ok(after.every((n, i) => n > before[i]), `both survivors went on publishing (${before.join(", ")} → ${after.join(", ")})`);
  const resent = consumer.deliveries.length - consumer.unique().length;
  t.ok(resent > 0, `the killed replica's unmarked batch was sent again by the others (${resent} duplicate deliveries, same ce-ids)`);
  checkComplete(t, consumer, await rows(db));
});

t.test("a replica frozen (SIGSTOP) holding a batch: the database ends its idle transaction, another replica takes its videos over; thawed, it loses and duplicates nothing out of order", { skip }, async (t) => {
  const { consumer, name, url, db, proxy } = await setup(t);
  const env = { DB_IDLE_TRANSACTION_TIMEOUT: "2s" };
  const frozen = await startService(t, { databaseUrl: url, topic: name, pubsubHost: proxy.address, env, name: "frozen" });
  const video = (await write(frozen, "POST", "/videos", { title: "v" })).id;
  await consumer.untilAll((await rows(db)).map((r) => r.event_id), 15_000, "the first event");

  // Its batch goes out and waits for acknowledgements that are held back; then the process stops.
  proxy.hold();
  await write(frozen, "PATCH", `/videos/${video}`, { title: "held" });
  await poll(() => proxy.stats.heldBytes > 0, 15_000, "the frozen replica's publish in flight");
  frozen.child.kill("SIGSTOP");
  t.teardown(() => void frozen.child.kill("SIGCONT"));
  const frozenAt = Date.now();

  const other = await startService(t, { databaseUrl: url, topic: name, env, name: "other" });
  for (let i = 0; i < 3; i++) await write(other, "PATCH", `/videos/${video}`, { title: `after ${i}` });
  const all = await rows(db);
  await consumer.untilAll(all.map((r) => r.event_id), 20_000, "the video's events, relayed by the other replica");
  const waited = Date.now() - frozenAt;
  t.ok(waited >= 1500, `not before the frozen session's transaction was ended (${waited} ms after the freeze)`);
  t.comment(`the other replica published the frozen one's video ${waited} ms after the freeze (DB_IDLE_TRANSACTION_TIMEOUT=2s)`);

  frozen.child.kill("SIGCONT");
  proxy.restore();
  await sleep(2000);
  t.equal(frozen.child.exitCode, null, "thawed, the replica is still running");
  await write(frozen, "PATCH", `/videos/${video}`, { title: "thawed" });
  const final = await rows(db);
  await consumer.untilAll(final.map((r) => r.event_id), 15_000, "the write after the thaw");
  await poll(async () => (await rows(db)).every((r) => r.published), 10_000, "every event marked published");
  checkComplete(t, consumer, await rows(db));
});
