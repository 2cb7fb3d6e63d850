import { Video_State, Video_Visibility } from "../../gen/video/v1/video_pb.js";
import type { VideoStateColumn, VisibilityColumn } from "../db/schema.js";

// Proto enum values ↔ the readable names stored in the database.

const visibilityColumns: Record<number, VisibilityColumn> = {
  [Video_Visibility.PRIVATE]: "private",
  [Video_Visibility.UNLISTED]: "unlisted",
  [Video_Visibility.PUBLIC]: "public",
};

const stateColumns: Record<number, VideoStateColumn> = {
  [Video_State.PENDING_UPLOAD]: "pending_upload",
  [Video_State.UPLOADED]: "uploaded",
  [Video_State.PROCESSING]: "processing",
  [Video_State.READY]: "ready",
  [Video_State.FAILED]: "failed",
};

const invert = <V extends string>(m: Record<number, V>) =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [v, Number(k)])) as Record<V, number>;
const visibilityValues = invert(visibilityColumns);
const stateValues = invert(stateColumns);

export const visibilityColumn = (v: Video_Visibility): VisibilityColumn | undefined => visibilityColumns[v];
export const stateColumn = (s: Video_State): VideoStateColumn | undefined => stateColumns[s];
export const visibilityValue = (c: VisibilityColumn): Video_Visibility => visibilityValues[c];
export const stateValue = (c: VideoStateColumn): Video_State => stateValues[c];
