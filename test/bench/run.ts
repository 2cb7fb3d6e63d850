// npm run bench — throughput of the service beside a bare node:http/node:http2
// + pg baseline measured in the same run, on the same database and row.
//
//   GetVideo     REST (HTTP/1.1), Connect JSON (HTTP/1.1), gRPC (h2c)
//                target: subject ≥ 0.8 × baseline req/s on each protocol
//   ListVideos   page 200 vs page 1 (REST, page_size 50, 12,500 rows)
//                target: deep page costs ≤ 1.2 × page 1
//   CreateVideo  REST vs one bare INSERT … RETURNING (information)
//   GetVideo     REST on embedded PGlite (information)
//   tracing      GetVideo REST with tracing exporting OTLP/HTTP protobuf to a
//                local receiver (every span sampled, every metric on) vs the
//                same service with tracing off, same database and run;
//                target: traced ≥ 0.9 × untraced req/s
//   upload       1 GiB streamed through PUT /videos/{id}/content vs lib-storage
//                straight to the same S3 emulator (upload.ts; BENCH_UPLOAD_MB,
//                BENCH_UPLOAD_ROUNDS); target: ≥ 0.8 × direct throughput,
//                server peak RSS growth ≤ 64 MiB. Uses TEST_S3_ENDPOINT, else
//                starts a private moto_server; skipped, saying why, when
//                there is neither
//   relay        outbox relay vs raw @google-cloud/pubsub publishing, and
//                commit-to-publish lag (relay.ts; its own BENCH_RELAY_*
//                variables; needs gcloud's Pub/Sub emulator or
//                BENCH_PUBSUB_EMULATOR_HOST). Runs after the table.
//   startup      `npm start` ready on the embedded defaults, first (new
//                DATA_DIR) and again, vs a bare node:http server's start in
//                the same rounds (startup.ts); targets: < 3 s first, < 1.5 s
//                again. Runs last.
//
// The servers run in child processes on BENCH_NODE (default: this node); the
// load generator (load.ts) runs here, closed loop at fixed concurrency, warm-up
// then a fixed window, baseline and subject alternated (B S B S …).
//
// Environment (all optional):
//   BENCH_DATABASE_URL   admin URL; a scratch database is created and dropped
//                        (default DATABASE_URL, TEST_DATABASE_URL, then
//                        postgres://postgres:postgres@127.0.0.1:5432/postgres)
//   BENCH_NODE           node binary for the server processes
//   BENCH_CASES          comma list of rest,connect,grpc,list,create,pglite,tracing,upload,relay,startup
//   BENCH_CONCURRENCY    requests in flight (32)
//   BENCH_DURATION_MS    measured window per run (3000); BENCH_WARM_MS (1000)
//   BENCH_ROUNDS         A B pairs per case (3)
//   BENCH_H2_SESSIONS    HTTP/2 connections for gRPC (2)
//   BENCH_LOG_LEVEL      LOG_LEVEL of the subject (unset: the service default)
//   BENCH_PROFILE        directory: run the subject with --cpu-prof there
//   BENCH_SERVER_LOG     file for the subject's stdout (default /dev/null)
//   BENCH_STRICT=1       exit 1 when a target is missed
//   BENCH_REF_DIR        another checkout (e.g. `git archive` of an older commit,
//                        with node_modules linked): its server runs as a third
//                        side in the GetVideo cases, interleaved A B R, so a
//                        change can be judged under the same noise

import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { GetVideoRequestSchema, VideoService } from "../../gen/video/v1/video_service_pb.js";
import { openPostgres } from "../../server/db/database.js";
import { migrate } from "../../server/db/migrate.js";
import { cleanup as relayCleanup, relayBench, summary as relaySummary } from "./relay.js";
import { grpcFrame, h1Bytes, h2HeaderBlock, pool, runH1, runH2, type Completion, type RunOptions, type RunResult } from "./load.js";
import { adminQuery, benchAdminUrl, databaseUrl, freePort, repoRoot, spawnNode, stopAll, waitReady, type Proc } from "./procs.js";
import { otlpSink } from "./otlp-sink.js";
import { startupBench, summary as startupSummary } from "./startup.js";
import { summary as uploadSummary, uploadBench, uploadSkipReason, type UploadBenchResult } from "./upload.js";

