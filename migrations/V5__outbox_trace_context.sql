-- W3C trace context of the call that wrote the event, so the published
-- CloudEvent carries it (distributed tracing extension: ce-traceparent,
-- ce-tracestate) and consumers continue the trace. NULL when the write was not
-- traced. Not indexed: marking rows published stays a heap-only update.
ALTER TABLE outbox ADD COLUMN trace_parent text;
ALTER TABLE outbox ADD COLUMN trace_state text;
