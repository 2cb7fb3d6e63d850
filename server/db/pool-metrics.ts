import { Gauge } from "prom-client";
import type { Metrics } from "../metrics.js";

/** A database handle's connections right now, read at scrape time. */
export interface PoolStats {
  inUse: number;
  idle: number;
  /** Callers queued for a connection. */
  waiting: number;
}

// Gauges read when Prometheus scrapes, so the serving path pays nothing for them.
export function registerPoolGauges(stats: () => PoolStats, metrics: Metrics): void {
  new Gauge({
    name: "db_pool_connections",
    help: "Database connections by state (in_use: checked out by a caller; idle: open and free)",
    labelNames: ["state"] as const,
    registers: [metrics.registry],
    collect() {
      const s = stats();
      this.set({ state: "in_use" }, s.inUse);
      this.set({ state: "idle" }, s.idle);
    },
  });
  new Gauge({
    name: "db_pool_waiting_clients",
    help: "Callers waiting for a database connection",
    registers: [metrics.registry],
    collect() {
      this.set(stats().waiting);
    },
  });
}