const env = process.env;
const num = (name: string, fallback: number) => (env[name] ? Number(env[name]) : fallback);

const serverNode = env.BENCH_NODE || process.execPath;
const cases = new Set((env.BENCH_CASES || "rest,connect,grpc,list,create,pglite,tracing,upload,relay,startup").split(",").map((s) => s.trim()));
const servingCases = [...cases].filter((c) => c !== "relay" && c !== "startup");
const concurrency = num("BENCH_CONCURRENCY", 32);
const durationMs = num("BENCH_DURATION_MS", 3000);
const warmMs = num("BENCH_WARM_MS", 1000);
const rounds = num("BENCH_ROUNDS", 3);
const h2Sessions = num("BENCH_H2_SESSIONS", 2);
const ROWS = 12_500;
const PAGE_SIZE = 50;
const DEEP_PAGE = 200;

const started = Date.now();
const log = (s: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${s}\n`);

// ------------------------------------------------------------------ database ---

const dbName = `vms_bench_${randomBytes(4).toString("hex")}`;
const benchUrl = databaseUrl(dbName);


async function prepareDatabase(): Promise<string[]> {
  await adminQuery(`CREATE DATABASE ${dbName}`);
  const handle = openPostgres({ url: benchUrl, poolMax: 2 });
  try {
    await migrate(handle, { dir: path.join(repoRoot, "migrations") });
  } finally {
    await handle.close();
  }
  const c = new pg.Client({ connectionString: benchUrl });
  await c.connect();
  const ids: string[] = [];
  try {
    const base = Date.now() - ROWS * 1000;
    const visibilities = ["private", "unlisted", "public"];
    for (let start = 0; start < ROWS; start += 2500) {
      const cols: unknown[][] = [[], [], [], [], [], [], []];
      for (let i = start; i < Math.min(ROWS, start + 2500); i++) {
        const id = uuidv7();
        ids.push(id);
        cols[0].push(id);
        cols[1].push(`Bench video ${i}: a walk along the harbour at dusk`);
        cols[2].push("Seeded by test/bench for the throughput benchmark. ".repeat(2).trim());
        cols[3].push(`{bench,sample,t${i % 17}}`);
        cols[4].push(JSON.stringify({ team: "bench", batch: String(i % 7) }));
        cols[5].push(visibilities[i % 3]);
        cols[6].push(new Date(base + i * 1000).toISOString());
      }
      await c.query(
        `insert into videos (id, title, description, tags, labels, visibility, state, owner_id, etag, create_time, update_time)
         select id, title, description, tags::text[], labels::jsonb, visibility, 'ready', 'bench-owner', md5(id::text), t, t
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
           as s(id, title, description, tags, labels, visibility, t)`,
        cols,
      );
    }
    await c.query("analyze videos");
  } finally {
    await c.end();
  }
  return ids;
}

// ------------------------------------------------------------------- servers ---

interface Servers {
  baseline: Proc;
  subject: Proc;
  b1: number; // baseline HTTP/1.1
  b2: number; // baseline HTTP/2
  s: number; // subject, one port for everything
  ref?: Proc; // BENCH_REF_DIR's subject
  r: number;
}

function subjectEnv(port: number, extra: Record<string, string | undefined>) {
  const e: Record<string, string | undefined> = { ...env, PORT: String(port), HOST: "127.0.0.1", DATABASE_URL: undefined, ...extra };
  delete e.NODE_OPTIONS;
  if (env.BENCH_LOG_LEVEL) e.LOG_LEVEL = env.BENCH_LOG_LEVEL;
  return e;
}

function subjectArgs(tag: string): string[] {
  // One directory per subject; the tsx loader thread writes a profile of its own there too.
  return env.BENCH_PROFILE ? ["--cpu-prof", "--cpu-prof-dir", path.join(env.BENCH_PROFILE, `subject-${tag}`)] : [];
}

async function startServers(probeId: string): Promise<Servers> {
  const [b1, b2, s] = [await freePort(), await freePort(), await freePort()];
  const baseline = spawnNode({
    name: "baseline",
    node: serverNode,
    script: "test/bench/baseline.ts",
    env: { ...env, NODE_OPTIONS: undefined, DATABASE_URL: benchUrl, H1_PORT: String(b1), H2_PORT: String(b2) },
  });
  const subject = spawnNode({
    name: "subject",
    node: serverNode,
    nodeArgs: subjectArgs("pg"),
    script: "test/bench/serve.ts",
    env: subjectEnv(s, { DATABASE_URL: benchUrl }),
    stdoutFile: env.BENCH_SERVER_LOG,
  });
  const r = await freePort();
  const ref = env.BENCH_REF_DIR
    ? spawnNode({
        name: "reference",
        node: serverNode,
        script: "test/bench/serve.ts",
        cwd: env.BENCH_REF_DIR,
        // The schema is this checkout's; an older checkout would refuse migrations it does not know.
        env: subjectEnv(r, { DATABASE_URL: benchUrl, MIGRATE_ON_START: "false" }),
      })
    : undefined;
  await Promise.all([
    waitReady(baseline, `http://127.0.0.1:${b1}/videos/${probeId}`),
    waitReady(subject, `http://127.0.0.1:${s}/health/ready`),
    ref && waitReady(ref, `http://127.0.0.1:${r}/health/ready`),
  ]);
  return { baseline, subject, b1, b2, s, ref, r };
}

