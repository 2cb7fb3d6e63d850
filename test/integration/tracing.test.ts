import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import t from "tap";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { loadConfig } from "../../server/config.js";
import type { Asserts } from "../support/server.js";
import { attr, collector } from "../support/otlp.js";
import { createTestBucket, s3Env, s3SkipReason } from "../support/s3.js";
import { teeOutput } from "../support/log-capture.js";

// OpenTelemetry as operators run it: the real entry point exporting OTLP over
// HTTP to a collector (here a small OTLP/HTTP receiver in the test), the
// caller's W3C trace context continued, database spans nested under the call
// span, nothing of the request body in a span, and the last spans flushed on
// SIGTERM.

const root = path.resolve(import.meta.dirname, "../..");

function start(t: Asserts, env: Record<string, string>) {
  const dataDir = mkdtempSync(path.join(tmpdir(), "vms-otel-"));
  const child = spawn(process.execPath, ["--import", "tsx", "server/main.ts"], {
    cwd: root,
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DATA_DIR: dataDir, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  teeOutput(child.stdout, child.pid);
  teeOutput(child.stderr, child.pid);
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  });
  const lines = () =>
    out
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Record<string, any>);
  const port = waitFor(() => lines().find((l) => l.message === "serving")?.port as number | undefined, 30_000, () => err);
  return { child, exited, lines, port };
}

