import { randomBytes } from "node:crypto";
import t from "tap";
import { sql } from "kysely";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Video_State, Video_Visibility, type Video } from "../../gen/video/v1/video_pb.js";
import type { ListVideosRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import {
  DATABASES,
  expectCode,
  expectRestError,
  startTestServer,
  type Asserts,
  type TestServer,
  type VideoClient,
} from "../support/server.js";

// ListVideos (CONTRACT.md §1): every filter, every order_by, page sizes, and
// opaque keyset page tokens, checked against a model of what was written.
// The server runs on a fake clock that ticks one second every two calls, so
// create_time and update_time are known exactly and ties occur.

type T = Asserts;
type ListRequest = MessageInitShape<typeof ListVideosRequestSchema>;

const BASE = Date.parse("2030-01-01T00:00:00Z");
const ORDERS = ["create_time desc", "create_time", "update_time desc", "update_time", "title"] as const;
const SPECIAL_TITLES = ["100% Real", "snake_case name", "Mixed CASE Title", "back\\slash", "Plain title", "Real talk", "50 percent"];

interface World {
  s: TestServer;
  model: Map<string, Video>;
}

const ms = (v: Video, column: "create_time" | "update_time") => timestampDate(column === "create_time" ? v.createTime! : v.updateTime!).getTime();

/** The model's rows in the order the server must return them. */
async function expectedOrder(w: World, rows: Video[], orderBy: string): Promise<string[]> {
  const order = orderBy === "" ? "create_time desc" : orderBy;
  if (order === "title") {
    // Titles sort by the database's collation; the database is the judge of
    // that order, the test judges that paging returns all of it, once, in order.
    const ids = rows.map((r) => r.id);
    if (ids.length === 0) return [];
    const sorted = await w.s.ctx.db.selectFrom("videos").select("id").where("id", "in", ids).orderBy("title").orderBy("id").execute();
    return sorted.map((r) => r.id);
  }
  const [column, dir] = order.split(" ") as ["create_time" | "update_time", string | undefined];
  const sign = dir === "desc" ? -1 : 1;
  return [...rows]
    .sort((a, b) => sign * (ms(a, column) - ms(b, column) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
    .map((r) => r.id);
}

interface Page {
  ids: string[];
  next: string;
}
type Lister = (pageToken: string, pageSize: number) => Promise<Page>;

const grpcLister = (c: VideoClient, req: ListRequest): Lister => async (pageToken, pageSize) => {
  const r = await c.listVideos({ ...req, pageSize, pageToken });
  return { ids: r.videos.map((v) => v.id), next: r.nextPageToken };
};

function restLister(s: TestServer, query: Record<string, string | string[]>): Lister {
  return async (pageToken, pageSize) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) for (const x of [v].flat()) q.append(k, x);
    q.set("page_size", String(pageSize));
    if (pageToken) q.set("page_token", pageToken);
    const r = await s.clients.rest("GET", `/videos?${q}`);
    if (r.status !== 200) throw new Error(`GET /videos?${q}: ${r.status} ${r.text}`);
    return { ids: (r.json.videos ?? []).map((v: { id: string }) => v.id), next: r.json.nextPageToken ?? "" };
  };
}

/** Follows next_page_token to the end; every page but the last must be full. */
async function walk(t: T, list: Lister, pageSize: number, between?: (seen: string[]) => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  let token = "";
  for (let pages = 0; pages < 1000; pages++) {
    const page = await list(token, pageSize);
    seen.push(...page.ids);
    if (page.next === "") return seen;
    if (page.ids.length !== pageSize) t.fail(`page ${pages + 1} has ${page.ids.length} videos but is not the last`);
    token = page.next;
    if (between) await between(seen);
  }
  t.fail("more than 1000 pages");
  return seen;
}

function noDuplicates(t: T, ids: string[], msg: string) {
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  t.same(dupes, [], `${msg}: no video is returned twice`);
}

async function seed(s: TestServer, model: Map<string, Video>) {
  const c = s.clients.grpc;
  const visibilities = [Video_Visibility.PRIVATE, Video_Visibility.UNLISTED, Video_Visibility.PUBLIC];
  for (let i = 0; i < 84; i++) {
    const tags = [i % 2 === 0 ? "even" : "odd", ...(i % 3 === 0 ? ["three"] : []), ...(i % 5 === 0 ? ["five"] : [])];
    const title = i < SPECIAL_TITLES.length ? SPECIAL_TITLES[i] : i % 9 === 0 ? "Same title" : `Clip ${String(i).padStart(3, "0")}`;
    const v = await c.createVideo({
      video: {
        title,
        tags,
        labels: { env: ["prod", "staging", "dev"][i % 3], team: i % 4 === 0 ? "red" : "blue" },
        visibility: visibilities[Math.floor(i / 3) % 3],
      },
    });
    model.set(v.id, v);
  }
  // Later writes to some videos, so that update_time order differs from create_time order.
  const ids = [...model.keys()];
  for (let i = 1; i < ids.length; i += 4) {
    const u = await c.updateVideo({ video: { id: ids[i], description: `updated ${i}` }, updateMask: { paths: ["description"] } });
    model.set(u.id, u);
  }
  // States and owners other than a fresh video's cannot be reached through
  // this API yet; the database fixture sets them.
  for (const [i, id] of ids.entries()) {
    const v = model.get(id)!;
    const state = i % 5 === 1 ? "ready" : i % 5 === 2 ? "failed" : undefined;
    const owner = i % 6 === 0 ? "alice" : i % 6 === 3 ? "bob" : undefined;
    if (!state && !owner) continue;
    await s.ctx.db
      .updateTable("videos")
      .set({ ...(state ? { state } : {}), ...(owner ? { owner_id: owner } : {}) })
      .where("id", "=", id)
      .execute();
    if (state) v.state = state === "ready" ? Video_State.READY : Video_State.FAILED;
    if (owner) v.ownerId = owner;
  }
}

function behaviours(w: () => World) {
  const all = () => [...w().model.values()];
  return {
    async "every order_by pages through the whole set in order, with no duplicates or skips"(t: T) {
      const { s } = w();
      for (const orderBy of ["", ...ORDERS]) {
        const expected = await expectedOrder(w(), all(), orderBy);
        const viaGrpc = await walk(t, grpcLister(s.clients.grpc, { orderBy }), 7);
        t.same(viaGrpc, expected, `gRPC, order_by "${orderBy}"`);
        const viaRest = await walk(t, restLister(s, orderBy ? { order_by: orderBy } : {}), 11);
        t.same(viaRest, expected, `REST, order_by "${orderBy}"`);
      }
      const single = await walk(t, grpcLister(s.clients.connect, { orderBy: "update_time" }), 1);
      t.same(single, await expectedOrder(w(), all(), "update_time"), "page_size 1");
      for (const bad of ["bogus", "title; DROP TABLE videos", "create_time sideways", "id"]) {
        await expectCode(t, s.clients.grpc.listVideos({ orderBy: bad }), Code.InvalidArgument, ["order_by"], `order_by "${bad}"`);
      }
      expectRestError(t, await s.clients.rest("GET", "/videos?order_by=owner_id"), 400, "INVALID_ARGUMENT", ["order_by"], "REST order_by");
    },

    async "every filter returns exactly the matching videos, combined with AND"(t: T) {
      const { s } = w();
      const t0 = BASE + 10_500;
      const t1 = BASE + 30_500;
      const iso = (n: number) => new Date(n).toISOString();
      const cases: [string, ListRequest, Record<string, string | string[]>, (v: Video) => boolean][] = [
        ["state", { state: Video_State.READY }, { state: "STATE_READY" }, (v) => v.state === Video_State.READY],
        ["state pending", { state: Video_State.PENDING_UPLOAD }, { state: "STATE_PENDING_UPLOAD" }, (v) => v.state === Video_State.PENDING_UPLOAD],
        ["visibility", { visibility: Video_Visibility.PUBLIC }, { visibility: "VISIBILITY_PUBLIC" }, (v) => v.visibility === Video_Visibility.PUBLIC],
        ["owner_id", { ownerId: "alice" }, { owner_id: "alice" }, (v) => v.ownerId === "alice"],
        ["owner_id no match", { ownerId: "nobody" }, { owner_id: "nobody" }, () => false],
        ["one tag", { tags: ["three"] }, { tags: "three" }, (v) => v.tags.includes("three")],
        ["tags: must carry all", { tags: ["even", "three"] }, { tags: ["even", "three"] }, (v) => v.tags.includes("even") && v.tags.includes("three")],
        ["tags are normalised like stored tags", { tags: [" EVEN ", "Five"] }, { tags: [" EVEN ", "Five"] }, (v) => v.tags.includes("even") && v.tags.includes("five")],
        ["tags that never meet", { tags: ["even", "odd"] }, { tags: ["even", "odd"] }, () => false],
        ["one label", { labels: ["env=prod"] }, { labels: "env=prod" }, (v) => v.labels.env === "prod"],
        ["labels: must carry all", { labels: ["env=prod", "team=red"] }, { labels: ["env=prod", "team=red"] }, (v) => v.labels.env === "prod" && v.labels.team === "red"],
        ["label value is exact", { labels: ["env=pro"] }, { labels: "env=pro" }, () => false],
        ["create_time_after", { createTimeAfter: timestampFromDate(new Date(t0)) }, { create_time_after: iso(t0) }, (v) => ms(v, "create_time") > t0],
        ["create_time_before", { createTimeBefore: timestampFromDate(new Date(t0)) }, { create_time_before: iso(t0) }, (v) => ms(v, "create_time") < t0],
        [
          "create_time window",
          { createTimeAfter: timestampFromDate(new Date(t0)), createTimeBefore: timestampFromDate(new Date(t1)) },
          { create_time_after: iso(t0), create_time_before: iso(t1) },
          (v) => ms(v, "create_time") > t0 && ms(v, "create_time") < t1,
        ],
        ["q is a case-insensitive substring", { q: "rEaL" }, { q: "rEaL" }, (v) => v.title.toLowerCase().includes("real")],
        ["q: % is a literal", { q: "%" }, { q: "%" }, (v) => v.title.includes("%")],
        ["q: _ is a literal", { q: "_" }, { q: "_" }, (v) => v.title.includes("_")],
        ["q: \\ is a literal", { q: "\\" }, { q: "\\" }, (v) => v.title.includes("\\")],
        ["q: 0% matches only a literal percent", { q: "0%" }, { q: "0%" }, (v) => v.title.includes("0%")],
        ["q with a quote", { q: "' OR '1'='1" }, { q: "' OR '1'='1" }, () => false],
        ["q: clip 01", { q: "clip 01" }, { q: "clip 01" }, (v) => v.title.toLowerCase().includes("clip 01")],
        [
          "everything at once",
          { state: Video_State.PENDING_UPLOAD, visibility: Video_Visibility.UNLISTED, ownerId: "local-developer", tags: ["odd"], labels: ["team=blue"], q: "clip", createTimeAfter: timestampFromDate(new Date(t0)) },
          { state: "STATE_PENDING_UPLOAD", visibility: "VISIBILITY_UNLISTED", owner_id: "local-developer", tags: "odd", labels: "team=blue", q: "clip", create_time_after: iso(t0) },
          (v) =>
            v.state === Video_State.PENDING_UPLOAD &&
            v.visibility === Video_Visibility.UNLISTED &&
            v.ownerId === "local-developer" &&
            v.tags.includes("odd") &&
            v.labels.team === "blue" &&
            v.title.toLowerCase().includes("clip") &&
            ms(v, "create_time") > t0,
        ],
      ];
      for (const [name, req, query, match] of cases) {
        const expected = await expectedOrder(w(), all().filter(match), "");
        if (!name.includes("no match") && !name.includes("never") && !name.includes("exact") && !name.includes("quote")) {
          t.ok(expected.length > 0 && expected.length < all().length, `${name}: the fixture has matching and non-matching videos`);
        }
        t.same(await walk(t, grpcLister(s.clients.grpc, req), 5), expected, `${name} (gRPC)`);
        t.same(await walk(t, restLister(s, query), 5), expected, `${name} (REST)`);
      }
      const titles = (await walk(t, grpcLister(s.clients.grpc, { q: "%" }), 50)).map((id) => w().model.get(id)!.title);
      t.same(titles, ["100% Real"], "q=% finds only the title with a percent sign");
      for (const [name, req] of [
        ["the first instant of year 1", { createTimeAfter: { seconds: -62_135_596_800n } }],
        ["the last second of year 9999", { createTimeBefore: { seconds: 253_402_300_799n } }],
      ] as [string, ListRequest][]) {
        t.equal((await s.clients.grpc.listVideos({ ...req, pageSize: 1 })).videos.length, 1, `${name} is a valid bound`);
      }
      for (const [name, req, fields] of [
        ["label without =", { labels: ["env"] }, ["labels[0]"]],
        ["label with a bad key", { labels: ["ok=1", "Bad Key=1"] }, ["labels[1]"]],
        ["empty tag", { tags: ["ok", " "] }, ["tags[1]"]],
        ["q with a control character", { q: "a\u0001" }, ["q"]],
        ["q too long", { q: "x".repeat(201) }, ["q"]],
        ["state out of range", { state: 42 as Video_State }, ["state"]],
        ["several at once", { labels: ["x"], q: "\u0000", pageSize: -1 }, ["labels[0]", "q", "page_size"]],
        ["create_time_after before year 1", { createTimeAfter: { seconds: -62_200_000_000n } }, ["create_time_after"]],
        ["create_time_before after year 9999", { createTimeBefore: { seconds: 253_402_400_000n } }, ["create_time_before"]],
        ["create_time_after beyond JavaScript's dates", { createTimeAfter: { seconds: 10n ** 15n } }, ["create_time_after"]],
      ] as [string, ListRequest, string[]][]) {
        await expectCode(t, s.clients.grpc.listVideos(req), Code.InvalidArgument, fields, name);
      }
    },

    async "page_size: default 50, negative is INVALID_ARGUMENT"(t: T) {
      const { s } = w();
      t.ok(all().length > 50, "the fixture has more than one default page");
      const expected = await expectedOrder(w(), all(), "");
      for (const [name, c] of [["gRPC", s.clients.grpc], ["Connect", s.clients.connect]] as const) {
        const first = await c.listVideos({});
        t.same(first.videos.map((v) => v.id), expected.slice(0, 50), `${name}: no page_size means 50`);
        const zero = await c.listVideos({ pageSize: 0 });
        t.equal(zero.videos.length, 50, `${name}: page_size 0 means 50`);
        const rest = await c.listVideos({ pageToken: first.nextPageToken });
        t.same(rest.videos.map((v) => v.id), expected.slice(50), `${name}: the second default page holds the rest`);
        t.equal(rest.nextPageToken, "", "and is the last");
        for (const size of [-1, -1000, -2147483648]) {
          await expectCode(t, c.listVideos({ pageSize: size }), Code.InvalidArgument, ["page_size"], `${name}: page_size ${size}`);
        }
      }
      const restDefault = await s.clients.rest("GET", "/videos");
      t.equal(restDefault.json.videos.length, 50, "REST default");
      expectRestError(t, await s.clients.rest("GET", "/videos?page_size=-5"), 400, "INVALID_ARGUMENT", ["page_size"], "REST negative page_size");
      const changed = await c2(s).listVideos({ pageSize: 3 });
      const bigger = await c2(s).listVideos({ pageSize: 10, pageToken: changed.nextPageToken });
      t.same(bigger.videos.map((v) => v.id), expected.slice(3, 13), "page_size may change between pages");
    },

    async "a page token used with other filters or another order is INVALID_ARGUMENT"(t: T) {
      const { s } = w();
      const c = s.clients.grpc;
      const base: ListRequest = { tags: ["even"], orderBy: "title" };
      const page = await c.listVideos({ ...base, pageSize: 3 });
      t.ok(page.nextPageToken, "a token");
      const variants: [string, ListRequest][] = [
        ["order_by", { ...base, orderBy: "create_time" }],
        ["no order_by", { tags: ["even"] }],
        ["tags", { ...base, tags: ["odd"] }],
        ["extra tag", { ...base, tags: ["even", "three"] }],
        ["no filter", { orderBy: "title" }],
        ["state", { ...base, state: Video_State.READY }],
        ["visibility", { ...base, visibility: Video_Visibility.PUBLIC }],
        ["owner_id", { ...base, ownerId: "alice" }],
        ["labels", { ...base, labels: ["env=prod"] }],
        ["q", { ...base, q: "clip" }],
        ["create_time_after", { ...base, createTimeAfter: timestampFromDate(new Date(BASE)) }],
        ["create_time_before", { ...base, createTimeBefore: timestampFromDate(new Date(BASE + 1e9)) }],
      ];
      for (const [name, req] of variants) {
        await expectCode(t, c.listVideos({ ...req, pageToken: page.nextPageToken }), Code.InvalidArgument, ["page_token"], `changed ${name}`);
      }
      expectRestError(
        t,
        await s.clients.rest("GET", `/videos?tags=odd&order_by=title&page_token=${page.nextPageToken}`),
        400,
        "INVALID_ARGUMENT",
        ["page_token"],
        "REST with other filters",
      );
      const same = await c.listVideos({ ...base, pageSize: 3, pageToken: page.nextPageToken });
      t.equal(same.videos.length, 3, "the same query still accepts it");
    },

    async "forged page tokens are INVALID_ARGUMENT, never a server error"(t: T) {
      const { s } = w();
      const c = s.clients.grpc;
      const b64 = (x: string) => Buffer.from(x).toString("base64url");
      const fingerprintOf = async (req: ListRequest) => {
        const tok = (await c.listVideos({ ...req, pageSize: 1 })).nextPageToken;
        return (JSON.parse(Buffer.from(tok, "base64url").toString()) as { f: string }).f;
      };
      const fDefault = await fingerprintOf({});
      const fTitle = await fingerprintOf({ orderBy: "title" });
      const someId = all()[0].id;
      const forged: [string, string, ListRequest?][] = [
        ["random base64", randomBytes(48).toString("base64url")],
        ["random bytes as standard base64", randomBytes(48).toString("base64")],
        ["not base64 at all", "!!!***"],
        ["base64 of junk JSON", b64('{"a":1}')],
        ["base64 of a JSON array", b64("[1,2,3]")],
        ["base64 of JSON null", b64("null")],
        ["base64 of a JSON string", b64('"token"')],
        ["base64 of not JSON", b64("{not json")],
        ["an id that is not a UUID", b64(JSON.stringify({ f: fDefault, v: new Date(BASE).toISOString(), i: "not-a-uuid" }))],
        ["an id that is SQL", b64(JSON.stringify({ f: fDefault, v: new Date(BASE).toISOString(), i: "' OR 1=1 --" }))],
        ["a time that is not a time", b64(JSON.stringify({ f: fDefault, v: "yesterday", i: someId }))],
        ["a time before year 1", b64(JSON.stringify({ f: fDefault, v: "-271821-04-20T00:00:00.000Z", i: someId }))],
        ["a time after year 9999", b64(JSON.stringify({ f: fDefault, v: "+275760-09-13T00:00:00.000Z", i: someId }))],
        ["a title with U+0000", b64(JSON.stringify({ f: fTitle, v: "a\u0000b", i: someId })), { orderBy: "title" }],
        ["numbers for strings", b64(JSON.stringify({ f: fDefault, v: 5, i: 6 }))],
        ["over 1 KiB of padding", b64(JSON.stringify({ f: fDefault, v: new Date(BASE).toISOString(), i: someId, pad: "x".repeat(1100) }))],
        ["over 2 KiB", b64(JSON.stringify({ f: fTitle, v: "x".repeat(3000), i: someId })), { orderBy: "title" }],
        ["100 KB", "A".repeat(100_000)],
      ];
      for (const [name, token, req] of forged) {
        await expectCode(t, c.listVideos({ ...req, pageToken: token }), Code.InvalidArgument, ["page_token"], name);
      }
      expectRestError(t, await s.clients.rest("GET", `/videos?page_token=${encodeURIComponent(forged[0][1])}`), 400, "INVALID_ARGUMENT", ["page_token"], "REST");
      // Every token the server issues is accepted back, even for the longest titles.
      const long = "😀".repeat(199);
      const [a, b] = [await c.createVideo({ video: { title: long + "a" } }), await c.createVideo({ video: { title: long + "b" } })];
      const first = await c.listVideos({ q: long, orderBy: "title", pageSize: 1 });
      t.ok(first.nextPageToken.length > 1024, `a ${first.nextPageToken.length}-character token`);
      const second = await c.listVideos({ q: long, orderBy: "title", pageSize: 1, pageToken: first.nextPageToken });
      t.same([...first.videos, ...second.videos].map((v) => v.id), [a.id, b.id], "is accepted and leads to the next page");
      await c.deleteVideo({ id: a.id });
      await c.deleteVideo({ id: b.id });
      // A title cursor is any string: a hostile one is just a position.
      const sqlish = b64(JSON.stringify({ f: fTitle, v: "') OR 1=1; DROP TABLE videos; --", i: someId }));
      const r = await c.listVideos({ orderBy: "title", pageToken: sqlish });
      t.ok(Array.isArray(r.videos), "a SQL-looking title cursor is only a position");
      t.equal((await c.listVideos({ pageSize: 1 })).videos.length, 1, "the table is still there");
    },

    async "paging stays correct while videos are inserted and deleted between pages"(t: T) {
      const { s, model } = w();
      const c = s.clients.connectH2;
      let n = 0;
      for (const orderBy of ["create_time desc", "create_time", "title"]) {
        const initial = await expectedOrder(w(), [...model.values()], orderBy);
        const deleted = new Set<string>();
        const deletedAhead = new Set<string>();
        const inserted = new Set<string>();
        const seen = await walk(t, grpcLister(c, { orderBy }), 8, async (seenSoFar) => {
          // Delete a video the walk has not reached yet, and one it has.
          const ahead = initial.filter((id) => !seenSoFar.includes(id) && !deleted.has(id));
          for (const id of [ahead[(n * 7) % Math.max(ahead.length, 1)], seenSoFar[0]]) {
            if (!id || deleted.has(id)) continue;
            await c.deleteVideo({ id });
            deleted.add(id);
            if (!seenSoFar.includes(id)) deletedAhead.add(id);
            model.delete(id);
          }
          // Insert videos that sort before, among or after the rest.
          for (const title of n % 2 ? ["AAA inserted", "zzz inserted"] : [`Clip ${n} inserted`]) {
            const v = await c.createVideo({ video: { title: `${title} ${n++}` } });
            inserted.add(v.id);
            model.set(v.id, v);
          }
        });
        noDuplicates(t, seen, orderBy);
        const survivors = initial.filter((id) => !deleted.has(id));
        t.same(survivors.filter((id) => !seen.includes(id)), [], `${orderBy}: every video that existed throughout was seen`);
        t.same(seen.filter((id) => deletedAhead.has(id)), [], `${orderBy}: nothing deleted before it was reached was returned`);
        t.same(seen.filter((id) => !initial.includes(id) && !inserted.has(id)), [], `${orderBy}: nothing unknown was returned`);
        t.ok(deletedAhead.size > 4 && inserted.size > 6, `${orderBy}: the walk was disturbed (${deleted.size} deleted, ${inserted.size} inserted)`);
        // The order of what was seen is still the server's order.
        const seenNow = seen.filter((id) => model.has(id));
        t.same(seenNow, (await expectedOrder(w(), seenNow.map((id) => model.get(id)!), orderBy)), `${orderBy}: in order`);
      }
    },

    async "paging stays correct under truly concurrent inserts and deletes"(t: T) {
      const { s, model } = w();
      const ids = [...model.keys()];
      const victims = new Set(ids.filter((_, i) => i % 3 === 0));
      const survivors = ids.filter((id) => !victims.has(id));
      let walking = true;
      const mutator = (async () => {
        const c = s.clients.grpcWeb;
        let i = 0;
        for (const id of victims) {
          if (!walking && i > 10) break;
          await c.deleteVideo({ id });
          model.delete(id);
          const v = await c.createVideo({ video: { title: `concurrent ${i++}` } });
          model.set(v.id, v);
        }
      })();
      const seen = await walk(t, grpcLister(s.clients.grpc, { orderBy: "create_time" }), 4);
      walking = false;
      await mutator;
      noDuplicates(t, seen, "concurrent");
      t.same(survivors.filter((id) => !seen.includes(id)), [], "every video that was never deleted was seen");
    },

    async "page_size above 1000 is clamped to 1000"(t: T) {
      const { s } = w();
      // 1,005 extra videos, straight into the table: the API would take too long.
      await sql`
        INSERT INTO videos (id, title, visibility, state, owner_id, etag, create_time, update_time)
        SELECT ('01890000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'bulk ' || g, 'private', 'ready', 'bulk', 'e' || g,
               timestamptz '2031-01-01' + g * interval '1 second', timestamptz '2031-01-01' + g * interval '1 second'
        FROM generate_series(1, 1005) AS g`.execute(s.ctx.db);
      try {
        for (const size of [1001, 5000, 2147483647]) {
          const page = await s.clients.grpc.listVideos({ ownerId: "bulk", pageSize: size });
          t.equal(page.videos.length, 1000, `page_size ${size} returns 1000`);
          t.ok(page.nextPageToken, "and a token for the rest");
          const rest = await s.clients.grpc.listVideos({ ownerId: "bulk", pageSize: size, pageToken: page.nextPageToken });
          t.equal(rest.videos.length, 5, "the rest");
          t.equal(rest.nextPageToken, "");
        }
        const exact = await s.clients.grpc.listVideos({ ownerId: "bulk", pageSize: 1000 });
        t.equal(exact.videos.length, 1000);
        const viaRest = await s.clients.rest("GET", "/videos?owner_id=bulk&page_size=100000");
        t.equal(viaRest.json.videos.length, 1000, "REST is clamped too");
      } finally {
        await s.ctx.db.deleteFrom("videos").where("owner_id", "=", "bulk").execute();
      }
    },
  };
}

const c2 = (s: TestServer) => s.clients.grpcJs;

for (const db of DATABASES) {
  t.test(`ListVideos on ${db.kind}`, { skip: db.skip }, async (t) => {
    let tick = 0;
    const s = await startTestServer(t, { database: db.kind, clock: () => new Date(BASE + Math.floor(tick++ / 2) * 1000) });
    const model = new Map<string, Video>();
    await seed(s, model);
    const world: World = { s, model };
    for (const [name, fn] of Object.entries(behaviours(() => world))) {
      await t.test(name, fn);
    }
  });
}

// A page is bounded in bytes too (MAX_PAGE_BYTES, 3 MiB of protobuf), so a
// client with gRPC's default 4 MiB receive limit can read any page. The rule
// is the handler's, the same on every database: PGlite is enough.
t.test("a page stops short of 3 MiB and next_page_token continues after it (gRPC with a 4 MiB receive limit, Connect, REST)", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  // 120 of the largest videos the rules allow (5,000 four-byte characters of
  // description, 64 labels of 256 two-byte characters): about 6 MB in all.
  await sql`
    INSERT INTO videos (id, title, description, labels, visibility, state, owner_id, etag, create_time, update_time)
    SELECT ('01890000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'large ' || g, repeat('😀', 5000),
           (SELECT jsonb_object_agg('k' || i, repeat('é', 256)) FROM generate_series(1, 64) AS i),
           'private', 'ready', 'large', 'e' || g,
           timestamptz '2031-01-01' + g * interval '1 second', timestamptz '2031-01-01' + g * interval '1 second'
    FROM generate_series(1, 120) AS g`.execute(s.ctx.db);
  const all = Array.from({ length: 120 }, (_, i) => `01890000-0000-7000-8000-${(i + 1).toString(16).padStart(12, "0")}`).sort();

  // @grpc/grpc-js refuses a message over 4 MiB (grpc.max_receive_message_length's default).
  for (const [name, client] of [["grpc (@grpc/grpc-js)", s.clients.grpcJs], ["connect", s.clients.connect]] as const) {
    const seen: string[] = [];
    const sizes: number[] = [];
    let token = "";
    do {
      const page = await client.listVideos({ ownerId: "large", pageSize: 1000, pageToken: token });
      seen.push(...page.videos.map((v) => v.id));
      sizes.push(page.videos.length);
      token = page.nextPageToken;
    } while (token && sizes.length < 10);
    t.ok(sizes[0] < 120 && sizes[0] > 10, `${name}: the first page is cut short (${sizes.join(" + ")})`);
    t.same([...seen].sort(), all, `${name}: the pages hold every video once`);
  }
  const seen: string[] = [];
  let token = "";
  for (let pages = 0; pages === 0 || (token && pages < 10); pages++) {
    const page = await s.clients.rest("GET", `/videos?owner_id=large&page_size=1000&page_token=${encodeURIComponent(token)}`);
    t.equal(page.status, 200);
    if (pages === 0) t.ok(page.json.videos.length < 120 && page.json.nextPageToken, "REST: a shorter page and a token");
    seen.push(...page.json.videos.map((v: { id: string }) => v.id));
    token = page.json.nextPageToken;
  }
  t.same(seen.sort(), all, "REST: the pages hold every video once");
});
