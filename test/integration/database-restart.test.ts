import t, { type Test } from "tap";
import { privateClusterSkipReason, startPrivateCluster } from "../support/pg-cluster.js";
import { postgresSkipReason } from "../support/postgres.js";
import { poll, pubsubSkipReason, sleep, startService, subscribedTopic, type Consumer, type ServiceProcess } from "../support/pubsub.js";

// PostgreSQL going away under write load, on a cluster of this test's own
// (the shared one serves every other test file): stopped fast (a planned
// restart) or immediately (a crash, then crash recovery), kept down for a
// while, then started again — while the service keeps running. Writes made
// while it is down fail with UNAVAILABLE; the service serves again without
// being restarted; every acknowledged write is in the database and its event
// reaches the topic, in per-video order. And a SIGTERM while it is down
// still ends the process cleanly and promptly.

const skip = postgresSkipReason() || pubsubSkipReason() || privateClusterSkipReason();

interface Write {
  video: string;
  title: string;
  status: number;
  code?: string;
  at: number;
}

/** PATCHes the videos in turn, one write at a time, until stopped; records how each ended. */
function writeLoop(svc: ServiceProcess, videos: string[]) {
  const writes: Write[] = [];
  let stopped = false;
  const done = (async () => {
    for (let i = 0; !stopped; i++) {
      const video = videos[i % videos.length];
      const title = `write ${i}`;
      const r = await svc.rest("PATCH", `/videos/${video}`, { title }).catch((e: Error) => ({ status: 0, json: { error: { status: e.message } } }));
      writes.push({ video, title, status: r.status, code: r.json?.error?.status, at: Date.now() });
      await sleep(20);
    }
  })();
  return {
    writes,
    async stop() {
      stopped = true;
      await done;
    },
  };
}

/** Titles the topic carried for a video, de-duplicated by ce-id, in ce-sequence order. */
function publishedTitles(consumer: Consumer, video: string): string[] {
  return consumer
    .unique()
    .filter((d) => d.attributes["ce-subject"] === video)
    .sort((a, b) => Number(a.attributes["ce-sequence"]) - Number(b.attributes["ce-sequence"]))
    .map((d) => (JSON.parse(d.data.toString("utf8")) as { video?: { title?: string } }).video?.title ?? "");
}

/** Whether `part` appears in `whole` in the same order (other items may come between). */
function inOrderWithin(part: string[], whole: string[]): boolean {
  let i = 0;
  for (const x of whole) if (i < part.length && x === part[i]) i++;
  return i === part.length;
}

