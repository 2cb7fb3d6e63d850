// Child processes for the benchmark: the subject (server/main.ts) and the bare
// baseline (baseline.ts), each on the runtime chosen by BENCH_NODE.

import { spawn, type ChildProcess } from "node:child_process";
import { openSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The admin URL the benchmarks create and drop their scratch databases with. */
export const benchAdminUrl =
  process.env.BENCH_DATABASE_URL || process.env.DATABASE_URL || process.env.TEST_DATABASE_URL || "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/** One statement on its own admin connection (CREATE/DROP DATABASE). */
export async function adminQuery(sql: string, adminUrl = benchAdminUrl): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** The URL of database `name` on the server `adminUrl` points at. */
export function databaseUrl(name: string, adminUrl = benchAdminUrl): string {
  const u = new URL(adminUrl);
  u.pathname = "/" + name;
  return u.toString();
}

export interface Proc {
  name: string;
  child: ChildProcess;
  /** CPU time (user + system) in ms consumed so far; NaN where /proc is unavailable. */
  cpuMs(): number;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const CLOCK_TICK_MS = 10; // USER_HZ is 100 on Linux

/** CPU time (user + system) in ms a process has consumed so far; NaN when it cannot be read. */
export function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 (utime, stime), counted from 1; fields[0] is field 3.
    return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_MS;
  } catch {
    return NaN;
  }
}

export interface SpawnOptions {
  name: string;
  node: string;
  nodeArgs?: string[];
  script: string;
  env: Record<string, string | undefined>;
  /** Working directory (the checkout whose code runs); default this repository. */
  cwd?: string;
  /** File for the child's stdout (the subject logs one line per call); default /dev/null. */
  stdoutFile?: string;
}

const live = new Set<Proc>();

export function spawnNode(o: SpawnOptions): Proc {
  const stdout = openSync(o.stdoutFile ?? "/dev/null", "a");
  const child = spawn(o.node, [...(o.nodeArgs ?? []), "--import", "tsx", o.script], {
    cwd: o.cwd ?? repoRoot,
    env: o.env as NodeJS.ProcessEnv,
    stdio: ["ignore", stdout, "pipe"],
  });
  let stderr = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => {
    stderr += s;
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", (code, signal) => {
    live.delete(proc);
    if (!stopping) process.stderr.write(`bench: ${o.name} exited unexpectedly (${signal ?? `code ${code}`})\n${stderr}\n`);
  });
  let stopping = false;
  const proc: Proc = {
    name: o.name,
    child,
    cpuMs: () => cpuOf(child.pid),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      stopping = true;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
  live.add(proc);
  return proc;
}

export async function stopAll() {
  await Promise.all([...live].map((p) => p.stop()));
}

/** Polls url until it answers 200 or the child dies or timeoutMs passes. */
export async function waitReady(proc: Proc, url: string, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`${proc.name} exited before it was ready`);
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${proc.name} not ready after ${timeoutMs} ms (${url})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
