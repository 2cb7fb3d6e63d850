-- Videos and their metadata. Enum columns hold the proto enum names without
-- their prefix, lower-cased ('pending_upload', 'public'), so SQL stays readable.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE videos (
  id           uuid PRIMARY KEY,
  title        text        NOT NULL,
  description  text        NOT NULL DEFAULT '',
  tags         text[]      NOT NULL DEFAULT '{}',
  labels       jsonb       NOT NULL DEFAULT '{}',
  visibility   text        NOT NULL CHECK (visibility IN ('private', 'unlisted', 'public')),
  state        text        NOT NULL CHECK (state IN ('pending_upload', 'uploaded', 'processing', 'ready', 'failed')),
  owner_id     text        NOT NULL,
  source       jsonb,
  etag         text        NOT NULL,
  create_time  timestamptz NOT NULL,
  update_time  timestamptz NOT NULL
);

-- Keyset pagination: every order_by is (sort column, id); a btree serves both directions.
CREATE INDEX videos_create_time_id ON videos (create_time, id);
CREATE INDEX videos_update_time_id ON videos (update_time, id);
CREATE INDEX videos_title_id ON videos (title, id);
-- Equality filters, each combined with the default order.
CREATE INDEX videos_owner_create_time ON videos (owner_id, create_time, id);
CREATE INDEX videos_state_create_time ON videos (state, create_time, id);
CREATE INDEX videos_visibility_create_time ON videos (visibility, create_time, id);
-- Containment filters: tags @> ARRAY[...], labels @> '{"k":"v"}'.
CREATE INDEX videos_tags ON videos USING gin (tags);
CREATE INDEX videos_labels ON videos USING gin (labels jsonb_path_ops);
-- q: case-insensitive title substring (ILIKE '%q%').
CREATE INDEX videos_title_trgm ON videos USING gin (title gin_trgm_ops);

-- AIP-155: a CreateVideo request_id is remembered with a fingerprint of its
-- body, so a replay returns the original video and a reuse with another body
-- is refused. Kept apart from videos so a replay after delete still answers.
CREATE TABLE video_create_requests (
  request_id   uuid PRIMARY KEY,
  owner_id     text        NOT NULL,
  fingerprint  text        NOT NULL,
  video_id     uuid        NOT NULL,
  create_time  timestamptz NOT NULL
);
