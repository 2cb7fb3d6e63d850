-- Append-only audit log of admin actions on other callers' videos, written
-- in the same transaction as the change it records.
CREATE TABLE audit_events (
  id           bigserial   PRIMARY KEY,
  event_id     uuid        NOT NULL UNIQUE,
  actor        text        NOT NULL,
  actor_roles  text[]      NOT NULL,
  action       text        NOT NULL,
  video_id     uuid        NOT NULL,
  -- {"field": {"before": …, "after": …}}
  changes      jsonb       NOT NULL,
  request_id   text        NOT NULL,
  trace_id     text        NOT NULL DEFAULT '',
  create_time  timestamptz NOT NULL
);

CREATE INDEX audit_events_video ON audit_events (video_id, id);
CREATE INDEX audit_events_actor ON audit_events (actor, id);

-- Append-only means append-only, whoever connects.
CREATE FUNCTION audit_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only';
END;
$$;

CREATE TRIGGER audit_events_immutable BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_immutable();
