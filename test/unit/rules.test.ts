import { create } from "@bufbuild/protobuf";
import t from "tap";
import { VideoSchema, Video_State, Video_Visibility, type Video } from "../../gen/video/v1/video_pb.js";
import type { FieldViolation } from "../../server/errors.js";
import { MUTABLE_FIELDS, isUuid, normaliseTags, updateMaskFields, videoFields, videoId } from "../../server/videos/rules.js";

// CONTRACT.md, "The Video resource": every rule on the mutable fields, with
// boundary values on both sides of each limit. "Characters" are Unicode code
// points, so an emoji (two UTF-16 units, four UTF-8 bytes) counts as one.

const EMOJI = "😀"; // U+1F600: one character, "😀".length === 2
const CJK = "視"; // one character, three UTF-8 bytes
const NUL = "\u0000";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
type Init = Parameters<typeof create<typeof VideoSchema>>[1];
const video = (init: Init = {}): Video => create(VideoSchema, { title: "A title", ...init });

function check(init: Init, fields = MUTABLE_FIELDS) {
  return videoFields(video(init), fields);
}

const fieldsOf = (v: FieldViolation[]) => v.map((x) => x.field);

// One violation, on exactly `field`, with a non-empty description.
function rejects(t: TestContext, init: Init, field: string, msg?: string) {
  const { violations } = check(init);
  t.same(fieldsOf(violations), [field], msg ?? `rejected at ${field}`);
  for (const v of violations) t.ok(v.description.length > 0, "violation has a description");
}

function accepts(t: TestContext, init: Init, msg?: string) {
  const { violations } = check(init);
  t.same(violations, [], msg ?? "accepted");
}

t.test("a minimal video is valid and gets the defaults", async (t) => {
  const { value, violations } = check({});
  t.same(violations, []);
  t.same(value, { title: "A title", description: "", tags: [], labels: {}, visibility: "private" });
});

t.test("title", async (t) => {
  t.test("required: empty and whitespace-only are rejected", async (t) => {
    rejects(t, { title: "" }, "video.title");
    rejects(t, { title: "   \t\n " }, "video.title");
    rejects(t, { title: "\u3000\u00a0" }, "video.title", "Unicode spaces trim away too");
  });

  t.test("is trimmed before it is stored and measured", async (t) => {
    t.equal(check({ title: "  Hello world \n" }).value.title, "Hello world");
    const padded = "  " + "a".repeat(200) + "  ";
    accepts(t, { title: padded }, "200 characters plus surrounding spaces");
    t.equal(check({ title: padded }).value.title, "a".repeat(200));
  });

  t.test("1 and 200 characters are accepted; 201 is rejected", async (t) => {
    accepts(t, { title: "a" });
    accepts(t, { title: "a".repeat(200) });
    rejects(t, { title: "a".repeat(201) }, "video.title");
  });

  t.test("multi-byte characters count as one character each", async (t) => {
    accepts(t, { title: EMOJI }, "one emoji is a 1-character title");
    accepts(t, { title: EMOJI.repeat(200) }, "200 emoji (400 UTF-16 units) are 200 characters");
    rejects(t, { title: EMOJI.repeat(201) }, "video.title");
    accepts(t, { title: CJK.repeat(200) });
    rejects(t, { title: CJK.repeat(201) }, "video.title");
    t.equal(check({ title: EMOJI.repeat(3) }).value.title, EMOJI.repeat(3), "kept unchanged");
  });

  t.test("no control characters", async (t) => {
    for (const c of [NUL, "\u0001", "\u0007", "\u001b", "\u001f", "\u007f", "\u0085", "\u009f", "\t", "\n", "\r"]) {
      rejects(t, { title: `a${c}b` }, "video.title", `U+${c.codePointAt(0)!.toString(16).padStart(4, "0")} inside the title`);
    }
    rejects(t, { title: `abc${NUL}` }, "video.title", "a trailing NUL survives trimming and is rejected");
    rejects(t, { title: NUL }, "video.title", "a lone NUL");
    accepts(t, { title: "Café – “quoted” ✓ " + EMOJI }, "printable non-ASCII is fine");
  });
});

