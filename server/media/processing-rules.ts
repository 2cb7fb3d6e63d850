import { Video_State } from "../../gen/video/v1/video_pb.js";
import type { VideoStateColumn } from "../db/schema.js";
import type { FieldViolation } from "../errors.js";

// The processing transitions the transcoding service reports (pure).

export const MAX_FAILURE_REASON = 1000;

/** The state FinishProcessing moves to, with the reason to store; violations name bad fields. */
export function finishResult(result: Video_State, reason: string, out: FieldViolation[]): { state: "ready" | "failed"; reason: string } {
  const trimmed = reason.trim();
  if (result !== Video_State.READY && result !== Video_State.FAILED) out.push({ field: "result", description: "must be STATE_READY or STATE_FAILED" });
  if (result === Video_State.FAILED && trimmed === "") out.push({ field: "failure_reason", description: "is required with STATE_FAILED" });
  if (result === Video_State.READY && trimmed !== "") out.push({ field: "failure_reason", description: "must be empty with STATE_READY" });
  if ([...trimmed].length > MAX_FAILURE_REASON) out.push({ field: "failure_reason", description: `must be at most ${MAX_FAILURE_REASON} characters` });
  else if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(trimmed)) out.push({ field: "failure_reason", description: "must not contain control characters" });
  return { state: result === Video_State.READY ? "ready" : "failed", reason: trimmed };
}

/** Whether `from` may move to `to` by a processing report. */
export function legalTransition(from: VideoStateColumn, to: VideoStateColumn): boolean {
  if (to === "processing") return from === "uploaded";
  return from === "processing" && (to === "ready" || to === "failed");
}
