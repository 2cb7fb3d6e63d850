import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import type { Kysely, Selectable } from "kysely";
import { EventSchema, EventService, type Event } from "../../gen/video/v1/event_service_pb.js";
import { callerOf } from "../auth/caller.js";
import { assertMayReadEvents } from "../auth/policy.js";
import type { Database, OutboxPublishedTable, OutboxTable } from "../db/schema.js";
import { invalidArgument, outOfRange, type FieldViolation } from "../errors.js";
import { videoId } from "../videos/rules.js";
import { decodePayload } from "./cloudevents.js";
import type { OutboxRelay } from "./relay.js";

// Replay of published events from the outbox history (kept for
// OUTBOX_RETENTION). Only published events are shown, in the order of their
// outbox_published position, which grows in commit order, so a cursor never
// skips one.

const PAGE = { default: 100, max: 1000 };

// Event.payload's oneof case for each event type, read from the contract.
const payloadCase = new Map(
  EventSchema.oneofs[0].fields.map((f) => [f.message!.typeName, f.localName as NonNullable<Event["payload"]["case"]>]),
);

type EventRow = Pick<Selectable<OutboxTable>, "event_id" | "video_id" | "sequence" | "type" | "payload" | "create_time"> &
  Pick<Selectable<OutboxPublishedTable>, "position">;

function toEvent(row: EventRow): Event {
  return create(EventSchema, {
    id: row.event_id,
    type: row.type,
    subject: row.video_id,
    sequence: BigInt(row.sequence),
    time: timestampFromDate(new Date(row.create_time)),
    cursor: String(row.position),
    payload: { case: payloadCase.get(row.type), value: decodePayload(row) } as Event["payload"],
  });
}

function parseFilter(req: { after: string; videoId: string }) {
  const out: FieldViolation[] = [];
  if (req.after !== "" && !/^\d{1,18}$/.test(req.after)) out.push({ field: "after", description: "is not a cursor returned by this service" });
  const id = req.videoId === "" ? undefined : videoId(req.videoId, "video_id", out);
  if (out.length > 0) throw invalidArgument(out);
  // Canonical digits, so "007" and "7" are the same cursor.
  return { after: req.after === "" ? "0" : BigInt(req.after).toString(), videoId: id };
}

/**
 * The events after `after`, read in one snapshot with the retention horizon:
 * a cursor older than the horizon may have missed events that retention has
 * deleted, and is refused rather than resumed after the gap ("0", like an
 * empty cursor, asks for the oldest retained event on).
 */
function pageAfter(db: Kysely<Database>, after: string, video: string | undefined, limit: number) {
  return db
    .transaction()
    .setIsolationLevel("repeatable read")
    .execute(async (trx) => {
      const { horizon } = await trx.selectFrom("outbox_retention").select("horizon").executeTakeFirstOrThrow();
      if (after !== "0" && BigInt(after) < BigInt(horizon)) {
        throw outOfRange({
          field: "after",
          description: `cursor ${after} is older than the retained history: events up to ${horizon} were deleted after OUTBOX_RETENTION; list again from an empty cursor and reconcile`,
        });
      }
      return page(trx, after, video, limit);
    });
}

function page(db: Kysely<Database>, after: string, video: string | undefined, limit: number) {
  let q = db
    .selectFrom("outbox_published as p")
    .innerJoin("outbox as o", "o.id", "p.id")
    .select(["o.event_id", "o.video_id", "o.sequence", "o.type", "o.payload", "o.create_time", "p.position"])
    .where("p.position", ">", after);
  if (video) q = q.where("p.video_id", "=", video);
  return q.orderBy("p.position").limit(limit).execute() as Promise<EventRow[]>;
}

function nextPublication(relay: OutboxRelay, hc: HandlerContext, shutdown: AbortSignal, pollMs: number): Promise<void> {
  return new Promise((resolve) => {
    const signal = AbortSignal.any([hc.signal, shutdown]);
    const done = () => {
      clearTimeout(timer);
      relay.off("published", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    // Events relayed by other replicas are seen by polling.
    const timer = setTimeout(done, pollMs);
    relay.on("published", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

export default (db: () => Kysely<Database>, relay: OutboxRelay, shutdown: AbortSignal) => (router: ConnectRouter) =>
  router.service(EventService, {
    async listEvents(req, hc) {
      assertMayReadEvents(callerOf(hc));
      if (req.pageSize < 0) throw invalidArgument([{ field: "page_size", description: "must not be negative" }]);
      const { after, videoId } = parseFilter(req);
      const size = req.pageSize === 0 ? PAGE.default : Math.min(req.pageSize, PAGE.max);
      const rows = await pageAfter(db(), after, videoId, size);
      return { events: rows.map(toEvent), nextCursor: rows.length > 0 ? String(rows[rows.length - 1].position) : req.after };
    },

    async *watchEvents(req, hc) {
      assertMayReadEvents(callerOf(hc));
      const filter = parseFilter(req);
      const { videoId } = filter;
      let { after } = filter;
      while (!hc.signal.aborted && !shutdown.aborted) {
        const rows = await pageAfter(db(), after, videoId, 500);
        for (const row of rows) yield toEvent(row);
        if (rows.length > 0) after = String(rows[rows.length - 1].position);
        else await nextPublication(relay, hc, shutdown, 1000);
      }
    },
  });
