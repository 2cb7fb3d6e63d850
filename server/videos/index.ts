import type { ConnectRouter } from "@connectrpc/connect";
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
import uploadVideoContent from "../uploads/upload-video-content.js";
import createThumbnail from "../media/create-thumbnail.js";
import deleteThumbnail from "../media/delete-thumbnail.js";
import finishProcessing from "../media/finish-processing.js";
import generateThumbnails from "../media/generate-thumbnails.js";
import startProcessing from "../media/start-processing.js";

export default (ctx: AppContext) => (router: ConnectRouter) =>
  router
    .service(VideoService, {
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
    ...deleteThumbnail(ctx),
    ...startProcessing(ctx),
    ...finishProcessing(ctx),
    })
    // A custom image may be larger than other requests (THUMBNAIL_MAX_BYTES);
    // registered last, this handler replaces the service's placeholder for it.
    .rpc(VideoService.method.createThumbnail, createThumbnail(ctx).createThumbnail!, { readMaxBytes: Math.max(ctx.cfg.limits.maxBodyBytes, ctx.cfg.media.maxBytes * 2 + 64 * 1024) });
