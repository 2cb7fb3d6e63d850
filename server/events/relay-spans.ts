import { defaultTextMapGetter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Link, type Span } from "@opentelemetry/api";
import { SERVICE_NAME } from "../telemetry/tracing.js";
import { traceContext } from "../telemetry/trace-context.js";
import type { StoredEvent } from "./cloudevents.js";
import type { EventPublisher } from "./publishers.js";
import type { Outcome } from "./relay-rules.js";

// One PRODUCER span per relay batch (OpenTelemetry messaging conventions for
// a batch "send"): from the claim's transaction to the acknowledgements, with
// the batch's database statements under it. Each event already carries the
// trace of the call that wrote it (ce-traceparent); the span links to those
// calls, so a trace viewer goes from a request to the batch that published
// its event. A new trace per batch, not a child of any one call: a batch
// publishes the events of many.

const tracer = trace.getTracer(SERVICE_NAME);

// The SDK's default span link limit; links past it would be dropped with a
// diagnostic warning per batch.
const MAX_LINKS = 128;

export function startBatchSpan(publisher: EventPublisher, events: StoredEvent[], startTime: number): Span {
  const span = tracer.startSpan(`send ${publisher.telemetry["messaging.destination.name"]}`, {
    kind: SpanKind.PRODUCER,
    startTime,
    attributes: { ...publisher.telemetry, "messaging.operation.type": "send", "messaging.operation.name": "publish", "messaging.batch.message_count": events.length },
  });
  // Only a recording span needs the links: parsing each event's trace context is not free.
  if (span.isRecording()) span.addLinks(creationLinks(events));
  return span;
}

/** Ends the span once the batch's transaction has committed (outcome) or failed (error). */
export function endBatchSpan(span: Span, result: { outcome: Outcome<StoredEvent>; sent: number } | { error: unknown }): void {
  if ("error" in result) {
    // The message only: a database error is logged with its details, a span is exported.
    span.setStatus({ code: SpanStatusCode.ERROR, message: "batch failed; its events stay pending" });
    span.setAttribute("error.type", errorType(result.error));
  } else {
    const { outcome, sent } = result;
    span.setAttribute("vms.events.published", outcome.published.length);
    span.setAttribute("vms.events.failed", outcome.failed.length);
    span.setAttribute("vms.events.parked", sent - outcome.published.length - outcome.failed.length);
    if (outcome.failed.length > 0) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: `events not published, to be retried: ${outcome.failed.length}` });
      span.setAttribute("error.type", errorType(outcome.failed[0].error));
    }
  }
  span.end();
}

function creationLinks(events: StoredEvent[]): Link[] {
  const links: Link[] = [];
  const seen = new Set<string>();
  for (const e of events) {
    if (links.length >= MAX_LINKS) break;
    if (!e.trace_parent || seen.has(e.trace_parent)) continue;
    seen.add(e.trace_parent);
    const carrier = { traceparent: e.trace_parent, ...(e.trace_state ? { tracestate: e.trace_state } : {}) };
    const linked = trace.getSpanContext(traceContext.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter));
    if (linked) links.push({ context: linked });
  }
  return links;
}

// A gRPC code from the bus, a SQLSTATE from the database, else the error's class.
function errorType(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === "number" || typeof code === "string") return String(code);
  return (error as Error | undefined)?.constructor?.name ?? "Error";
}
