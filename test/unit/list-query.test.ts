import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import t from "tap";
import { ListVideosRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { VideoSchema, Video_State, Video_Visibility } from "../../gen/video/v1/video_pb.js";
import type { FieldViolation } from "../../server/errors.js";
import { PAGE_SIZE, bytesAtMost, listQuery, pageLength, pageToken, parseOrderBy, type Cursor, type Order } from "../../server/videos/list-query.js";

// ListVideos request → query (CONTRACT.md "ListVideos", AIP-132/158): page
// size, order_by, filters, and the opaque keyset page token, which is bound to
// the filters and order it was issued for. A forged token is reported as a
// violation with a description; nothing here ever throws.

type Init = Parameters<typeof create<typeof ListVideosRequestSchema>>[1];
const request = (init: Init = {}) => create(ListVideosRequestSchema, init);
const parse = (init: Init = {}) => listQuery(request(init));
const fieldsOf = (v: FieldViolation[]) => v.map((x) => x.field);

const ID = "0190f1c2-7a3b-7cde-8f01-23456789abcd";
const TIME = "2024-05-06T07:08:09.123Z";
const NUL = "\u0000";
const EMOJI = "😀";
const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64url");

/** A token for `init`, as the server would issue it after a row with this cursor. */
function tokenFor(init: Init, cursor: Cursor = { value: TIME, id: ID }): string {
  const { query, violations } = parse(init);
  if (violations.length) throw new Error(`bad fixture: ${JSON.stringify(violations)}`);
  return pageToken.encode(query.fingerprint, cursor);
}

t.test("page_size", async (t) => {
  t.equal(PAGE_SIZE.default, 50);
  t.equal(PAGE_SIZE.max, 1000);
  const size = (pageSize: number) => parse({ pageSize });
  t.equal(size(0).query.pageSize, 50, "unset (0) → default 50");
  t.equal(size(1).query.pageSize, 1);
  t.equal(size(50).query.pageSize, 50);
  t.equal(size(999).query.pageSize, 999);
  t.equal(size(1000).query.pageSize, 1000, "1000 is the maximum");
  t.equal(size(1001).query.pageSize, 1000, "larger is clamped");
  t.equal(size(2 ** 31 - 1).query.pageSize, 1000, "int32 max is clamped");
  for (const n of [0, 1, 1000, 1001]) t.same(size(n).violations, [], `${n} is valid`);
  for (const n of [-1, -50, -(2 ** 31)]) {
    const { violations } = size(n);
    t.same(fieldsOf(violations), ["page_size"], `${n} → INVALID_ARGUMENT on page_size`);
    t.ok(violations[0].description.length > 0);
  }
});

t.test("order_by", async (t) => {
  const order = (raw: string) => {
    const out: FieldViolation[] = [];
    return { order: parseOrderBy(raw, out), out };
  };
  const cases: [string, Order][] = [
    ["", { column: "create_time", desc: true }],
    ["create_time desc", { column: "create_time", desc: true }],
    ["create_time", { column: "create_time", desc: false }],
    ["update_time desc", { column: "update_time", desc: true }],
    ["update_time", { column: "update_time", desc: false }],
    ["title", { column: "title", desc: false }],
    ["  create_time   desc ", { column: "create_time", desc: true }],
    ["CREATE_TIME DESC", { column: "create_time", desc: true }],
    ["create_time asc", { column: "create_time", desc: false }],
    ["create_time\tdesc", { column: "create_time", desc: true }],
  ];
  for (const [raw, expected] of cases) {
    const r = order(raw);
    t.same(r.order, expected, `${JSON.stringify(raw)}`);
    t.same(r.out, [], `${JSON.stringify(raw)} has no violation`);
  }
  t.same(parse({}).query.order, { column: "create_time", desc: true }, "default via listQuery");
  for (const bad of ["id", "owner_id", "create_time desc, id", "create_time descending", "title desc desc", "create_time;drop table videos", "random()", `title${NUL}`, "desc"]) {
    const r = order(bad);
    t.same(fieldsOf(r.out), ["order_by"], `${JSON.stringify(bad)} rejected`);
    t.ok(r.out[0].description.includes("create_time"), "the description lists the allowed values");
  }
  t.same(fieldsOf(parse({ orderBy: "views" }).violations), ["order_by"], "reported by listQuery");
});

t.test("filters", async (t) => {
  t.test("none given: empty filters", async (t) => {
    const { query, violations } = parse();
    t.same(violations, []);
    t.same(query.filters, { tags: [], labels: {} });
    t.equal(query.after, undefined);
  });

  t.test("state and visibility: known values map to columns, unknown numbers rejected", async (t) => {
    t.equal(parse({ state: Video_State.READY }).query.filters.state, "ready");
    t.equal(parse({ state: Video_State.PENDING_UPLOAD }).query.filters.state, "pending_upload");
    t.equal(parse({ visibility: Video_Visibility.PUBLIC }).query.filters.visibility, "public");
    t.same(fieldsOf(parse({ state: 6 as Video_State }).violations), ["state"]);
    t.same(fieldsOf(parse({ state: -1 as Video_State }).violations), ["state"]);
    t.same(fieldsOf(parse({ visibility: 4 as Video_Visibility }).violations), ["visibility"]);
  });

  t.test("owner_id", async (t) => {
    t.equal(parse({ ownerId: "user-1" }).query.filters.ownerId, "user-1");
    t.same(fieldsOf(parse({ ownerId: `u${NUL}` }).violations), ["owner_id"], "NUL never reaches the database");
    t.same(fieldsOf(parse({ ownerId: "u".repeat(10_000) }).violations), ["owner_id"]);
  });

  t.test("tags: normalised like stored tags; bad tags reported by index", async (t) => {
    t.same(parse({ tags: [" Music", "music", "NEWS"] }).query.filters.tags, ["music", "news"]);
    t.same(fieldsOf(parse({ tags: ["ok", "", `a${NUL}`, "x".repeat(65)] }).violations), ["tags[1]", "tags[2]", "tags[3]"]);
  });

  t.test("labels: key=value pairs", async (t) => {
    t.same(parse({ labels: ["env=prod", "team=a=b", "empty="] }).query.filters.labels, { env: "prod", team: "a=b", empty: "" });
    t.same(parse({ labels: ["k=" + "v".repeat(256)] }).violations, [], "256-character value");
    const bad = ["env", "=prod", "Env=prod", "1env=x", "env prod", `env=a${NUL}`, `e${NUL}=a`, "k=" + "v".repeat(257), "k".repeat(64) + "=v", ""];
    const { violations } = parse({ labels: ["ok=1", ...bad] });
    t.same(fieldsOf(violations), bad.map((_, i) => `labels[${i + 1}]`), "each bad pair named by its index");
    for (const v of violations) t.ok(v.description.length > 0);
  });

  t.test("labels: a value is measured in characters, as the stored label is", async (t) => {
    const value = EMOJI.repeat(256);
    t.same(parse({ labels: [`k=${value}`] }).violations, [], "256 emoji are 256 characters");
    t.same(parse({ labels: [`k=${value}`] }).query.filters.labels, { k: value });
  });

  t.test("labels: two values for one key are both required (AND), never one silently dropped", async (t) => {
    const both = parse({ labels: ["env=a", "env=b"] });
    const onlyB = parse({ labels: ["env=b"] });
    t.ok(both.violations.length > 0 || both.query.fingerprint !== onlyB.query.fingerprint, "env=a AND env=b is not the same query as env=b");
  });

  t.test("create_time_after / create_time_before", async (t) => {
    const after = new Date("2024-01-01T00:00:00Z");
    const before = new Date("2024-02-01T00:00:00.5Z");
    const { query, violations } = parse({ createTimeAfter: timestampFromDate(after), createTimeBefore: timestampFromDate(before) });
    t.same(violations, []);
    t.same(query.filters.createTimeAfter, after);
    t.same(query.filters.createTimeBefore, before);
  });

  t.test("a time JavaScript cannot represent is rejected, not thrown", async (t) => {
    for (const field of ["createTimeAfter", "createTimeBefore"] as const) {
      let result: ReturnType<typeof listQuery> | undefined;
      t.doesNotThrow(() => {
        result = parse({ [field]: { $typeName: "google.protobuf.Timestamp", seconds: 10n ** 15n, nanos: 0 } });
      }, `${field}: no throw`);
      t.same(fieldsOf(result?.violations ?? []), [field === "createTimeAfter" ? "create_time_after" : "create_time_before"]);
    }
  });

  t.test("create_time filters outside Timestamp's range (0001–9999) are rejected before they reach PostgreSQL", async (t) => {
    const ancient = parse({ createTimeAfter: { $typeName: "google.protobuf.Timestamp", seconds: -300_000_000_000n, nanos: 0 } });
    t.same(fieldsOf(ancient.violations), ["create_time_after"]);
    const future = parse({ createTimeBefore: { $typeName: "google.protobuf.Timestamp", seconds: 300_000_000_000n, nanos: 0 } });
    t.same(fieldsOf(future.violations), ["create_time_before"]);
  });

  t.test("q", async (t) => {
    t.equal(parse({ q: "Cat %_ video" }).query.filters.q, "Cat %_ video", "kept literally (escaped by the repository)");
    t.same(parse({ q: EMOJI.repeat(200) }).violations, [], "200 characters");
    t.same(fieldsOf(parse({ q: EMOJI.repeat(201) }).violations), ["q"]);
    t.same(fieldsOf(parse({ q: `a${NUL}b` }).violations), ["q"], "NUL never reaches the database");
    t.same(fieldsOf(parse({ q: "a\nb" }).violations), ["q"]);
  });

  t.test("every bad parameter is reported at once", async (t) => {
    const { violations } = parse({ pageSize: -1, orderBy: "nope", state: 9 as Video_State, labels: ["bad"], q: NUL, pageToken: "%%%" });
    t.same(fieldsOf(violations).sort(), ["labels[0]", "order_by", "page_size", "page_token", "q", "state"]);
  });
});

t.test("page token round trip", async (t) => {
  const init: Init = { ownerId: "u1", tags: ["a", "b"], labels: ["env=prod"], state: Video_State.READY, orderBy: "update_time desc" };
  const cursor = { value: TIME, id: ID };
  const token = tokenFor(init, cursor);
  t.match(token, /^[A-Za-z0-9_-]+$/, "URL-safe, no padding");
  const { query, violations } = parse({ ...init, pageToken: token });
  t.same(violations, []);
  t.same(query.after, cursor, "the cursor comes back");

  t.same(parse({ ...init, pageSize: 7, pageToken: token }).violations, [], "page_size may change between pages (AIP-158)");
  t.same(
    parse({ ...init, tags: ["B", " a "], orderBy: "UPDATE_TIME  DESC", pageToken: token }).violations,
    [],
    "equivalent spellings of the same filters and order are the same query",
  );
  t.same(parse({ ...init, labels: ["env=prod"], pageToken: token }).query.after, cursor);

  const titleToken = tokenFor({ orderBy: "title" }, { value: "Any title, even “quoted” \\ ones", id: ID });
  t.same(parse({ orderBy: "title", pageToken: titleToken }).query.after, { value: "Any title, even “quoted” \\ ones", id: ID }, "title cursors are not times");
});

t.test("a token is bound to the filters and order it was issued for", async (t) => {
  const base: Init = { ownerId: "u1", tags: ["a"], labels: ["env=prod"], orderBy: "create_time desc", q: "cat" };
  const token = tokenFor(base);
  t.same(parse({ ...base, pageToken: token }).violations, [], "same query: accepted");
  const changes: [string, Init][] = [
    ["no filters", { ownerId: "", tags: [], labels: [], q: "" }],
    ["another owner", { ownerId: "u2" }],
    ["another tag", { tags: ["a", "b"] }],
    ["another label value", { labels: ["env=dev"] }],
    ["another label key", { labels: ["stage=prod"] }],
    ["a state filter", { state: Video_State.READY }],
    ["a visibility filter", { visibility: Video_Visibility.PUBLIC }],
    ["create_time_after", { createTimeAfter: timestampFromDate(new Date(0)) }],
    ["create_time_before", { createTimeBefore: timestampFromDate(new Date(0)) }],
    ["another q", { q: "dog" }],
    ["ascending order", { orderBy: "create_time" }],
    ["another order column", { orderBy: "update_time desc" }],
    ["title order", { orderBy: "title" }],
  ];
  for (const [what, change] of changes) {
    const { violations, query } = parse(Object.assign({}, base, change, { pageToken: token }) as Init);
    t.same(fieldsOf(violations), ["page_token"], `${what} → INVALID_ARGUMENT`);
    t.match(violations[0]?.description, /different filters or order/, "the description says why");
    t.equal(query.after, undefined, "no cursor is used");
  }
});

t.test("forged tokens are rejected with a description, never a throw", async (t) => {
  const fp = parse().query.fingerprint;
  const forged = (obj: unknown) => b64(JSON.stringify(obj));
  const cases: [string, string][] = [
    ["garbage characters", "%%%not a token%%%"],
    ["standard base64 with padding", Buffer.from(JSON.stringify({ f: fp, v: TIME, i: ID })).toString("base64")],
    ["valid base64url of junk bytes", Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80]).toString("base64url")],
    ["valid base64url of non-JSON text", b64("hello world")],
    ["JSON null", b64("null")],
    ["JSON number", b64("42")],
    ["JSON string", b64('"a string"')],
    ["JSON array", b64(JSON.stringify([fp, TIME, ID]))],
    ["empty object", forged({})],
    ["fingerprint of the wrong type", forged({ f: 1, v: TIME, i: ID })],
    ["value of the wrong type", forged({ f: fp, v: 1714979289123, i: ID })],
    ["id of the wrong type", forged({ f: fp, v: TIME, i: 7 })],
    ["value missing", forged({ f: fp, i: ID })],
    ["non-UUID id", forged({ f: fp, v: TIME, i: "123" })],
    ["SQL in the id", forged({ f: fp, v: TIME, i: "' or 1=1 --" })],
    ["NUL in the id", forged({ f: fp, v: TIME, i: ID + NUL })],
    ["bad time value", forged({ f: fp, v: "not a time", i: ID })],
    ["empty time value", forged({ f: fp, v: "", i: ID })],
    ["wrong fingerprint", forged({ f: "AAAAAAAAAAAAAAAA", v: TIME, i: ID })],
    ["over 1 KiB", forged({ f: fp, v: TIME, i: ID, pad: "x".repeat(1024) })],
    ["huge", "A".repeat(1_000_000)],
    ["a single character", "A"],
  ];
  for (const [what, token] of cases) {
    let result: ReturnType<typeof listQuery> | undefined;
    t.doesNotThrow(() => {
      result = listQuery(request({ pageToken: token }));
    }, `${what}: no throw`);
    t.same(fieldsOf(result?.violations ?? []), ["page_token"], `${what}: rejected on page_token`);
    t.ok((result?.violations[0]?.description.length ?? 0) > 0, `${what}: with a description`);
    t.equal(result?.query.after, undefined, `${what}: no cursor`);
  }
  const valid = forged({ f: fp, v: TIME, i: ID });
  t.same(parse({ pageToken: valid }).query.after, { value: TIME, id: ID }, "control: the same shape with good values is accepted");
});

