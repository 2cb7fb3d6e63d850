import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { context, defaultTextMapSetter } from "@opentelemetry/api";
import type { Transaction } from "kysely";
import { v7 as uuidv7 } from "uuid";
import type { Database } from "../db/schema.js";
import { traceContext } from "../telemetry/trace-context.js";
import { encodeJson } from "./cloudevents.js";

// Events are written here, in the transaction of the change they describe —
// never published from a request handler. The relay publishes what committed.

export interface NewEvent<Desc extends DescMessage> {
  videoId: string;
  // The video's event_sequence after this write.
  sequence: number | string;
  schema: Desc;
  payload: MessageShape<Desc>;
  time: Date;
}

export function appendEvent<Desc extends DescMessage>(trx: Transaction<Database>, event: NewEvent<Desc>) {
  // The active span is the call's (when tracing is on); consumers continue its trace.
  const carrier: { traceparent?: string; tracestate?: string } = {};
  traceContext.inject(context.active(), carrier, defaultTextMapSetter);
  return trx
    .insertInto("outbox")
    .values({
      event_id: uuidv7(),
      video_id: event.videoId,
      sequence: event.sequence,
      type: event.schema.typeName,
      payload: toBinary(event.schema, event.payload),
      // Encoded now, once, rather than by the relay per publish (V6). Always,
      // whatever EVENTS_FORMAT says: the format may change between this write
      // and the publish (a config change, a rolling deploy), and the binary
      // encoding is the payload itself.
      payload_json: encodeJson(event.schema, event.payload),
      create_time: event.time,
      trace_parent: carrier.traceparent ?? null,
      trace_state: carrier.tracestate ?? null,
    })
    .execute();
}
