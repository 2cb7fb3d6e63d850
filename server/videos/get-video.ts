import type { ServiceImpl } from "@connectrpc/connect";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { assertMayRead, visible } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { invalidArgument, notFound, type FieldViolation } from "../errors.js";
import { toVideo } from "./convert.js";
import { videos } from "./repository.js";
import { videoId } from "./rules.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async getVideo(req, hc) {
    const caller = callerOf(hc);
    assertMayRead(caller);
    const violations: FieldViolation[] = [];
    const id = videoId(req.id, "id", violations);
    if (violations.length > 0) throw invalidArgument(violations);
    const row = await videos.find(ctx.db, id);
    if (!row || !visible(caller, row, true)) throw notFound(`video ${id}`);
    return toVideo(row);
  },
});
