-- Transactional outbox (CONTRACT.md §3): every event is inserted in the same
-- transaction as the change it describes, then relayed to Pub/Sub.

-- The last event sequence number of each video, bumped under the row lock of
-- the write that emits the event, so sequences never repeat or reorder.
ALTER TABLE videos ADD COLUMN event_sequence bigint NOT NULL DEFAULT 0;

CREATE TABLE outbox (
  id               bigserial   PRIMARY KEY,
  -- ce-id: stable across retries.
  event_id         uuid        NOT NULL UNIQUE,
  video_id         uuid        NOT NULL,
  sequence         bigint      NOT NULL,
  type             text        NOT NULL,
  -- The event message in binary protobuf; encoded to JSON at publish time if configured.
  payload          bytea       NOT NULL,
  create_time      timestamptz NOT NULL,
  -- Position in the published stream: assigned when the relay marks the
  -- event published, under a lock, so it grows in commit order (ListEvents cursor).
  publish_position bigint      UNIQUE,
  publish_time     timestamptz,
  attempts         integer     NOT NULL DEFAULT 0,
  last_error       text,
  -- Set when the event cannot be published at all (undecodable); it is set
  -- aside so it cannot block the rest of the queue.
  parked_time      timestamptz,
  UNIQUE (video_id, sequence)
);

CREATE SEQUENCE outbox_publish_position;

-- The relay's queue: unpublished events in insertion order.
CREATE INDEX outbox_pending ON outbox (id) WHERE publish_time IS NULL AND parked_time IS NULL;
-- Per-video heads and replay by video.
CREATE INDEX outbox_video_sequence_pending ON outbox (video_id, sequence) WHERE publish_time IS NULL AND parked_time IS NULL;
CREATE INDEX outbox_video_position ON outbox (video_id, publish_position) WHERE publish_position IS NOT NULL;
-- Retention clean-up.
CREATE INDEX outbox_publish_time ON outbox (publish_time) WHERE publish_time IS NOT NULL;

-- Wakes the relays when events commit (NOTIFY is delivered at commit).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('outbox', '');
  RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