t.test("description", async (t) => {
  t.test("empty, 5000 accepted; 5001 rejected", async (t) => {
    accepts(t, { description: "" });
    accepts(t, { description: "d".repeat(5000) });
    rejects(t, { description: "d".repeat(5001) }, "video.description");
  });

  t.test("counted in characters, not UTF-16 units or bytes", async (t) => {
    accepts(t, { description: EMOJI.repeat(5000) });
    rejects(t, { description: EMOJI.repeat(5001) }, "video.description");
    accepts(t, { description: CJK.repeat(5000) });
  });

  t.test("free text keeps newlines and tabs but no other control characters", async (t) => {
    accepts(t, { description: "line 1\nline 2\r\n\tindented" });
    t.equal(check({ description: "  spaced  " }).value.description, "  spaced  ", "not trimmed");
    for (const c of [NUL, "\u0001", "\u000b", "\u000c", "\u001b", "\u007f", "\u0085"]) {
      rejects(t, { description: `x${c}y` }, "video.description", `U+${c.codePointAt(0)!.toString(16).padStart(4, "0")}`);
    }
  });
});

t.test("tags", async (t) => {
  const norm = (raw: string[]) => {
    const out: FieldViolation[] = [];
    const tags = normaliseTags(raw, "video.tags", out);
    return { tags, out };
  };

  t.test("trimmed, lower-cased, de-duplicated, first occurrence order kept", async (t) => {
    const { tags, out } = norm(["  Music ", "news", "MUSIC", "Zebra", "news ", "apple", "ÉTÉ", "été"]);
    t.same(out, []);
    t.same(tags, ["music", "news", "zebra", "apple", "été"]);
    t.same(check({ tags: [" B", "a", "b"] }).value.tags, ["b", "a"], "through videoFields too");
  });

  t.test("each tag 1–64 characters after trimming", async (t) => {
    t.same(norm(["a"]).out, []);
    t.same(norm(["a".repeat(64)]).out, []);
    t.same(norm(["  " + "a".repeat(64) + "  "]).out, [], "surrounding spaces do not count");
    t.same(fieldsOf(norm(["ok", "a".repeat(65)]).out), ["video.tags[1]"]);
    t.same(fieldsOf(norm(["ok", ""]).out), ["video.tags[1]"]);
    t.same(fieldsOf(norm(["   "]).out), ["video.tags[0]"], "whitespace-only is empty");
  });

  t.test("tag length counts emoji as one character", async (t) => {
    t.same(norm([EMOJI.repeat(64)]).out, []);
    t.same(fieldsOf(norm([EMOJI.repeat(65)]).out), ["video.tags[0]"]);
  });

  t.test("no control characters, NUL included", async (t) => {
    t.same(fieldsOf(norm(["fine", `a${NUL}b`]).out), ["video.tags[1]"]);
    t.same(fieldsOf(norm([`${NUL}`]).out), ["video.tags[0]"]);
    t.same(fieldsOf(norm(["a\tb"]).out), ["video.tags[0]"]);
    t.same(fieldsOf(norm(["a\u007fb"]).out), ["video.tags[0]"]);
    t.notOk(norm([`x${NUL}`]).tags.some((x) => x.includes(NUL)), "a bad tag never reaches the result");
  });

  t.test("at most 30 distinct tags", async (t) => {
    const n = (k: number) => Array.from({ length: k }, (_, i) => `tag${i}`);
    t.same(norm(n(30)).out, []);
    t.same(fieldsOf(norm(n(31)).out), ["video.tags"]);
    t.same(norm([...n(30), ...n(30).map((x) => x.toUpperCase())]).out, [], "60 entries that de-duplicate to 30 are fine");
    rejects(t, { tags: n(31) }, "video.tags");
    accepts(t, { tags: n(30) });
  });
});

