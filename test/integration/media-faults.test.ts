import t from "tap";
import { Thumbnail_State, type Video } from "../../gen/video/v1/video_pb.js";
import { claimJobs } from "../../server/media/jobs.js";
import { startMediaWorker } from "../../server/media/worker.js";
import { fixture, removeFixtures } from "../support/media.js";
import { postgresSkipReason } from "../support/postgres.js";
import { createTestBucket, s3SkipReason, startS3FaultProxy } from "../support/s3.js";
import { contentMessages, eventually, startUploadServer, type UploadHarness } from "../support/uploads.js";

// Media jobs under faults: a replica that dies holding a job, the store
// failing mid-job, the video deleted mid-job, and several replicas' workers
// racing for one queue. Whatever happens, each thumbnail ends stored once,
// and nothing is left behind for a deleted video.

t.teardown(removeFixtures);

const ENV = { THUMBNAIL_CONCURRENCY: "2", THUMBNAIL_SIZES: "320x180", THUMBNAIL_FORMATS: "jpeg", THUMBNAIL_MAX_ATTEMPTS: "4", S3_MAX_RETRIES: "1" };

async function upload(h: UploadHarness, title: string): Promise<string> {
  const v = await h.newVideo(title);
  await h.s.clients.connect.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, await fixture("one-second")));
  return v.id;
}

function thumbnailsReady(h: UploadHarness, id: string, timeoutMs = 60_000): Promise<Video> {
  return eventually(async () => {
    const v = await h.s.clients.connect.getVideo({ id });
    return v.thumbnails.length > 0 && v.thumbnails.every((x) => x.state === Thumbnail_State.READY) && v.defaultThumbnailId ? v : undefined;
  }, `thumbnails of ${id}`, timeoutMs) as Promise<Video>;
}

const jobsOf = (h: UploadHarness, id: string) => h.s.ctx.db.selectFrom("media_jobs").select(["state", "attempts", "last_error"]).where("video_id", "=", id).execute();

t.test("a job whose replica died holding it is claimed again once its lease lapses; its thumbnails are stored once", async (t) => {
  const h = await startUploadServer(t, { kind: "filesystem", env: { ...ENV, THUMBNAIL_CONCURRENCY: "0", THUMBNAIL_JOB_LEASE: "1s" } });
  const id = await upload(h, "dead replica");
  // A replica claims the job, then dies (no heartbeat, no result).
  const [claimed] = await claimJobs(h.s.ctx.db, "dead-replica", 1, 1000, new Date());
  t.equal(claimed?.video_id, id, "the dead replica held the job");
  const live = startMediaWorker(h.s.ctx, { pollMs: 100, concurrency: 2 });
  t.teardown(() => live.stop());
  const v = await thumbnailsReady(h, id);
  t.equal(v.thumbnails.length, 3, "three thumbnails, not six");
  t.same(await jobsOf(h, id), [{ state: "succeeded", attempts: 2, last_error: null }], "the second attempt, by the live replica");
  t.equal((await h.objectKeys(`videos/${id}/thumbnails/`)).length, 3, "one object per thumbnail variant");
});

t.test("the thumbnail store failing mid-job: the job is retried with backoff and then succeeds, the error recorded", { skip: s3SkipReason() }, async (t) => {
  const bucket = await createTestBucket(t);
  const proxy = await startS3FaultProxy(t);
  const h = await startUploadServer(t, { kind: "s3", bucket, endpoint: proxy.endpoint, env: ENV });
  const id = await upload(h, "store outage");
  // Then every try of the job's first thumbnail PutObject fails (one plus
  // S3_MAX_RETRIES=1): the job probes and renders before it stores anything.
  proxy.inject({ kind: "slowdown", ops: ["PutObject"], times: 2 });
  const v = await thumbnailsReady(h, id);
  t.equal(v.thumbnails.length, 3);
  const [job] = await jobsOf(h, id);
  t.equal(job?.state, "succeeded");
  t.equal(job?.attempts, 2, "failed once, then succeeded");
  t.match(job?.last_error, /object storage is unavailable/, "the failed attempt's error is recorded");
  t.equal((await bucket.keys(`videos/${id}/thumbnails/`)).length, 3, "each thumbnail stored once");
});

t.test("a video deleted while its job runs: the job ends and nothing of it is left in the store", async (t) => {
  const h = await startUploadServer(t, { kind: "filesystem", env: { ...ENV, THUMBNAIL_SIZES: "1280x720,640x360,320x180", THUMBNAIL_FORMATS: "webp,jpeg,png" } });
  const id = await upload(h, "deleted mid-job");
  // Once probed, the job is rendering: delete the video then.
  await eventually(async () => (await h.s.clients.connect.getVideo({ id })).source?.duration, "the probe", 30_000);
  await h.s.clients.connect.deleteVideo({ id });
  await eventually(async () => (await h.s.ctx.db.selectFrom("media_jobs").select("id").where("video_id", "=", id).execute()).length === 0, "the job to be cancelled");
  // The job may still be storing variants: wait until the worker is idle, then let the janitor work.
  await eventually(async () => /media_jobs_total\{kind="probe",outcome="\w+"\} 1/.test(await h.s.ctx.metrics.registry.metrics()), "the job to end");
  t.match(await h.s.ctx.metrics.registry.metrics(), /media_jobs_total\{kind="probe",outcome="(cancelled|succeeded)"\} 1/, "it ended, not retried");
  await h.drainJanitor();
  t.same(await h.objectKeys(`videos/${id}/`), [], "no source, no thumbnail left");
});

t.test("several replicas' workers racing for one queue run each job once", { skip: postgresSkipReason() }, async (t) => {
  const h = await startUploadServer(t, { kind: "filesystem", env: ENV });
  const others = [startMediaWorker(h.s.ctx, { pollMs: 20 }), startMediaWorker(h.s.ctx, { pollMs: 20 })];
  t.teardown(() => Promise.all(others.map((w) => w.stop())));
  const ids = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => upload(h, `race ${i}`)));
  for (const id of ids) {
    const v = await thumbnailsReady(h, id);
    t.equal(v.thumbnails.length, 3, `${id}: three thumbnails`);
    t.same(await jobsOf(h, id), [{ state: "succeeded", attempts: 1, last_error: null }], `${id}: one job, claimed once`);
    t.equal((await h.objectKeys(`videos/${id}/thumbnails/`)).length, 3, `${id}: stored once`);
  }
  const metrics = await h.s.ctx.metrics.registry.metrics();
  t.match(metrics, /media_jobs_total\{kind="probe",outcome="succeeded"\} 6/, "six runs in all");
  t.match(metrics, /media_jobs_queue_depth 0/);
});
