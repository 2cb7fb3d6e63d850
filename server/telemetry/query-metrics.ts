import type { Histogram } from "prom-client";
import type { LogEvent } from "kysely";
import { querySummary } from "./query-summary.js";

// db_query_duration_seconds from Kysely's query log, which times every
// statement the service sends through Kysely on either database. The log
// callback runs on the query's path, so the per-statement work is one map
// lookup and one observation: the summary and the labelled children are
// worked out once per distinct SQL text.

type Child = ReturnType<Histogram<"operation" | "outcome">["labels"]>;

export function queryMetrics(histogram: Histogram<"operation" | "outcome">): (event: LogEvent) => void {
  const children = new Map<string, { ok: Child; error: Child }>();
  return (event) => {
    const sql = event.query.sql;
    let c = children.get(sql);
    if (c === undefined) {
      const operation = querySummary(sql);
      c = { ok: histogram.labels(operation, "ok"), error: histogram.labels(operation, "error") };
      // Bounded like the statement names: past it, a text is summarised per call.
      if (children.size < 10_000) children.set(sql, c);
    }
    (event.level === "error" ? c.error : c.ok).observe(event.queryDurationMillis / 1000);
  };
}
