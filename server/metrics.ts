import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

// One registry per process context (never prom-client's global), so tests can
// build several servers side by side.
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
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
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
