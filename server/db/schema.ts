import type { ColumnType, Generated } from "kysely";

// Row types for the tables in migrations/. Query results and inputs are
// derived from these with Selectable/Insertable/Updateable.

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type Json<T> = ColumnType<T, string, string>;

export type VideoStateColumn = "pending_upload" | "uploaded" | "processing" | "ready" | "failed";
export type VisibilityColumn = "private" | "unlisted" | "public";

export interface SourceColumn {
  objectKey: string;
  sizeBytes: string;
  contentType: string;
  checksumSha256: string;
  uploadTime: string;
  // What ffprobe found (V9; absent until the media job probed the file).
  probe?: ProbeColumn;
}

export interface ProbeColumn {
  durationMs: number;
  width: number;
  height: number;
  videoCodec: string;
  audioCodec: string;
  container: string;
}

export interface ThumbnailVariantColumn {
  width: number;
  height: number;
  format: "webp" | "jpeg" | "png";
  sizeBytes: number;
  objectKey: string;
}

/** One element of videos.thumbnails (V9). */
export interface ThumbnailColumn {
  id: string;
  source: "generated" | "uploaded";
  state: "pending" | "ready" | "failed";
  // Generated ones: an explicit offset, or a share of the duration resolved once probed.
  timeOffsetMs?: number;
  offsetPercent?: number;
  failureReason: string;
  variants: ThumbnailVariantColumn[];
  createTime: string;
}

export interface VideosTable {
  id: string;
  title: string;
  description: string;
  tags: string[];
  labels: Json<Record<string, string>>;
  visibility: VisibilityColumn;
  state: VideoStateColumn;
  owner_id: string;
  source: Json<SourceColumn> | null;
  etag: string;
  create_time: Timestamp;
  update_time: Timestamp;
  event_sequence: ColumnType<string, number | string | undefined, number | string>;
  thumbnails: ColumnType<ThumbnailColumn[], string | undefined, string>;
  default_thumbnail_id: string | null;
  failure_reason: ColumnType<string, string | undefined, string>;
}

export type MediaJobKind = "probe" | "thumbnails";

export interface MediaJobsTable {
  id: Generated<string>;
  video_id: string;
  kind: MediaJobKind;
  thumbnail_ids: ColumnType<string[], string[] | undefined, string[]>;
  state: "pending" | "running" | "succeeded" | "failed";
  attempts: ColumnType<number, number | undefined, number>;
  last_error: string | null;
  next_attempt_time: Timestamp;
  lease_holder: string | null;
  trace_parent: string | null;
  trace_state: string | null;
  create_time: Timestamp;
  update_time: Timestamp;
}

export interface OutboxTable {
  id: Generated<string>;
  event_id: string;
  video_id: string;
  sequence: ColumnType<string, number | string, number | string>;
  type: string;
  payload: Uint8Array;
  payload_json: ColumnType<string | null, string | null | undefined, never>;
  create_time: Timestamp;
  attempts: ColumnType<number, never, number>;
  last_error: ColumnType<string | null, never, string | null>;
  parked_time: ColumnType<Date | null, never, Date | string>;
  trace_parent: ColumnType<string | null, string | null | undefined, never>;
  trace_state: ColumnType<string | null, string | null | undefined, never>;
}

/** Events not yet published nor parked (filled by trigger on insert into outbox). */
export interface OutboxPendingTable {
  id: string;
  video_id: string;
  sequence: ColumnType<string, number | string, never>;
}

/** Published events; position is the ListEvents cursor. */
export interface OutboxPublishedTable {
  position: ColumnType<string, number | string, never>;
  id: string;
  video_id: string;
  publish_time: ColumnType<Date, Date | string, never>;
}

/** One row: the newest position retention has deleted (V8). */
export interface OutboxRetentionTable {
  singleton: ColumnType<boolean, never, never>;
  horizon: ColumnType<string, never, number | string>;
}

export interface VideoCreateRequestsTable {
  request_id: string;
  owner_id: string;
  fingerprint: string;
  video_id: string;
  create_time: Timestamp;
}

export interface FlywaySchemaHistoryTable {
  installed_rank: number;
  version: string | null;
  description: string;
  type: string;
  script: string;
  checksum: number | null;
  installed_by: string;
  installed_on: Generated<Date>;
  execution_time: number;
  success: boolean;
}

export interface AuditEventsTable {
  id: Generated<string>;
  event_id: string;
  actor: string;
  actor_roles: string[];
  action: string;
  video_id: string;
  changes: Json<Record<string, { before: unknown; after: unknown }>>;
  request_id: string;
  trace_id: string;
  create_time: Timestamp;
}

export interface UploadsTable {
  id: string;
  video_id: string;
  state: "open" | "completed" | "aborted";
  kind: "single" | "multipart" | "stream";
  object_key: string;
  store_upload_id: string | null;
  content_type: string;
  size_bytes: ColumnType<string, number | string, number | string>;
  part_size: ColumnType<string | null, number | string | null, number | string | null>;
  checksum_sha256: string | null;
  request_id: string | null;
  owner_id: string;
  expire_time: Timestamp;
  create_time: Timestamp;
  update_time: Timestamp;
}

export interface StorageDeletionsTable {
  id: Generated<string>;
  object_key: string | null;
  store_upload_id: string | null;
  attempts: ColumnType<number, never, number>;
  last_error: ColumnType<string | null, never, string | null>;
  next_attempt_time: Timestamp;
  create_time: Timestamp;
}

export interface LeasesTable {
  name: string;
  holder: string;
  expire_time: Timestamp;
}

export interface Database {
  videos: VideosTable;
  video_create_requests: VideoCreateRequestsTable;
  outbox: OutboxTable;
  outbox_pending: OutboxPendingTable;
  outbox_published: OutboxPublishedTable;
  outbox_retention: OutboxRetentionTable;
  audit_events: AuditEventsTable;
  uploads: UploadsTable;
  storage_deletions: StorageDeletionsTable;
  leases: LeasesTable;
  media_jobs: MediaJobsTable;
  flyway_schema_history: FlywaySchemaHistoryTable;
}
