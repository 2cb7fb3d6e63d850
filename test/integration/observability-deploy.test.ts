import { readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { parse } from "yaml";
import { metricValue, poll } from "../support/pubsub.js";
import { postgresSkipReason } from "../support/postgres.js";
import { labelValuesQuery, selection, type Selection } from "../support/promql.js";
import { createTestBucket, s3Env, s3SkipReason } from "../support/s3.js";
import { startTestServer, type Asserts, type TestServer } from "../support/server.js";

// deploy/observability/ (issue 17): the Grafana dashboard and the Prometheus
// alert rules may only use metric names and labels the service exports,
// scraped from a running server (PostgreSQL, S3 on moto, the log event sink)
// after traffic that produces every family's samples.

const root = path.resolve(import.meta.dirname, "../..");

// Added by Prometheus to every scraped series, not by the service.
const TARGET_LABELS = ["job", "instance"];
/** Every exported family with its label names, from a scrape (histograms as <name>, with `le` on _bucket). */
function exported(text: string, declared: (name: string) => string[]): Map<string, Set<string>> {
  const families = new Map<string, { type: string; labels: Set<string> }>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) families.set(m[1], { type: m[2], labels: new Set() });
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*?)(_bucket|_sum|_count)?\{([^}]*)\}/.exec(line);
    if (!m) continue;
    const family = families.get(m[1]) ?? families.get(m[1] + (m[2] ?? ""));
    for (const l of m[3].matchAll(/(\w+)="/g)) family?.labels.add(l[1]);
  }
  const out = new Map<string, Set<string>>();
  for (const [name, f] of families) {
    // A labelled family with no sample yet (a retry that never happened) shows no
    // labels in the scrape: its declared label names stand in.
    const labels = new Set([...f.labels, ...declared(name)]);
    if (f.type === "histogram") {
      out.set(`${name}_bucket`, new Set([...labels, "le"]));
      out.set(`${name}_sum`, labels);
      out.set(`${name}_count`, labels);
    } else out.set(name, labels);
  }
  return out;
}

/** What is wrong with an expression: unknown metrics, labels none of its metrics has. */
export function problems(where: string, sel: Selection, known: Map<string, Set<string>>): string[] {
  const out: string[] = [];
  if (sel.metrics.length === 0) out.push(`${where}: selects no metric`);
  const labels = new Set(TARGET_LABELS);
  for (const m of sel.metrics) {
    const l = known.get(m);
    if (!l) out.push(`${where}: ${m} is not exported`);
    else for (const x of l) labels.add(x);
  }
  for (const l of sel.labels) if (!labels.has(l)) out.push(`${where}: label ${l} is not one of ${sel.metrics.join(", ")}`);
  return out;
}

function dashboardQueries(): [string, Selection][] {
  const dash = JSON.parse(readFileSync(path.join(root, "deploy/observability/grafana-dashboard.json"), "utf8")) as {
    panels: { title: string; targets?: { expr: string }[]; panels?: unknown[] }[];
    templating: { list: { name: string; definition?: string }[] };
  };
  const out: [string, Selection][] = [];
  for (const p of dash.panels) for (const target of p.targets ?? []) out.push([`panel "${p.title}"`, selection(target.expr)]);
  for (const v of dash.templating.list) {
    const q = v.definition && labelValuesQuery(v.definition);
    if (q) out.push([`variable ${v.name}`, q]);
  }
  return out;
}

function alertQueries(): [string, Selection][] {
  const rules = parse(readFileSync(path.join(root, "deploy/observability/alerts.yaml"), "utf8")) as { groups: { rules: { alert: string; expr: string; for?: string; annotations?: { summary?: string } }[] }[] };
  return rules.groups.flatMap((g) => g.rules.map((r) => [`alert ${r.alert}`, selection(r.expr)] as [string, Selection]));
}

async function traffic(s: TestServer, t: Asserts) {
  const created = await s.clients.rest("POST", "/videos", { json: { title: "observed" } });
  t.equal(created.status, 200, created.text);
  await s.clients.grpc.getVideo({ id: created.json.id });
  await s.clients.connect.listVideos({ pageSize: 1 });
  const put = await fetch(`${s.baseUrl}/videos/${created.json.id}/content`, { method: "PUT", headers: { "content-type": "video/mp4" }, body: new Uint8Array(4096) });
  t.equal(put.status, 200, "an upload through the service (storage samples)");
  await poll(async () => metricValue(await (await fetch(`${s.baseUrl}/metrics`)).text(), "events_published_total") >= 2, 15_000, "the relay's publications");
}

const skip = postgresSkipReason() || s3SkipReason();

t.test("the dashboard and the alert rules use only metrics and labels the service exports", { skip }, async (t) => {
  const bucket = await createTestBucket(t);
  const s = await startTestServer(t, { database: "postgres", env: s3Env(bucket.name) });
  await traffic(s, t);
  const scrape = await (await fetch(`${s.baseUrl}/metrics`)).text();
  const declared = (name: string) => [...((s.ctx.metrics.registry.getSingleMetric(name) as { labelNames?: string[] } | undefined)?.labelNames ?? [])];
  const known = exported(scrape, declared);

  const dashboard = dashboardQueries();
  const alerts = alertQueries();
  t.ok(dashboard.length >= 20, `the dashboard's queries are read (${dashboard.length})`);
  t.ok(alerts.length >= 7, `the alert rules are read (${alerts.length})`);
  const found = [...dashboard, ...alerts].flatMap(([where, sel]) => problems(where, sel, known));
  t.same(found, [], "every metric and label is exported");

  const used = new Set([...dashboard, ...alerts].flatMap(([, sel]) => sel.metrics));
  for (const family of ["rpc_server_requests_total", "rpc_server_duration_seconds_bucket", "db_query_duration_seconds_bucket", "db_pool_connections", "db_pool_waiting_clients", "db_pool_acquire_waits_total", "storage_requests_total", "storage_retries_total", "events_outbox_backlog", "events_commit_to_publish_seconds_bucket", "media_jobs_total", "media_jobs_queue_depth", "media_jobs_oldest_pending_age_seconds"]) {
    t.ok(used.has(family), `${family} is on the dashboard or in an alert`);
  }
  const names = alertQueries().map(([where]) => where);
  for (const alert of ["VmsHighServerErrorRatio", "VmsHighLatencyP99", "VmsDatabasePoolExhausted", "VmsOutboxBacklogHigh", "VmsOutboxLagHigh", "VmsRelayStalled", "VmsStorageErrorRatio"]) {
    t.ok(names.includes(`alert ${alert}`), `${alert} is defined`);
  }
});

t.test("the check finds an unknown metric and a label the metric does not have", async (t) => {
  const known = new Map([["rpc_server_requests_total", new Set(["protocol", "procedure", "code"])]]);
  t.same(problems("x", selection('sum by (procedure) (rate(rpc_server_requests_total{code="Internal"}[5m]))'), known), []);
  t.same(problems("x", selection("sum(rate(rpc_requests_total[5m]))"), known), ["x: rpc_requests_total is not exported"]);
  t.same(problems("x", selection('sum by (method) (rate(rpc_server_requests_total{job="vms"}[5m]))'), known), ["x: label method is not one of rpc_server_requests_total"]);
});
