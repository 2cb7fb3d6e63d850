import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  type CompleteMultipartUploadCommandInput,
  type CompleteMultipartUploadCommandOutput,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type Part,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { Code, ConnectError } from "@connectrpc/connect";
import { context as otelContext } from "@opentelemetry/api";
import type winston from "winston";
import type { Metrics } from "../metrics.js";
import type { MultipartUpload, ObjectInfo, ObjectStore, PresignedPut, StoredObject } from "./object-store.js";
import { PartBuffers, streamToS3, type StreamOptions } from "./s3-stream.js";
import { storageError } from "./storage-error.js";
import { recordStorageSpan, type StorageCall } from "../telemetry/storage-spans.js";

export interface S3Options {
  bucket: string;
  region: string;
  endpoint: string | undefined;
  forcePathStyle: boolean;
  maxRetries: number;
  transferTimeoutMs: number;
  // Pool of the shared keep-alive agent: enough for DB_POOL_MAX concurrent calls plus streams.
  maxSockets: number;
}

const hexToBase64 = (hex: string) => Buffer.from(hex, "hex").toString("base64");
const base64ToHex = (b64: string) => Buffer.from(b64, "base64").toString("hex");

/**
 * Retries throttling and transient errors up to maxRetries times, for every
 * call. The SDK's standard strategy (ConfiguredRetryStrategy included) also
 * keeps a client-wide retry quota — 500 tokens, 5 to 14 per retry, refilled
 * one per successful call — that a few dozen failed calls of an outage use
 * up; after that nothing was retried until hundreds of calls had succeeded,
 * so S3_MAX_RETRIES silently stopped holding.
 *
 * No retry starts once a call has been trying for RETRY_WINDOW_MS: a store
 * that accepts connections but never answers costs a metadata call about
 * 3 × 10 s and a transfer one S3_TRANSFER_TIMEOUT, not (retries + 1) times it.
 */
class PerCallRetries {
  constructor(
    private readonly maxRetries: number,
    private readonly backoffMs: (attempt: number) => number,
  ) {}

  async acquireInitialRetryToken(_scope: string) {
    return retryToken(0, 0, performance.now());
  }

  async refreshRetryTokenForRetry(token: RetryToken, error: { errorType: string }) {
    const retries = token.getRetryCount();
    const retryable = error.errorType === "THROTTLING" || error.errorType === "TRANSIENT";
    if (!retryable || retries >= this.maxRetries || performance.now() - token.firstAttempt >= RETRY_WINDOW_MS) {
      throw new Error("No retry token available");
    }
    return retryToken(retries + 1, this.backoffMs(retries + 1), token.firstAttempt);
  }

  recordSuccess(_token: unknown) {}
}

const RETRY_WINDOW_MS = 20_000;

/** The retry middleware waits getRetryDelay() ms before the next attempt. */
const retryToken = (retries: number, delayMs: number, firstAttempt: number) => ({ getRetryCount: () => retries, getRetryDelay: () => delayMs, firstAttempt });
type RetryToken = ReturnType<typeof retryToken>;

/**
 * Timeouts. Every call gives up on a store that stays silent (sends and
 * receives nothing) for transferTimeoutMs, and on a connection not made in
 * 3 s. Metadata calls — everything but part uploads, PutObject and
 * CompleteMultipartUpload — are answered at once by a healthy store, so they
 * are also sent with METADATA_TIMEOUT: no answer 10 s after the request
 * started, and the attempt fails. Transfers need the longer silence: the
 * store answers a part only once it has taken it in, and a Complete once it
 * has assembled the object; S3 keeps a slow Complete's connection alive with
 * whitespace, S3-compatible stores (moto, which assembles the object in
 * memory) do not.
 */
const METADATA_TIMEOUT = { requestTimeout: 10_000 };

