import type { ConnectRouter } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/health/v1/health_pb.js";
import { AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import type { AppContext } from "../context.js";
import { pendingMigrations } from "../db/migrate.js";

// Readiness: the database answers, this build's migrations are applied, and
// the process is not draining. Liveness is just "the process serves".

export interface Readiness {
  ready: boolean;
  reason?: string;
}

export function readinessProbe(ctx: AppContext): () => Promise<Readiness> {
  // Once applied, this build's migrations stay applied; stop asking.
  let migrated = false;
  return async () => {
    if (ctx.draining) return { ready: false, reason: "draining" };
    try {
      await ctx.database.ping();
      const bus = await ctx.publisher.unreadyReason();
      if (bus) return { ready: false, reason: bus };
      if (!migrated) {
        const pending = await pendingMigrations(ctx.database, ctx.cfg.migrationsDir);
        if (pending.length > 0) return { ready: false, reason: `migrations pending: ${pending.join(", ")}` };
        migrated = true;
      }
      return { ready: true };
    } catch {
      return { ready: false, reason: "database unreachable" };
    }
  };
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });

const SERVICES = new Set(["", VideoService.typeName, EventService.typeName, AuditService.typeName]);

// Watch needs no credentials and holds a stream for as long as the caller
// likes: at most maxWatches at once per process, so they cannot take the
// stream budget (MAX_CONCURRENT_STREAMS) every other call needs.
export default (probe: () => Promise<Readiness>, shutdown: AbortSignal, maxWatches: number) => (router: ConnectRouter) => {
  let watching = 0;
  return router.service(Health, {
    async check(req) {
      if (!SERVICES.has(req.service)) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
      return { status: (await probe()).ready ? Status.SERVING : Status.NOT_SERVING };
    },
    async list() {
      const status = (await probe()).ready ? Status.SERVING : Status.NOT_SERVING;
      return { statuses: Object.fromEntries([...SERVICES].map((s) => [s, { status }])) };
    },
    // Sends the status now and again whenever it changes, polled once a
    // second, and NOT_SERVING when the server starts draining (unless the
    // caller has gone), as the stream's last message.
    async *watch(req, hc) {
      if (!SERVICES.has(req.service)) {
        yield { status: Status.SERVICE_UNKNOWN };
        return;
      }
      if (watching >= maxWatches) throw new ConnectError(`too many health watches in progress (${maxWatches}); use Check`, Code.ResourceExhausted);
      watching++;
      try {
        let last: Status | undefined;
        while (!hc.signal.aborted && !shutdown.aborted) {
          const status = (await probe()).ready ? Status.SERVING : Status.NOT_SERVING;
          if (status !== last) yield { status };
          last = status;
          await sleep(1000, AbortSignal.any([hc.signal, shutdown]));
        }
        if (!hc.signal.aborted && last !== Status.NOT_SERVING) yield { status: Status.NOT_SERVING };
      } finally {
        watching--;
      }
    },
  });
};
