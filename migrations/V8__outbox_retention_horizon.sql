-- How far retention has deleted the published stream (issue #4). A consumer
-- whose cursor is older than this may have missed events that are gone;
-- ListEvents and WatchEvents refuse such a cursor (OUT_OF_RANGE) instead of
-- resuming silently after the gap. One row; the retention clean-up raises
-- horizon in the statement that deletes.
CREATE TABLE outbox_retention (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  horizon   bigint  NOT NULL
);

-- What was deleted before this migration is not recorded: everything before
-- the oldest position still there counts as deleted (with nothing published
-- left, everything drawn so far).
INSERT INTO outbox_retention (horizon)
  SELECT coalesce(
    (SELECT min(position) - 1 FROM outbox_published),
    (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_publish_position)
  );