export function createS3Client(o: S3Options, metrics: Metrics, logger: winston.Logger): S3Client {
  const agentOptions = { keepAlive: true, maxSockets: o.maxSockets };
  const client = new S3Client({
    region: o.region,
    endpoint: o.endpoint,
    forcePathStyle: o.forcePathStyle,
    // Exponential backoff with full jitter, capped at 2 s per wait, so a
    // storage outage fails the call within seconds rather than minutes.
    retryStrategy: new PerCallRetries(o.maxRetries, (attempt) => Math.random() * Math.min(2_000, 100 * 2 ** attempt)),
    // Only read for the amz-sdk-request header ("attempt=1; max=…").
    maxAttempts: o.maxRetries + 1,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: 3_000,
      socketTimeout: o.transferTimeoutMs,
      // requestTimeout (the time until the answer's headers, set per call)
      // only logs a warning when exceeded unless this is set.
      throwOnRequestTimeout: true,
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
    }),
    // S3-compatible stores (moto, LocalStack, MinIO) reject or mangle the
    // default CRC32 trailers; checksums are sent when we ask for them.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  // One observation per operation, wrapping all its retries (metrics, and a
  // span inside a traced call), and one warning line for an operation any
  // attempt of which failed: which operation, how each attempt ended and
  // after how long — what an operator needs to tell a slow store from a dead
  // one or a refused request.
  const failedAttempts = new WeakMap<object, string[]>();
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const started = performance.now();
      const traced = otelContext.active();
      const operation = context.commandName ?? "unknown";
      const failures: string[] = [];
      failedAttempts.set(context, failures);
      let outcome = "ok";
      let metadata: { attempts?: number; httpStatusCode?: number; requestId?: string } | undefined;
      let error: unknown;
      let presigned = false;
      try {
        const out = await next(args);
        metadata = (out.output as { $metadata?: typeof metadata }).$metadata;
        // getSignedUrl runs this stack to build the request it signs instead
        // of sending: no storage call was made, so none is counted.
        presigned = (out.output as { presigned?: unknown }).presigned !== undefined;
        return out;
      } catch (e) {
        error = e;
        outcome = (e as { name?: string }).name ?? "error";
        metadata = (e as { $metadata?: typeof metadata }).$metadata;
        throw e;
      } finally {
        if (!presigned) {
          const seconds = (performance.now() - started) / 1000;
          const attempts = metadata?.attempts ?? 1;
          metrics.s3Requests.inc({ operation, outcome });
          metrics.s3Duration.observe({ operation }, seconds);
          if (attempts > 1) metrics.s3Retries.inc({ operation }, attempts - 1);
          if (failures.length > 0) {
            logger.warn("storage call had failed attempts", { operation, outcome, attempts, failures, duration_ms: Math.round(seconds * 1000) });
          }
          recordStorageSpan(traced, { command: operation, input: args.input as StorageCall["input"], startTime: performance.timeOrigin + started, attempts, metadata, error });
        }
      }
    },
    { step: "initialize", priority: "high", name: "vmsMetrics" },
  );
  // A CompleteMultipartUpload whose answer was lost (timed out, connection
  // reset) may have succeeded; its retry then finds the upload gone and
  // answers NoSuchUpload (AWS documents this). If the object is there with
  // the ETag S3 gives an object completed from exactly these parts — MD5 of
  // the parts' binary MD5s, "-" part count — the earlier attempt did it.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      try {
        return await next(args);
      } catch (e) {
        const err = e as { name?: string; $metadata?: { attempts?: number } };
        if (context.commandName !== "CompleteMultipartUploadCommand" || err.name !== "NoSuchUpload" || (err.$metadata?.attempts ?? 1) < 2) throw e;
        const input = args.input as CompleteMultipartUploadCommandInput;
        const expected = multipartETag(input.MultipartUpload?.Parts ?? []);
        const found = await client
          .send(new HeadObjectCommand({ Bucket: input.Bucket, Key: input.Key }), METADATA_TIMEOUT)
          .then((head) => head.ETag, () => undefined);
        if (!expected || found !== expected) throw e;
        logger.warn("CompleteMultipartUpload was retried and found the upload gone: an earlier attempt completed it", { key: input.Key, etag: found });
        const output: CompleteMultipartUploadCommandOutput = { $metadata: err.$metadata ?? {}, Bucket: input.Bucket, Key: input.Key, ETag: found };
        return { output } as Awaited<ReturnType<typeof next>>;
      }
    },
    { step: "initialize", priority: "low", name: "vmsCompletedEarlier" },
  );
  // Inside the retry middleware: sees every attempt.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const started = performance.now();
      try {
        return await next(args);
      } catch (e) {
        const err = e as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
        const what = [err.name, err.code, err.$metadata?.httpStatusCode].filter(Boolean).join(" ");
        failedAttempts.get(context)?.push(`${what || "error"} after ${Math.round(performance.now() - started)} ms`);
        throw e;
      }
    },
    { step: "finalizeRequest", priority: "low", name: "vmsAttempts" },
  );
  return client;
}

