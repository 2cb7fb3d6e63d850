import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import t from "tap";
import { fixture, removeFixtures } from "../support/media.js";
import { contentMessages, eventually, startUploadServer } from "../support/uploads.js";

// A media job has its own span, linked to the span of the call that uploaded
// the file (the trace context travels on the job row), plus metrics and one
// log line per job.

t.teardown(removeFixtures);
const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register();
t.teardown(() => provider.shutdown());

t.test("the job's span links to the uploading call's span; /metrics counts the job", async (t) => {
  const h = await startUploadServer(t, { kind: "filesystem", env: { THUMBNAIL_CONCURRENCY: "1", THUMBNAIL_SIZES: "160x90", THUMBNAIL_FORMATS: "jpeg" } });
  const v = await h.newVideo("traced");
  await h.s.clients.connect.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, await fixture("one-second")));
  const job = (await eventually(async () => exporter.getFinishedSpans().find((s) => s.name === "media job probe" && s.attributes["video.id"] === v.id), "the job's span", 60_000))!;
  const upload = exporter.getFinishedSpans().find((s) => s.attributes["rpc.method"] === "UploadVideoContent");
  t.ok(upload, "the upload call has a span");
  t.equal(job.links[0]?.context.traceId, upload!.spanContext().traceId, "linked to the uploading call's trace");
  t.equal(job.links[0]?.context.spanId, upload!.spanContext().spanId, "and to its span");
  t.equal(job.attributes["media.job.outcome"], "succeeded");
  const metrics = await h.s.ctx.metrics.registry.metrics();
  t.match(metrics, /media_jobs_total\{kind="probe",outcome="succeeded"\} 1/);
  t.match(metrics, /media_job_duration_seconds_count\{kind="probe"\} 1/);
  t.match(metrics, /media_jobs_oldest_pending_age_seconds \d/);
});
