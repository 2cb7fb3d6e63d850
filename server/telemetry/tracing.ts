import { diag, DiagLogLevel, type DiagLogger } from "@opentelemetry/api";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type winston from "winston";
import type { Config } from "../config.js";
import { traceContext } from "./trace-context.js";

// The process's OpenTelemetry set-up. Tracing is a process concern like signal
// handling, so main.ts calls this once; everything else only uses the API
// (`trace.getTracer`), which stays a cheap no-op when nothing is registered.
//
// It must run before anything loads @grpc/grpc-js (the Pub/Sub SDK does, through
// google-gax): the gRPC instrumentation patches the module as it is required,
// so main.ts imports the rest of the service only after calling startTracing.

export const SERVICE_NAME = "video-management-service";

export interface Tracing {
  readonly exporting: boolean;
  /** Flushes the spans still buffered; call once, at exit. */
  shutdown(): Promise<void>;
}

export async function startTracing(cfg: Config["tracing"], logger: winston.Logger, version: string): Promise<Tracing> {
  if (!cfg.exporter) return { exporting: false, shutdown: async () => {} };
  // The SDK and exporters load only when spans are exported (start-up time).
  const [{ OTLPTraceExporter: OTLPJsonExporter }, { OTLPTraceExporter: OTLPProtobufExporter }, { detectResources, envDetector, resourceFromAttributes }, { BatchSpanProcessor, NodeTracerProvider }] =
    await Promise.all([
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/exporter-trace-otlp-proto"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/sdk-trace-node"),
    ]);

  diag.setLogger(diagToLogger(logger.child({ channel: "otel" })), DiagLogLevel.WARN);
  // The exporters read OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT
  // and _COMPRESSION themselves; the batch processor reads OTEL_BSP_*, the
  // provider OTEL_TRACES_SAMPLER[_ARG] and the span limits.
  const exporter = cfg.exporter === "http/json" ? new OTLPJsonExporter() : new OTLPProtobufExporter();
  const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: SERVICE_NAME, [ATTR_SERVICE_VERSION]: version }).merge(
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the defaults.
    detectResources({ detectors: [envDetector] }),
  );
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(exporter)] });
  provider.register({ propagator: traceContext });
  // The Pub/Sub client's own gRPC calls (Publish, GetTopic) become CLIENT
  // spans under whatever span is active: the relay's batch span for a publish.
  // It patches grpc-js's client and server; we serve through Connect, not a
  // grpc-js Server, so our calls keep exactly one server span (the interceptor's).
  // Loaded only when exporting: start-up without tracing does not pay for it.
  const [{ registerInstrumentations }, { GrpcInstrumentation }] = await Promise.all([import("@opentelemetry/instrumentation"), import("@opentelemetry/instrumentation-grpc")]);
  registerInstrumentations({ tracerProvider: provider, instrumentations: [new GrpcInstrumentation()] });
  logger.info("tracing", { exporter: "otlp", protocol: cfg.exporter });
  return {
    exporting: true,
    async shutdown() {
      try {
        await provider.shutdown();
      } catch (e) {
        logger.warn("flushing spans failed", { error: (e as Error).message });
      }
    },
  };
}

// OpenTelemetry reports export failures through its diagnostic logger. The
// collector being away for a while must not flood the log: one line per
// distinct message per minute.
function diagToLogger(logger: winston.Logger): DiagLogger {
  const lastSeen = new Map<string, number>();
  const emit = (level: "error" | "warn" | "info" | "debug") => (message: string, ...args: unknown[]) => {
    const now = Date.now();
    if ((lastSeen.get(message) ?? -Infinity) > now - 60_000) return;
    if (lastSeen.size > 100) lastSeen.clear();
    lastSeen.set(message, now);
    logger[level](message, { detail: args.map((a) => (a instanceof Error ? a.message : String(a))).join(" ").slice(0, 500) });
  };
  return { error: emit("error"), warn: emit("warn"), info: emit("info"), debug: emit("debug"), verbose: emit("debug") };
}
