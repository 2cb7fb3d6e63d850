import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { ROOT_CONTEXT, SpanStatusCode, defaultTextMapGetter, trace, type Link } from "@opentelemetry/api";
import type { AppContext } from "../context.js";
import { traceContext } from "../telemetry/trace-context.js";
import { TOOLS_MISSING, toolsAvailable } from "./ffmpeg.js";
import { claimJobs, queueStats, renewLease, retryJob, type MediaJob } from "./jobs.js";
import { failJobThumbnails, runJob, type JobOutcome } from "./run-job.js";

// The media worker of one replica: claims due jobs while fewer than
// THUMBNAIL_CONCURRENCY run, keeps their leases alive, and retries failures
// with backoff until THUMBNAIL_MAX_ATTEMPTS. One log line and one span per
// job; counts, durations and the queue's depth on /metrics.

export function startMediaWorker(ctx: AppContext, o: { pollMs?: number; concurrency?: number } = {}) {
  const media = { ...ctx.cfg.media, concurrency: o.concurrency ?? ctx.cfg.media.concurrency };
  const pollMs = o.pollMs ?? 500;
  const holder = `${hostname()}/${process.pid}/${randomUUID()}`;
  const running = new Set<Promise<void>>();
  let stopping = false;
  let wake: (() => void) | undefined;
  const sleep = (ms: number) => new Promise<void>((r) => { wake = r; setTimeout(r, ms).unref(); });

  void toolsAvailable(media).then((ok) => {
    if (!ok) ctx.logger.warn(TOOLS_MISSING);
  });

  async function runOne(job: MediaJob) {
    const started = performance.now();
    const heartbeat = setInterval(() => void renewLease(ctx.db, job, media.leaseMs, ctx.clock()).catch(() => {}), Math.max(100, media.leaseMs / 3));
    heartbeat.unref();
    const links: Link[] = [];
    if (job.trace_parent) {
      const parent = trace.getSpanContext(traceContext.extract(ROOT_CONTEXT, { traceparent: job.trace_parent, tracestate: job.trace_state ?? undefined }, defaultTextMapGetter));
      if (parent) links.push({ context: parent });
    }
    await ctx.tracer.startActiveSpan(`media job ${job.kind}`, { links, attributes: { "media.job.id": job.id, "media.job.kind": job.kind, "video.id": job.video_id, "media.job.attempt": job.attempts } }, async (span) => {
      let outcome: JobOutcome | "retried";
      let error: string | undefined;
      try {
        ({ outcome, error } = await runJob(ctx, job));
      } catch (e) {
        error = (e as Error).message.slice(0, 500);
        const last = job.attempts >= media.maxAttempts;
        outcome = last ? "failed" : "retried";
        try {
          if (last) await failJobThumbnails(ctx, job, error);
          else await retryJob(ctx.db, job, error, ctx.clock());
        } catch (e2) {
          // The database is unreachable too: the lease lapses and the job is claimed again.
          ctx.logger.warn("media job state not recorded; it will be claimed again", { job_id: job.id, error: (e2 as Error).message });
        }
      } finally {
        clearInterval(heartbeat);
      }
      const seconds = (performance.now() - started) / 1000;
      ctx.metrics.mediaJobs.inc({ kind: job.kind, outcome });
      ctx.metrics.mediaJobDuration.observe({ kind: job.kind }, seconds);
      if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.setAttribute("media.job.outcome", outcome);
      span.end();
      const fields = { job_id: job.id, video_id: job.video_id, kind: job.kind, outcome, attempt: job.attempts, duration_ms: Math.round(seconds * 1000), ...(error && { error }) };
      if (outcome === "succeeded" || outcome === "cancelled") ctx.logger.info("media job finished", fields);
      else ctx.logger.warn("media job finished", fields);
    });
  }

  async function loop() {
    while (!stopping) {
      try {
        const free = media.concurrency - running.size;
        if (free > 0) {
          for (const job of await claimJobs(ctx.db, holder, free, media.leaseMs, ctx.clock())) {
            const p: Promise<void> = runOne(job)
              .catch((e: unknown) => {
                ctx.logger.error("media job crashed", { job_id: job.id, error: String(e) });
              })
              .finally(() => {
                running.delete(p);
                wake?.();
              });
            running.add(p);
          }
        }
        const stats = await queueStats(ctx.db, ctx.clock());
        ctx.metrics.mediaQueueDepth.set(stats.depth);
        ctx.metrics.mediaOldestPendingAge.set(stats.oldestAgeS);
      } catch (e) {
        ctx.logger.warn("media worker poll failed; will retry", { error: (e as Error).message });
      }
      await sleep(pollMs * (0.75 + Math.random() / 2));
    }
  }

  const looping = media.concurrency > 0 ? loop() : Promise.resolve();
  return {
    /** Stops claiming; running jobs finish within graceMs, or are left to their lapsing lease. */
    async stop(graceMs = 5_000) {
      stopping = true;
      wake?.();
      await Promise.race([Promise.all([looping, ...running]), new Promise((r) => setTimeout(r, graceMs).unref())]);
    },
  };
}
