-- The event's data as proto3 JSON, encoded when the event is written (issue
-- #4): the relay sends it as it is instead of decoding the binary payload and
-- encoding JSON per event at publish time (measured: ≈ 6–10 µs of the relay's
-- ≈ 50 µs of CPU per event; the writer pays it once instead). payload (binary
-- protobuf) stays the event's record: ListEvents reads it, EVENTS_FORMAT=
-- protobuf sends it. NULL for events written before this migration or inserted
-- by other means; the relay encodes those from payload.
ALTER TABLE outbox ADD COLUMN payload_json text;
