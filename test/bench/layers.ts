// Where a GetVideo's CPU goes, layer by layer, in one process with no network
// in front: each step runs N times at fixed concurrency and reports main-thread
// CPU µs per call (process.cpuUsage, so waiting on PostgreSQL is not counted).
//
//   npx tsx test/bench/layers.ts        (BENCH_DATABASE_URL as for run.ts)
//
// Steps, each adding one layer to the one before where it can:
//   pg            pool.query, named prepared statement (what the baseline does)
//   kysely        videos.find(db, id) through Kysely + the named-statement client
//   impl          the getVideo implementation (validation, policy, Kysely, toVideo)
//   logger        one logger.info line like the observe interceptor's (to /dev/null)
//   metrics       one counter inc + one histogram observe
//   router …      the Connect router's universal handler for GetVideo, without and
//                 with the service's interceptors, fed a synthetic universal request
//                 (Connect JSON with a parsed body; gRPC with a one-chunk body):
//                 what the framework adds on top of "impl", before any Node HTTP work

import { randomBytes } from "node:crypto";
import { createContextValues } from "@connectrpc/connect";
import type { UniversalServerRequest } from "@connectrpc/connect/protocol";
import { create, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { GetVideoRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { loadConfig } from "../../server/config.js";
import { AppContext } from "../../server/context.js";
import { migrate } from "../../server/db/migrate.js";
import { createLogger } from "../../server/logger.js";
import { videos } from "../../server/videos/repository.js";
import getVideo from "../../server/videos/get-video.js";
import { grpcFrame } from "./load.js";
import { adminQuery, databaseUrl, repoRoot } from "./procs.js";
import path from "node:path";
import { v7 as uuidv7 } from "uuid";

const N = Number(process.env.LAYERS_N ?? 20_000);
const CONCURRENCY = 32;


async function measure(name: string, fn: () => Promise<unknown>, n = N) {
  // warm-up
  for (let i = 0; i < 2000; i += CONCURRENCY) await Promise.all(Array.from({ length: CONCURRENCY }, fn));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i += CONCURRENCY) await Promise.all(Array.from({ length: CONCURRENCY }, fn));
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const us = (cpu.user + cpu.system) / n;
  process.stdout.write(`${name.padEnd(44)} ${us.toFixed(1).padStart(7)} µs CPU/call  ${((n / wall) * 1000).toFixed(0).padStart(7)} calls/s\n`);
  return us;
}

const dbName = `vms_bench_layers_${randomBytes(3).toString("hex")}`;
await adminQuery(`CREATE DATABASE ${dbName}`);
const url = databaseUrl(dbName);
try {
  const cfg = loadConfig({ DATABASE_URL: url, MIGRATIONS_DIR: path.join(repoRoot, "migrations"), LOG_LEVEL: process.env.LAYERS_LOG_LEVEL ?? "info" });
  const ctx = await AppContext.fromConfig(cfg, { logger: createLogger(cfg.logLevel) });
  await migrate(ctx.database, { dir: cfg.migrationsDir });
  const id = uuidv7();
  const now = new Date();
  await ctx.db
    .insertInto("videos")
    .values({ id, title: "Bench video 1: a walk along the harbour at dusk", description: "Seeded by test/bench.", tags: ["bench", "sample"], labels: JSON.stringify({ team: "bench" }), visibility: "public", state: "ready", owner_id: "bench-owner", etag: "e", create_time: now, update_time: now } as never)
    .execute();

  const pool = new pg.Pool({ connectionString: url, max: 20 });
  const cols = "id, title, description, tags, labels, visibility, state, owner_id, source, etag, create_time, update_time";
  await measure("pg named statement", () => pool.query({ name: "g", text: `select ${cols} from videos where id = $1`, values: [id] }));
  await measure("kysely videos.find", () => videos.find(ctx.db, id));
  const impl = getVideo(ctx).getVideo!;
  const hc = { values: createContextValues(), signal: new AbortController().signal } as never;
  await measure("getVideo implementation", () => impl(create(GetVideoRequestSchema, { id }), hc) as Promise<unknown>);
  await measure("logger.info (per-call line)", async () => ctx.logger.info("call", { protocol: "grpc", procedure: "video.v1.VideoService/GetVideo", code: "ok", duration_ms: 1.234, request_id: "0a1b2c" }));
  await measure("metrics inc + observe", async () => {
    ctx.metrics.requests.inc({ protocol: "grpc", procedure: "video.v1.VideoService/GetVideo", code: "ok" });
    ctx.metrics.duration.observe({ protocol: "grpc", procedure: "video.v1.VideoService/GetVideo" }, 0.001);
  });

  // The same router construction as server/transport/server.ts, GetVideo only.
  const { createConnectRouter } = await import("@connectrpc/connect");
  const { observe, publicErrors } = await import("../../server/transport/interceptors.js");
  const videoRoutes = (await import("../../server/videos/index.js")).default;
  for (const withInterceptors of [false, true]) {
    const router = createConnectRouter({ interceptors: withInterceptors ? [observe(ctx.logger, ctx.metrics, ctx.tracer), publicErrors(ctx.logger)] : [] });
    videoRoutes(ctx)(router);
    const h = router.handlers.find((x) => x.method.name === "GetVideo")!;
    const json = { id };
    const grpcBody = grpcFrame(toBinary(GetVideoRequestSchema, create(GetVideoRequestSchema, { id })));
    const drain = async (body: AsyncIterable<Uint8Array> | undefined) => {
      if (body) for await (const _ of body);
    };
    const tag = withInterceptors ? "router + interceptors" : "router, no interceptors";
    await measure(`${tag}: Connect JSON (parsed body)`, async () => {
      const req: UniversalServerRequest = {
        httpVersion: "1.1",
        method: "POST",
        url: "http://x/video.v1.VideoService/GetVideo",
        header: new Headers({ "content-type": "application/json" }),
        body: json,
        signal: new AbortController().signal,
        contextValues: createContextValues(),
      };
      await drain((await h(req)).body);
    });
    await measure(`${tag}: gRPC`, async () => {
      const req: UniversalServerRequest = {
        httpVersion: "2.0",
        method: "POST",
        url: "http://x/video.v1.VideoService/GetVideo",
        header: new Headers({ "content-type": "application/grpc", te: "trailers" }),
        body: (async function* () {
          yield grpcBody;
        })(),
        signal: new AbortController().signal,
        contextValues: createContextValues(),
      };
      await drain((await h(req)).body);
    });
  }
  await pool.end();
  await ctx.close();
} finally {
  await adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
}