for (const mode of ["immediate", "fast"] as const) {
  t.test(`PostgreSQL stopped (${mode}) under write load, then started again: no acknowledged write or event is lost`, { skip }, async (t: Test) => {
    const cluster = await startPrivateCluster(t);
    const url = await cluster.createDatabase("vms");
    const { name, consumer } = await subscribedTopic(t);
    const svc = await startService(t, { databaseUrl: url, topic: name, env: { RELAY_POLL_MS: "20000" } });

    const videos: string[] = [];
    for (const title of ["a", "b", "c"]) videos.push((await svc.rest("POST", "/videos", { title })).json.id);
    const loop = writeLoop(svc, videos);
    t.teardown(() => loop.stop());
    // A service that dies instead of riding the outage out says why.
    svc.exited.then((e) => e.signal !== "SIGTERM" && e.code !== 0 && t.comment(`the service exited (${JSON.stringify(e)}): ${svc.stderr().slice(-2000)} ${JSON.stringify(svc.logs().slice(-5))}`));
    await poll(() => loop.writes.filter((w) => w.status === 200).length >= 20, 15_000, "writes before the outage");

    const stopping = Date.now();
    await cluster.stop(mode);
    await poll(async () => (await svc.rest("GET", "/health/ready")).status === 503, 10_000, "/health/ready to report the database gone");
    await sleep(1500);
    await cluster.start();
    const up = Date.now();
    await poll(() => loop.writes.some((w) => w.at > up && w.status === 200), 30_000, "a write to succeed after the restart");
    await poll(async () => (await svc.rest("GET", "/health/ready")).status === 200, 10_000, "/health/ready to recover");
    await sleep(500);
    await loop.stop();

    const failed = loop.writes.filter((w) => w.status !== 200);
    t.ok(failed.length > 0, `${failed.length} of ${loop.writes.length} writes failed while the database was down`);
    const outcomes = new Set(failed.map((w) => `${w.status} ${w.code}`));
    t.same([...outcomes], ["503 UNAVAILABLE"], "each with 503 UNAVAILABLE, none with a 500");
    t.ok(failed.every((w) => w.at >= stopping), "no write failed before the database was stopped");
    const firstOk = loop.writes.find((w) => w.at > up && w.status === 200)!;
    t.comment(`${mode}: first write served ${firstOk.at - up} ms after the database was back`);

    // Every acknowledged write reached the topic, in order; the database holds the last one each video published.
    await poll(async () => (await svc.metric("events_outbox_backlog")) === 0, 30_000, "the outbox to drain");
    t.comment(`${mode}: outbox drained ${Date.now() - up} ms after the database was back`);
    for (const video of videos) {
      const acked = loop.writes.filter((w) => w.video === video && w.status === 200).map((w) => w.title);
      await consumer
        .until(() => inOrderWithin(acked, publishedTitles(consumer, video)), 30_000, `video ${video}: every acknowledged write's event`)
        .catch((e) => t.fail(String(e)));
      const published = publishedTitles(consumer, video);
      t.ok(inOrderWithin(acked, published), `video ${video}: the ${acked.length} acknowledged writes are on the topic, in order (${published.length} events)`);
      const stored = (await svc.rest("GET", `/videos/${video}`)).json.title;
      t.equal(stored, published[published.length - 1], `video ${video}: the database holds the last published write`);
    }
    const created = consumer.unique().filter((d) => d.attributes["ce-type"] === "video.v1.VideoCreated").length;
    t.equal(created, videos.length, "one VideoCreated per video");
    t.ok(svc.logs().some((l) => l.message === "outbox listener lost; polling until it reconnects" || l.message === "outbox listener cannot connect; polling"), "the relay noticed its LISTEN connection was lost");

    // Listening again: with polling every 20 s, an event out within 5 s was woken by NOTIFY.
    await sleep(2500); // the listener retries every 1–2 s
    const last = await svc.rest("PATCH", `/videos/${videos[0]}`, { title: "after the restart" });
    t.equal(last.status, 200);
    const sent = Date.now();
    await consumer.until(() => publishedTitles(consumer, videos[0]).includes("after the restart"), 5_000, "the event of a write after the restart, woken by NOTIFY");
    t.comment(`${mode}: published ${Date.now() - sent} ms after the write (polling is every 20 s)`);

    svc.child.kill("SIGTERM");
    t.equal((await svc.exited).code, 0, "and the service still shuts down cleanly");
  });
}

t.test("SIGTERM while PostgreSQL is down: the service still drains and exits 0 within the grace period", { skip }, async (t: Test) => {
  const cluster = await startPrivateCluster(t);
  const url = await cluster.createDatabase("vms");
  const { name } = await subscribedTopic(t);
  const svc = await startService(t, { databaseUrl: url, topic: name, env: { SHUTDOWN_GRACE_MS: "5000" } });
  const video = (await svc.rest("POST", "/videos", { title: "before" })).json.id;
  await cluster.stop("immediate");
  const r = await svc.rest("PATCH", `/videos/${video}`, { title: "while down" });
  t.equal(r.status, 503, "a write while it is down is 503");
  const stopAt = Date.now();
  svc.child.kill("SIGTERM");
  const exit = await svc.exited;
  t.equal(exit.code, 0, "exits 0");
  t.ok(Date.now() - stopAt < 6000, `within the grace period (${Date.now() - stopAt} ms)`);
});