// ---------------------------------------------------------------- validation ---

async function expectVideo(what: string, res: Response, id: string) {
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${what}: HTTP ${res.status} ${text.slice(0, 200)}`);
  const v = JSON.parse(text) as { id?: string };
  if (v.id !== id) throw new Error(`${what}: unexpected body ${text.slice(0, 200)}`);
}

async function validate(sv: Servers, id: string) {
  for (const [who, port] of [["baseline", sv.b1], ["subject", sv.s]] as const) {
    await expectVideo(`${who} REST`, await fetch(`http://127.0.0.1:${port}/videos/${id}`), id);
    await expectVideo(
      `${who} Connect`,
      await fetch(`http://127.0.0.1:${port}/video.v1.VideoService/GetVideo`, {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1" },
        body: JSON.stringify({ id }),
      }),
      id,
    );
  }
  for (const [who, port] of [["baseline", sv.b2], ["subject", sv.s]] as const) {
    const client = createClient(VideoService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    const v = await client.getVideo({ id });
    if (v.id !== id) throw new Error(`${who} gRPC: got video ${v.id}`);
  }
}

// --------------------------------------------------------------------- cases ---

interface Side {
  label: string;
  proc: Proc;
  run: (o: RunOptions) => Promise<RunResult>;
}

interface Measured {
  rps: number;
  perRun: number[];
  p50: number;
  p99: number;
  errors: number;
  firstError?: string;
  cpuUsPerReq: number;
}

interface Row {
  name: string;
  a: Side & { m: Measured };
  b: Side & { m: Measured };
  /** "ratio" (b/a throughput, higher is better) or "cost" (a/b throughput: b costs that many times a). */
  kind: "ratio" | "cost" | "info";
  value: number;
  target?: { op: ">=" | "<="; value: number };
}

const status200 = (c: Completion) => c.status === 200;
const grpcOk = (c: Completion) => c.status === 200 && c.bodyBytes > 5;