t.test("random tokens never throw", async (t) => {
  const fp = parse().query.fingerprint;
  const order: Order = { column: "create_time", desc: true };
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  let threw = 0;
  let accepted = 0;
  for (let n = 0; n < 2000; n++) {
    const bytes = Buffer.from(Array.from({ length: Math.floor(rand() * 200) }, () => Math.floor(rand() * 256)));
    const token = n % 2 ? bytes.toString("base64url") : bytes.toString("latin1");
    try {
      if (typeof pageToken.decode(token, fp, order) !== "string") accepted++;
    } catch {
      threw++;
    }
  }
  t.equal(threw, 0, "decode never throws");
  t.equal(accepted, 0, "random bytes are never a usable cursor");
});

t.test("a forged cursor value that PostgreSQL cannot hold is rejected", async (t) => {
  const byTime = parse().query;
  const outOfRange = pageToken.encode(byTime.fingerprint, { value: "-100000-01-01T00:00:00.000Z", id: ID });
  t.same(fieldsOf(parse({ pageToken: outOfRange }).violations), ["page_token"], "time outside PostgreSQL's range");
  const byTitle = parse({ orderBy: "title" }).query;
  const nul = pageToken.encode(byTitle.fingerprint, { value: `a${NUL}`, id: ID });
  t.same(fieldsOf(parse({ orderBy: "title", pageToken: nul }).violations), ["page_token"], "NUL in a title cursor");
});

