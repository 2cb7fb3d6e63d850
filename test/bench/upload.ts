// Upload throughput and memory: BENCH_UPLOAD_MB MiB streamed through the
// service's PUT /videos/{id}/content (server/main.ts in a child process, S3
// store) beside the same bytes uploaded straight to the same S3 emulator with
// @aws-sdk/lib-storage (the part size and parts in flight the service uses),
// in the same run, alternated D S D S … (BENCH_UPLOAD_ROUNDS pairs).
//
//   target: service throughput ≥ 0.8 × direct — the median over the rounds of
//           each round's service MiB/s ÷ direct MiB/s
//   target: the server's peak RSS during an upload ≤ 64 MiB above its RSS
//           just before — the largest over the rounds (read by this process
//           from /proc/PID/status: VmHWM after resetting it through
//           /proc/PID/clear_refs where allowed, and VmRSS every 20 ms)
//
// Each run also reports the CPU seconds of the server, of this process (the
// client), and of the emulator when the bench started it, and the load
// average: the machine is shared, and a run where the emulator or the machine
// was the bottleneck shows it there.
//
// Standalone: npx tsx test/bench/upload.ts (exit 1 on a missed target with
// BENCH_STRICT=1). `npm run bench` runs it as its "upload" case.
//
// Environment (all optional):
//   BENCH_UPLOAD_MB       size of the upload in MiB (1024)
//   BENCH_UPLOAD_ROUNDS   D S pairs (3)
//   TEST_S3_ENDPOINT      S3 emulator (else a private moto_server is started)
//   BENCH_DATABASE_URL    admin URL; a scratch database is created and dropped
//                         (default DATABASE_URL, TEST_DATABASE_URL; none: PGlite)
//   UPLOAD_STREAM_PART_SIZE_MB, UPLOAD_STREAM_PARTS_IN_FLIGHT
//                         passed to the server, and used by the direct side
//                         (defaults: the service's)
//   BENCH_NODE            node binary for the server process
//   BENCH_SERVER_LOG      file for the server's stdout (default /dev/null)
//   BENCH_PROFILE         directory: run the server with --cpu-prof there

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { loadConfig } from "../../server/config.js";
import { adminQuery, cpuOf, databaseUrl, freePort, spawnNode, waitReady, type Proc } from "./procs.js";

const MiB = 1024 * 1024;
const THROUGHPUT_TARGET = 0.8;
const RSS_TARGET_MIB = 64;

export interface UploadBenchOptions {
  sizeMiB: number;
  rounds: number;
  s3Endpoint?: string;
  /** UPLOAD_STREAM_PART_SIZE_MB / UPLOAD_STREAM_PARTS_IN_FLIGHT for the server (unset: its defaults); the direct side uses the same. */
  partSizeMiB?: string;
  partsInFlight?: string;
  adminDatabaseUrl?: string;
  node?: string;
  serverLog?: string;
  profileDir?: string;
}

interface Run {
  seconds: number;
  mibPerS: number;
  /** CPU seconds during the run: this process (the client), the emulator (NaN unless the bench started it). */
  clientCpuS: number;
  s3CpuS: number;
  /** 1-minute load average at the end of the run. */
  load: number;
}

export interface UploadBenchResult {
  sizeMiB: number;
  partSizeMiB: number;
  partsInFlight: number;
  /** How the peak was read: VmHWM (reset before each run) and samples, or samples alone. */
  rssMethod: string;
  direct: Run[];
  service: (Run & { rssBeforeMiB: number; rssPeakMiB: number; serverCpuS: number; storageRetries: number })[];
  /** Per round: service MiB/s ÷ direct MiB/s. */
  ratios: number[];
  /** Median of ratios. */
  ratio: number;
  /** Largest peak RSS growth over the service runs. */
  rssGrowthMiB: number;
  /** Service uploads that did not succeed ("round 2: 503 …"); their rounds have no ratio. */
  failures: string[];
  /** The server's storage metrics over the service runs: retries and failed calls by operation. */
  storage: { retries: Record<string, number>; failed: Record<string, number> };
  pass: { throughput: boolean; rss: boolean; failures: boolean };
}

/** The benchmark's bytes: a random MiB repeated, each copy stamped with its index; the same every time it is read. */
function body(sizeMiB: number, block: Buffer): Readable {
  let i = 0;
  return new Readable({
    highWaterMark: MiB,
    read() {
      if (i === sizeMiB) return void this.push(null);
      const chunk = Buffer.from(block);
      chunk.writeUInt32BE(i++, 0);
      this.push(chunk);
    },
  });
}

async function sha256Of(r: Readable): Promise<string> {
  const h = createHash("sha256");
  for await (const c of r) h.update(c as Buffer);
  return h.digest("hex");
}

