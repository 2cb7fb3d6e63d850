import pg from "pg";
import t from "tap";
import { fromBinary } from "@bufbuild/protobuf";
import { VideoUpdatedSchema, type VideoUpdated } from "../../gen/video/v1/events_pb.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";
import { decodeEvent, poll, pubsubSkipReason, startService, subscribedTopic } from "../support/pubsub.js";

// Per-video order with three replicas of the service relaying from one
// PostgreSQL database, under concurrent writes to the same videos from all
// three: on the topic, after de-duplication by ce-id, each video's events
// arrive in the order they committed (sequence 1, 2, 3, …), none missing.

const skip = postgresSkipReason() || pubsubSkipReason();

const VIDEOS = 6;
const UPDATES = 180;
const WORKERS = 24;

t.test("three instances, concurrent writes to the same videos: every event arrives, in per-video order", { skip }, async (t) => {
  const { name, consumer } = await subscribedTopic(t);
  const url = await createTestDatabase(t);
  const db = new pg.Pool({ connectionString: url, max: 2 });
  t.teardown(() => db.end());

  // Small batches: many hand-overs of the same videos between the relays.
  const env = { RELAY_BATCH_SIZE: "4" };
  const instances = await Promise.all([0, 1, 2].map((i) => startService(t, { databaseUrl: url, topic: name, env, name: `instance ${i}` })));

  const videos: string[] = [];
  for (let i = 0; i < VIDEOS; i++) {
    const r = await instances[i % 3].rest("POST", "/videos", { title: `v${i} 0` });
    t.equal(r.status, 200, r.text);
    videos.push(r.json.id);
  }
  // WORKERS concurrent writers, each update to a random video through a random instance.
  let next = 0;
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (next < UPDATES) {
        const n = next++;
        const video = videos[Math.floor(Math.random() * VIDEOS)];
        const r = await instances[Math.floor(Math.random() * 3)].rest("PATCH", `/videos/${video}`, { title: `update ${n}` });
        if (r.status !== 200) failures.push(`${r.status} ${r.text}`);
      }
    }),
  );
  t.same(failures, [], "every write succeeded");

  const rows = (await db.query("select o.event_id::text, o.video_id::text, o.sequence::int, p.position from outbox o left join outbox_published p on p.id = o.id order by o.video_id, o.sequence")).rows;
  t.equal(rows.length, VIDEOS + UPDATES, "one outbox event per write");
  await consumer.untilAll(rows.map((r) => r.event_id), 60_000);
  await poll(async () => (await db.query("select count(*)::int as n from outbox_pending")).rows[0].n === 0, 10_000, "all marked");

  const unique = consumer.unique();
  t.equal(unique.length, rows.length, "no event that was not written");
  const duplicates = consumer.deliveries.length - unique.length;
  t.comment(`${consumer.deliveries.length} deliveries, ${duplicates} duplicates removed by ce-id`);

  const marked = (await db.query("select o.event_id::text, o.video_id::text, o.sequence::int, p.position::bigint as pos from outbox o left join outbox_published p on p.id = o.id order by o.video_id, o.sequence")).rows;
  for (const video of videos) {
    const expected = rows.filter((r) => r.video_id === video);
    const arrived = unique.filter((d) => d.attributes["ce-subject"] === video);
    t.same(arrived.map((d) => d.id), expected.map((r) => r.event_id), `video ${video}: ${expected.length} events arrived in commit order`);
    t.same(arrived.map((d) => Number(d.attributes["ce-sequence"])), expected.map((_, i) => i + 1), `video ${video}: ce-sequence 1…${expected.length}`);
    t.ok(arrived.every((d) => d.orderingKey === video), `video ${video}: ordering key = video id`);
    // The payload follows the same order: each update's title is the one its write set.
    const titles = arrived.slice(1).map((d) => (decodeEvent(d) as VideoUpdated).video?.title);
    const stored = (await db.query("select payload from outbox where video_id = $1 and sequence > 1 order by sequence", [video])).rows;
    t.same(titles, stored.map((r) => fromBinary(VideoUpdatedSchema, r.payload).video?.title), `video ${video}: payloads in the same order`);
    const pos = marked.filter((r) => r.video_id === video).map((r) => BigInt(r.pos));
    t.ok(pos.every((p, i) => i === 0 || p > pos[i - 1]), `video ${video}: the published position (the ListEvents cursor) grows with sequence`);
  }

  // Every instance relays: the test is only meaningful if they took turns.
  const published = await Promise.all(instances.map((s) => s.metric("events_published_total")));
  t.comment(`published per instance: ${published.join(", ")}`);
  t.equal(published.reduce((a, b) => a + b, 0), rows.length, "no event was published by two relays");
  t.ok(published.filter((n) => n > 0).length >= 2, `at least two instances published (${published.join(", ")})`);
});
