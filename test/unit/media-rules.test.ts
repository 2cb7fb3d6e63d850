import t from "tap";
import { loadConfig } from "../../server/config.js";
import { judgeProbe, toolMessage } from "../../server/media/probe-rules.js";
import { middleReady, pendingThumbnails, resolveOffsetMs } from "../../server/media/thumbnail-rules.js";

// The media rules: settings, what ffprobe's answer means, where frames are
// taken, which thumbnail becomes the default.

t.test("THUMBNAIL_* settings: defaults, parsing, and refusals naming the variable", async (t) => {
  const m = loadConfig({}).media;
  t.same(m.offsets, [{ percent: 10 }, { percent: 50 }, { percent: 90 }]);
  t.same(m.sizes, [{ width: 1280, height: 720 }, { width: 640, height: 360 }, { width: 320, height: 180 }]);
  t.same(m.formats, ["webp", "jpeg"]);
  t.same([m.concurrency, m.maxBytes, m.maxAttempts, m.urlExpiryMs, m.publicBaseUrl], [2, 2 * 1024 * 1024, 5, 3_600_000, undefined]);
  t.same(loadConfig({ THUMBNAIL_OFFSETS: "2.5s, 1500ms,100%" }).media.offsets, [{ ms: 2500 }, { ms: 1500 }, { percent: 100 }]);
  t.same(loadConfig({ THUMBNAIL_SIZES: "320x180,1920x1080" }).media.sizes[0], { width: 1920, height: 1080 }, "largest first");
  t.same(loadConfig({ THUMBNAIL_FORMATS: "jpg,png,jpeg" }).media.formats, ["jpeg", "png"]);
  const bad: [string, string][] = [
    ["THUMBNAIL_OFFSETS", "150%"],
    ["THUMBNAIL_OFFSETS", "soon"],
    ["THUMBNAIL_SIZES", "1280"],
    ["THUMBNAIL_SIZES", "8x8"],
    ["THUMBNAIL_FORMATS", "gif"],
    ["THUMBNAIL_CONCURRENCY", "-1"],
    ["THUMBNAIL_MAX_BYTES", "10"],
    ["THUMBNAIL_URL_EXPIRY", "forever"],
    ["THUMBNAIL_PUBLIC_BASE_URL", "cdn.example.com"],
    ["FFMPEG_PATH", "bin/ffmpeg"],
  ];
  for (const [name, value] of bad) t.throws(() => loadConfig({ [name]: value }), { message: new RegExp(name) }, `${name}=${value}`);
});

t.test("ffprobe's answer: a playable video's facts, or a reason a person can act on", async (t) => {
  const ok = judgeProbe({
    streams: [
      { codec_type: "video", codec_name: "h264", width: 1920, height: 1080, side_data_list: [{ rotation: -90 }] },
      { codec_type: "audio", codec_name: "aac" },
    ],
    format: { format_name: "mov,mp4,m4a,3gp,3g2,mj2", duration: "12.345" },
  });
  t.same(ok, { ok: true, probe: { durationMs: 12345, width: 1080, height: 1920, videoCodec: "h264", audioCodec: "aac", container: "mov,mp4,m4a,3gp,3g2,mj2" } }, "a rotated stream is reported as shown");
  const reason = (o: Parameters<typeof judgeProbe>[0]) => {
    const v = judgeProbe(o);
    return v.ok ? "" : v.reason;
  };
  t.match(reason({ streams: [{ codec_type: "audio", codec_name: "mp3" }], format: { duration: "3" } }), /audio stream \(mp3\) but no video stream/);
  t.match(reason({ streams: [{ codec_type: "video", codec_name: "mjpeg", disposition: { attached_pic: 1 } }, { codec_type: "audio", codec_name: "mp3" }], format: { duration: "3" } }), /no video stream/, "cover art is not a video");
  t.match(reason({ streams: [{ codec_type: "video", codec_name: "png", width: 10, height: 10 }], format: { format_name: "png_pipe" } }), /still image \(png\)/);
  t.match(reason({ streams: [{ codec_type: "video", codec_name: "h264", width: 10, height: 10 }], format: { format_name: "mp4" } }), /duration cannot be read/);
  t.match(reason({ streams: [], format: {} }), /no video stream/);
});

t.test("tool messages never carry the signed URL or the path they read", async (t) => {
  const url = "http://127.0.0.1:9000/b/videos/x/source/y?X-Amz-Signature=secret";
  t.equal(toolMessage(`${url}: Invalid data found when processing input\n`, url), "<the file>: Invalid data found when processing input");
  t.notMatch(toolMessage(`error at https://other.example/x?sig=1 too`, url), /sig=1/);
});

t.test("frames: a share of the duration or a time, kept inside the video; the middle ready one is the default", async (t) => {
  t.equal(resolveOffsetMs({ offsetPercent: 50 }, 3000), 1500);
  t.equal(resolveOffsetMs({ offsetPercent: 100 }, 3000), 2900, "room for a frame before the end");
  t.equal(resolveOffsetMs({ timeOffsetMs: 90_000 }, 3000), 2900, "past the end: the last frame");
  t.equal(resolveOffsetMs({ timeOffsetMs: 500 }, 50), 0, "a very short clip: its first frame");
  const now = new Date();
  const three = pendingThumbnails([{ percent: 10 }, { percent: 50 }, { percent: 90 }], ["a", "b", "c"], now);
  t.equal(middleReady(three, ["a", "b", "c"]), undefined, "not while pending");
  const ready = three.map((x) => ({ ...x, state: "ready" as const }));
  t.equal(middleReady(ready, ["a", "b", "c"]), "b");
  t.equal(middleReady(ready, ["a", "b"]), "a");
  t.equal(middleReady(ready.filter((x) => x.id !== "b"), ["a", "b", "c"]), "a", "of those left, the earlier middle");
});
