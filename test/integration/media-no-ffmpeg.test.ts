import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";
import { TOOLS_MISSING } from "../../server/media/ffmpeg.js";
import { fixture, removeFixtures } from "../support/media.js";

// Without ffmpeg the service still starts and serves on the embedded
// defaults, says once that media jobs wait, and a job fails with that reason
// (not a stack trace); the upload itself is unaffected.

t.teardown(removeFixtures);
const root = path.resolve(import.meta.dirname, "../..");

t.test("no ffmpeg: serving, one log line saying media jobs wait, jobs failing with that reason", async (t) => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "vms-noffmpeg-"));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const env: Record<string, string | undefined> = { ...process.env, PORT: "0", DATA_DIR: dataDir, LOG_LEVEL: "info", FFMPEG_PATH: "/nonexistent/ffmpeg", FFPROBE_PATH: "/nonexistent/ffprobe", THUMBNAIL_MAX_ATTEMPTS: "1" };
  delete env.DATABASE_URL;
  delete env.S3_BUCKET;
  // node itself, not the tsx wrapper: a SIGKILL at teardown must reach the server
  // (killing the wrapper left the server running and the test file open).
  const child = spawn(process.execPath, ["--import=tsx", "server/main.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  t.teardown(() => child.kill("SIGKILL"));
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const lines = () => out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, any>);
  const waitFor = async <T>(probe: () => T | undefined, what: string): Promise<T> => {
    const until = Date.now() + 120_000;
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${out.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const port = await waitFor(() => lines().find((l) => l.message === "serving")?.port as number | undefined, "serving");
  const base = `http://127.0.0.1:${port}`;
  const v = (await (await fetch(`${base}/videos`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ title: "no ffmpeg" }) })).json()) as { id: string };
  const put = await fetch(`${base}/videos/${v.id}/content`, { method: "PUT", headers: { "content-type": "video/mp4" }, body: (await fixture("one-second")) as unknown as BodyInit });
  t.equal(put.status, 200, "the upload is unaffected");
  const job = await waitFor(() => lines().find((l) => l.message === "media job finished"), "the job's log line");
  t.match(job, { video_id: v.id, kind: "probe", outcome: "failed", "error.message": TOOLS_MISSING }, "the job fails with the reason, once its attempts are spent");
  t.equal(lines().filter((l) => l.message === TOOLS_MISSING).length, 1, "one start-up line says media jobs wait");
  t.notMatch(out, /\n\s+at /, "no stack trace");
  const after = (await (await fetch(`${base}/videos/${v.id}`)).json()) as { state: string };
  t.equal(after.state, "STATE_UPLOADED", "the video is not held against a missing tool");
  child.kill("SIGTERM");
});