/** The ETag S3 gives an object completed from these parts, or undefined when a part's ETag is not an MD5. */
function multipartETag(parts: { ETag?: string }[]): string | undefined {
  const md5s = parts.map((p) => (p.ETag ?? "").replace(/"/g, ""));
  if (md5s.length === 0 || !md5s.every((m) => /^[0-9a-f]{32}$/i.test(m))) return undefined;
  const digest = createHash("md5").update(Buffer.concat(md5s.map((m) => Buffer.from(m, "hex")))).digest("hex");
  return `"${digest}-${parts.length}"`;
}

export class S3Store implements ObjectStore {
  readonly kind = "s3";
  private readonly partBuffers: PartBuffers;
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly stream: StreamOptions = { partSizeBytes: 8 * 1024 * 1024, partsInFlight: 2 },
  ) {
    this.partBuffers = new PartBuffers(stream.partSizeBytes, stream.partsInFlight + 1);
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw storageError(e);
    }
  }

  async presignPut(key: string, o: { contentType: string; sizeBytes: number; checksumSha256?: string; expiresInS: number; createOnly?: boolean }): Promise<PresignedPut> {
    const command = new PutObjectCommand({
      Bucket: this.bucket,
      Key: key,
      ContentType: o.contentType,
      ContentLength: o.sizeBytes,
      ...(o.checksumSha256 ? { ChecksumSHA256: hexToBase64(o.checksumSha256) } : {}),
      // A conditional write (S3 refuses it with 412 once the key holds an
      // object); signed, so a client cannot leave the header out.
      ...(o.createOnly ? { IfNoneMatch: "*" } : {}),
    });
    const headers: Record<string, string> = { "content-type": o.contentType };
    if (o.checksumSha256) headers["x-amz-checksum-sha256"] = hexToBase64(o.checksumSha256);
    if (o.createOnly) headers["if-none-match"] = "*";
    const url = await getSignedUrl(this.client, command, {
      expiresIn: o.expiresInS,
      signableHeaders: new Set(Object.keys(headers)),
      unhoistableHeaders: new Set(o.checksumSha256 ? ["x-amz-checksum-sha256"] : []),
    });
    return { url, headers };
  }

  async createMultipartUpload(key: string, contentType: string): Promise<string> {
    const out = await this.call(() => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: contentType }), METADATA_TIMEOUT));
    return out.UploadId!;
  }

  presignPart(key: string, uploadId: string, partNumber: number, expiresInS: number, sizeBytes: number): Promise<string> {
    // Content-Length is signed: S3 refuses a part of any other length.
    const command = new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, ContentLength: sizeBytes });
    return getSignedUrl(this.client, command, { expiresIn: expiresInS });
  }

  async completeMultipartUpload(key: string, uploadId: string, expectedSizeBytes: number): Promise<void> {
    const parts = await this.call(() => this.listParts(key, uploadId));
    parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
    const uploaded = parts.reduce((n, p) => n + Number(p.Size ?? 0), 0);
    if (uploaded !== expectedSizeBytes) {
      throw new ConnectError(`the uploaded parts hold ${uploaded} bytes, not the declared ${expectedSizeBytes}`, Code.FailedPrecondition);
    }
    await this.call(() =>
      this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) },
        }),
      ),
    );
  }

  async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }), METADATA_TIMEOUT);
    } catch (e) {
      if ((e as { name?: string }).name === "NoSuchUpload") return;
      throw storageError(e);
    }
  }

  async listMultipartUploads(prefix: string): Promise<MultipartUpload[]> {
    const out: MultipartUpload[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.call(() =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }), METADATA_TIMEOUT),
      );
      for (const u of page.Uploads ?? []) out.push({ key: u.Key!, uploadId: u.UploadId!, initiated: u.Initiated ?? new Date(0) });
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return out;
  }

  async lastPartTime(key: string, uploadId: string): Promise<Date | undefined> {
    let parts: Part[];
    try {
      parts = await this.listParts(key, uploadId);
    } catch (e) {
      if ((e as { name?: string }).name === "NoSuchUpload") return undefined;
      throw storageError(e);
    }
    let newest: Date | undefined;
    for (const p of parts) if (p.LastModified && (!newest || p.LastModified > newest)) newest = p.LastModified;
    return newest;
  }

  /** Every part of a multipart upload, all pages (S3 errors as thrown by the SDK). */
  private async listParts(key: string, uploadId: string): Promise<Part[]> {
    const parts: Part[] = [];
    let marker: string | undefined;
    do {
      const page = await this.client.send(new ListPartsCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }), METADATA_TIMEOUT);
      parts.push(...(page.Parts ?? []));
      marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
    } while (marker);
    return parts;
  }

  async listObjects(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredObject[]> {
    const page = await this.call(() =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, StartAfter: startAfter, MaxKeys: limit }), METADATA_TIMEOUT),
    );
    return (page.Contents ?? []).map((o) => ({ key: o.Key!, lastModified: o.LastModified ?? new Date(0) }));
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key, ChecksumMode: "ENABLED" }), METADATA_TIMEOUT);
      return {
        sizeBytes: Number(out.ContentLength ?? 0),
        contentType: out.ContentType,
        // A multipart object's checksum is a checksum of part checksums, not the file's.
        checksumSha256: out.ChecksumSHA256 && !out.ChecksumSHA256.includes("-") ? base64ToHex(out.ChecksumSHA256) : undefined,
      };
    } catch (e) {
      const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || (e as { name?: string }).name === "NotFound") return undefined;
      throw storageError(e);
    }
  }

  async putStream(key: string, body: Readable, contentType: string, signal: AbortSignal) {
    try {
      return await streamToS3(this.client, { Bucket: this.bucket, Key: key, ContentType: contentType }, body, signal, { ...this.stream, buffers: this.partBuffers, metadataTimeout: METADATA_TIMEOUT });
    } catch (e) {
      if (!body.destroyed) body.destroy();
      throw storageError(e);
    }
  }

  async sha256(key: string): Promise<string> {
    return this.call(async () => {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), METADATA_TIMEOUT);
      const hash = createHash("sha256");
      for await (const chunk of out.Body as AsyncIterable<Uint8Array>) hash.update(chunk);
      return hash.digest("hex");
    });
  }

  async delete(key: string): Promise<void> {
    await this.call(() => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), METADATA_TIMEOUT));
  }

  async put(key: string, body: Uint8Array, contentType: string): Promise<void> {
    await this.call(() => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }), METADATA_TIMEOUT));
  }

  presignGet(key: string, expiresInS: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: expiresInS });
  }

  mediaInput(key: string, expiresInS: number): Promise<string> {
    return this.presignGet(key, expiresInS);
  }

  /** The same client on another bucket (S3_THUMBNAIL_BUCKET). */
  withBucket(bucket: string): S3Store {
    return bucket === this.bucket ? this : new S3Store(this.client, bucket, this.stream);
  }
}

