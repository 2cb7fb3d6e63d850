import { trace, type Tracer } from "@opentelemetry/api";
import type { LogEvent } from "kysely";
import type winston from "winston";
import type { Config } from "./config.js";
import { openPGlite, openPostgres, type DatabaseHandle } from "./db/database.js";
import { LogPublisher, PubSubPublisher, type EventPublisher } from "./events/publishers.js";
import { createLogger } from "./logger.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { FsStore } from "./storage/fs-store.js";
import type { ObjectStore } from "./storage/object-store.js";
import { registerPoolGauges } from "./db/pool-metrics.js";
import { queryMetrics } from "./telemetry/query-metrics.js";
import { querySpans } from "./telemetry/query-spans.js";
import { SERVICE_NAME } from "./telemetry/tracing.js";

// Everything a handler may use, built once and passed explicitly; there are no
// module-level singletons, so tests build contexts against any backend.
export class AppContext {
  // Set once SIGTERM arrives: readiness turns false while calls drain.
  draining = false;
  // The API's tracer: a no-op until main.ts registers an exporting provider.
  readonly tracer: Tracer = trace.getTracer(SERVICE_NAME);

  constructor(
    readonly cfg: Config,
    readonly database: DatabaseHandle,
    readonly logger: winston.Logger,
    readonly metrics: Metrics,
    readonly clock: () => Date,
    readonly publisher: EventPublisher,
    readonly store: ObjectStore,
    // Thumbnails' objects: S3_THUMBNAIL_BUCKET on S3, the same store on the filesystem.
    readonly thumbnailStore: ObjectStore = store,
  ) {}

  get db() {
    return this.database.db;
  }

  static async fromConfig(cfg: Config, overrides: Partial<Pick<AppContext, "logger" | "clock">> = {}): Promise<AppContext> {
    const metrics = createMetrics();
    const log = queryLog(metrics, cfg.tracing.exporter ? querySpans(trace.getTracer(SERVICE_NAME), "postgresql") : undefined);
    const onAcquireWait = () => metrics.dbPoolWaits.inc();
    const database = cfg.database.url
      ? openPostgres({ url: cfg.database.url, poolMax: cfg.database.poolMax, statementTimeoutMs: cfg.limits.maxRequestMs, idleInTransactionMs: cfg.database.idleInTransactionMs, log, onAcquireWait })
      : await openPGlite(`${cfg.dataDir}/pglite`, log, onAcquireWait);
    registerPoolGauges(() => database.poolStats(), metrics);
    const logger = overrides.logger ?? createLogger(cfg.logLevel);
    const pubsub = cfg.events.pubsub;
    // The Pub/Sub and S3 clients load only when configured: together they are
    // most of a start-up's module loading, which the embedded defaults skip.
    const publisher = pubsub ? await PubSubPublisher.create({ projectId: pubsub.projectId, topic: pubsub.topic }) : new LogPublisher(logger);
    const s3 = cfg.storage.s3;
    let store: ObjectStore;
    let thumbnailStore: ObjectStore;
    if (s3) {
      const { S3Store, createS3Client } = await import("./storage/s3-store.js");
      const raw = new S3Store(createS3Client({ ...s3, maxSockets: cfg.database.poolMax * 2 + 16 }, metrics, logger), s3.bucket, s3.stream);
      store = raw;
      thumbnailStore = raw.withBucket(s3.thumbnailBucket);
    } else {
      store = thumbnailStore = await FsStore.open(cfg.dataDir, cfg.storage.publicBaseUrl);
    }
    return new AppContext(cfg, database, logger, metrics, overrides.clock ?? (() => new Date()), publisher, store, thumbnailStore);
  }

  async close(): Promise<void> {
    await this.publisher.close();
    await this.database.close();
  }
}

// Kysely's query log: the latency histogram always, database spans when tracing.
function queryLog(metrics: Metrics, spans: ((event: LogEvent) => void) | undefined): (event: LogEvent) => void {
  const record = queryMetrics(metrics.dbQueryDuration);
  if (!spans) return record;
  return (event) => {
    record(event);
    spans(event);
  };
}
