import type { ServiceImpl } from "@connectrpc/connect";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { assertMayReportProcessing } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { invalidArgument, type FieldViolation } from "../errors.js";
import { videoId } from "../videos/rules.js";
import { finishResult } from "./processing-rules.js";
import { transition } from "./transition.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async finishProcessing(req, hc) {
    assertMayReportProcessing(callerOf(hc));
    const violations: FieldViolation[] = [];
    const id = videoId(req.id, "id", violations);
    const { state, reason } = finishResult(req.result, req.failureReason, violations);
    if (violations.length > 0) throw invalidArgument(violations);
    return transition(ctx, id, state, reason);
  },
});