async function measureOnce(side: Side, ok: (c: Completion) => boolean): Promise<{ r: RunResult; cpuMs: number }> {
  let cpu0 = 0;
  let cpuMs = NaN;
  const r = await side.run({
    concurrency,
    warmMs,
    durationMs,
    ok,
    // CPU of the server process over the measured window only.
    onWindowStart: () => (cpu0 = side.proc.cpuMs()),
    onWindowEnd: () => (cpuMs = side.proc.cpuMs() - cpu0),
  });
  return { r, cpuMs };
}

function summarise(runs: { r: RunResult; cpuMs: number }[]): Measured {
  const p = pool(runs.map((x) => x.r));
  const requests = runs.reduce((a, x) => a + x.r.requests, 0);
  const cpu = runs.reduce((a, x) => a + x.cpuMs, 0);
  return { ...p, cpuUsPerReq: (cpu * 1000) / requests };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Median over rounds of B req/s ÷ A req/s, each round's A and B run back to back. */
const ratioOf = (m: { a: { m: Measured }; b: { m: Measured } }) => median(m.b.m.perRun.map((b, i) => b / m.a.m.perRun[i]));

/** a b a b …, pooled per side. */
async function alternate(name: string, a: Side, b: Side, ok: (c: Completion) => boolean, ref?: Side) {
  const sides = ref ? [a, b, ref] : [a, b];
  const runs = sides.map(() => [] as { r: RunResult; cpuMs: number }[]);
  for (let i = 0; i < rounds; i++) {
    for (let k = 0; k < sides.length; k++) {
      const x = await measureOnce(sides[k], ok);
      runs[k].push(x);
      log(`${name} · ${sides[k].label}: ${(x.r.requests / x.r.seconds).toFixed(0)} req/s${x.r.errors ? `, ${x.r.errors} errors (${x.r.firstError})` : ""}`);
    }
  }
  const m = { a: { ...a, m: summarise(runs[0]) }, b: { ...b, m: summarise(runs[1]) } };
  if (ref) refRows.push({ name: `${name} [reference]`, a: m.a, b: { ...ref, m: summarise(runs[2]) }, kind: "info", value: 0 });
  return m;
}

/** Rows for BENCH_REF_DIR's server, printed after the table. */
const refRows: Row[] = [];

// ---------------------------------------------------------------------- main ---

async function main() {
  log(`servers on ${serverNode} (${await nodeVersion(serverNode)}), load generator on ${process.version}; ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  log(`creating ${dbName} with ${ROWS} videos`);
  const ids = await prepareDatabase();
  const id = ids[Math.floor(ids.length / 2)];
  const sv = await startServers(id);
  log(`baseline :${sv.b1} (h1) :${sv.b2} (h2), subject :${sv.s}`);
  await validate(sv, id);

  const rows: Row[] = [];
  const restGet = (port: number) => h1Bytes(port, { method: "GET", path: `/videos/${id}` });
  const connectGet = (port: number) =>
    h1Bytes(port, {
      method: "POST",
      path: "/video.v1.VideoService/GetVideo",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: JSON.stringify({ id }),
    });
  const grpcBody = grpcFrame(toBinary(GetVideoRequestSchema, create(GetVideoRequestSchema, { id })));
  const grpcHeaders = (port: number) =>
    h2HeaderBlock("POST", "/video.v1.VideoService/GetVideo", `127.0.0.1:${port}`, { "content-type": "application/grpc", te: "trailers" });

  // Both servers JIT-compile their hot paths before anything is measured.
  log("warming up both servers on every protocol");
  const warm: RunOptions = { concurrency, warmMs: 0, durationMs: warmMs, ok: () => true };
  for (const port of sv.ref ? [sv.b1, sv.s, sv.r] : [sv.b1, sv.s]) {
    const R = restGet(port), C = connectGet(port);
    await runH1(port, () => R, warm);
    await runH1(port, () => C, warm);
  }
  for (const port of sv.ref ? [sv.b2, sv.s, sv.r] : [sv.b2, sv.s]) {
    const H = grpcHeaders(port);
    await runH2(port, H, grpcBody, h2Sessions, warm);
  }

  if (cases.has("rest")) {
    const B = restGet(sv.b1), S = restGet(sv.s), R = restGet(sv.r);
    const m = await alternate(
      "GetVideo REST",
      { label: "bare node:http + pg", proc: sv.baseline, run: (o) => runH1(sv.b1, () => B, o) },
      { label: "service REST", proc: sv.subject, run: (o) => runH1(sv.s, () => S, o) },
      status200,
      sv.ref && { label: "reference REST", proc: sv.ref, run: (o) => runH1(sv.r, () => R, o) },
    );
    rows.push({ name: "GetVideo REST (HTTP/1.1 JSON)", ...m, kind: "ratio", value: ratioOf(m), target: { op: ">=", value: 0.8 } });
  }
  if (cases.has("connect")) {
    const B = connectGet(sv.b1), S = connectGet(sv.s), R = connectGet(sv.r);
    const m = await alternate(
      "GetVideo Connect",
      { label: "bare node:http + pg", proc: sv.baseline, run: (o) => runH1(sv.b1, () => B, o) },
      { label: "service Connect", proc: sv.subject, run: (o) => runH1(sv.s, () => S, o) },
      status200,
      sv.ref && { label: "reference Connect", proc: sv.ref, run: (o) => runH1(sv.r, () => R, o) },
    );
    rows.push({ name: "GetVideo Connect (HTTP/1.1 JSON)", ...m, kind: "ratio", value: ratioOf(m), target: { op: ">=", value: 0.8 } });
  }
  if (cases.has("grpc")) {
    const body = grpcBody;
    const HB = grpcHeaders(sv.b2), HS = grpcHeaders(sv.s), HR = grpcHeaders(sv.r);
    const m = await alternate(
      "GetVideo gRPC",
      { label: "bare node:http2 + pg", proc: sv.baseline, run: (o) => runH2(sv.b2, HB, body, h2Sessions, o) },
      { label: "service gRPC", proc: sv.subject, run: (o) => runH2(sv.s, HS, body, h2Sessions, o) },
      grpcOk,
      sv.ref && { label: "reference gRPC", proc: sv.ref, run: (o) => runH2(sv.r, HR, body, h2Sessions, o) },
    );
    rows.push({ name: "GetVideo gRPC (h2c protobuf)", ...m, kind: "ratio", value: ratioOf(m), target: { op: ">=", value: 0.8 } });
  }
  if (cases.has("list")) {
    const token = await walkToPage(sv.s, DEEP_PAGE);
    const P1 = h1Bytes(sv.s, { method: "GET", path: `/videos?page_size=${PAGE_SIZE}` });
    const PN = h1Bytes(sv.s, { method: "GET", path: `/videos?page_size=${PAGE_SIZE}&page_token=${token}` });
    const m = await alternate(
      "ListVideos",
      { label: "service page 1", proc: sv.subject, run: (o) => runH1(sv.s, () => P1, o) },
      { label: `service page ${DEEP_PAGE}`, proc: sv.subject, run: (o) => runH1(sv.s, () => PN, o) },
      status200,
    );
    rows.push({ name: `ListVideos p${DEEP_PAGE} vs p1 (REST, ${PAGE_SIZE}/page)`, ...m, kind: "cost", value: 1 / ratioOf(m), target: { op: "<=", value: 1.2 } });
  }
  if (cases.has("create")) {
    const body = JSON.stringify({ title: "Bench upload", description: "created by the benchmark", tags: ["bench", "new"], labels: { team: "bench" } });
    const req = (port: number) => h1Bytes(port, { method: "POST", path: "/videos", headers: { "content-type": "application/json" }, body });
    const B = req(sv.b1), S = req(sv.s);
    const m = await alternate(
      "CreateVideo",
      { label: "bare INSERT", proc: sv.baseline, run: (o) => runH1(sv.b1, () => B, o) },
      { label: "service REST", proc: sv.subject, run: (o) => runH1(sv.s, () => S, o) },
      status200,
    );
    rows.push({ name: "CreateVideo REST (HTTP/1.1 JSON)", ...m, kind: "info", value: ratioOf(m) });
  }
  if (cases.has("pglite")) rows.push(await pgliteCase(sv, restGet));
  if (cases.has("tracing")) rows.push(await tracingCase(sv, restGet));

  await stopAll();
  const upload = cases.has("upload") ? await uploadCase() : undefined;
  print(rows);
  if (upload) process.stdout.write(uploadSummary(upload) + "\n\n");
  return { rows, upload };
}

/** The upload benchmark (upload.ts), after the serving-path servers have stopped. */
async function uploadCase(): Promise<UploadBenchResult | undefined> {
  const s3Endpoint = env.TEST_S3_ENDPOINT || undefined;
  const skip = uploadSkipReason(s3Endpoint);
  if (skip) {
    log(`upload case skipped: ${skip}`);
    process.stdout.write(`\nupload  SKIPPED: ${skip}\n`);
    return undefined;
  }
  const sizeMiB = num("BENCH_UPLOAD_MB", 1024);
  log(`upload: ${sizeMiB} MiB through PUT /videos/{id}/content vs lib-storage direct, ${s3Endpoint ? `S3 at ${s3Endpoint}` : "private moto_server"}`);
  return uploadBench({
    sizeMiB,
    rounds: num("BENCH_UPLOAD_ROUNDS", 3),
    s3Endpoint,
    adminDatabaseUrl: benchAdminUrl,
    partSizeMiB: env.UPLOAD_STREAM_PART_SIZE_MB || undefined,
    partsInFlight: env.UPLOAD_STREAM_PARTS_IN_FLIGHT || undefined,
    node: serverNode,
    serverLog: env.BENCH_SERVER_LOG,
    profileDir: env.BENCH_PROFILE ? path.join(env.BENCH_PROFILE, "upload") : undefined,
  });
}

async function walkToPage(port: number, page: number): Promise<string> {
  let token = "";
  for (let p = 1; p < page; p++) {
    const r = await fetch(`http://127.0.0.1:${port}/videos?page_size=${PAGE_SIZE}${token ? `&page_token=${token}` : ""}`);
    const body = (await r.json()) as { videos?: unknown[]; nextPageToken?: string };
    if (r.status !== 200 || !body.nextPageToken) throw new Error(`ListVideos walk stopped at page ${p}: HTTP ${r.status}`);
    token = body.nextPageToken;
  }
  const r = await fetch(`http://127.0.0.1:${port}/videos?page_size=${PAGE_SIZE}&page_token=${token}`);
  const body = (await r.json()) as { videos?: unknown[] };
  if (body.videos?.length !== PAGE_SIZE) throw new Error(`page ${page} has ${body.videos?.length} videos`);
  return token;
}

async function pgliteCase(sv: Servers, restGet: (port: number) => Buffer): Promise<Row> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vms-bench-pglite-"));
  try {
    const port = await freePort();
    const proc = spawnNode({ name: "subject (PGlite)", node: serverNode, nodeArgs: subjectArgs("pglite"), script: "test/bench/serve.ts", env: subjectEnv(port, { DATA_DIR: dir }) });
    await waitReady(proc, `http://127.0.0.1:${port}/health/ready`);
    const created = await fetch(`http://127.0.0.1:${port}/videos`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "Bench video on PGlite", description: "Seeded by test/bench", tags: ["bench", "sample"], labels: { team: "bench" } }),
    });
    const { id } = (await created.json()) as { id: string };
    const S = h1Bytes(port, { method: "GET", path: `/videos/${id}` });
    const B = restGet(sv.b1);
    const m = await alternate(
      "GetVideo REST on PGlite",
      { label: "bare node:http + pg", proc: sv.baseline, run: (o) => runH1(sv.b1, () => B, o) },
      { label: "service on PGlite", proc, run: (o) => runH1(port, () => S, o) },
      status200,
    );
    await proc.stop();
    return { name: "GetVideo REST, service on PGlite", ...m, kind: "info", value: ratioOf(m) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The subject with tracing on (a second process on the same database) against the subject with it off. */
async function tracingCase(sv: Servers, restGet: (port: number) => Buffer): Promise<Row> {
  const sink = await otlpSink("GET /videos/{id}");
  const port = await freePort();
  // Batches big and frequent enough that no span is dropped at these rates: every call is exported.
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_BSP_MAX_QUEUE_SIZE: "65536", OTEL_BSP_SCHEDULE_DELAY: "1000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2048" };
  const proc = spawnNode({ name: "subject (traced)", node: serverNode, nodeArgs: subjectArgs("traced"), script: "test/bench/serve.ts", env: subjectEnv(port, { DATABASE_URL: benchUrl, ...otel }) });
  try {
    await waitReady(proc, `http://127.0.0.1:${port}/health/ready`);
    const T = restGet(port), S = restGet(sv.s);
    await runH1(port, () => T, { concurrency, warmMs: 0, durationMs: warmMs, ok: () => true });
    const m = await alternate(
      "GetVideo REST traced",
      { label: "service, tracing off", proc: sv.subject, run: (o) => runH1(sv.s, () => S, o) },
      { label: "service, tracing on", proc, run: (o) => runH1(port, () => T, o) },
      status200,
    );
    await new Promise((r) => setTimeout(r, 1500));
    const st = sink.stats();
    const served = m.b.m.perRun.reduce((a, x) => a + x, 0) * (durationMs / 1000);
    log(`tracing: ${st.spansNamed} server spans received in ${st.requests} OTLP exports (${(st.bytes / 1048576).toFixed(1)} MiB) for ≈${served.toFixed(0)} measured calls plus warm-up`);
    if (st.spansNamed === 0) throw new Error("tracing case: the traced subject exported no span");
    return { name: "GetVideo REST, tracing on vs off", ...m, kind: "ratio", value: ratioOf(m), target: { op: ">=", value: 0.9 } };
  } finally {
    await proc.stop();
    await sink.close();
  }
}

