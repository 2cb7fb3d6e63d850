-- Media lifecycle (issue 14). Thumbnails are part of a video's metadata, read
-- with every video and changed under its row lock (the etag changes with
-- them), so they live on the row as a jsonb array rather than in a table
-- every read would join. Probe results extend the source jsonb.
ALTER TABLE videos
  ADD COLUMN thumbnails           jsonb NOT NULL DEFAULT '[]',
  ADD COLUMN default_thumbnail_id uuid,
  ADD COLUMN failure_reason       text  NOT NULL DEFAULT '';

-- The media job queue: enqueued in the transaction that makes a video
-- UPLOADED (kind 'probe': probe, then the default thumbnails) or by
-- GenerateThumbnails (kind 'thumbnails'); claimed by any replica with
-- FOR UPDATE SKIP LOCKED. While a job runs, next_attempt_time is its lease:
-- a job whose replica died is claimed again once it passes. Deleting the
-- video deletes (cancels) its jobs.
CREATE TABLE media_jobs (
  id                bigserial   PRIMARY KEY,
  video_id          uuid        NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
  kind              text        NOT NULL CHECK (kind IN ('probe', 'thumbnails')),
  -- The thumbnails (in videos.thumbnails) this job renders.
  thumbnail_ids     uuid[]      NOT NULL DEFAULT '{}',
  state             text        NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
  attempts          integer     NOT NULL DEFAULT 0,
  last_error        text,
  next_attempt_time timestamptz NOT NULL,
  lease_holder      text,
  -- The enqueuing call's trace context: the job's span links to it.
  trace_parent      text,
  trace_state       text,
  create_time       timestamptz NOT NULL,
  update_time       timestamptz NOT NULL
);

CREATE INDEX media_jobs_due ON media_jobs (next_attempt_time) WHERE state IN ('pending', 'running');
CREATE INDEX media_jobs_video ON media_jobs (video_id);