t.test("every token the server issues can be used again", async (t) => {
  const { query } = parse({ orderBy: "title" });
  const title = EMOJI.repeat(200);
  const token = pageToken.encode(query.fingerprint, { value: title, id: ID });
  const next = parse({ orderBy: "title", pageToken: token });
  t.same(next.violations, [], `a ${token.length}-character token issued by the server is accepted`);
  t.same(next.query.after, { value: title, id: ID });
});

t.test("tokens for the longest ASCII titles stay usable", async (t) => {
  const { query } = parse({ orderBy: "title" });
  const title = "t".repeat(200);
  const token = pageToken.encode(query.fingerprint, { value: title, id: ID });
  t.same(parse({ orderBy: "title", pageToken: token }).query.after, { value: title, id: ID });
});

t.test("pageLength: as many results as fit in the byte budget, at least one", async (t) => {
  t.equal(pageLength([], 100), 0, "no results");
  t.equal(pageLength([10, 20, 30], 100), 3, "all fit");
  t.equal(pageLength([40, 40, 40], 100), 2, "the third would pass the budget");
  t.equal(pageLength([50, 50], 100), 2, "exactly the budget fits");
  t.equal(pageLength([150, 10], 100), 1, "one result larger than the budget still makes a page");
});

t.test("bytesAtMost bounds a row's protobuf size from above", async (t) => {
  const emoji = "😀".repeat(5000);
  const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "é".repeat(256)]));
  const row = { id: "01890000-0000-7000-8000-000000000001", title: "t", description: emoji, tags: ["a", "b"], labels, owner_id: "o", etag: "e", create_time: new Date(), update_time: new Date() };
  const video = create(VideoSchema, { id: row.id, title: row.title, description: row.description, tags: row.tags, labels, ownerId: row.owner_id, etag: row.etag, createTime: { seconds: 4102444800n, nanos: 999999999 }, updateTime: { seconds: 4102444800n, nanos: 999999999 } });
  const exact = toBinary(VideoSchema, video).length;
  t.ok(bytesAtMost(row) >= exact, `${bytesAtMost(row)} >= ${exact}`);
  t.ok(bytesAtMost(row) < 2 * exact, "and not wildly above for multi-byte text");
});
