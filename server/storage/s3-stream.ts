import { createHash } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from "@aws-sdk/client-s3";
import { streamPartSize } from "../uploads/rules.js";

export interface StreamOptions {
  /** Size of a streamed upload's parts (the first 1,000; see streamPartSize). */
  partSizeBytes: number;
  /** Parts sent at once. */
  partsInFlight: number;
}

/**
 * Streams a body of unknown length into S3: one PutObject when it fits in a
 * part, else a multipart upload of parts sent `partsInFlight` at once.
 *
 * Why not lib-storage's Upload (used for this before): fed a stream, it
 * collects each part from the stream's chunks and Buffer.concat's them — a
 * fresh part-sized allocation and a copy of every byte, with the chunks and
 * the previous parts left for the garbage collector, which V8 reclaims only
 * when the external memory it tracks has grown by tens of MiB. That garbage,
 * not the parts themselves, made the peak RSS of a 1 GiB upload swing from
 * +0 to +69 MiB. Here each chunk is copied once into one of at most
 * partsInFlight + 1 part buffers, reused for the whole upload, so memory
 * stays at those buffers whatever the file size (and they are kept for the
 * next upload: see PartBuffers).
 *
 * Reading stops while every buffer is full or in flight: the body (and,
 * through it, the client's connection) waits for storage. The SHA-256 of the
 * file is taken per part (one call per part, not per chunk), in order.
 *
 * On any failure or on `signal`, the parts in flight are cancelled and
 * awaited, then the multipart upload is aborted, so no part is left behind.
 */
export async function streamToS3(
  client: S3Client,
  target: { Bucket: string; Key: string; ContentType: string },
  body: AsyncIterable<Uint8Array>,
  signal: AbortSignal,
  o: StreamOptions & { buffers: PartBuffers; metadataTimeout: { requestTimeout: number } },
): Promise<{ sizeBytes: number; checksumSha256: string }> {
  const stop = new AbortController();
  const abortSignal = AbortSignal.any([signal, stop.signal]);
  const { Bucket, Key } = target;
  const hash = createHash("sha256");
  const completed: CompletedPart[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  let uploadId: string | undefined;
  let partNumber = 1;
  let partedBytes = 0;
  let partSize = streamPartSize(1, 0, o.partSizeBytes);
  // Buffers larger than the shared ones (parts after the 1,000th, whose size
  // only shrinks from there) stay with this upload and are reused by it.
  const large: Buffer[] = [];
  const take = (size: number) => {
    const i = large.findIndex((b) => b.length >= size);
    return i >= 0 ? large.splice(i, 1)[0]! : o.buffers.take(size);
  };
  const release = (b: Buffer) => (b.length > o.partSizeBytes ? large.push(b) : o.buffers.give(b));
  let part = take(partSize);
  let filled = 0;

  const sendPart = async () => {
    while (inFlight.size >= o.partsInFlight) await Promise.race(inFlight);
    if (failure) throw failure.error;
    abortSignal.throwIfAborted();
    uploadId ??= (await client.send(new CreateMultipartUploadCommand(target), { ...o.metadataTimeout, abortSignal })).UploadId!;
    const PartNumber = partNumber++;
    const buffer = part;
    const data = buffer.subarray(0, filled);
    hash.update(data);
    partedBytes += filled;
    const sending: Promise<void> = client
      .send(new UploadPartCommand({ Bucket, Key, UploadId: uploadId, PartNumber, Body: data }), { abortSignal })
      .then(
        (out) => {
          completed.push({ PartNumber, ETag: out.ETag });
          release(buffer);
        },
        (error: unknown) => {
          failure ??= { error };
        },
      )
      .finally(() => inFlight.delete(sending));
    inFlight.add(sending);
    partSize = streamPartSize(partNumber, partedBytes, o.partSizeBytes);
    part = take(partSize);
    filled = 0;
  };

  try {
    for await (const chunk of body) {
      for (let at = 0; at < chunk.length; ) {
        const n = Math.min(chunk.length - at, partSize - filled);
        part.set(n === chunk.length ? chunk : chunk.subarray(at, at + n), filled);
        filled += n;
        at += n;
        if (filled === partSize) await sendPart();
      }
    }
    if (uploadId === undefined) {
      const data = part.subarray(0, filled);
      hash.update(data);
      await client.send(new PutObjectCommand({ ...target, Body: data }), { abortSignal });
      release(part);
      return { sizeBytes: filled, checksumSha256: hash.digest("hex") };
    }
    if (filled > 0) await sendPart();
    while (inFlight.size > 0) await Promise.race(inFlight);
    if (failure) throw failure.error;
    completed.sort((a, b) => a.PartNumber! - b.PartNumber!);
    await client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: completed } }), { abortSignal });
    release(part);
    return { sizeBytes: partedBytes, checksumSha256: hash.digest("hex") };
  } catch (e) {
    stop.abort();
    await Promise.allSettled(inFlight);
    if (uploadId !== undefined) {
      // The part being filled was never handed to a request (a PutObject's may have been).
      release(part);
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId }), o.metadataTimeout).catch(() => {});
    }
    // A part that failed is why the upload stopped, not the cancellation of its siblings.
    throw failure && (e as Error)?.name === "AbortError" && !signal.aborted ? failure.error : e;
  }
}

/**
 * Part buffers of the configured part size, kept between streamed uploads
 * (at most `keep`): an upload takes its buffers here and gives each back once
 * its part is stored, so a process that streams one upload after another
 * holds one set of buffers instead of allocating a new set per upload and
 * leaving the last one to the garbage collector. Larger parts (over 1,000
 * parts, see streamPartSize) get buffers of their own. A buffer whose part
 * failed is not given back: its request may still be reading it.
 */
export class PartBuffers {
  private readonly free: Buffer[] = [];
  constructor(
    private readonly size: number,
    private readonly keep: number,
  ) {}

  take(size: number): Buffer {
    return (size <= this.size && this.free.pop()) || Buffer.allocUnsafeSlow(Math.max(size, this.size));
  }

  give(buffer: Buffer): void {
    if (buffer.length === this.size && this.free.length < this.keep && !this.free.includes(buffer)) this.free.push(buffer);
  }
}
