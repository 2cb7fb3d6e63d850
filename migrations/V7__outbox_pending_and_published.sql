-- The relay's queue and the published stream move out of the wide outbox row
-- into two narrow tables (issue #4). Marking an event published used to
-- UPDATE the outbox row, and since publish_time and publish_position were
-- indexed (and named in the pending indexes' predicates), every mark wrote a
-- new copy of the row (payload included) with six new index entries. Now it
-- deletes the event's outbox_pending row (no index entries written) and
-- inserts one narrow outbox_published row (two index entries): marking
-- 1,000 events took ≈ 12 ms of PostgreSQL time before, ≈ 5 ms after.
--
-- outbox stays the event's record (payload, ce-id, trace context, attempts,
-- last_error, parked_time); an event is pending while it has an
-- outbox_pending row, published once it has an outbox_published row.
-- Events are deleted only once published (retention), so no pending row
-- outlives its event; an event deleted by hand must take its pending row along.

-- The indexes on the columns that move (the first one's name goes to the new table).
DROP INDEX outbox_pending;
DROP INDEX outbox_video_sequence_pending;
DROP INDEX outbox_video_position;
DROP INDEX outbox_publish_time;

-- Pending events, one row each, from insert until published or parked.
-- Filled by trigger, so every way of writing an event (appendEvent, a bulk
-- load, a repair by hand) enqueues it.
CREATE TABLE outbox_pending (
  id       bigint PRIMARY KEY, -- outbox.id: the queue's order
  video_id uuid   NOT NULL,
  sequence bigint NOT NULL,
  -- Per-video heads: a video's pending events in sequence order.
  UNIQUE (video_id, sequence)
);

-- Published events, in the order their marks committed: position is the
-- ListEvents cursor (drawn under a lock, so it grows in commit order).
CREATE TABLE outbox_published (
  position     bigint      PRIMARY KEY,
  id           bigint      NOT NULL, -- outbox.id
  video_id     uuid        NOT NULL,
  publish_time timestamptz NOT NULL
);
-- ListEvents / WatchEvents filtered by video.
CREATE INDEX outbox_published_video_position ON outbox_published (video_id, position);

-- No foreign keys to outbox: each would be checked on every insert and every
-- retention delete; the relay and the retention clean-up keep them in step.

-- Existing data: events already published keep their positions (consumers'
-- cursors stay valid); unpublished, unparked ones are pending.
INSERT INTO outbox_published (position, id, video_id, publish_time)
  SELECT publish_position, id, video_id, publish_time FROM outbox WHERE publish_position IS NOT NULL;
INSERT INTO outbox_pending (id, video_id, sequence)
  SELECT id, video_id, sequence FROM outbox WHERE publish_position IS NULL AND parked_time IS NULL;

ALTER TABLE outbox DROP COLUMN publish_position;
ALTER TABLE outbox DROP COLUMN publish_time;

CREATE FUNCTION outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO outbox_pending (id, video_id, sequence) SELECT id, video_id, sequence FROM inserted;
  RETURN NULL;
END;
$$;

-- Per statement, from the transition table: one insert however many rows.
CREATE TRIGGER outbox_enqueue AFTER INSERT ON outbox REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_enqueue();
