import type { FieldViolation } from "../errors.js";

// Upload input rules (pure).

export const MAX_UPLOAD_BYTES = 256 * 1024 ** 3;
// S3's limits: at most 10,000 parts of at least 5 MiB (the last may be smaller).
export const MAX_PARTS = 10_000;
const MIN_PART = 5 * 1024 * 1024;

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

/** The part size to use: the configured one, raised until the file fits in MAX_PARTS parts. */
export function partSizeFor(size: number, configured: number): number {
  const needed = Math.ceil(size / MAX_PARTS);
  return Math.max(configured, MIN_PART, Math.ceil(needed / MIN_PART) * MIN_PART);
}
