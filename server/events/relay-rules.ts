// The relay's decisions, as plain functions of their inputs: which videos a
// batch takes and how many events of each, what a publish outcome means, and
// when a failed video is tried again. relay.ts does the I/O around them.

/** A video with pending events, in queue order (oldest pending event first). */
export interface Head {
  videoId: string;
  /** Its pending events, counted up to the share a batch could give it. */
  pending: number;
}

export interface Share {
  videoId: string;
  take: number;
}

/**
 * Events one video may take in a batch. At most half a batch, so a video with
 * a deep backlog always leaves room for others; at most one publish RPC
 * (`maxMessages` of the client's batching), because the client publishes an
 * ordering key's batches one after another: a larger share would hold the
 * whole relay batch open for several round trips.
 */
export function shareCap(batchSize: number, maxMessages: number): number {
  return Math.max(1, Math.min(Math.ceil(batchSize / 2), maxMessages));
}

/**
 * Fills a batch from the queue: each video's events together (up to its
 * share), videos in the order their oldest event waits, the last one cut to
 * fit batchSize. Taking a video's events together is what makes publishing
 * cheap — the client sends one RPC per ordering key, so ten events of one
 * video cost about what one does.
 */
export function planBatch(heads: Head[], batchSize: number, cap: number): Share[] {
  const plan: Share[] = [];
  let room = batchSize;
  for (const head of heads) {
    if (room <= 0) break;
    const take = Math.min(head.pending, cap, room);
    if (take <= 0) continue;
    plan.push({ videoId: head.videoId, take });
    room -= take;
  }
  return plan;
}

export interface Outcome<E> {
  published: E[];
  failed: { event: E; error: unknown }[];
}

/**
 * Per video, only the events before its first failure count as published:
 * what follows is retried after it, in order (the client has paused that
 * ordering key, so they failed too, with the same error).
 */
export function settle<E extends { video_id: string }>(events: E[], results: PromiseSettledResult<unknown>[]): Outcome<E> {
  const blocked = new Map<string, unknown>();
  const outcome: Outcome<E> = { published: [], failed: [] };
  results.forEach((r, i) => {
    const event = events[i];
    if (r.status === "fulfilled" && !blocked.has(event.video_id)) {
      outcome.published.push(event);
      return;
    }
    const error = r.status === "rejected" ? r.reason : blocked.get(event.video_id);
    if (!blocked.has(event.video_id)) blocked.set(event.video_id, error);
    outcome.failed.push({ event, error });
  });
  return outcome;
}

// gRPC codes that say the bus (or the topic) is out of reach, not that one
// message was refused: DEADLINE_EXCEEDED, NOT_FOUND (the topic),
// PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, UNAUTHENTICATED.
const BUS_CODES = new Set([4, 5, 7, 8, 14, 16]);

/**
 * Whom a failed publish blames. "bus" when nothing went through and a failure
 * says the bus is unreachable: every other video would fail the same way, so
 * the whole relay backs off. Otherwise each failed video backs off on its
 * own and the rest of the queue flows past it.
 */
export function blame(outcome: Outcome<unknown>): "none" | "bus" | "videos" {
  if (outcome.failed.length === 0) return "none";
  if (outcome.published.length > 0) return "videos";
  return outcome.failed.some((f) => BUS_CODES.has((f.error as { code?: unknown })?.code as number)) ? "bus" : "videos";
}

/** Exponential backoff with full jitter, capped: 100 ms × 2^(failures-1) at most. */
export function retryDelay(failures: number, capMs: number, random: () => number = Math.random): number {
  return random() * Math.min(capMs, 100 * 2 ** Math.min(Math.max(failures - 1, 0), 16));
}

/**
 * Videos whose publish failed, each waiting out its own backoff. In memory:
 * another replica may try such a video sooner, which only costs an attempt.
 */
export class VideoRetries {
  private readonly videos = new Map<string, { failures: number; due: number }>();

  constructor(
    private readonly capMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  failed(videoId: string, now: number): void {
    const failures = (this.videos.get(videoId)?.failures ?? 0) + 1;
    this.videos.set(videoId, { failures, due: now + retryDelay(failures, this.capMs, this.random) });
  }

  succeeded(videoId: string): void {
    this.videos.delete(videoId);
  }

  /** Videos still waiting at `now`. Forgets those whose wait ended long ago (published elsewhere, or deleted). */
  waiting(now: number): string[] {
    const out: string[] = [];
    for (const [videoId, v] of this.videos) {
      if (v.due > now) out.push(videoId);
      else if (now - v.due > 2 * this.capMs) this.videos.delete(videoId);
    }
    return out;
  }

  /** When the next waiting video may be tried again, if any is waiting. */
  nextDue(now: number): number | undefined {
    let next: number | undefined;
    for (const v of this.videos.values()) if (v.due > now && (next === undefined || v.due < next)) next = v.due;
    return next;
  }
}
