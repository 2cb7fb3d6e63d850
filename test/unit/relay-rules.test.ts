import t from "tap";
import { VideoRetries, blame, planBatch, retryDelay, settle, shareCap } from "../../server/events/relay-rules.js";

// The relay's decisions (server/events/relay-rules.ts): what a batch takes,
// what a publish outcome means, when a failed video is tried again.

const ok = { status: "fulfilled", value: undefined } as const;
const no = (code?: number) => ({ status: "rejected", reason: Object.assign(new Error(`failed ${code ?? ""}`), { code }) }) as const;
const ev = (video_id: string, sequence: number) => ({ video_id, sequence });

t.test("a video's share of a batch is at most half the batch and at most one publish RPC", async (t) => {
  t.equal(shareCap(1000, 500), 500);
  t.equal(shareCap(200, 500), 100);
  t.equal(shareCap(5000, 500), 500);
  t.equal(shareCap(3, 500), 2);
  t.equal(shareCap(1, 500), 1, "a batch of one still takes one");
});

t.test("a batch takes each video's events together, oldest video first, up to the batch size", async (t) => {
  const heads = [
    { videoId: "a", pending: 10 },
    { videoId: "b", pending: 3 },
    { videoId: "c", pending: 10 },
  ];
  t.same(planBatch(heads, 100, 50), [
    { videoId: "a", take: 10 },
    { videoId: "b", take: 3 },
    { videoId: "c", take: 10 },
  ]);
  t.same(planBatch(heads, 18, 9), [
    { videoId: "a", take: 9 },
    { videoId: "b", take: 3 },
    { videoId: "c", take: 6 },
  ], "the last video is cut to fit, each capped at its share");
  t.same(planBatch([{ videoId: "a", pending: 0 }, { videoId: "b", pending: 1 }], 10, 5), [{ videoId: "b", take: 1 }], "a video with nothing left is skipped");
  t.same(planBatch([], 10, 5), []);
});

t.test("a video with a deep backlog does not starve the others", async (t) => {
  const plan = planBatch([{ videoId: "deep", pending: 500 }, { videoId: "x", pending: 1 }, { videoId: "y", pending: 1 }], 10, shareCap(10, 500));
  t.same(plan, [
    { videoId: "deep", take: 5 },
    { videoId: "x", take: 1 },
    { videoId: "y", take: 1 },
  ]);
});

t.test("per video, only the events before its first failure count as published", async (t) => {
  const events = [ev("a", 1), ev("b", 1), ev("a", 2), ev("b", 2), ev("a", 3)];
  const out = settle(events, [ok, no(3), ok, ok, ok]);
  t.same(out.published, [ev("a", 1), ev("a", 2), ev("a", 3)], "video a went through");
  t.same(out.failed.map((f) => f.event), [ev("b", 1), ev("b", 2)], "video b: the failure and everything after it");
  t.equal((out.failed[1].error as Error).message, "failed 3", "an event after the failure carries its error");

  const gap = settle([ev("a", 1), ev("a", 2), ev("a", 3)], [ok, no(), ok]);
  t.same(gap.published, [ev("a", 1)], "a success after a failure of the same video does not count");
  t.equal(gap.failed.length, 2);
});

t.test("who backs off: the whole relay only when the bus is unreachable and nothing went through", async (t) => {
  t.equal(blame(settle([ev("a", 1)], [ok])), "none");
  t.equal(blame(settle([ev("a", 1), ev("b", 1)], [ok, no(14)])), "videos", "others got through: the bus works");
  t.equal(blame(settle([ev("a", 1)], [no(3)])), "videos", "a refused message is the video's problem");
  t.equal(blame(settle([ev("a", 1)], [no()])), "videos", "an error without a code too");
  for (const code of [4, 5, 14]) t.equal(blame(settle([ev("a", 1), ev("b", 1)], [no(code), no(code)])), "bus", `code ${code}, nothing published`);
});

t.test("backoff is exponential with full jitter, capped", async (t) => {
  t.equal(retryDelay(1, 30_000, () => 1), 100);
  t.equal(retryDelay(2, 30_000, () => 1), 200);
  t.equal(retryDelay(5, 30_000, () => 1), 1600);
  t.equal(retryDelay(40, 30_000, () => 1), 30_000, "capped");
  t.equal(retryDelay(3, 30_000, () => 0), 0, "jitter reaches down to zero");
  const r = retryDelay(3, 30_000);
  t.ok(r >= 0 && r < 400, `random within [0, 400): ${r}`);
});

t.test("a failed video waits out its own backoff; success forgets it", async (t) => {
  const retries = new VideoRetries(30_000, () => 1);
  retries.failed("a", 0);
  t.same(retries.waiting(0), ["a"]);
  t.equal(retries.nextDue(0), 100);
  t.same(retries.waiting(100), [], "free to try at its due time");
  retries.failed("a", 100);
  t.equal(retries.nextDue(100), 300, "the second failure waits twice as long");
  retries.failed("b", 100);
  t.same(retries.waiting(150).sort(), ["a", "b"]);
  t.equal(retries.nextDue(150), 200, "the earliest due video");
  retries.succeeded("a");
  t.same(retries.waiting(150), ["b"]);
  retries.failed("a", 1000);
  t.equal(retries.nextDue(1000), 1100, "after a success the backoff starts over");
  t.same(retries.waiting(200_000), [], "long past due: forgotten");
  t.equal(retries.nextDue(200_000), undefined);
});
