import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import type { AppContext } from "../context.js";
import createVideo from "./create-video.js";
import deleteVideo from "./delete-video.js";
import getVideo from "./get-video.js";
import listVideos from "./list-videos.js";
import updateVideo from "./update-video.js";
import abortUpload from "../uploads/abort-upload.js";
import completeUpload from "../uploads/complete-upload.js";
import createUpload from "../uploads/create-upload.js";
import { MAX_CONTENT_MESSAGE_BYTES } from "../uploads/rules.js";
import uploadVideoContent from "../uploads/upload-video-content.js";
import createThumbnail from "../media/create-thumbnail.js";
import deleteThumbnail from "../media/delete-thumbnail.js";
import finishProcessing from "../media/finish-processing.js";
import generateThumbnails from "../media/generate-thumbnails.js";
import startProcessing from "../media/start-processing.js";

export default (ctx: AppContext) => (router: ConnectRouter) => {
  const impl = {
    ...createVideo(ctx),
    ...getVideo(ctx),
    ...listVideos(ctx),
    ...updateVideo(ctx),
    ...deleteVideo(ctx),
    ...createUpload(ctx),
    ...completeUpload(ctx),
    ...abortUpload(ctx),
    ...uploadVideoContent(ctx),
    ...generateThumbnails(ctx),
    ...createThumbnail(ctx),
    ...deleteThumbnail(ctx),
    ...startProcessing(ctx),
    ...finishProcessing(ctx),
  } as ServiceImpl<typeof VideoService>;
  // One handler per method, so two calls can take larger messages than
  // MAX_BODY_BYTES allows every other call (connect-es sets readMaxBytes per
  // service or per method, not per message): UploadVideoContent a 4 MiB chunk
  // each, CreateThumbnail a custom image up to THUMBNAIL_MAX_BYTES.
  const larger: Partial<Record<string, number>> = {
    [VideoService.method.uploadVideoContent.localName]: MAX_CONTENT_MESSAGE_BYTES,
    [VideoService.method.createThumbnail.localName]: ctx.cfg.media.maxBytes * 2 + 64 * 1024,
  };
  for (const method of Object.values(VideoService.method)) {
    const readMaxBytes = Math.max(ctx.cfg.limits.maxBodyBytes, larger[method.localName] ?? 0);
    router.rpc(method, impl[method.localName as keyof typeof impl] as never, { readMaxBytes });
  }
};
