import { equals } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import t from "tap";
import { EventService, type Event } from "../../gen/video/v1/event_service_pb.js";
import {
  VideoCreatedSchema,
  VideoDeletedSchema,
  VideoUpdatedSchema,
  VideoUploadedSchema,
  type VideoCreated,
  type VideoDeleted,
  type VideoUpdated,
  type VideoUploaded,
} from "../../gen/video/v1/events_pb.js";
import { Video_State } from "../../gen/video/v1/video_pb.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";
import {
  Consumer,
  createTopic,
  decodeEvent,
  emulatorClient,
  poll,
  pubsubSkipReason,
  sleep,
  startService,
  subscribedTopic,
  uniqueName,
} from "../support/pubsub.js";

// Events on the real Pub/Sub emulator, published by the service as operators
// run it (server/main.ts in a child process, real PostgreSQL): the CloudEvents
// binding of CONTRACT.md §3, both data formats, the replay API, readiness
// when the topic is missing or goes missing, and poisoned outbox rows.

const skip = postgresSkipReason() || pubsubSkipReason();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const REQUIRED_ATTRIBUTES = ["ce-id", "ce-source", "ce-specversion", "ce-subject", "ce-time", "ce-type", "content-type"];

/** The promise's value, or undefined after ms (the timer does not outlive it). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function outbox(url: string, t: { teardown(fn: () => unknown): void }) {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  t.teardown(() => pool.end());
  return pool;
}

t.test("each write type is published once as a CloudEvent (binary mode), decodable with the generated messages", { skip }, async (t) => {
  for (const format of ["json", "protobuf"] as const) {
    await t.test(`EVENTS_FORMAT=${format}`, async (t) => {
      const { name, consumer } = await subscribedTopic(t);
      const url = await createTestDatabase(t);
      const db = await outbox(url, t);
      const svc = await startService(t, { databaseUrl: url, topic: name, format });

      const created = await svc.rest("POST", "/videos", { title: "Cats", tags: ["pets"], labels: { lang: "en" } });
      t.equal(created.status, 200, created.text);
      const v = created.json;
      const updated = await svc.rest("PATCH", `/videos/${v.id}`, { title: "Dogs" });
      t.equal(updated.status, 200, updated.text);
      const content = Buffer.from("not really an mp4, but bytes all the same");
      const put = await fetch(`${svc.baseUrl}/videos/${v.id}/content`, { method: "PUT", headers: { "content-type": "video/mp4" }, body: content });
      const uploadedText = await put.text();
      t.equal(put.status, 200, uploadedText);
      const uploaded = JSON.parse(uploadedText);
      const beforeDelete = Date.now();
      const deleted = await svc.rest("DELETE", `/videos/${v.id}`);
      t.equal(deleted.status, 200, deleted.text);
      const afterDelete = Date.now();

      const rows = (await db.query("select event_id::text, type, sequence::int from outbox where video_id = $1 order by sequence", [v.id])).rows;
      t.same(rows.map((r) => [r.type, r.sequence]), [
        ["video.v1.VideoCreated", 1],
        ["video.v1.VideoUpdated", 2],
        ["video.v1.VideoUploaded", 3],
        ["video.v1.VideoDeleted", 4],
      ], "four events in the outbox, one per write");
      await consumer.untilAll(rows.map((r) => r.event_id), 20_000);
      // Anything sent twice would normally follow within moments.
      await sleep(1000);
      const got = consumer.deliveries.filter((d) => d.attributes["ce-subject"] === v.id);
      t.same(got.map((d) => d.id), rows.map((r) => r.event_id), "each event arrived exactly once, in order, with ce-id = the outbox event id");
      t.equal(consumer.deliveries.length, 4, "nothing else was published");

      const contentType = format === "json" ? "application/json" : "application/protobuf";
      const source = got[0]?.attributes["ce-source"];
      for (const [i, d] of got.entries()) {
        const a = d.attributes;
        const what = a["ce-type"];
        for (const k of REQUIRED_ATTRIBUTES) t.ok(typeof a[k] === "string" && a[k] !== "", `${what}: ${k} present`);
        t.ok(Object.keys(a).every((k) => k === "content-type" || k.startsWith("ce-")), `${what}: only ce- attributes and content-type (${Object.keys(a)})`);
        t.equal(a["ce-specversion"], "1.0", `${what}: ce-specversion`);
        t.match(a["ce-id"], UUID, `${what}: ce-id is a UUID`);
        t.equal(a["ce-source"], source, `${what}: ce-source is the same for every event`);
        t.equal(a["ce-subject"], v.id, `${what}: ce-subject = video id`);
        t.equal(d.orderingKey, v.id, `${what}: ordering key = video id`);
        t.equal(a["content-type"], contentType, `${what}: content-type`);
        t.match(a["ce-time"], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/, `${what}: ce-time is RFC 3339`);
        if (a["ce-sequence"] !== undefined) t.equal(a["ce-sequence"], String(i + 1), `${what}: ce-sequence`);
        if (format === "protobuf") t.not(d.data[0], "{".charCodeAt(0), `${what}: data is binary protobuf, not JSON`);
        else t.doesNotThrow(() => JSON.parse(d.data.toString("utf8")), `${what}: data is JSON`);
      }
      t.match(source, /^(\/\/|[a-z][a-z0-9+.-]*:)\S+$/, "ce-source is a URI reference");
      t.same(got.map((d) => d.attributes["ce-type"]), ["video.v1.VideoCreated", "video.v1.VideoUpdated", "video.v1.VideoUploaded", "video.v1.VideoDeleted"]);

      const [c, u, up, del] = got;
      const vc = decodeEvent(c) as VideoCreated;
      t.equal(vc.$typeName, VideoCreatedSchema.typeName);
      t.equal(vc.video?.id, v.id, "VideoCreated.video.id");
      t.equal(vc.video?.title, "Cats", "VideoCreated.video.title");
      t.same(vc.video?.tags, ["pets"], "VideoCreated.video.tags");
      t.same(vc.video?.labels, { lang: "en" }, "VideoCreated.video.labels");
      t.equal(new Date(c.attributes["ce-time"]).getTime(), new Date(v.createTime).getTime(), "VideoCreated ce-time = the video's create_time");

      const vu = decodeEvent(u) as VideoUpdated;
      t.equal(vu.$typeName, VideoUpdatedSchema.typeName);
      t.equal(vu.video?.title, "Dogs", "VideoUpdated.video.title");
      t.equal(vu.video?.etag, updated.json.etag, "VideoUpdated.video is the committed video");
      t.same(vu.updateMask?.paths, ["title"], "VideoUpdated.update_mask");
      t.equal(new Date(u.attributes["ce-time"]).getTime(), new Date(updated.json.updateTime).getTime(), "VideoUpdated ce-time = the video's update_time");

      const vup = decodeEvent(up) as VideoUploaded;
      t.equal(vup.$typeName, VideoUploadedSchema.typeName);
      t.equal(vup.video?.id, v.id, "VideoUploaded.video.id");
      t.equal(vup.video?.state, Video_State.UPLOADED, "VideoUploaded.video.state");
      t.equal(vup.video?.etag, uploaded.etag, "VideoUploaded.video is the committed video");
      t.equal(new Date(up.attributes["ce-time"]).getTime(), new Date(uploaded.updateTime).getTime(), "VideoUploaded ce-time = the video's update_time");

      const vd = decodeEvent(del) as VideoDeleted;
      t.equal(vd.$typeName, VideoDeletedSchema.typeName);
      t.equal(vd.videoId, v.id, "VideoDeleted.video_id");
      t.equal(vd.ownerId, v.ownerId, "VideoDeleted.owner_id");
      const dt = new Date(del.attributes["ce-time"]).getTime();
      t.ok(dt >= beforeDelete - 5 && dt <= afterDelete + 5, "VideoDeleted ce-time is when the delete happened");

      const marked = (await db.query("select count(*)::int as n from outbox o join outbox_published p on p.id = o.id")).rows[0].n;
      t.equal(marked, 4, "all four marked published");
    });
  }
});

t.test("ListEvents and WatchEvents replay the published events in order and resume from a cursor", { skip }, async (t) => {
  const { name, consumer } = await subscribedTopic(t);
  const url = await createTestDatabase(t);
  const db = await outbox(url, t);
  const svc = await startService(t, { databaseUrl: url, topic: name });

  const a = (await svc.rest("POST", "/videos", { title: "A" })).json;
  const b = (await svc.rest("POST", "/videos", { title: "B" })).json;
  for (let i = 0; i < 3; i++) {
    t.equal((await svc.rest("PATCH", `/videos/${a.id}`, { title: `A${i}` })).status, 200);
    t.equal((await svc.rest("PATCH", `/videos/${b.id}`, { description: `b${i}` })).status, 200);
  }
  const ids = (await db.query("select event_id::text from outbox")).rows.map((r) => r.event_id);
  t.equal(ids.length, 8);
  await consumer.untilAll(ids, 20_000);
  await poll(async () => (await db.query("select count(*)::int as n from outbox_pending")).rows[0].n === 0, 10_000, "all marked");

  // The whole stream over REST.
  const all = await svc.rest("GET", "/events?pageSize=1000");
  t.equal(all.status, 200, all.text);
  const events: any[] = all.json.events;
  t.equal(events.length, 8, "every published event");
  t.same(new Set(events.map((e) => e.id)), new Set(ids), "the outbox's events, by ce-id");
  const cursors = events.map((e) => BigInt(e.cursor));
  t.ok(cursors.every((c, i) => i === 0 || c > cursors[i - 1]), "cursors strictly increase");
  t.equal(all.json.nextCursor, events[7].cursor, "next_cursor = the last event's cursor");
  for (const vid of [a.id, b.id]) {
    const listed = events.filter((e) => e.subject === vid);
    t.same(listed.map((e) => Number(e.sequence)), [1, 2, 3, 4], `video ${vid}: in sequence order`);
    const onTopic = consumer.unique().filter((d) => d.attributes["ce-subject"] === vid);
    t.same(listed.map((e) => e.id), onTopic.map((d) => d.id), `video ${vid}: the same events in the same order as on the topic`);
  }
  const byId = new Map(consumer.unique().map((d) => [d.id, d]));
  for (const e of events) {
    const d = byId.get(e.id)!;
    t.equal(e.type, d.attributes["ce-type"], "type = ce-type");
    t.equal(e.subject, d.attributes["ce-subject"], "subject = ce-subject");
    t.equal(new Date(e.time).getTime(), new Date(d.attributes["ce-time"]).getTime(), "time = ce-time");
  }

  // The typed client: payloads equal what was published.
  const rpc = createClient(EventService, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" }));
  const listed = await rpc.listEvents({ pageSize: 1000 });
  t.equal(listed.events.length, 8);
  for (const e of listed.events) {
    const published = decodeEvent(byId.get(e.id)!);
    const schema = e.type === VideoCreatedSchema.typeName ? VideoCreatedSchema : VideoUpdatedSchema;
    t.equal(published.$typeName, schema.typeName);
    t.ok(e.payload.value && equals(schema, e.payload.value as VideoCreated & VideoUpdated, published as VideoCreated & VideoUpdated), `${e.type} ${e.id}: payload equals the published data`);
  }

  // Paging by cursor: the pages add up to the whole stream, then an empty page keeps the cursor.
  const paged: string[] = [];
  let after = "";
  for (let i = 0; i < 10; i++) {
    const page = await svc.rest("GET", `/events?pageSize=3${after ? `&after=${after}` : ""}`);
    t.equal(page.status, 200, page.text);
    const evs: any[] = page.json.events ?? [];
    paged.push(...evs.map((e) => e.id));
    if (evs.length === 0) {
      t.equal(page.json.nextCursor ?? "", after, "an empty page returns the cursor it was given");
      break;
    }
    after = page.json.nextCursor;
  }
  t.same(paged, events.map((e) => e.id), "pages of 3 concatenate to the stream");
  const resumed = await svc.rest("GET", `/events?after=${events[4].cursor}`);
  t.same(resumed.json.events.map((e: any) => e.id), events.slice(5).map((e) => e.id), "resuming after the 5th event returns the rest");
  const onlyA = await svc.rest("GET", `/events?videoId=${a.id}`);
  t.same(onlyA.json.events.map((e: any) => e.id), events.filter((e) => e.subject === a.id).map((e) => e.id), "video_id filter");

  // WatchEvents: the rest after a cursor, then new events as they are published.
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const stream = rpc.watchEvents({ after: events[5].cursor }, { signal: abort.signal })[Symbol.asyncIterator]();
  const next = async (): Promise<Event> => {
    const r = await within(stream.next(), 15_000);
    if (!r) throw new Error("WatchEvents sent nothing within 15 s");
    if (r.done) throw new Error("WatchEvents ended");
    return r.value;
  };
  t.same([(await next()).id, (await next()).id], [events[6].id, events[7].id], "the events after the cursor");
  const live = svc.rest("PATCH", `/videos/${a.id}`, { title: "live" });
  const nine = await next();
  t.equal((await live).status, 200);
  t.equal(nine.type, "video.v1.VideoUpdated");
  t.equal(nine.subject, a.id);
  t.equal(nine.sequence, 5n, "the new event, as soon as it is published");
  t.ok(BigInt(nine.cursor) > cursors[7], "after the last cursor");
  t.equal((nine.payload.value as VideoUpdated).video?.title, "live");
  await consumer.untilAll([nine.id], 10_000, "the live event on the topic");
  abort.abort();

  // Resume a watch from the last cursor seen: only what came later.
  const abort2 = new AbortController();
  t.teardown(() => abort2.abort());
  const resume = rpc.watchEvents({ after: nine.cursor, videoId: a.id }, { signal: abort2.signal })[Symbol.asyncIterator]();
  await svc.rest("PATCH", `/videos/${b.id}`, { title: "other video" });
  await svc.rest("PATCH", `/videos/${a.id}`, { title: "again" });
  const r = await within(resume.next(), 15_000);
  t.ok(r && !r.done, "a resumed watch delivers");
  if (r && !r.done) {
    t.equal(r.value.subject, a.id, "only the watched video");
    t.equal(r.value.sequence, 6n, "the next event of that video, nothing before the cursor");
  }
  abort2.abort();
});

t.test("a missing topic: /health/ready is 503 naming it, writes still succeed, events wait and go out once it exists", { skip }, async (t) => {
  const client = emulatorClient();
  t.teardown(() => client.close());
  const name = uniqueName("missing");
  const url = await createTestDatabase(t);
  const db = await outbox(url, t);
  const svc = await startService(t, { databaseUrl: url, topic: name });

  const ready = await fetch(`${svc.baseUrl}/health/ready`);
  t.equal(ready.status, 503, "not ready");
  const body = (await ready.json()) as { status: string; reason: string };
  t.equal(body.status, "NOT_SERVING");
  t.match(body.reason, new RegExp(`topic .*${name}.* does not exist`), `the reason names the topic: ${body.reason}`);
  t.equal((await fetch(`${svc.baseUrl}/health`)).status, 200, "still live");

  const v = await svc.rest("POST", "/videos", { title: "waits" });
  t.equal(v.status, 200, "writes succeed without a topic");
  await poll(async () => (await svc.metric("events_publish_failures_total")) > 0, 10_000, "a failed publish attempt");
  const pending = (await db.query("select count(*)::int as n, max(o.attempts) as attempts from outbox o join outbox_pending p on p.id = o.id")).rows[0];
  t.equal(pending.n, 1, "the event is pending");
  t.ok(pending.attempts >= 1, "and its attempts are counted");
  t.ok(svc.logs().some((l) => l.message === "events not published; will retry" && /NOT_FOUND|not found/i.test(l["error.message"] ?? "")), "the failure is logged");

  const { subscription } = await createTopic(t, client, name);
  const consumer = Consumer.start(t, subscription);
  await poll(async () => (await fetch(`${svc.baseUrl}/health/ready`)).status === 200, 10_000, "ready once the topic exists");
  // The first event may have gone out before the subscription existed; the
  // outbox says whether it was published.
  await poll(async () => (await db.query("select count(*)::int as n from outbox_pending")).rows[0].n === 0, 40_000, "the waiting event published (retried with backoff)");
  const later = await svc.rest("PATCH", `/videos/${v.json.id}`, { title: "flows" });
  t.equal(later.status, 200);
  const id = (await db.query("select event_id::text from outbox where sequence = 2")).rows[0].event_id;
  await consumer.untilAll([id], 20_000, "the next event on the new topic");
});

t.test("a topic deleted while the service runs: the publish that finds it gone makes /health/ready 503; events wait for it", { skip }, async (t) => {
  const client = emulatorClient();
  t.teardown(() => client.close());
  const { topic, subscription, name } = await createTopic(t, client);
  const url = await createTestDatabase(t);
  const db = await outbox(url, t);
  const svc = await startService(t, { databaseUrl: url, topic: name });
  await poll(async () => (await fetch(`${svc.baseUrl}/health/ready`)).status === 200, 10_000, "ready with the topic");

  await subscription.delete();
  await topic.delete();
  const v = await svc.rest("POST", "/videos", { title: "after the topic went" });
  t.equal(v.status, 200, "writes still succeed");
  await poll(async () => (await fetch(`${svc.baseUrl}/health/ready`)).status === 503, 10_000, "not ready once a publish found the topic gone");
  const body = (await (await fetch(`${svc.baseUrl}/health/ready`)).json()) as { reason: string };
  t.match(body.reason, new RegExp(`topic .*${name}.* does not exist`), `the reason names the topic: ${body.reason}`);
  t.equal((await db.query("select count(*)::int as n from outbox_pending")).rows[0].n, 1, "the event is pending");

  const again = await createTopic(t, client, name);
  const consumer = Consumer.start(t, again.subscription);
  await poll(async () => (await fetch(`${svc.baseUrl}/health/ready`)).status === 200, 10_000, "ready again once the topic is back");
  await poll(async () => (await db.query("select count(*)::int as n from outbox_pending")).rows[0].n === 0, 40_000, "the waiting event published");
  const later = await svc.rest("PATCH", `/videos/${v.json.id}`, { title: "flows again" });
  t.equal(later.status, 200);
  const id = (await db.query("select event_id::text from outbox where video_id = $1 and sequence = 2", [v.json.id])).rows[0].event_id;
  await consumer.untilAll([id], 20_000, "the next event on the recreated topic");
});

t.test("a poisoned outbox row is parked, logged and counted; other videos' events flow past it", { skip }, async (t) => {
  const { name, consumer } = await subscribedTopic(t);
  const url = await createTestDatabase(t);
  const db = await outbox(url, t);
  const svc = await startService(t, { databaseUrl: url, topic: name, env: { RELAY_BATCH_SIZE: "2" } });

  const poisoned = "0198c1e2-0000-7000-8000-00000000dead";
  // Ahead of everything else in the queue: an unknown type and a payload that does not decode.
  await db.query(
    `insert into outbox (event_id, video_id, sequence, type, payload, create_time) values
       ('0198c1e2-0000-7000-8000-000000000001', $1, 1, 'video.v1.VideoExploded', '\\x0a00', now()),
       ('0198c1e2-0000-7000-8000-000000000002', $1, 2, 'video.v1.VideoCreated', '\\x0a05ff', now())`,
    [poisoned],
  );
  const writes = [];
  for (let i = 0; i < 4; i++) writes.push(await svc.rest("POST", "/videos", { title: `healthy ${i}` }));
  t.ok(writes.every((w) => w.status === 200), "writes succeed");
  const healthy = (await db.query("select event_id::text from outbox where video_id <> $1", [poisoned])).rows.map((r) => r.event_id);
  await consumer.untilAll(healthy, 20_000, "the other videos' events");
  // The poisoned video's second row may come up in a batch after theirs.
  await poll(async () => (await db.query("select count(*)::int as n from outbox where video_id = $1 and parked_time is null", [poisoned])).rows[0].n === 0, 10_000, "both poisoned rows parked");

  const parked = (
    await db.query(
      "select o.event_id::text, o.type, o.parked_time, p.publish_time, o.last_error, q.id as pending from outbox o left join outbox_published p on p.id = o.id left join outbox_pending q on q.id = o.id where o.video_id = $1 order by o.sequence",
      [poisoned],
    )
  ).rows;
  t.equal(parked.length, 2);
  for (const p of parked) {
    t.ok(p.parked_time, `${p.type}: parked`);
    t.equal(p.publish_time, null, `${p.type}: not published`);
    t.equal(p.pending, null, `${p.type}: no longer pending`);
    t.match(p.last_error, p.type === "video.v1.VideoExploded" ? /unknown event type/ : /does not decode/, `${p.type}: the reason is kept`);
  }
  t.equal(consumer.deliveries.filter((d) => d.attributes["ce-subject"] === poisoned).length, 0, "nothing of the poisoned rows was published");
  t.equal(await svc.metric("events_parked_total", { type: "video.v1.VideoExploded" }), 1, "metrics: events_parked_total for the unknown type");
  t.equal(await svc.metric("events_parked_total", { type: "video.v1.VideoCreated" }), 1, "metrics: events_parked_total for the undecodable payload");
  t.equal(await svc.metric("events_outbox_backlog"), 0, "metrics: nothing is left pending (parked rows are not backlog)");
  const logged = svc.logs().filter((l) => l.level === "error" && /parked/.test(l.message));
  t.same(logged.map((l) => l.event_id).sort(), parked.map((p) => p.event_id).sort(), "one error log line per parked event, naming it");
  t.ok(logged.every((l) => l.video_id === poisoned && typeof l.reason === "string"), "with the video and the reason");
  const events = (await svc.rest("GET", "/events")).json.events ?? [];
  t.notOk(events.some((e: any) => e.subject === poisoned), "ListEvents does not show parked rows");
  t.equal(events.length, 4, "ListEvents shows the published ones");
});
