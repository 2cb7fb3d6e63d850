import type { Video } from "../../gen/video/v1/video_pb.js";
import type { AppContext } from "../context.js";
import type { VideoStateColumn } from "../db/schema.js";
import { failedPrecondition, notFound } from "../errors.js";
import { videos } from "../videos/repository.js";
import { legalTransition } from "./processing-rules.js";
import { writeVideo } from "./video-write.js";

/** Moves a video to `to` (StartProcessing, FinishProcessing) with VideoUpdated; any other transition is FAILED_PRECONDITION. */
export async function transition(ctx: AppContext, id: string, to: VideoStateColumn, reason: string): Promise<Video> {
  return ctx.db.transaction().execute(async (trx) => {
    const current = await videos.findForUpdate(trx, id);
    if (!current) throw notFound(`video ${id}`);
    if (!legalTransition(current.state, to)) throw failedPrecondition(`video ${id} is ${current.state}; it cannot move to ${to}`);
    const mask = ["state", ...(reason !== current.failure_reason ? ["failure_reason"] : [])];
    return (await writeVideo(trx, current, { state: to, failure_reason: reason }, mask, ctx.clock())).video;
  });
}
