// The media settings (THUMBNAIL_*, FFMPEG_PATH, FFPROBE_PATH) parsed from the
// environment: pure, so config.ts calls it and unit tests check it directly.

export type Offset = { percent: number } | { ms: number };
export interface BoxSize {
  width: number;
  height: number;
}
export type ThumbnailFormat = "webp" | "jpeg" | "png";

export interface MediaConfig {
  concurrency: number;
  offsets: Offset[];
  sizes: BoxSize[];
  formats: ThumbnailFormat[];
  maxBytes: number;
  maxAttempts: number;
  urlExpiryMs: number;
  publicBaseUrl: string | undefined;
  /** How long a claimed job is kept from other replicas without a heartbeat. */
  leaseMs: number;
  ffmpegPath: string;
  ffprobePath: string;
}

/** "10%", "1.5s", "1500ms", "90s"; undefined when it is none of these. */
export function parseOffset(raw: string): Offset | undefined {
  const s = raw.trim();
  let m = /^(\d+(?:\.\d+)?)%$/.exec(s);
  if (m) {
    const percent = Number(m[1]);
    return percent <= 100 ? { percent } : undefined;
  }
  m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(s);
  if (m) return { ms: Math.round(Number(m[1]) * (m[2] === "s" ? 1000 : 1)) };
  return undefined;
}

export function parseSize(raw: string): BoxSize | undefined {
  const m = /^(\d{1,5})x(\d{1,5})$/.exec(raw.trim());
  if (!m) return undefined;
  const width = Number(m[1]);
  const height = Number(m[2]);
  return width >= 16 && height >= 16 && width <= 7680 && height <= 7680 ? { width, height } : undefined;
}

const FORMATS: readonly ThumbnailFormat[] = ["webp", "jpeg", "png"];

type Env = Record<string, string | undefined>;

/** Splits a comma list, parses each entry, and throws `fail(message)` naming the variable at the first bad one. */
export function list<T>(env: Env, name: string, fallback: string, parse: (s: string) => T | undefined, what: string, fail: (m: string) => Error): T[] {
  const raw = env[name]?.trim() || fallback;
  const items = raw.split(",").map((s) => s.trim());
  const out: T[] = [];
  for (const item of items) {
    const v = parse(item);
    if (v === undefined) throw fail(`${name} must be a comma-separated list of ${what}, got "${item.slice(0, 40)}"`);
    out.push(v);
  }
  if (out.length === 0 || out.length > 10) throw fail(`${name} must list 1 to 10 entries`);
  return out;
}

export const parseFormat = (s: string): ThumbnailFormat | undefined => {
  const f = s.toLowerCase() === "jpg" ? "jpeg" : s.toLowerCase();
  return (FORMATS as readonly string[]).includes(f) ? (f as ThumbnailFormat) : undefined;
};
