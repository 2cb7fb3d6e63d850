// Start-up benchmark — `npm start` on the embedded defaults against a bare
// node:http server's start, in the same run and on the same node.
//
//   first   `npm start` with a new DATA_DIR (PGlite creates its files), from
//           spawning npm to the first 200 from /health/ready
//           target: < 3000 ms
//   again   `npm start` on that DATA_DIR again (the usual developer restart)
//           target: < 1500 ms
//   bare    `node -e` with a node:http server answering 200: node's own
//           start-up on this machine at this moment, to read the two above by
//
// dist/ is built first if it is missing or stale (as npm ci's prepare leaves
// it), so no round includes a compile. Rounds alternate bare, first, again.
//
// Environment (all optional):
//   BENCH_STARTUP_ROUNDS   rounds (5)
//   BENCH_STRICT=1         exit 1 when a target is missed (standalone)
//
// Standalone: npx tsx test/bench/startup.ts. From another script: import
// { startupBench, summary }.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, repoRoot } from "./procs.js";

const env = process.env;
const ROUNDS = env.BENCH_STARTUP_ROUNDS ? Number(env.BENCH_STARTUP_ROUNDS) : 5;
const TARGET_FIRST_MS = 3000;
const TARGET_AGAIN_MS = 1500;

export interface StartupBenchResult {
  node: string;
  bareMs: number[];
  firstMs: number[];
  againMs: number[];
  pass: { first: boolean; again: boolean };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Runs `command` in its own process group and times spawn → first 200 from
 * `url`; then stops the group (SIGTERM, SIGKILL after 15 s) and waits for it.
 */
async function timeToReady(command: string, args: string[], url: string, extraEnv: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const child = spawn(command, args, { cwd: repoRoot, env: { ...env, NODE_OPTIONS: undefined, ...extraEnv }, stdio: ["ignore", "ignore", "pipe"], detached: true });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${command} ${args.join(" ")} exited with ${child.exitCode} before it was ready: ${stderr}`);
      const ok = await fetch(url).then((r) => (r.body?.cancel(), r.status === 200), () => false);
      if (ok) return performance.now() - t0;
      if (performance.now() - t0 > 60_000) throw new Error(`${command} not ready within 60 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    process.kill(-child.pid!, "SIGTERM");
    const kill = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), 15_000);
    await exited;
    clearTimeout(kill);
  }
}

const BARE = `require("node:http").createServer((q, s) => s.end("ok")).listen(+process.env.PORT, "127.0.0.1")`;

export async function startupBench(log: (s: string) => void = () => {}): Promise<StartupBenchResult> {
  // npm start would build a missing or stale dist/ inside the first round.
  const built = spawnSync(process.execPath, ["scripts/build.mjs", "--if-stale"], { cwd: repoRoot, stdio: "inherit" });
  if (built.status !== 0) throw new Error("building dist/ failed");
  const node = spawnSync("node", ["--version"], { cwd: repoRoot, encoding: "utf8", env: { ...env, PATH: `${path.join(repoRoot, "node_modules/.bin")}:${env.PATH}` } }).stdout.trim();
  const r: StartupBenchResult = { node, bareMs: [], firstMs: [], againMs: [], pass: { first: false, again: false } };
  for (let i = 0; i < ROUNDS; i++) {
    const port = String(await freePort());
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "vms-bench-startup-"));
    try {
      // npm's scripts put node_modules/.bin first on PATH; the bare side gets the same node.
      r.bareMs.push(await timeToReady("npm", ["exec", "--", "node", "-e", BARE], `http://127.0.0.1:${port}/`, { PORT: port }));
      const service = { PORT: port, HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "warn" };
      r.firstMs.push(await timeToReady("npm", ["start"], `http://127.0.0.1:${port}/health/ready`, service));
      r.againMs.push(await timeToReady("npm", ["start"], `http://127.0.0.1:${port}/health/ready`, service));
      log(`startup round ${i + 1}: bare ${r.bareMs.at(-1)!.toFixed(0)} ms, first ${r.firstMs.at(-1)!.toFixed(0)} ms, again ${r.againMs.at(-1)!.toFixed(0)} ms`);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  r.pass = { first: median(r.firstMs) < TARGET_FIRST_MS, again: median(r.againMs) < TARGET_AGAIN_MS };
  return r;
}

export function summary(r: StartupBenchResult): string {
  const f0 = (n: number) => n.toFixed(0);
  const row = (label: string, xs: number[], target?: [number, boolean]) =>
    `  ${label.padEnd(44)} median ${f0(median(xs)).padStart(5)} ms  [${xs.map(f0).join(", ")}]` +
    (target ? `   target < ${target[0]} ms   ${target[1] ? "PASS" : "MISS"}` : "") +
    `   ${(median(xs) / median(r.bareMs)).toFixed(1)} × bare`;
  return [
    `Start-up benchmark: spawn → first 200, ${r.bareMs.length} rounds (bare, first, again), node ${r.node}, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`,
    row("bare node:http (npm exec -- node -e)", r.bareMs),
    row("npm start, new DATA_DIR (PGlite creates it)", r.firstMs, [TARGET_FIRST_MS, r.pass.first]),
    row("npm start again, same DATA_DIR", r.againMs, [TARGET_AGAIN_MS, r.pass.again]),
  ].join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await startupBench((s) => process.stderr.write(`${s}\n`));
  process.stdout.write("\n" + summary(r) + "\n");
  process.exit(env.BENCH_STRICT === "1" && !(r.pass.first && r.pass.again) ? 1 : 0);
}
