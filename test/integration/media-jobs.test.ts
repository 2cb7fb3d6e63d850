import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import t from "tap";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import { Thumbnail_State, Video_State, type Video } from "../../gen/video/v1/video_pb.js";
import { fixture, removeFixtures, type Fixture } from "../support/media.js";
import { createTestBucket } from "../support/s3.js";
import { expectCode } from "../support/server.js";
import { STORES, contentMessages, eventually, startUploadServer, type UploadHarness } from "../support/uploads.js";

// The media lifecycle of an upload, on each object store: the job enqueued
// with STATE_UPLOADED probes the stored file in place and fills the source,
// renders thumbnails at THUMBNAIL_OFFSETS in every size and format, makes the
// middle one the default; a file that is not a playable video ends the video
// in STATE_FAILED with a reason, announced by VideoUpdated (CONTRACT.md §1b).

t.teardown(removeFixtures);

const ENV = { THUMBNAIL_CONCURRENCY: "2", THUMBNAIL_SIZES: "320x180,160x90", THUMBNAIL_FORMATS: "webp,jpeg", THUMBNAIL_MAX_ATTEMPTS: "2" };

async function upload(h: UploadHarness, name: Fixture, contentType = "video/mp4"): Promise<Video> {
  const v = await h.newVideo(`media ${name}`);
  await h.s.clients.connect.uploadVideoContent(contentMessages({ id: v.id, contentType }, await fixture(name)));
  return v;
}

/** The video once its media job has finished: thumbnails all ready or failed, or the video failed. */
function settled(h: UploadHarness, id: string): Promise<Video> {
  return eventually<Video | undefined>(
    async () => {
      const v = await h.s.clients.connect.getVideo({ id });
      if (v.state === Video_State.FAILED) return v;
      return v.thumbnails.length > 0 && v.thumbnails.every((x) => x.state !== Thumbnail_State.PENDING) && v.defaultThumbnailId ? v : undefined;
    },
    `the media job of ${id}`,
    60_000,
  ) as Promise<Video>;
}

async function updates(h: UploadHarness, id: string): Promise<string[][]> {
  const rows = await h.s.ctx.db.selectFrom("outbox").select("payload").where("video_id", "=", id).where("type", "=", "video.v1.VideoUpdated").orderBy("sequence").execute();
  return rows.map((r) => fromBinary(VideoUpdatedSchema, r.payload).updateMask?.paths ?? []);
}

const PLAYABLE: { name: Fixture; type: string; width: number; height: number; codec: RegExp; container: RegExp; seconds: number }[] = [
  { name: "mp4-faststart", type: "video/mp4", width: 320, height: 240, codec: /^h264$/, container: /mp4/, seconds: 3 },
  { name: "mp4-moov-at-end", type: "video/mp4", width: 320, height: 240, codec: /^h264$/, container: /mp4/, seconds: 3 },
  { name: "webm-vp9", type: "video/webm", width: 320, height: 240, codec: /^vp9$/, container: /webm/, seconds: 3 },
  { name: "mov", type: "video/quicktime", width: 320, height: 240, codec: /^h264$/, container: /mov/, seconds: 3 },
  { name: "portrait-9x16", type: "video/mp4", width: 360, height: 640, codec: /^h264$/, container: /mp4/, seconds: 3 },
  { name: "one-second", type: "video/mp4", width: 320, height: 240, codec: /^h264$/, container: /mp4/, seconds: 1 },
];

const NOT_VIDEOS: { name: Fixture; reason: RegExp }[] = [
  { name: "corrupt", reason: /not a video ffprobe can read/ },
  { name: "audio-only", reason: /audio stream \(aac\) but no video stream/ },
  { name: "image-renamed", reason: /still image \(png\)/ },
];