function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "latin1"));
  return m ? Number(m[1]) : NaN;
}

/** Resets the process's VmHWM to its current RSS; false where that is not allowed. */
function resetHwm(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Samples a process's RSS until stopped; the peak also from VmHWM when it could be reset first. */
function rssSampler(pid: number) {
  const hwmReset = resetHwm(pid);
  let peak = statusKiB(pid, "VmRSS");
  const timer = setInterval(() => (peak = Math.max(peak, statusKiB(pid, "VmRSS"))), 20);
  return {
    stop(): number {
      clearInterval(timer);
      peak = Math.max(peak, statusKiB(pid, "VmRSS"));
      if (hwmReset) peak = Math.max(peak, statusKiB(pid, "VmHWM"));
      return peak / 1024;
    },
  };
}

async function idleRssMiB(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 10; i++) {
    samples.push(statusKiB(pid, "VmRSS") / 1024);
    await new Promise((r) => setTimeout(r, 50));
  }
  return samples.sort((a, b) => a - b)[5]!;
}

async function json(res: Response) {
  const text = await res.text();
  if (!res.ok) throw new Error(`${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** PUT /videos/{id}/content with the benchmark's bytes; resolves with the response body. */
function putContent(baseUrl: string, id: string, sizeMiB: number, block: Buffer): Promise<{ status: number; body: string }> {
  const url = new URL(`${baseUrl}/videos/${id}/content`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "PUT",
        headers: { "content-type": "video/mp4", "content-length": String(sizeMiB * MiB) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (text += d)).on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on("error", reject);
    body(sizeMiB, block).pipe(req);
  });
}

/** The server's storage_retries_total and failed storage_requests_total, by operation. */
async function storageCounters(baseUrl: string) {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const retries: Record<string, number> = {};
  const failed: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const r = /^storage_retries_total\{operation="(\w+)"\} (\d+)/.exec(line);
    if (r) retries[r[1]] = Number(r[2]);
    const f = /^storage_requests_total\{operation="(\w+)",outcome="(\w+)"\} (\d+)/.exec(line);
    if (f && f[2] !== "ok") failed[`${f[1]} ${f[2]}`] = Number(f[3]);
  }
  return { retries, failed };
}

const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

/** Why the upload benchmark cannot run here (no S3 endpoint given and no moto_server to start), or undefined. */
export function uploadSkipReason(s3Endpoint: string | undefined): string | undefined {
  if (s3Endpoint) return undefined;
  const found = (process.env.PATH ?? "").split(path.delimiter).some((dir) => dir && existsSync(path.join(dir, "moto_server")));
  return found ? undefined : "no S3 endpoint: set TEST_S3_ENDPOINT, or install moto_server (pip install 'moto[server]')";
}

async function startMoto(): Promise<{ endpoint: string; pid: number; stop(): void }> {
  const port = await freePort();
  const child = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port)], { stdio: "ignore", detached: true });
  const failed = new Promise<never>((_, reject) => {
    child.once("error", () => reject(new Error("moto_server not found: set TEST_S3_ENDPOINT, or pip install 'moto[server]'")));
    child.once("exit", (code) => reject(new Error(`moto_server exited (${code})`)));
  });
  failed.catch(() => {});
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up = await Promise.race([fetch(endpoint).then((r) => r.ok, () => false), failed]);
    if (up) break;
    if (Date.now() > deadline) throw new Error("moto_server did not answer within 30 s");
    await new Promise((r) => setTimeout(r, 200));
  }
  return { endpoint, pid: child.pid!, stop: () => process.kill(-child.pid!, "SIGTERM") };
}

export async function uploadBench(o: UploadBenchOptions): Promise<UploadBenchResult> {
  process.env.AWS_ACCESS_KEY_ID ??= "test";
  process.env.AWS_SECRET_ACCESS_KEY ??= "test";
  // The part size and parts in flight the server will use, as its own config parser reads them.
  const streamEnv = {
    ...(o.partSizeMiB ? { UPLOAD_STREAM_PART_SIZE_MB: o.partSizeMiB } : {}),
    ...(o.partsInFlight ? { UPLOAD_STREAM_PARTS_IN_FLIGHT: o.partsInFlight } : {}),
  };
  const { partSizeBytes, partsInFlight } = loadConfig({ S3_BUCKET: "vms-bench", ...streamEnv }).storage.s3!.stream;
  const moto = o.s3Endpoint ? undefined : await startMoto();
  const endpoint = o.s3Endpoint ?? moto!.endpoint;
  const bucket = "vms-bench-" + randomBytes(4).toString("hex");
  const s3 = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, requestChecksumCalculation: "WHEN_REQUIRED" });
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "vms-bench-upload-"));
  let dbName: string | undefined;
  let server: Proc | undefined;
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    let scratchUrl: string | undefined;
    if (o.adminDatabaseUrl) {
      dbName = "vms_bench_upload_" + randomBytes(4).toString("hex");
      await adminQuery(`CREATE DATABASE ${dbName}`, o.adminDatabaseUrl);
      scratchUrl = databaseUrl(dbName, o.adminDatabaseUrl);
    }
    const port = await freePort();
    server = spawnNode({
      name: "service",
      node: o.node ?? process.execPath,
      script: "server/main.ts",
      nodeArgs: o.profileDir ? ["--cpu-prof", "--cpu-prof-dir", o.profileDir] : [],
      stdoutFile: o.serverLog,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        PORT: String(port),
        HOST: "127.0.0.1",
        DATA_DIR: dataDir,
        LOG_LEVEL: "warn",
        ...(scratchUrl ? { DATABASE_URL: scratchUrl } : {}),
        S3_BUCKET: bucket,
        S3_ENDPOINT: endpoint,
        S3_FORCE_PATH_STYLE: "true",
        S3_REGION: "us-east-1",
        ...streamEnv,
        AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
        AWS_REGION: "us-east-1",
      },
    });
    const baseUrl = `http://127.0.0.1:${port}`;
    await waitReady(server, `${baseUrl}/health/ready`);
    const pid = server.child.pid!;

    const block = randomBytes(MiB);
    const expected = await sha256Of(body(o.sizeMiB, block));
    const newVideo = async () => (await json(await fetch(`${baseUrl}/videos`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"title":"bench"}' }))).id as string;

    const direct = (key: string, sizeMiB: number) =>
      new Upload({ client: s3, params: { Bucket: bucket, Key: key, Body: body(sizeMiB, block), ContentType: "video/mp4" }, partSize: partSizeBytes, queueSize: partsInFlight }).done();
    const s3Cpu = () => (moto ? cpuOf(moto.pid) / 1000 : NaN);
    const clientCpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    const measured = async <T>(fn: () => Promise<T>) => {
      const cpu0 = { client: clientCpu(), s3: s3Cpu() };
      const started = performance.now();
      const value = await fn();
      const seconds = (performance.now() - started) / 1000;
      const run: Run = {
        seconds,
        mibPerS: o.sizeMiB / seconds,
        clientCpuS: clientCpu() - cpu0.client,
        s3CpuS: s3Cpu() - cpu0.s3,
        load: os.loadavg()[0],
      };
      return { value, run };
    };

    // Warm-up: the code paths and pools of both sides.
    await direct("warm-up", 32);
    const warm = await putContent(baseUrl, await newVideo(), 32, block);
    if (warm.status !== 200) throw new Error(`warm-up upload: ${warm.status} ${warm.body.slice(0, 300)}`);

    const result: UploadBenchResult = {
      sizeMiB: o.sizeMiB,
      partSizeMiB: partSizeBytes / MiB,
      partsInFlight,
      rssMethod: resetHwm(pid) ? "VmHWM (reset before each run) + VmRSS every 20 ms" : "VmRSS every 20 ms (VmHWM cannot be reset here)",
      direct: [],
      service: [],
      ratios: [],
      ratio: 0,
      rssGrowthMiB: 0,
      failures: [],
      storage: { retries: {}, failed: {} },
      pass: { throughput: false, rss: false, failures: false },
    };
    const storageBefore = await storageCounters(baseUrl);
    for (let round = 0; round < o.rounds; round++) {
      {
        const key = `direct-${round}`;
        const { run } = await measured(() => direct(key, o.sizeMiB));
        result.direct.push(run);
        report(`direct lib-storage`, run);
        await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      }
      {
        const id = await newVideo();
        const rssBeforeMiB = await idleRssMiB(pid);
        const cpuBefore = server.cpuMs();
        const retriesBefore = sum((await storageCounters(baseUrl)).retries);
        const sampler = rssSampler(pid);
        const { value: res, run } = await measured(() => putContent(baseUrl, id, o.sizeMiB, block));
        const rssPeakMiB = sampler.stop();
        const serverCpuS = (server.cpuMs() - cpuBefore) / 1000;
        const storageRetries = sum((await storageCounters(baseUrl)).retries) - retriesBefore;
        const video = res.status === 200 ? JSON.parse(res.body) : undefined;
        if (!video) {
          result.failures.push(`round ${round + 1}: ${res.status} ${res.body.slice(0, 300)}`);
          report(`PUT /videos/{id}/content`, run, `FAILED ${res.status} ${res.body.slice(0, 200)}, storage retries ${storageRetries}`);
          continue;
        }
        if (video.source?.sizeBytes !== String(o.sizeMiB * MiB) || video.source?.checksumSha256 !== expected) {
          throw new Error(`the service stored something else: ${JSON.stringify(video.source)}`);
        }
        result.service.push({ ...run, rssBeforeMiB, rssPeakMiB, serverCpuS, storageRetries });
        report(
          `PUT /videos/{id}/content`,
          run,
          `server CPU ${serverCpuS.toFixed(1)} s, RSS ${rssBeforeMiB.toFixed(0)} → peak ${rssPeakMiB.toFixed(0)} MiB (+${(rssPeakMiB - rssBeforeMiB).toFixed(1)}), storage retries ${storageRetries}`,
        );
        await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: video.source.objectKey }));
      }
      result.ratios.push(result.service.at(-1)!.mibPerS / result.direct[round].mibPerS);
    }
    result.ratio = result.ratios.length ? median(result.ratios) : 0;
    result.rssGrowthMiB = Math.max(0, ...result.service.map((s) => s.rssPeakMiB - s.rssBeforeMiB));
    const storageAfter = await storageCounters(baseUrl);
    const delta = (after: Record<string, number>, before: Record<string, number>) =>
      Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => v !== 0));
    result.storage = { retries: delta(storageAfter.retries, storageBefore.retries), failed: delta(storageAfter.failed, storageBefore.failed) };
    result.pass = { throughput: result.ratio >= THROUGHPUT_TARGET, rss: result.rssGrowthMiB <= RSS_TARGET_MIB, failures: result.failures.length === 0 };
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: "warm-up" }));
    return result;
  } finally {
    await server?.stop();
    await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => {});
    s3.destroy();
    moto?.stop();
    if (dbName && o.adminDatabaseUrl) {
      await adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`, o.adminDatabaseUrl);
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function report(what: string, r: Run, extra = "") {
  const s3 = Number.isNaN(r.s3CpuS) ? "" : `, S3 emulator CPU ${r.s3CpuS.toFixed(1)} s`;
  process.stdout.write(
    `upload  ${what.padEnd(26)} ${(r.seconds).toFixed(2).padStart(6)} s = ${r.mibPerS.toFixed(1).padStart(5)} MiB/s  (client CPU ${r.clientCpuS.toFixed(1)} s${s3}, load ${r.load.toFixed(1)}) ${extra}\n`,
  );
}

export function summary(r: UploadBenchResult): string {
  const mark = (ok: boolean) => (ok ? "PASS" : "MISS");
  const f1 = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(", ");
  return [
    `upload  ${r.sizeMiB} MiB, parts of ${r.partSizeMiB} MiB, ${r.partsInFlight} in flight, ${r.ratios.length} rounds D S D S …`,
    `upload  direct MiB/s [${f1(r.direct.map((x) => x.mibPerS))}]  service MiB/s [${f1(r.service.map((x) => x.mibPerS))}]`,
    `upload  throughput service/direct: median ${r.ratio.toFixed(2)} of [${r.ratios.map((x) => x.toFixed(2)).join(", ")}] (target ≥ ${THROUGHPUT_TARGET}) ${mark(r.pass.throughput)}`,
    `upload  failed service uploads: ${r.failures.length} of ${r.direct.length}${r.failures.map((f) => `\n          ${f}`).join("")} ${mark(r.pass.failures)}`,
    `upload  server storage retries ${JSON.stringify(r.storage.retries)}, failed storage calls ${JSON.stringify(r.storage.failed)}`,
    `upload  server peak RSS growth: max ${r.rssGrowthMiB.toFixed(1)} MiB of [${f1(r.service.map((s) => s.rssPeakMiB - s.rssBeforeMiB))}] (target ≤ ${RSS_TARGET_MIB} MiB) ${mark(r.pass.rss)}; ${r.rssMethod}`,
  ].join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const r = await uploadBench({
    sizeMiB: Number(env.BENCH_UPLOAD_MB || 1024),
    rounds: Number(env.BENCH_UPLOAD_ROUNDS || 3),
    s3Endpoint: env.TEST_S3_ENDPOINT || undefined,
    partSizeMiB: env.UPLOAD_STREAM_PART_SIZE_MB || undefined,
    partsInFlight: env.UPLOAD_STREAM_PARTS_IN_FLIGHT || undefined,
    adminDatabaseUrl: env.BENCH_DATABASE_URL || env.DATABASE_URL || env.TEST_DATABASE_URL || undefined,
    node: env.BENCH_NODE || undefined,
    serverLog: env.BENCH_SERVER_LOG || undefined,
    profileDir: env.BENCH_PROFILE || undefined,
  });
  process.stdout.write(summary(r) + "\n" + JSON.stringify(r) + "\n");
  process.exit(env.BENCH_STRICT === "1" && !(r.pass.throughput && r.pass.rss && r.pass.failures) ? 1 : 0);
}

