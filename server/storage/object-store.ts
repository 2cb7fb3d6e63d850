import type { Readable } from "node:stream";
import { createContextKey } from "@connectrpc/connect";

// Object storage: S3 (or any S3-compatible store) and, on the embedded
// defaults, the local filesystem with URLs signed and served by this service.
// Keys are derived from ids only (see keys.ts), never from caller strings.

export interface ObjectInfo {
  sizeBytes: number;
  contentType: string | undefined;
  // Lower-case hex SHA-256, when the store verified one on upload.
  checksumSha256: string | undefined;
}

export interface PresignedPut {
  url: string;
  // Headers the client must send exactly as given (they are signed).
  headers: Record<string, string>;
}

export interface StoredObject {
  key: string;
  lastModified: Date;
}

export interface MultipartUpload {
  key: string;
  uploadId: string;
  initiated: Date;
}

/**
 * Set by the transport when a trusted proxy forwarded the address the caller
 * reached this service at (and PUBLIC_BASE_URL is unset): where the
 * filesystem store's signed URLs for this call point.
 */
export const publicBaseUrlKey = createContextKey<string | undefined>(undefined, { description: "public base URL of this call" });

export interface ObjectStore {
  readonly kind: "s3" | "filesystem";
  /**
   * A URL that PUTs exactly sizeBytes (and the checksum, when given) to key.
   * With createOnly it never replaces an object: once one is at key, a PUT
   * through the URL is refused (412) — what keeps a completed upload's
   * object from being swapped through its old URL. baseUrl: where URLs served
   * by this service point, for this caller (the filesystem store; S3 has its own).
   */
  presignPut(key: string, o: { contentType: string; sizeBytes: number; checksumSha256?: string; expiresInS: number; createOnly?: boolean; baseUrl?: string }): Promise<PresignedPut>;
  createMultipartUpload(key: string, contentType: string): Promise<string>;
  /** A URL that PUTs part partNumber of at most sizeBytes (S3: exactly; the length is signed). */
  presignPart(key: string, uploadId: string, partNumber: number, expiresInS: number, sizeBytes: number, baseUrl?: string): Promise<string>;
  /**
   * Completes with every part uploaded so far, in part-number order — only if
   * they add up to expectedSizeBytes (otherwise FAILED_PRECONDITION, and the
   * upload stays open so missing parts can still be sent).
   */
  completeMultipartUpload(key: string, uploadId: string, expectedSizeBytes: number): Promise<void>;
  abortMultipartUpload(key: string, uploadId: string): Promise<void>;
  listMultipartUploads(prefix: string): Promise<MultipartUpload[]>;
  /** When the newest part of a multipart upload landed; undefined while it has none (or the upload is gone). */
  lastPartTime(key: string, uploadId: string): Promise<Date | undefined>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Up to limit objects under prefix whose keys sort after startAfter, in key order. */
  listObjects(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredObject[]>;
  /** Lower-case hex SHA-256 of the stored object, read back in full (streamed, not buffered). */
  sha256(key: string): Promise<string>;
  /** Streams a body of unknown length into the store; aborts cleanly (no orphaned parts) on error or signal. */
  putStream(key: string, body: Readable, contentType: string, signal: AbortSignal): Promise<{ sizeBytes: number; checksumSha256: string }>;
  delete(key: string): Promise<void>;
  /** Stores a small object held in memory (a thumbnail variant), replacing any at that key. */
  put(key: string, body: Uint8Array, contentType: string): Promise<void>;
  /** A signed GET URL valid for expiresInS. */
  presignGet(key: string, expiresInS: number): Promise<string>;
  /**
   * Where ffmpeg can read the object in place, without a full download
   * first: a presigned GET URL on S3, the file itself on the filesystem.
   */
  mediaInput(key: string, expiresInS: number): Promise<string>;
}
