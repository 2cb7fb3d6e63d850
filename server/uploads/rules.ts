import type { FieldViolation } from "../errors.js";

// Upload input rules (pure).

const MiB = 1024 * 1024;
export const MAX_UPLOAD_BYTES = 256 * 1024 * MiB;
// Largest chunk one UploadVideoContent message may carry: clients commonly
// chunk at gRPC's default 4 MiB message size. One message is the most a
// stream buffers before the handler reads it.
export const MAX_CONTENT_CHUNK_BYTES = 4 * MiB;
// The message around such a chunk: its field tag (1 byte) and length (4).
export const MAX_CONTENT_MESSAGE_BYTES = MAX_CONTENT_CHUNK_BYTES + 16;
// S3's limits: at most 10,000 parts of 5 MiB to 5 GiB (the last may be smaller).
export const MAX_PARTS = 10_000;
const MIN_PART = 5 * MiB;
const MAX_PART = 5 * 1024 * MiB;
// CreateUpload signs one URL per part into its response: 1,000 take about
// 0.6 s (8,700 took 5.4 s), and the response stays a few hundred KiB.
export const MAX_PRESIGNED_PARTS = 1_000;
// Streamed uploads keep their configured part size for this many parts.
export const STREAM_PARTS_AT_CONFIGURED_SIZE = 1_000;

const VIDEO_TYPE = /^video\/[a-z0-9][a-z0-9.+-]{0,100}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export function contentType(raw: string, field: string, out: FieldViolation[]): string {
  const value = raw.trim().toLowerCase();
  if (!VIDEO_TYPE.test(value)) out.push({ field, description: "must be a video/* media type" });
  return value;
}

export function sizeBytes(raw: bigint, field: string, out: FieldViolation[]): number {
  if (raw <= 0n) out.push({ field, description: "must be positive" });
  else if (raw > BigInt(MAX_UPLOAD_BYTES)) out.push({ field, description: `must be at most ${MAX_UPLOAD_BYTES} bytes (256 GiB)` });
  return Number(raw);
}

export function checksum(raw: string, field: string, out: FieldViolation[]): string | undefined {
  if (raw === "") return undefined;
  const value = raw.toLowerCase();
  if (!SHA256_HEX.test(value)) out.push({ field, description: "must be a hex SHA-256 (64 hex digits)" });
  return value;
}

/**
 * The part size of a presigned multipart upload of size bytes: the
 * configured one, raised (to whole MiB) until the file fits in
 * MAX_PRESIGNED_PARTS parts — 263 MiB for the largest file, 256 GiB.
 */
export function partSizeFor(size: number, configured: number): number {
  const needed = Math.ceil(Math.ceil(size / MAX_PRESIGNED_PARTS) / MiB) * MiB;
  return Math.min(MAX_PART, Math.max(configured, MIN_PART, needed));
}

/** The length of part partNumber (from 1) of a presigned upload of size bytes: partSize, the last one what is left. */
export function partLength(partNumber: number, size: number, partSize: number): number {
  return Math.min(partSize, size - (partNumber - 1) * partSize);
}

/**
 * The size of part partNumber (from 1) of a streamed upload, whose length is
 * unknown until it ends, after partedBytes were sent in the parts before it.
 * The first STREAM_PARTS_AT_CONFIGURED_SIZE parts have the configured size
 * (7.8 GiB at 8 MiB), so the memory an upload holds — (parts in flight + 1)
 * part buffers — stays small for the common sizes. After that each part is
 * just large enough (in whole MiB) that the parts left could still carry the
 * rest of a MAX_UPLOAD_BYTES upload: no stream the service accepts runs out
 * of S3's 10,000 parts, and the part size never exceeds what the largest
 * upload needs (about 29 MiB at 8 MiB configured: it only shrinks as the
 * stream goes on).
 */
export function streamPartSize(partNumber: number, partedBytes: number, configured: number): number {
  if (partNumber <= STREAM_PARTS_AT_CONFIGURED_SIZE) return configured;
  const pace = Math.ceil((MAX_UPLOAD_BYTES - partedBytes) / (MAX_PARTS - partNumber + 1));
  return Math.min(MAX_PART, Math.max(configured, MIN_PART, Math.ceil(pace / MiB) * MiB));
}
