import { createRegistry, fromBinary, toJsonString, type DescMessage, type Message } from "@bufbuild/protobuf";
import type { Selectable } from "kysely";
import { file_video_v1_events } from "../../gen/video/v1/events_pb.js";
import type { OutboxTable } from "../db/schema.js";

// CloudEvents 1.0 in binary content mode over the Pub/Sub protocol binding
// (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/pubsub-protocol-binding.md):
// context attributes become `ce-` message attributes, data is the message body.

export const EVENT_SOURCE = "//video-management-service/video.v1.VideoService";

const registry = createRegistry(file_video_v1_events);

export type EventsFormat = "json" | "protobuf";

/**
 * An outbox row as the relay reads it. Its binary payload may be left out
 * (null) when the stored JSON is what gets sent.
 */
export type StoredEvent = Pick<
  Selectable<OutboxTable>,
  "id" | "event_id" | "video_id" | "sequence" | "type" | "payload_json" | "create_time" | "trace_parent" | "trace_state"
> & { payload: Uint8Array | null };

export interface CloudEvent {
  attributes: Record<string, string>;
  data: Buffer;
  orderingKey: string;
}

export class UndecodableEvent extends Error {}

/** The message schema of an event type, or an UndecodableEvent. */
export function eventSchema(type: string): DescMessage {
  const desc = registry.getMessage(type);
  if (!desc) throw new UndecodableEvent(`unknown event type "${type}"`);
  return desc;
}

export function decodePayload(event: Pick<StoredEvent, "type" | "payload">): Message {
  const desc = eventSchema(event.type);
  if (!event.payload) throw new UndecodableEvent(`${event.type} has no payload`);
  try {
    return fromBinary(desc, event.payload);
  } catch (e) {
    throw new UndecodableEvent(`payload of ${event.type} does not decode: ${(e as Error).message}`);
  }
}

/** An event message as proto3 JSON, the `application/json` data of its CloudEvent. */
export function encodeJson(desc: DescMessage, message: Message): string {
  return toJsonString(desc, message, { registry });
}

/**
 * The CloudEvent of a stored event. Its data in the configured format: the
 * JSON encoded when the event was written, if it was; otherwise encoded here
 * from the binary payload (events written before payload_json existed or by
 * other means), which is also checked to decode.
 */
export function toCloudEvent(event: StoredEvent, format: EventsFormat): CloudEvent {
  const desc = eventSchema(event.type);
  let data: Buffer;
  if (format === "json") data = Buffer.from(event.payload_json ?? encodeJson(desc, decodePayload(event)));
  else {
    decodePayload(event);
    data = Buffer.from(event.payload!);
  }
  return {
    attributes: {
      "ce-specversion": "1.0",
      "ce-id": event.event_id,
      "ce-source": EVENT_SOURCE,
      "ce-type": event.type,
      "ce-subject": event.video_id,
      "ce-time": new Date(event.create_time).toISOString(),
      "ce-sequence": String(event.sequence),
      "content-type": format === "json" ? "application/json" : "application/protobuf",
      // CloudEvents distributed tracing extension: the trace of the write.
      ...(event.trace_parent ? { "ce-traceparent": event.trace_parent } : {}),
      ...(event.trace_parent && event.trace_state ? { "ce-tracestate": event.trace_state } : {}),
    },
    data,
    orderingKey: event.video_id,
  };
}
