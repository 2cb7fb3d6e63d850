import { Readable } from "node:stream";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import type { UploadVideoContentRequest, VideoService } from "../../gen/video/v1/video_service_pb.js";
import { logAudit, recordAdminAction, type AuditEntry } from "../audit/audit-log.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { failedPrecondition, invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { sourceKey } from "../storage/keys.js";
import { streamEndedCleanly } from "../transport/envelope-framing.js";
import { videos } from "../videos/repository.js";
import { videoId } from "../videos/rules.js";
import { markUploaded, queueDeletion } from "./finish.js";
import { uploads } from "./repository.js";
import { MAX_UPLOAD_BYTES, checksum, contentType } from "./rules.js";

// Client-streaming upload: metadata first, then chunks, streamed into the
// store as they arrive (a multipart upload for S3, see s3-stream.ts), never
// held in memory.
// Over REST, PUT /videos/{id}/content is transcoded onto this same handler.

// What the stream carried: bytes in whole chunk messages, and whether it was
// seen to end where a message ended. Nothing is committed unless both hold
// and the store took exactly these bytes.
interface Received {
  bytes: number;
  ended: boolean;
}

async function* chunks(it: AsyncIterator<UploadVideoContentRequest>, hc: HandlerContext, received: Received, onBytes: (n: number) => void) {
  let total = 0;
  for (;;) {
    const next = await it.next();
    if (next.done) {
      // The decoder saying "no more messages" is not enough: a stream cut
      // right after an envelope header once looked like this too.
      if (!streamEndedCleanly(hc)) throw new ConnectError("the end of the upload stream could not be verified; nothing was stored", Code.DataLoss);
      received.ended = true;
      return;
    }
    if (next.value.data.case !== "chunk") {
      throw invalidArgument([{ field: "data", description: "only the first message may carry metadata" }]);
    }
    const bytes = next.value.data.value;
    total += bytes.length;
    if (total > MAX_UPLOAD_BYTES) throw invalidArgument([{ field: "data", description: "the upload exceeds 256 GiB" }]);
    onBytes(bytes.length);
    received.bytes = total;
    yield bytes;
  }
}

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async uploadVideoContent(requests, hc) {
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.data.case !== "metadata") {
      throw invalidArgument([{ field: "metadata", description: "the first message must carry the upload's metadata" }]);
    }
    const meta = first.value.data.value;
    const out: FieldViolation[] = [];
    const id = videoId(meta.id, "metadata.id", out);
    const type = contentType(meta.contentType, "metadata.content_type", out);
    const declared = checksum(meta.checksumSha256, "metadata.checksum_sha256", out);
    if (out.length > 0) throw invalidArgument(out);

    const video = await videos.find(ctx.db, id);
    if (!video) throw notFound(`video ${id}`);
    const access = writeAccess(callerOf(hc), video, id);
    if (video.state !== "pending_upload") throw failedPrecondition(`video ${id} is ${video.state}, not waiting for an upload`);

    const uploadId = uuidv7();
    const key = sourceKey(id, uploadId);
    const received: Received = { bytes: 0, ended: false };
    const body = Readable.from(chunks(it, hc, received, (n) => ctx.metrics.uploadBytes.inc({ path: "stream" }, n)), { objectMode: false });
    const stored = await ctx.store.putStream(key, body, type, hc.signal);

    try {
      if (!received.ended || stored.sizeBytes !== received.bytes) {
        throw new ConnectError(`the store took ${stored.sizeBytes} bytes of a stream that carried ${received.bytes}; nothing was committed`, Code.DataLoss);
      }
      if (stored.sizeBytes === 0) throw invalidArgument([{ field: "data", description: "the upload is empty" }]);
      if (declared && declared !== stored.checksumSha256) throw failedPrecondition("the streamed bytes' SHA-256 is not the declared one");
      let audit: AuditEntry | undefined;
      const uploaded = await ctx.db.transaction().execute(async (trx) => {
        const current = await videos.findForUpdate(trx, id);
        if (!current) throw notFound(`video ${id}`);
        if (current.state !== "pending_upload") throw failedPrecondition(`video ${id} is ${current.state}, not waiting for an upload`);
        const now = ctx.clock();
        await uploads.insert(trx, {
          id: uploadId,
          video_id: id,
          state: "completed",
          kind: "stream",
          object_key: key,
          store_upload_id: null,
          content_type: type,
          size_bytes: stored.sizeBytes,
          part_size: null,
          checksum_sha256: stored.checksumSha256,
          request_id: null,
          owner_id: callerOf(hc).subject,
          expire_time: now,
          create_time: now,
          update_time: now,
        });
        const uploaded = await markUploaded(
          trx,
          current,
          { objectKey: key, sizeBytes: String(stored.sizeBytes), contentType: type, checksumSha256: stored.checksumSha256, uploadTime: now.toISOString() },
          now,
        );
        if (access === "admin") {
          audit = await recordAdminAction(trx, hc, id, { state: { before: "STATE_PENDING_UPLOAD", after: "STATE_UPLOADED" }, upload_id: { before: null, after: uploadId } }, now);
        }
        return uploaded;
      });
      logAudit(ctx.logger, audit);
      return uploaded;
    } catch (e) {
      // The object landed but will never be the video's source: remove it.
      await ctx.db.transaction().execute((trx) => queueDeletion(trx, key, null, ctx.clock())).catch(() => {});
      throw e;
    }
  },
});
