import type { ProbeColumn } from "../db/schema.js";

// What ffprobe's JSON says about a file (pure): a playable video's facts, or
// the reason a person can act on why it is not one.

export interface FfprobeOutput {
  streams?: { codec_type?: string; codec_name?: string; width?: number; height?: number; duration?: string; nb_frames?: string; disposition?: { attached_pic?: number }; tags?: { rotate?: string }; side_data_list?: { rotation?: number }[] }[];
  format?: { format_name?: string; duration?: string };
}

export type ProbeVerdict = { ok: true; probe: ProbeColumn } | { ok: false; reason: string };

const STILL_IMAGE_CODECS = new Set(["mjpeg", "png", "bmp", "gif", "webp", "tiff", "jpeg2000", "jpegls", "qoi", "avif"]);
const IMAGE_FORMAT = /(^|,)(image2|[a-z0-9]+_pipe|gif|webp|apng)(,|$)/;

export function judgeProbe(out: FfprobeOutput): ProbeVerdict {
  const streams = out.streams ?? [];
  const format = out.format?.format_name ?? "";
  const video = streams.find((s) => s.codec_type === "video" && !s.disposition?.attached_pic);
  const audio = streams.find((s) => s.codec_type === "audio");
  if (!video) {
    if (audio) return { ok: false, reason: `the file has an audio stream (${audio.codec_name}) but no video stream; upload a video file` };
    return { ok: false, reason: "the file has no video stream; upload a video file (MP4, WebM, MOV…)" };
  }
  if (IMAGE_FORMAT.test(format) || (STILL_IMAGE_CODECS.has(video.codec_name ?? "") && !(Number(video.nb_frames) > 1))) {
    return { ok: false, reason: `the file is a still image (${video.codec_name}), not a video; upload a video file` };
  }
  const seconds = Number(out.format?.duration ?? video.duration);
  if (!(seconds > 0)) return { ok: false, reason: "the file's duration cannot be read; it may be truncated or corrupt — upload it again" };
  if (!(Number(video.width) > 0 && Number(video.height) > 0)) return { ok: false, reason: "the video stream has no picture size; the file may be corrupt — upload it again" };
  // A rotated stream (phones record portrait as rotated landscape) is shown turned.
  const rotation = Math.abs(Number(video.side_data_list?.find((d) => d.rotation !== undefined)?.rotation ?? video.tags?.rotate ?? 0)) % 180;
  const [width, height] = rotation === 90 ? [video.height!, video.width!] : [video.width!, video.height!];
  return {
    ok: true,
    probe: { durationMs: Math.round(seconds * 1000), width, height, videoCodec: video.codec_name ?? "", audioCodec: audio?.codec_name ?? "", container: format },
  };
}

// ffprobe/ffmpeg failures that say the network or the store failed, not the
// file: retried, never held against the upload.
const TRANSIENT = /Connection refused|Connection reset|Connection timed out|timed out|Network is unreachable|Server returned 5\d\d|Server returned 4(03|04|08|29)|Input\/output error|End of file while|Broken pipe/i;

export const isTransientToolError = (stderr: string) => TRANSIENT.test(stderr);

/** The first meaningful line of a tool's stderr, with the input (a signed URL, a path) replaced. */
export function toolMessage(stderr: string, input: string): string {
  const line = stderr.split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "no output";
  return line.split(input).join("<the file>").replace(/https?:\/\/\S+/g, "<url>").slice(0, 300);
}