async function waitFor<T>(probe: () => T | undefined, ms: number, why: () => string = () => ""): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out ${why().slice(-1000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;

t.test("continues the caller's trace: a server span per call, database spans under it, the event carries it, no bodies", async (t) => {
  const otlp = await collector(t);
  const svc = start(t, {
    OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_BSP_SCHEDULE_DELAY: "100",
    OTEL_SERVICE_NAME: "vms-under-test",
  });
  const base = `http://127.0.0.1:${await svc.port}`;

  const callerTrace = "0af7651916cd43dd8448eb211c80319c";
  const callerSpan = "b7ad6b7169203331";
  const created = await fetch(`${base}/videos`, {
    method: "POST",
    headers: { traceparent: `00-${callerTrace}-${callerSpan}-01`, "content-type": "application/json" },
    body: JSON.stringify({ title: "Secret harbour cats", description: "do-not-export-me" }),
  });
  t.equal(created.status, 200);
  const video = (await created.json()) as { id: string };

  const server = await waitFor(() => otlp.spans.find((s) => s.traceId === callerTrace && s.kind === SERVER), 15_000);
  t.equal(server.name, "POST /videos", "REST calls are named by their route");
  t.equal(server.parentSpanId, callerSpan, "the caller's span is the parent");
  t.equal(attr(server, "rpc.method"), "CreateVideo");
  t.equal(attr(server, "http.route"), "POST /videos");
  t.equal(attr(server, "rpc.response.status_code"), "ok");
  const db = await waitFor(() => {
    const found = otlp.spans.filter((s) => s.parentSpanId === server.spanId && s.kind === CLIENT);
    return found.some((s) => s.name === "INSERT") ? found : undefined;
  }, 15_000);
  t.ok(db.every((s) => s.traceId === callerTrace), "database spans are in the caller's trace");
  t.ok(db.some((s) => /insert into "videos"/.test(attr(s, "db.query.text") ?? "")), "the INSERT is recorded with its parameterised SQL");

  // The event of the write carries the trace (CloudEvents distributed tracing
  // extension), so Transcoding and Catalog continue it; the log sink shows it.
  const event = await waitFor(() => svc.lines().find((l) => l.channel === "events" && l.attributes?.["ce-subject"] === video.id), 15_000);
  t.equal(event.attributes["ce-traceparent"], `00-${callerTrace}-${server.spanId}-01`, "ce-traceparent: the caller's trace, the call's span");

  // The relay's batch that sent it: a PRODUCER span of its own trace, linked to the call.
  const send = await waitFor(() => otlp.spans.find((s) => s.kind === PRODUCER && s.links?.some((l) => l.spanId === server.spanId)), 15_000);
  t.equal(send.name, "send log", "named for the destination (the log sink here)");
  t.equal(send.links?.find((l) => l.spanId === server.spanId)?.traceId, callerTrace, "linked to the call that wrote the event");
  t.not(send.traceId, callerTrace, "in a trace of its own");
  t.equal(attr(send, "messaging.system"), "log");
  t.ok(Number(attr(send, "messaging.batch.message_count")) >= 1, "with its batch size");
  const marked = await waitFor(() => otlp.spans.find((s) => s.parentSpanId === send.spanId && /outbox_published/.test(attr(s, "db.query.text") ?? "")), 15_000);
  t.equal(marked.kind, CLIENT, "its statements are database spans under it");

  const callLine = svc.lines().find((l) => l.message === "call" && l.route === "POST /videos");
  t.equal(callLine?.trace_id, callerTrace, "the log line carries the trace id");
  t.equal(callLine?.span_id, server.spanId, "and the server span's id");

  // gRPC, no trace context from the caller: a new trace, and a caller error
  // (NOT_FOUND) does not mark the span as failed.
  const client = createClient(VideoService, createGrpcTransport({ baseUrl: base }));
  const missing = "01890a5d-ac96-774b-bcce-b302099a8057";
  const err = await client.getVideo({ id: missing }).catch((e: unknown) => ConnectError.from(e));
  t.equal((err as ConnectError).code, Code.NotFound);
  const grpcSpan = await waitFor(() => otlp.spans.find((s) => s.name === "video.v1.VideoService/GetVideo"), 15_000);
  t.equal(grpcSpan.parentSpanId || undefined, undefined, "a root span when the caller sent no traceparent");
  t.not(grpcSpan.traceId, callerTrace);
  t.equal(attr(grpcSpan, "rpc.system"), "grpc");
  t.equal(attr(grpcSpan, "rpc.response.status_code"), "NotFound");
  t.not(grpcSpan.status?.code, 2, "a caller's mistake is not a server error");

  await client.getVideo({ id: video.id });
  await waitFor(() => otlp.spans.filter((s) => s.name === "video.v1.VideoService/GetVideo").length >= 2, 15_000);
  const exported = otlp.requests.map((r) => r.body).join("\n");
  t.notMatch(exported, /Secret harbour cats|do-not-export-me/, "no request body value reaches a span");
  const resource = otlp.requests.find((r) => r.contentType.startsWith("application/json"))!.body;
  t.match(resource, /"service.name","value":\{"stringValue":"vms-under-test"\}/, "OTEL_SERVICE_NAME names the service");

  svc.child.kill("SIGTERM");
  t.equal(await svc.exited, 0);
});

t.test("SIGTERM flushes the spans still buffered; the default protocol is http/protobuf", async (t) => {
  const otlp = await collector(t);
  // A one-minute batch delay: without the flush at shutdown nothing would be sent.
  const svc = start(t, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: "60000" });
  const base = `http://127.0.0.1:${await svc.port}`;
  t.equal((await fetch(`${base}/videos`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ title: "Flush me" }) })).status, 200);
  t.equal(otlp.requests.length, 0, "nothing exported before the batch delay");
  svc.child.kill("SIGTERM");
  t.equal(await svc.exited, 0);
  t.ok(otlp.requests.length >= 1, "spans exported at shutdown");
  t.ok(otlp.requests.every((r) => r.path === "/v1/traces" && r.contentType === "application/x-protobuf" && r.bytes > 0), "OTLP protobuf to /v1/traces");
  t.ok(otlp.requests.some((r) => r.body.includes("POST /videos")), "the call's span is among them");
});

t.test("a collector that is down costs nothing but a rate-limited warning", async (t) => {
  const otlp = await collector(t);
  const closedUrl = otlp.url.replace(/:\d+$/, ":1"); // nothing listens on port 1
  const svc = start(t, { OTEL_EXPORTER_OTLP_ENDPOINT: closedUrl, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "50", OTEL_EXPORTER_OTLP_TIMEOUT: "500" });
  const base = `http://127.0.0.1:${await svc.port}`;
  for (let i = 0; i < 5; i++) {
    t.equal((await fetch(`${base}/videos`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ title: `t${i}` }) })).status, 200, "calls succeed");
    await new Promise((r) => setTimeout(r, 150));
  }
  const otel = await waitFor(() => {
    const l = svc.lines().filter((x) => x.channel === "otel");
    return l.length > 0 ? l : undefined;
  }, 15_000);
  const distinct = new Set(otel.map((l) => l.message));
  t.equal(otel.length, distinct.size, "each distinct diagnostic at most once a minute");
  svc.child.kill("SIGTERM");
  t.equal(await svc.exited, 0);
});

