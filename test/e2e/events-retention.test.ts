import t from "tap";
import { Code, createClient } from "@connectrpc/connect";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { deleteExpired } from "../../server/events/outbox-queue.js";
import { poll } from "../support/pubsub.js";
import { DATABASES, expectCode, expectRestError, firstMessage, startTestServer } from "../support/server.js";

// A consumer that was away longer than OUTBOX_RETENTION: its cursor points
// before events that retention has deleted. ListEvents and WatchEvents refuse
// it with OUT_OF_RANGE (REST 400) rather than resume after the gap as if
// nothing were missing; an empty cursor (or "0") starts at the oldest retained
// event, and cursors at or after the horizon go on working.

for (const db of DATABASES) {
  t.test(`a cursor older than the retained history is OUT_OF_RANGE (${db.kind})`, { skip: db.skip }, async (t) => {
    const s = await startTestServer(t, { database: db.kind, env: { RELAY_POLL_MS: "50" } });
    const events = createClient(EventService, s.transports.grpc);
    for (const title of ["one", "two", "three"]) await s.clients.grpc.createVideo({ video: { title } });
    const listed = await poll(async () => {
      const page = (await events.listEvents({})).events;
      return page.length >= 3 && page;
    }, 5000, "three events published");
    t.equal(listed.length, 3, "three events published");
    const [first, , last] = listed.map((e) => e.cursor);

    // Retention deletes all three (published before the cutoff).
    await deleteExpired(s.ctx.db, new Date(Date.now() + 60_000));
    t.same((await events.listEvents({})).events, [], "they are gone");

    const refused = await expectCode(t, events.listEvents({ after: first }), Code.OutOfRange, ["after"], "ListEvents after a deleted event");
    t.match(refused?.rawMessage, /older than the retained history.*list again from an empty cursor/, "saying what happened and what to do");
    await expectCode(t, firstMessage(events.watchEvents({ after: first })), Code.OutOfRange, ["after"], "WatchEvents after a deleted event");
    await expectCode(t, events.listEvents({ after: first, videoId: listed[0].subject }), Code.OutOfRange, ["after"], "with a video filter too");
    const rest = await s.clients.rest("GET", `/events?after=${first}`);
    expectRestError(t, rest, 400, "OUT_OF_RANGE", ["after"], "GET /events after a deleted event");

    const atHorizon = await events.listEvents({ after: last });
    t.same([atHorizon.events.length, atHorizon.nextCursor], [0, last], "the last deleted event's cursor is still good: nothing after it was missed");
    t.same((await events.listEvents({ after: `000${last}` })).events, [], "leading zeros are the same cursor");
    t.same((await events.listEvents({ after: "0" })).events, [], '"0", like an empty cursor, starts at the oldest retained event');

    const fourth = await s.clients.grpc.createVideo({ video: { title: "four" } });
    const next = await poll(async () => {
      const page = (await events.listEvents({ after: last })).events;
      return page.length > 0 && page;
    }, 5000, "the fourth event published");
    t.same(next.map((e) => e.subject), [fourth.id], "a consumer at the horizon reads on");
    const watched = await firstMessage(events.watchEvents({ after: last }));
    t.equal(watched?.subject, fourth.id, "and so does a watcher");
  });
}
