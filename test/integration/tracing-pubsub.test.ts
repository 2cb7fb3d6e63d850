import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import t from "tap";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { attr, collector } from "../support/otlp.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";
import { poll, pubsubSkipReason, startService, subscribedTopic } from "../support/pubsub.js";

// The Pub/Sub client's own gRPC calls in traces (issue 17): with tracing on,
// @opentelemetry/instrumentation-grpc turns each Publish the SDK sends into a
// CLIENT span under the relay's batch span, on the real emulator. Our own
// port keeps one server span per call: the instrumentation must not add one.

const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;
const skip = postgresSkipReason() || pubsubSkipReason();

t.test("each Pub/Sub publish is a gRPC client span under the relay's batch span, topic checks are traced, our calls keep one server span", { skip }, async (t) => {
  const otlp = await collector(t);
  const databaseUrl = await createTestDatabase(t);
  const { name: topic, consumer } = await subscribedTopic(t);
  const svc = await startService(t, {
    databaseUrl,
    topic,
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "100" },
  });

  const created = await svc.rest("POST", "/videos", { title: "published and traced" });
  t.equal(created.status, 200, created.text);
  await poll(() => consumer.deliveries.find((d) => d.attributes["ce-subject"] === created.json.id), 15_000, "the event on the emulator");

  const send = await poll(() => otlp.spans.find((s) => s.kind === PRODUCER && s.name === `send ${topic}`), 15_000, "the relay's batch span");
  const publish = await poll(() => otlp.spans.find((s) => s.kind === CLIENT && s.parentSpanId === send.spanId && attr(s, "rpc.system") === "grpc"), 15_000, "a gRPC client span under it");
  t.equal(publish.traceId, send.traceId, "in the batch's trace");
  t.match(publish.name, /google\.pubsub\.v1\.Publisher\/Publish$/, "the Publish RPC");
  t.equal(attr(publish, "rpc.service"), "google.pubsub.v1.Publisher");
  t.equal(attr(publish, "rpc.method"), "Publish");
  t.not(publish.status?.code, 2, "it succeeded");

  // Readiness's topic check is the SDK's GetTopic: traced the same way (a root span: probes are not traced calls).
  t.equal((await svc.rest("GET", "/health/ready")).status, 200);
  const check = await poll(() => otlp.spans.find((s) => s.kind === CLIENT && /google\.pubsub\.v1\.Publisher\/GetTopic$/.test(s.name)), 15_000, "the topic check's span");
  t.equal(attr(check, "rpc.method"), "GetTopic");

  // A gRPC call to our own port: one SERVER span (the interceptor's), no second one from the instrumentation.
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const client = createClient(VideoService, createGrpcTransport({ baseUrl: svc.baseUrl }));
  await client.getVideo({ id: created.json.id }, { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
  await poll(() => otlp.spans.some((s) => s.traceId === traceId && s.kind === SERVER), 15_000, "the call's server span");
  await new Promise((r) => setTimeout(r, 500));
  const servers = otlp.spans.filter((s) => s.traceId === traceId && s.kind === SERVER);
  t.same(servers.map((s) => s.name), ["video.v1.VideoService/GetVideo"], "exactly one server span for the call");

  svc.child.kill("SIGTERM");
  t.equal((await svc.exited).code, 0);
});
