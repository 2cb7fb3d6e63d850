import { context, SpanKind, SpanStatusCode, trace, type Tracer } from "@opentelemetry/api";
import type { LogEvent } from "kysely";

// Database spans from Kysely's query log: Kysely reports each query once it
// has finished, with its duration, in the caller's async context — enough to
// record a client span after the fact without wrapping the driver. Only
// queries made inside a traced call are recorded (the relay's and the
// janitor's polling would otherwise start a new trace every few hundred ms).
// The SQL is Kysely's parameterised text; values never reach a span.

export function querySpans(tracer: Tracer, system: "postgresql"): (event: LogEvent) => void {
  return (event) => {
    const active = context.active();
    if (!trace.getSpan(active)?.isRecording()) return;
    const end = performance.timeOrigin + performance.now();
    const sql = event.query.sql;
    const operation = /^\s*(\w+)/.exec(sql)?.[1]?.toUpperCase() ?? "QUERY";
    const span = tracer.startSpan(
      operation,
      {
        kind: SpanKind.CLIENT,
        startTime: end - event.queryDurationMillis,
        attributes: { "db.system.name": system, "db.operation.name": operation, "db.query.text": sql },
      },
      active,
    );
    if (event.level === "error") {
      // The SQLSTATE only: a driver's message can quote the offending values.
      const code = (event.error as { code?: unknown } | undefined)?.code;
      span.setStatus({ code: SpanStatusCode.ERROR, message: typeof code === "string" ? `SQLSTATE ${code}` : "query failed" });
      if (typeof code === "string") span.setAttribute("db.response.status_code", code);
    }
    span.end(end);
  };
}
