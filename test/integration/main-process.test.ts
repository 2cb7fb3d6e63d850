import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";
import { teeOutput } from "../support/log-capture.js";

// The real entry point as operators run it: start-up, a call, SIGTERM, exit 0;
// and configuration errors as one line and a non-zero exit.

const root = path.resolve(import.meta.dirname, "../..");
const tsx = path.join(root, "node_modules/.bin/tsx");

function start(env: Record<string, string>) {
  const child = spawn(tsx, ["server/main.ts"], { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  teeOutput(child.stdout, child.pid);
  teeOutput(child.stderr, child.pid);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

async function waitFor<T>(probe: () => T | undefined, ms: number): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test("serves on the embedded defaults, then drains and exits 0 on SIGTERM", async (t) => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "vms-main-"));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const p = start({ PORT: "0", DATA_DIR: dataDir, LOG_LEVEL: "info" });
  t.teardown(() => p.child.kill("SIGKILL"));
  const port = await waitFor(() => {
    const line = p.out().split("\n").find((l) => l.includes('"message":"serving"'));
    return line ? (JSON.parse(line) as { port: number }).port : undefined;
  }, 30_000);

  const created = await fetch(`http://127.0.0.1:${port}/videos`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ title: "Cats" }) });
  t.equal(created.status, 200);
  const video = (await created.json()) as { id: string; state: string };
  t.equal(video.state, "STATE_PENDING_UPLOAD");
  t.equal((await fetch(`http://127.0.0.1:${port}/health/ready`)).status, 200);

  p.child.kill("SIGTERM");
  t.equal(await p.exited, 0, "exit code 0");
  const lines = p.out().trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(lines.every((l) => typeof l.level === "string" && typeof l.message === "string"), "every stdout line is a JSON log record");
  t.ok(lines.some((l) => l.message === "call" && l.route === "POST /videos" && l.protocol === "rest" && l.code === "ok"), "one line per call");
  t.equal(lines.at(-1)?.message, "stopped");
  // The embedded event sink logs events (their data included) on the "events"
  // channel by design; call logs never carry request bodies.
  const callLines = lines.filter((l) => l.channel !== "events");
  t.notMatch(JSON.stringify(callLines), /Cats/, "request bodies are not logged");
  t.ok(lines.some((l) => l.channel === "events" && (l.attributes as Record<string, string>)["ce-type"] === "video.v1.VideoCreated"), "the log sink shows the event");

  // The data survives a restart of the embedded database.
  const again = start({ PORT: "0", DATA_DIR: dataDir });
  t.teardown(() => again.child.kill("SIGKILL"));
  const port2 = await waitFor(() => {
    const line = again.out().split("\n").find((l) => l.includes('"message":"serving"'));
    return line ? (JSON.parse(line) as { port: number }).port : undefined;
  }, 30_000);
  const read = await fetch(`http://127.0.0.1:${port2}/videos/${video.id}`);
  t.equal(read.status, 200);
  again.child.kill("SIGTERM");
  t.equal(await again.exited, 0);
});

t.test("bad configuration stops start-up with one line naming the variable", async (t) => {
  for (const [env, variable] of [
    [{ HOST: "0.0.0.0" }, "HOST"],
    [{ PORT: "eighty" }, "PORT"],
    [{ DB_POOL_MAX: "0" }, "DB_POOL_MAX"],
    [{ DATABASE_URL: "mysql://x" }, "DATABASE_URL"],
    [{ AUTH_DISABLED: "true", HOST: "10.1.2.3" }, "AUTH_DISABLED"],
  ] as const) {
    const p = start({ PORT: "0", DATA_DIR: mkdtempSync(path.join(tmpdir(), "vms-cfg-")), ...env });
    const code = await p.exited;
    t.not(code, 0, `${variable}: non-zero exit`);
    const lines = p.err().trim().split("\n");
    t.equal(lines.length, 1, `${variable}: one line`);
    t.match(lines[0], variable, `${variable}: named`);
  }
});
