import { W3CTraceContextPropagator } from "@opentelemetry/core";

// W3C trace context (`traceparent`, `tracestate`): what callers send, what the
// outbox stores with an event, what the exporting provider propagates. Used
// directly, not through the API's global propagator, which exists only once
// main.ts has set tracing up.
export const traceContext = new W3CTraceContextPropagator();