for (const store of STORES) {
  t.test(`${store.kind} store`, { skip: store.skip }, async (t) => {
    const bucket = store.kind === "s3" ? await createTestBucket(t) : undefined;
    const h = await startUploadServer(t, { kind: store.kind, bucket, env: ENV });

    for (const f of PLAYABLE) {
      t.test(`${f.name}: probed in place, thumbnails at 10/50/90 % in each size and format, the middle one the default`, async (t) => {
        const v = await settled(h, (await upload(h, f.name, f.type)).id);
        t.equal(v.state, Video_State.UPLOADED, "the state is the transcoder's to change");
        const src = v.source!;
        t.equal([src.width, src.height].join("x"), `${f.width}x${f.height}`, "picture size");
        t.match(src.videoCodec, f.codec, "video codec");
        t.match(src.audioCodec, /^(aac|opus)$/, "audio codec");
        t.match(src.container, f.container, "container");
        const ms = Number(src.duration!.seconds) * 1000 + src.duration!.nanos / 1e6;
        t.ok(Math.abs(ms - f.seconds * 1000) < 200, `duration ${ms} ms`);
        t.equal(v.thumbnails.length, 3, "one thumbnail per offset");
        const offsets = v.thumbnails.map((x) => Number(x.timeOffset!.seconds) * 1000 + Math.round(x.timeOffset!.nanos / 1e6));
        t.same(offsets, [0.1, 0.5, 0.9].map((p) => Math.min(Math.round(p * ms), ms - 100)), "offsets resolved on the duration");
        t.equal(v.defaultThumbnailId, v.thumbnails[1]!.id, "the middle one is the default");
        for (const th of v.thumbnails) {
          t.equal(th.state, Thumbnail_State.READY);
          const landscape = f.width > f.height;
          const boxes = landscape ? ["240x180", "120x90"] : ["101x180", "51x90"];
          t.same([...new Set(th.variants.map((x) => `${x.width}x${x.height}`))], boxes, "fits each box, aspect kept, largest first");
          t.same(th.variants.map((x) => x.format), ["webp", "jpeg", "webp", "jpeg"]);
          t.equal(`${th.width}x${th.height}`, boxes[0], "fields 1-3 describe the largest variant");
          for (const x of th.variants) {
            const key = `videos/${v.id}/thumbnails/${th.id}/${x.width}x${x.height}.${x.format}`;
            t.equal(await h.objectSize(key), Number(x.sizeBytes), `${key} stored`);
          }
        }
        t.same((await updates(h, v.id)).slice(0, 2), [["source", "thumbnails"], ["thumbnails", "default_thumbnail_id"]], "VideoUpdated for the probe, then for the thumbnails");
        const jobs = await h.s.ctx.db.selectFrom("media_jobs").select(["state", "attempts"]).where("video_id", "=", v.id).execute();
        t.same(jobs, [{ state: "succeeded", attempts: 1 }], "one job, one attempt");
      });
    }

    for (const f of NOT_VIDEOS) {
      t.test(`${f.name}: STATE_FAILED with a reason, announced by VideoUpdated, not retried`, async (t) => {
        const v = await settled(h, (await upload(h, f.name)).id);
        t.equal(v.state, Video_State.FAILED);
        t.match(v.failureReason, f.reason);
        t.same(await updates(h, v.id), [["state", "failure_reason", "thumbnails"]]);
        const jobs = await h.s.ctx.db.selectFrom("media_jobs").select(["state", "attempts", "last_error"]).where("video_id", "=", v.id).execute();
        t.same(jobs, [{ state: "failed", attempts: 1, last_error: v.failureReason }], "failed once, for good, the reason recorded");
      });
    }

    t.test("zero-length: refused at upload, so no job ever sees it (the job would fail it as empty)", async (t) => {
      const v = await h.newVideo("media zero-length");
      await expectCode(t, h.s.clients.connect.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, await fixture("zero-length"))), Code.InvalidArgument);
      t.equal((await h.s.clients.connect.getVideo({ id: v.id })).state, Video_State.PENDING_UPLOAD);
      t.same(await h.s.ctx.db.selectFrom("media_jobs").select("id").where("video_id", "=", v.id).execute(), []);
    });
  });
}
