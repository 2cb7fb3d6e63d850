import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { packageVersion } from "./package-files.js";

// One registry per process context (never prom-client's global), so tests can
// build several servers side by side.
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Which release is answering: package.json's version, as the image tag carries it.
  new Gauge({ name: "build_info", help: "Always 1; the labels say which build runs", labelNames: ["version", "node"] as const, registers: [registry] })
    .set({ version: packageVersion, node: process.version }, 1);
  return {
    registry,
    requests: new Counter({
      name: "rpc_server_requests_total",
      help: "Finished calls by protocol, procedure and canonical code",
      labelNames: ["protocol", "procedure", "code"] as const,
      registers: [registry],
    }),
    duration: new Histogram({
      name: "rpc_server_duration_seconds",
      help: "Call duration by protocol and procedure",
      labelNames: ["protocol", "procedure"] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    eventsPublished: new Counter({
      name: "events_published_total",
      help: "Events delivered by the outbox relay, by event type and publisher",
      labelNames: ["type", "publisher"] as const,
      registers: [registry],
    }),
    eventsFailed: new Counter({
      name: "events_publish_failures_total",
      help: "Event publish attempts that failed and will be retried",
      labelNames: ["type", "publisher"] as const,
      registers: [registry],
    }),
    eventsParked: new Counter({
      name: "events_parked_total",
      help: "Events set aside because they cannot be published at all (undecodable)",
      labelNames: ["type"] as const,
      registers: [registry],
    }),
    publishLag: new Histogram({
      name: "events_commit_to_publish_seconds",
      help: "Time from an event's commit to its publication",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    relayBatchSize: new Histogram({
      name: "events_relay_batch_size",
      help: "Events claimed per relay batch",
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
      registers: [registry],
    }),
    s3Requests: new Counter({
      name: "storage_requests_total",
      help: "Object storage operations by operation and outcome (after retries)",
      labelNames: ["operation", "outcome"] as const,
      registers: [registry],
    }),
    s3Duration: new Histogram({
      name: "storage_request_duration_seconds",
      help: "Object storage operation duration, retries included",
      labelNames: ["operation"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    s3Retries: new Counter({
      name: "storage_retries_total",
      help: "Object storage request retries",
      labelNames: ["operation"] as const,
      registers: [registry],
    }),
    dbQueryDuration: new Histogram({
      name: "db_query_duration_seconds",
      help: "Database statement duration by statement summary (operation and table, never values) and outcome",
      labelNames: ["operation", "outcome"] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    dbPoolWaits: new Counter({
      name: "db_pool_acquire_waits_total",
      help: "Connection acquisitions that found every connection in use and had to wait",
      registers: [registry],
    }),
    uploadBytes: new Counter({
      name: "upload_bytes_total",
      help: "Bytes received by streamed uploads (UploadVideoContent, PUT /videos/{id}/content, the filesystem store)",
      labelNames: ["path"] as const,
      registers: [registry],
    }),
    mediaJobs: new Counter({
      name: "media_jobs_total",
      help: "Media job runs by kind (probe, thumbnails) and outcome (succeeded, failed, retried, cancelled)",
      labelNames: ["kind", "outcome"] as const,
      registers: [registry],
    }),
    mediaJobDuration: new Histogram({
      name: "media_job_duration_seconds",
      help: "Media job run duration by kind",
      labelNames: ["kind"] as const,
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers: [registry],
    }),
    mediaQueueDepth: new Gauge({ name: "media_jobs_queue_depth", help: "Media jobs waiting or running", registers: [registry] }),
    mediaOldestPendingAge: new Gauge({ name: "media_jobs_oldest_pending_age_seconds", help: "Age of the oldest media job not finished", registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
