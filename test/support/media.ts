import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

// Media fixtures, made by ffmpeg at test time (none are committed): small
// synthetic videos of each container and shape, and files that are not
// videos. backends.sh installs ffmpeg when it is missing.

const run = promisify(execFile);

const LAVFI = (w: number, h: number, s: number) => ["-f", "lavfi", "-i", `testsrc2=size=${w}x${h}:rate=25:duration=${s}`, "-f", "lavfi", "-i", `sine=frequency=440:duration=${s}`];
const H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"];

/** name → ffmpeg arguments before the output file. */
const RECIPES: Record<string, { file: string; args: string[] }> = {
  "mp4-faststart": { file: "a.mp4", args: [...LAVFI(320, 240, 3), ...H264, "-movflags", "+faststart"] },
  "mp4-moov-at-end": { file: "b.mp4", args: [...LAVFI(320, 240, 3), ...H264] },
  "webm-vp9": { file: "c.webm", args: [...LAVFI(320, 240, 3), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k", "-c:a", "libopus", "-shortest"] },
  mov: { file: "d.mov", args: [...LAVFI(320, 240, 3), ...H264] },
  "portrait-9x16": { file: "e.mp4", args: [...LAVFI(360, 640, 3), ...H264] },
  "one-second": { file: "f.mp4", args: [...LAVFI(320, 240, 1), ...H264] },
  "audio-only": { file: "g.mp4", args: ["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac"] },
  "image-renamed": { file: "h.png", args: ["-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1"] },
};

export type Fixture = keyof typeof RECIPES | "corrupt" | "zero-length";

let dir: Promise<string> | undefined;
const made = new Map<string, Promise<Buffer>>();

export function fixture(name: Fixture): Promise<Buffer> {
  let p = made.get(name);
  if (!p) {
    p = (async () => {
      if (name === "zero-length") return Buffer.alloc(0);
      if (name === "corrupt") return Buffer.concat([Buffer.from([0, 0, 0, 0x20, 0x66, 0x74, 0x79, 0x70]), randomBytes(64 * 1024)]);
      dir ??= mkdtemp(join(tmpdir(), "vms-media-"));
      const recipe = RECIPES[name]!;
      const out = join(await dir, recipe.file);
      await run(process.env.FFMPEG_PATH || "ffmpeg", ["-v", "error", "-y", ...recipe.args, out], { timeout: 60_000 });
      return readFile(out);
    })();
    made.set(name, p);
  }
  return p;
}

/** An image made by ffmpeg, for custom thumbnails. */
export async function image(format: "jpeg" | "png" | "webp", w = 640, h = 360): Promise<Buffer> {
  dir ??= mkdtemp(join(tmpdir(), "vms-media-"));
  const out = join(await dir, `img-${w}x${h}.${format === "jpeg" ? "jpg" : format}`);
  await run(process.env.FFMPEG_PATH || "ffmpeg", ["-v", "error", "-y", "-f", "lavfi", "-i", `testsrc2=size=${w}x${h}`, "-frames:v", "1", out], { timeout: 30_000 });
  return readFile(out);
}

export async function removeFixtures(): Promise<void> {
  if (dir) await rm(await dir, { recursive: true, force: true });
}
