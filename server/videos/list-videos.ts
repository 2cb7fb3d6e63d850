import { toBinary } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { VideoSchema } from "../../gen/video/v1/video_pb.js";
import type { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { assertMayRead, seesEverything } from "../auth/policy.js";
import type { AppContext } from "../context.js";
import { invalidArgument } from "../errors.js";
import { toVideo } from "./convert.js";
import { MAX_PAGE_BYTES, bytesAtMost, listQuery, pageLength, pageToken } from "./list-query.js";
import { cursorOf, videos } from "./repository.js";

export default (ctx: AppContext): Partial<ServiceImpl<typeof VideoService>> => ({
  async listVideos(req, hc) {
    const caller = callerOf(hc);
    assertMayRead(caller);
    const { query, violations } = listQuery(req);
    if (violations.length > 0) throw invalidArgument(violations);
    // Unlisted videos are reachable by id only; lists show public ones and the caller's own.
    const rows = await videos.list(ctx.db, query, seesEverything(caller) ? undefined : caller.subject);
    const found = rows.slice(0, query.pageSize);
    const page = found.map(toVideo);
    // Measured exactly (each video's bytes, field tag and length) only when
    // the cheap bound says the page might be too large.
    const mayBeTooLarge = found.reduce((sum, row) => sum + bytesAtMost(row), 0) > MAX_PAGE_BYTES;
    const n = mayBeTooLarge ? pageLength(page.map((v) => toBinary(VideoSchema, v).length + 6), MAX_PAGE_BYTES) : page.length;
    const more = rows.length > n;
    return {
      videos: page.slice(0, n),
      nextPageToken: more ? pageToken.encode(query.fingerprint, cursorOf(query, rows[n - 1])) : "",
    };
  },
});
