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
  } as ServiceImpl<typeof VideoService>;
  // One handler per method, so UploadVideoContent can take larger messages
  // (a 4 MiB chunk each) than MAX_BODY_BYTES allows every other call;
  // connect-es sets readMaxBytes per service or per method, not per message.
  const { uploadVideoContent: upload, ...rest } = VideoService.method;
  for (const method of Object.values(rest)) router.rpc(method, impl[method.localName as keyof typeof impl] as never);
  router.rpc(upload, impl.uploadVideoContent, { readMaxBytes: Math.max(ctx.cfg.limits.maxBodyBytes, MAX_CONTENT_MESSAGE_BYTES) });
};
