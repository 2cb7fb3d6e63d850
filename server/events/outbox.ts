import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { Transaction } from "kysely";
import { v7 as uuidv7 } from "uuid";
import type { Database } from "../db/schema.js";

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
  return trx
    .insertInto("outbox")
    .values({
      event_id: uuidv7(),
      video_id: event.videoId,
      sequence: event.sequence,
      type: event.schema.typeName,
      payload: toBinary(event.schema, event.payload),
      create_time: event.time,
    })
    .execute();
}