t.test("labels", async (t) => {
  t.test("keys match [a-z][a-z0-9_.-]{0,62}", async (t) => {
    for (const key of ["a", "env", "a1", "a_b", "a.b", "a-b", "x" + "y".repeat(62), "z0_.-"]) {
      accepts(t, { labels: { [key]: "v" } }, `key ${JSON.stringify(key)}`);
    }
    for (const key of ["", "1a", "_a", ".a", "-a", "A", "aB", "a b", "a/b", "a:b", "é", "x" + "y".repeat(63), `a${NUL}`, "a\n"]) {
      const { violations } = check({ labels: { [key]: "v" } });
      t.equal(violations.length, 1, `key ${JSON.stringify(key)} rejected`);
      t.match(violations[0]?.field, /^video\.labels\[/, "field path names the label");
    }
  });

  t.test("63-character key accepted; 64 rejected", async (t) => {
    accepts(t, { labels: { ["k".repeat(63)]: "v" } });
    const { violations } = check({ labels: { ["k".repeat(64)]: "v" } });
    t.equal(violations.length, 1);
  });

  t.test("the violation names the key", async (t) => {
    const { violations } = check({ labels: { good: "v", Bad: "v" } });
    t.same(fieldsOf(violations), ['video.labels["Bad"]']);
  });

  t.test("values up to 256 characters; empty is fine", async (t) => {
    accepts(t, { labels: { k: "" } });
    accepts(t, { labels: { k: "v".repeat(256) } });
    rejects(t, { labels: { k: "v".repeat(257) } }, 'video.labels["k"]');
    accepts(t, { labels: { k: EMOJI.repeat(256) } }, "256 emoji are 256 characters");
    rejects(t, { labels: { k: EMOJI.repeat(257) } }, 'video.labels["k"]');
  });

  t.test("a NUL in a value never reaches the database", async (t) => {
    rejects(t, { labels: { k: `a${NUL}b` } }, 'video.labels["k"]');
    rejects(t, { labels: { k: NUL } }, 'video.labels["k"]');
  });

  t.test("at most 64 entries", async (t) => {
    const n = (k: number) => Object.fromEntries(Array.from({ length: k }, (_, i) => [`k${i}`, "v"]));
    accepts(t, { labels: n(64) });
    rejects(t, { labels: n(65) }, "video.labels");
    const { violations } = check({ labels: n(1000) });
    t.ok(violations.length >= 1 && violations.length <= 66, "a huge map is reported briefly, not per entry");
    t.equal(violations[0]?.field, "video.labels");
  });

  t.test("accepted labels are kept as given", async (t) => {
    t.same(check({ labels: { env: "Prod", "team.name": " A b " } }).value.labels, { env: "Prod", "team.name": " A b " });
  });
});

t.test("visibility", async (t) => {
  t.equal(check({ visibility: Video_Visibility.UNSPECIFIED }).value.visibility, "private", "default private");
  t.equal(check({ visibility: Video_Visibility.PRIVATE }).value.visibility, "private");
  t.equal(check({ visibility: Video_Visibility.UNLISTED }).value.visibility, "unlisted");
  t.equal(check({ visibility: Video_Visibility.PUBLIC }).value.visibility, "public");
  for (const n of [4, 99, -1, 2 ** 31 - 1]) {
    rejects(t, { visibility: n as Video_Visibility }, "video.visibility", `unknown enum number ${n}`);
  }
});

t.test("output-only fields are ignored, never validated or returned", async (t) => {
  const { value, violations } = check({
    id: "not a uuid",
    state: 99 as Video_State,
    ownerId: NUL,
    etag: NUL,
  });
  t.same(violations, []);
  t.same(Object.keys(value).sort(), [...MUTABLE_FIELDS].sort());
});

t.test("only the requested fields are checked and returned", async (t) => {
  const { value, violations } = videoFields(video({ title: "", description: "x".repeat(6000), tags: ["ok"] }), ["tags"]);
  t.same(violations, []);
  t.same(value, { tags: ["ok"] });
});

t.test("every violation is reported at once, each with its field path", async (t) => {
  const { violations } = check({
    title: "",
    description: "d".repeat(5001),
    tags: ["ok", "", "t".repeat(65), `x${NUL}`],
    labels: { Bad: "v", good: "v".repeat(257), fine: "ok" },
    visibility: 42 as Video_Visibility,
  });
  t.same(fieldsOf(violations).sort(), [
    "video.description",
    'video.labels["Bad"]',
    'video.labels["good"]',
    "video.tags[1]",
    "video.tags[2]",
    "video.tags[3]",
    "video.title",
    "video.visibility",
  ]);
  for (const v of violations) t.ok(v.description.length > 0, `${v.field} has a description`);
});

t.test("the field prefix is configurable (nested messages)", async (t) => {
  const { violations } = videoFields(video({ title: "" }), ["title"], "request.video");
  t.same(fieldsOf(violations), ["request.video.title"]);
});

t.test("no accepted string value can carry a NUL to the database", async (t) => {
  const { value, violations } = check({
    title: `T${NUL}`,
    description: `D${NUL}`,
    tags: [`t${NUL}`],
    labels: { k: `v${NUL}` },
  });
  t.same(fieldsOf(violations).sort(), ["video.description", 'video.labels["k"]', "video.tags[0]", "video.title"]);
  t.notOk(value.tags?.some((x) => x.includes(NUL)), "no NUL tag in the normalised value");
});

t.test("updateMaskFields (AIP-134)", async (t) => {
  t.same(updateMaskFields(undefined), { fields: [...MUTABLE_FIELDS], violations: [] }, "no mask: every mutable field");
  t.same(updateMaskFields([]), { fields: [...MUTABLE_FIELDS], violations: [] }, "empty mask: every mutable field");
  t.same(updateMaskFields(["*"]), { fields: [...MUTABLE_FIELDS], violations: [] }, '"*": every mutable field');
  t.same(updateMaskFields(["title"]), { fields: ["title"], violations: [] });
  t.same(updateMaskFields(["tags", "title", "tags"]), { fields: ["tags", "title"], violations: [] }, "de-duplicated, order kept");
  t.same(updateMaskFields(["title", "create_time", "state", "etag", "id"]), { fields: ["title"], violations: [] }, "output-only paths ignored");
  for (const bad of ["nope", "Title", "video.title", "labels.env", "", `title${NUL}`]) {
    const r = updateMaskFields(["title", bad]);
    t.same(fieldsOf(r.violations), ["update_mask"], `${JSON.stringify(bad)} rejected`);
  }
  const long = updateMaskFields(["x".repeat(10_000)]);
  t.ok(long.violations[0].description.length < 300, "a huge path is not echoed in full");
  t.same(fieldsOf(updateMaskFields(["a", "b"]).violations), ["update_mask", "update_mask"], "each bad path is reported");
});

t.test("isUuid and videoId", async (t) => {
  const id = "0190f1c2-7a3b-7cde-8f01-23456789abcd";
  t.ok(isUuid(id));
  t.ok(isUuid(id.toUpperCase()));
  for (const bad of ["", "x", id.slice(1), id + "0", id.replace(/-/g, ""), `{${id}}`, id.replace("a", "g"), id + NUL, ` ${id}`, `${id}\n`]) {
    t.notOk(isUuid(bad), `${JSON.stringify(bad)} is not a UUID`);
  }

  let out: FieldViolation[] = [];
  t.equal(videoId(id.toUpperCase(), "id", out), id, "normalised to lower case");
  t.same(out, []);

  out = [];
  videoId("", "id", out);
  t.same(fieldsOf(out), ["id"]);
  t.match(out[0].description, /required/);

  out = [];
  videoId("not-a-uuid", "video.id", out);
  t.same(fieldsOf(out), ["video.id"]);

  out = [];
  videoId(`${id}${NUL}`, "id", out);
  t.same(fieldsOf(out), ["id"], "a NUL in an id is rejected before any query");
});
