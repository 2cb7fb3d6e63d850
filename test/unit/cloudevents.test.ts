import { create, fromJsonString, toBinary } from "@bufbuild/protobuf";
import t from "tap";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import { UndecodableEvent, encodeJson, toCloudEvent, type StoredEvent } from "../../server/events/cloudevents.js";

// The data of a published event: the JSON stored when it was written, or —
// for events stored without it, or EVENTS_FORMAT=protobuf — the binary payload.

const message = create(VideoUpdatedSchema, { video: { id: "0198c1e2-0000-7000-8000-0000000000a1", title: "stored" }, updateMask: { paths: ["title"] } });
const stored = (over: Partial<StoredEvent> = {}): StoredEvent => ({
  id: "1",
  event_id: "0198c1e2-0000-7000-8000-000000000001",
  video_id: "0198c1e2-0000-7000-8000-0000000000a1",
  sequence: "2",
  type: VideoUpdatedSchema.typeName,
  payload: toBinary(VideoUpdatedSchema, message),
  payload_json: encodeJson(VideoUpdatedSchema, message),
  create_time: new Date("2025-01-01T00:00:00Z"),
  trace_parent: null,
  trace_state: null,
  ...over,
});

t.test("JSON stored at write time is sent as it is", async (t) => {
  const e = toCloudEvent(stored({ payload_json: '{"video":{"title":"as stored"}}' }), "json");
  t.equal(e.data.toString(), '{"video":{"title":"as stored"}}');
  t.equal(e.attributes["content-type"], "application/json");
});

t.test("an event stored without JSON is encoded from its payload, to the same bytes", async (t) => {
  const e = toCloudEvent(stored({ payload_json: null }), "json");
  t.equal(e.data.toString(), encodeJson(VideoUpdatedSchema, message));
  t.equal(fromJsonString(VideoUpdatedSchema, e.data.toString()).video?.title, "stored");
});

t.test("EVENTS_FORMAT=protobuf sends the binary payload whatever JSON is stored", async (t) => {
  const e = toCloudEvent(stored(), "protobuf");
  t.same([...e.data], [...toBinary(VideoUpdatedSchema, message)]);
  t.equal(e.attributes["content-type"], "application/protobuf");
});

t.test("an unknown type cannot be published, stored JSON or not", async (t) => {
  const thrown = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e;
    }
  };
  t.type(thrown(() => toCloudEvent(stored({ type: "video.v1.VideoExploded" }), "json")), UndecodableEvent, "unknown type, JSON stored");
  t.type(thrown(() => toCloudEvent(stored({ payload: new Uint8Array([0x0a, 0x05, 0xff]) }), "protobuf")), UndecodableEvent, "undecodable payload");
});
