-- Upload sessions of raw video files, and the queue of stored objects to
-- remove once their video is deleted.

CREATE TABLE uploads (
  id               uuid        PRIMARY KEY,
  video_id         uuid        NOT NULL,
  -- 'open' → 'completed' or 'aborted' (by the caller, or the reconciler on expiry).
  state            text        NOT NULL CHECK (state IN ('open', 'completed', 'aborted')),
  kind             text        NOT NULL CHECK (kind IN ('single', 'multipart', 'stream')),
  object_key       text        NOT NULL,
  -- The store's multipart upload id, for kind = 'multipart'.
  store_upload_id  text,
  content_type     text        NOT NULL,
  size_bytes       bigint      NOT NULL,
  part_size        bigint,
  checksum_sha256  text,
  request_id       uuid,
  owner_id         text        NOT NULL,
  expire_time      timestamptz NOT NULL,
  create_time      timestamptz NOT NULL,
  update_time      timestamptz NOT NULL
);

CREATE INDEX uploads_video ON uploads (video_id);
CREATE UNIQUE INDEX uploads_request ON uploads (video_id, request_id) WHERE request_id IS NOT NULL;
-- The reconciler's work: open sessions by expiry.
CREATE INDEX uploads_open_expiry ON uploads (expire_time) WHERE state = 'open';

CREATE TABLE storage_deletions (
  id               bigserial   PRIMARY KEY,
  object_key       text,
  -- Set for multipart uploads that must be aborted rather than deleted.
  store_upload_id  text,
  attempts         integer     NOT NULL DEFAULT 0,
  last_error       text,
  next_attempt_time timestamptz NOT NULL,
  create_time      timestamptz NOT NULL
);

CREATE INDEX storage_deletions_due ON storage_deletions (next_attempt_time);

-- Time-bound leadership for work one replica should do at a time (the upload
-- reconciler): the holder renews before expire_time, anyone may take it after.
CREATE TABLE leases (
  name         text        PRIMARY KEY,
  holder       text        NOT NULL,
  expire_time  timestamptz NOT NULL
);

INSERT INTO leases (name, holder, expire_time) VALUES ('upload-reconciler', '', 'epoch');
