import type { ThumbnailColumn } from "../db/schema.js";
import type { Offset } from "./settings.js";

// Thumbnail decisions (pure).

/** New pending generated thumbnails, one per offset, in the order given. */
export function pendingThumbnails(offsets: readonly Offset[], ids: readonly string[], now: Date): ThumbnailColumn[] {
  return offsets.map((o, i) => ({
    id: ids[i]!,
    source: "generated",
    state: "pending",
    ...("percent" in o ? { offsetPercent: o.percent } : { timeOffsetMs: o.ms }),
    failureReason: "",
    variants: [],
    createTime: now.toISOString(),
  }));
}

/**
 * Where in a video of durationMs to take a frame: a share of the duration or
 * an explicit time, kept inside the video (a frame needs a little room before
 * the end to be decoded).
 */
export function resolveOffsetMs(t: Pick<ThumbnailColumn, "offsetPercent" | "timeOffsetMs">, durationMs: number): number {
  const wanted = t.timeOffsetMs ?? Math.round(((t.offsetPercent ?? 50) / 100) * durationMs);
  const last = Math.max(0, durationMs - 100);
  return Math.min(Math.max(0, wanted), last);
}

/** The middle one of a job's generated thumbnails, when it is ready: the default unless the owner chose one. */
export function middleReady(all: readonly ThumbnailColumn[], jobIds: readonly string[]): string | undefined {
  const mine = jobIds.map((id) => all.find((t) => t.id === id)).filter((t): t is ThumbnailColumn => t !== undefined);
  const middle = mine[Math.floor((mine.length - 1) / 2)];
  return middle?.state === "ready" ? middle.id : undefined;
}

export function replaceThumbnail(all: readonly ThumbnailColumn[], next: ThumbnailColumn): ThumbnailColumn[] {
  return all.map((t) => (t.id === next.id ? next : t));
}