async function nodeVersion(bin: string): Promise<string> {
  const { execFileSync } = await import("node:child_process");
  return execFileSync(bin, ["--version"], { encoding: "utf8" }).trim();
}

// --------------------------------------------------------------------- table ---

function print(rows: Row[]) {
  const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : "-");
  const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "-");
  const head = ["case", "A", "A req/s", "A p50/p99 ms", "A cpu µs/req", "B", "B req/s", "B p50/p99 ms", "B cpu µs/req", "B/A", "target", "result"];
  const lines: string[][] = [head];
  for (const r of rows) {
    const measure = r.kind === "cost" ? "cost ×" : r.kind === "info" ? "ratio" : "ratio";
    const result = r.target ? (r.target.op === ">=" ? r.value >= r.target.value : r.value <= r.target.value) ? "PASS" : "MISS" : "info";
    lines.push([
      r.name,
      r.a.label,
      f0(r.a.m.rps),
      `${f2(r.a.m.p50)}/${f2(r.a.m.p99)}`,
      f0(r.a.m.cpuUsPerReq),
      r.b.label,
      f0(r.b.m.rps),
      `${f2(r.b.m.p50)}/${f2(r.b.m.p99)}`,
      f0(r.b.m.cpuUsPerReq),
      `${measure} ${f2(r.value)}`,
      r.target ? `${r.target.op} ${r.target.value}` : "-",
      result,
    ]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const out = lines.map((l) => l.map((c, i) => (i === 0 || i === 1 || i === 5 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "));
  out.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  const errs = rows.filter((r) => r.a.m.errors || r.b.m.errors).map((r) => `  ${r.name}: errors A=${r.a.m.errors} B=${r.b.m.errors} (${r.a.m.firstError ?? r.b.m.firstError})`);
  process.stdout.write(
    [
      "",
      `Benchmark: servers on node ${serverNodeVersion}, load generator on node ${process.version}, concurrency ${concurrency}, ` +
        `${rounds}×${durationMs / 1000}s per side after ${warmMs / 1000}s warm-up, alternated A B A B`,
      "req/s and latency pooled over rounds; ratio = median over rounds of B req/s ÷ A req/s; cost × = the inverse (how many times page 1's cost a deep page costs);",
      "cpu µs/req = server process CPU time (user+sys) in the measured window ÷ requests",
      "",
      ...out,
      "",
      ...rows.map((r) => `  ${r.name}: per-run req/s A [${r.a.m.perRun.map(f0).join(", ")}]  B [${r.b.m.perRun.map(f0).join(", ")}]`),
      ...errs,
      ...(refRows.length ? ["", `Reference checkout ${env.BENCH_REF_DIR}, run in the same rounds (A B R A B R …):`] : []),
      ...refRows.map((r) => {
        const subject = rows.find((x) => `${x.name}`.startsWith(r.name.replace(" [reference]", "")))!;
        const rel = median(subject.b.m.perRun.map((b, i) => b / r.b.m.perRun[i]));
        return (
          `  ${r.name.padEnd(30)} ${f0(r.b.m.rps)} req/s, p50/p99 ${f2(r.b.m.p50)}/${f2(r.b.m.p99)} ms, ${f0(r.b.m.cpuUsPerReq)} cpu µs/req, ` +
          `ratio to baseline ${f2(median(r.b.m.perRun.map((b, i) => b / r.a.m.perRun[i])))}; this checkout ÷ reference: req/s ×${f2(rel)}, cpu/req ×${f2(subject.b.m.cpuUsPerReq / r.b.m.cpuUsPerReq)}`
        );
      }),
      "",
    ].join("\n"),
  );
}

let serverNodeVersion = "";

// -------------------------------------------------------------------- cleanup ---

let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  await stopAll().catch(() => {});
  await adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch((e: unknown) => log(`could not drop ${dbName}: ${String(e)}`));
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`${sig}: cleaning up`);
    void Promise.all([cleanup(), relayCleanup()]).finally(() => process.exit(130));
  });
}

try {
  serverNodeVersion = await nodeVersion(serverNode);
  const { rows, upload } = servingCases.length > 0 ? await main() : { rows: [] as Row[], upload: undefined };
  await cleanup();
  let missed =
    rows.some((r) => r.target && (r.target.op === ">=" ? r.value < r.target.value : r.value > r.target.value)) ||
    (upload !== undefined && !(upload.pass.throughput && upload.pass.rss && upload.pass.failures));
  if (cases.has("relay")) {
    // After the serving table, which stays printed if the relay case cannot run.
    log("relay case (test/bench/relay.ts)");
    const relay = await relayBench();
    process.stdout.write("\n" + relaySummary(relay) + "\n\n");
    missed ||= !(relay.pass.throughput && relay.pass.lag);
  }
  if (cases.has("startup")) {
    log("startup case (test/bench/startup.ts)");
    const startup = await startupBench(log);
    process.stdout.write("\n" + startupSummary(startup) + "\n\n");
    missed ||= !(startup.pass.first && startup.pass.again);
  }
  log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.exit(missed && env.BENCH_STRICT === "1" ? 1 : 0);
} catch (e) {
  log(`failed: ${e instanceof Error ? e.stack : String(e)}`);
  await cleanup();
  process.exit(1);
}