t.test("object storage calls made in a call are client spans under it (S3 on the emulator); presigning is none", { skip: s3SkipReason() }, async (t) => {
  const otlp = await collector(t);
  const bucket = await createTestBucket(t);
  const svc = start(t, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "100", ...s3Env(bucket.name) });
  const base = `http://127.0.0.1:${await svc.port}`;
  const post = (path: string, body: unknown) => fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<Record<string, any>>);

  const video = await post("/videos", { title: "traced upload" });
  const traceId = "5bf92f3577b34da6a3ce929d0e0e4736";
  const put = await fetch(`${base}/videos/${video.id}/content`, {
    method: "PUT",
    headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, "content-type": "video/mp4" },
    body: new Uint8Array(1024),
  });
  const putText = await put.text();
  t.equal(put.status, 200, put.status === 200 ? "the streamed upload is stored" : putText);
  const call = await waitFor(() => otlp.spans.find((s) => s.traceId === traceId && s.kind === SERVER), 15_000);
  const storage = await waitFor(() => {
    const found = otlp.spans.filter((s) => s.parentSpanId === call.spanId && attr(s, "rpc.system") === "aws-api");
    return found.some((s) => s.name === "S3.PutObject") ? found : undefined;
  }, 15_000);
  const putSpan = storage.find((s) => s.name === "S3.PutObject")!;
  t.equal(putSpan.kind, CLIENT);
  t.equal(attr(putSpan, "rpc.service"), "S3");
  t.equal(attr(putSpan, "aws.s3.bucket"), bucket.name);
  t.match(attr(putSpan, "aws.s3.key"), new RegExp(`^videos/${video.id}/`), "the key, derived from the video id");
  t.equal(Number(attr(putSpan, "http.response.status_code")), 200);
  t.not(putSpan.status?.code, 2);

  // CreateUpload only signs a URL: no S3 call, so no S3 span under it.
  const other = await post("/videos", { title: "presigned" });
  const presignTrace = "6bf92f3577b34da6a3ce929d0e0e4736";
  const created = await fetch(`${base}/videos/${other.id}/uploads`, {
    method: "POST",
    headers: { traceparent: `00-${presignTrace}-00f067aa0ba902b7-01`, "content-type": "application/json" },
    body: JSON.stringify({ content_type: "video/mp4", size_bytes: "1024" }),
  });
  const createdText = await created.text();
  t.equal(created.status, 200, created.status === 200 ? "CreateUpload answered" : createdText);
  const createSpan = await waitFor(() => otlp.spans.find((s) => s.traceId === presignTrace && s.kind === SERVER), 15_000);
  await new Promise((r) => setTimeout(r, 500));
  t.same(otlp.spans.filter((s) => s.parentSpanId === createSpan.spanId && attr(s, "rpc.system") === "aws-api").map((s) => s.name), [], "no storage span for a presigned URL");

  svc.child.kill("SIGTERM");
  t.equal(await svc.exited, 0);
});

t.test("configuration: the standard OTEL_* variables", async (t) => {
  const base = { DATA_DIR: "/tmp/x" };
  t.equal(loadConfig(base).tracing.exporter, undefined, "no endpoint: no export");
  t.equal(loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }).tracing.exporter, "http/protobuf", "OTLP's default protocol");
  t.equal(loadConfig({ ...base, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/v1/traces", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json" }).tracing.exporter, "http/json");
  t.equal(loadConfig({ ...base, OTEL_TRACES_EXPORTER: "otlp" }).tracing.exporter, "http/protobuf", "otlp asked for: the default endpoint");
  t.equal(loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" }).tracing.exporter, undefined);
  t.equal(loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_TRACES_EXPORTER: "none" }).tracing.exporter, undefined);
  t.throws(() => loadConfig({ ...base, OTEL_TRACES_EXPORTER: "console" }), /OTEL_TRACES_EXPORTER/);
  t.throws(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4317", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }), /OTEL_EXPORTER_OTLP_PROTOCOL/);
  t.throws(() => loadConfig({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }), /OTEL_EXPORTER_OTLP_ENDPOINT/);
});
