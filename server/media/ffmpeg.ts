import { spawn } from "node:child_process";
import type { MediaConfig } from "./settings.js";
import { isTransientToolError, judgeProbe, toolMessage, type FfprobeOutput, type ProbeVerdict } from "./probe-rules.js";

// The media tools, run as child processes reading the stored object in place
// (a presigned URL or the file): never a full download first.

/** A failure worth retrying (the store or the network), or the tools missing. */
export class MediaToolError extends Error {}

export const TOOLS_MISSING = "ffmpeg/ffprobe are not installed: media jobs wait until they are (install Debian's ffmpeg, or set FFMPEG_PATH and FFPROBE_PATH)";

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function run(file: string, args: string[], timeoutMs: number, maxStdout: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs, killSignal: "SIGKILL" });
    const out: Buffer[] = [];
    let size = 0;
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      size += c.length;
      if (size > maxStdout) child.kill("SIGKILL");
      else out.push(c);
    });
    child.stderr.on("data", (c: Buffer) => {
      if (stderr.length < 8192) stderr += c.toString("utf8");
    });
    child.on("error", (e: NodeJS.ErrnoException) => reject(e.code === "ENOENT" ? new MediaToolError(TOOLS_MISSING) : e));
    child.on("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

/** Whether both tools answer; checked once at start-up to say so in the log. */
export async function toolsAvailable(cfg: MediaConfig): Promise<boolean> {
  try {
    const [a, b] = await Promise.all([run(cfg.ffmpegPath, ["-version"], 10_000, 1 << 20), run(cfg.ffprobePath, ["-version"], 10_000, 1 << 20)]);
    return a.code === 0 && b.code === 0;
  } catch {
    return false;
  }
}

const NETWORK_OPTIONS = ["-rw_timeout", "30000000"];
const remote = (input: string) => /^https?:/.test(input);

export async function probe(cfg: MediaConfig, input: string): Promise<ProbeVerdict> {
  const args = ["-v", "error", ...(remote(input) ? NETWORK_OPTIONS : []), "-print_format", "json", "-show_format", "-show_streams", "-i", input];
  const r = await run(cfg.ffprobePath, args, 120_000, 8 << 20);
  if (r.code !== 0) {
    if (r.code === null || isTransientToolError(r.stderr)) throw new MediaToolError(`ffprobe could not read the file: ${toolMessage(r.stderr, input)}`);
    return { ok: false, reason: `the file is not a video ffprobe can read (${toolMessage(r.stderr, input)}); upload a playable video file` };
  }
  let parsed: FfprobeOutput;
  try {
    parsed = JSON.parse(r.stdout.toString("utf8")) as FfprobeOutput;
  } catch {
    return { ok: false, reason: "ffprobe could not describe the file; upload a playable video file" };
  }
  return judgeProbe(parsed);
}

/**
 * One frame at `seconds` as PNG. -ss before -i seeks in the input (fast: to
 * the keyframe before, then decodes up to the time) instead of decoding
 * everything before it. Empty when no frame is there (past the last one).
 */
export async function extractFrame(cfg: MediaConfig, input: string, seconds: number): Promise<Buffer> {
  const args = ["-v", "error", ...(remote(input) ? NETWORK_OPTIONS : []), "-ss", seconds.toFixed(3), "-i", input, "-map", "0:v:0", "-an", "-sn", "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "pipe:1"];
  const r = await run(cfg.ffmpegPath, args, 120_000, 256 << 20);
  if (r.code !== 0) throw new MediaToolError(`ffmpeg could not read a frame at ${seconds.toFixed(3)} s: ${toolMessage(r.stderr, input)}`);
  return r.stdout;
}
