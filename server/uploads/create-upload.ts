import type { ServiceImpl } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { v7 as uuidv7 } from "uuid";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { logAudit, recordAdminAction } from "../audit/audit-log.js";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { sourceKey } from "../storage/keys.js";
import { publicBaseUrlKey } from "../storage/object-store.js";
import { isUuid, videoId } from "../videos/rules.js";
import { videos } from "../videos/repository.js";
import { uploads, type UploadRow } from "./repository.js";
import { checksum, contentType, partLength, partSizeFor, sizeBytes } from "./rules.js";

// Presigned URLs are short-lived copies of one session; each call signs anew.
async function sessionUrls(ctx: AppContext, s: UploadRow, baseUrl: string | undefined) {
  const expiresInS = Math.max(1, Math.floor((new Date(s.expire_time).getTime() - ctx.clock().getTime()) / 1000));
  const base = { uploadId: s.id, expireTime: timestampFromDate(new Date(s.expire_time)) };
  if (s.kind === "single") {
    const put = await ctx.store.presignPut(s.object_key, {
      contentType: s.content_type,
      sizeBytes: Number(s.size_bytes),
      checksumSha256: s.checksum_sha256 ?? undefined,
      expiresInS,
      createOnly: true,
      baseUrl,
    });
    return { ...base, url: put.url, requiredHeaders: put.headers };
  }
  const partSize = Number(s.part_size);
  const size = Number(s.size_bytes);
  const count = Math.ceil(size / partSize);
  const parts = [];
  for (let n = 1; n <= count; n++) {
    parts.push({ partNumber: n, url: await ctx.store.presignPart(s.object_key, s.store_upload_id!, n, expiresInS, partLength(n, size, partSize), baseUrl) });
  }
  return { ...base, partSize: BigInt(partSize), parts };
}

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async createUpload(req, hc) {
    const caller = callerOf(hc);
    const out: FieldViolation[] = [];
    const id = videoId(req.id, "id", out);
    const type = contentType(req.contentType, "content_type", out);
    const size = sizeBytes(req.sizeBytes, "size_bytes", out);
    const sha = checksum(req.checksumSha256, "checksum_sha256", out);
    if (req.requestId !== "" && !isUuid(req.requestId)) out.push({ field: "request_id", description: "must be a UUID" });
    if (out.length > 0) throw invalidArgument(out);

    const video = await videos.find(ctx.db, id);
    if (!video) throw notFound(`video ${id}`);
    const access = writeAccess(caller, video, id);
    const requestId = req.requestId === "" ? null : req.requestId.toLowerCase();
    if (requestId) {
      const earlier = await uploads.findByRequest(ctx.db, id, requestId);
      if (earlier) {
        if (earlier.content_type !== type || Number(earlier.size_bytes) !== size || (earlier.checksum_sha256 ?? undefined) !== sha) {
          throw alreadyExists(`request_id ${requestId} was already used for a different upload`);
        }
        return sessionUrls(ctx, earlier, hc.values.get(publicBaseUrlKey));
      }
    }
    if (video.state !== "pending_upload") throw failedPrecondition(`video ${id} is ${video.state}, not waiting for an upload`);

    const now = ctx.clock();
    const uploadId = uuidv7();
    const key = sourceKey(id, uploadId);
    const multipart = size > ctx.cfg.storage.multipartThresholdBytes;
    const partSize = multipart ? partSizeFor(size, ctx.cfg.storage.partSizeBytes) : null;
    // Created before the row: if the insert fails, the reconciler aborts the
    // orphaned multipart upload it finds in the store.
    const storeUploadId = multipart ? await ctx.store.createMultipartUpload(key, type) : null;
    const row = {
      id: uploadId,
      video_id: id,
      state: "open" as const,
      kind: multipart ? ("multipart" as const) : ("single" as const),
      object_key: key,
      store_upload_id: storeUploadId,
      content_type: type,
      size_bytes: size,
      part_size: partSize,
      checksum_sha256: sha ?? null,
      request_id: requestId,
      owner_id: caller.subject,
      expire_time: new Date(now.getTime() + ctx.cfg.storage.uploadExpiryMs),
      create_time: now,
      update_time: now,
    };
    const audit = await ctx.db.transaction().execute(async (trx) => {
      await uploads.insert(trx, row);
      if (access !== "admin") return undefined;
      const after = { upload_id: uploadId, content_type: type, size_bytes: size };
      return recordAdminAction(trx, hc, id, { upload: { before: null, after } }, now);
    });
    logAudit(ctx.logger, audit);
    return sessionUrls(ctx, { ...row, size_bytes: String(size), part_size: partSize === null ? null : String(partSize) }, hc.values.get(publicBaseUrlKey));
  },
});
