import t from "tap";
import { CreateUploadRequestSchema, ListVideosRequestSchema, UpdateVideoRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { integerViolations, invalidUtf8Violations, parseStrictJson, quoteNonIntegerNumbers } from "../../server/transport/strict-json.js";

t.test("quoteNonIntegerNumbers quotes numbers with a fraction or exponent, nothing inside strings", async (t) => {
  t.equal(quoteNonIntegerNumbers('{"a":1e2,"b":-1.5E-3,"c":7,"d":-0}'), '{"a":"1e2","b":"-1.5E-3","c":7,"d":-0}');
  t.equal(quoteNonIntegerNumbers('{"s":"1e2 \\" 2.5","n":[1,2.0]}'), '{"s":"1e2 \\" 2.5","n":[1,"2.0"]}', "escaped quotes do not end a string");
  t.equal(quoteNonIntegerNumbers("[true,false,null,10]"), "[true,false,null,10]", "unchanged when there is nothing to quote");
});

t.test("parseStrictJson reports bytes that are not UTF-8", async (t) => {
  t.same(parseStrictJson(Buffer.from('{"title":"café"}')), { value: { title: "café" }, invalidUtf8: false });
  const bad = parseStrictJson(Buffer.from([0x7b, 0x22, 0x74, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]));
  t.equal(bad.invalidUtf8, true);
  t.throws(() => parseStrictJson(Buffer.from("{nope")), SyntaxError);
});

t.test("integerViolations names integer fields not written as decimal integers", async (t) => {
  for (const v of ["0x10", " 10", "10 ", "+10", "0b1", "1e2", "1.0", "", "ten"]) {
    t.same(integerViolations(CreateUploadRequestSchema, { sizeBytes: v }).map((x) => x.field), ["size_bytes"], JSON.stringify(v));
    t.same(integerViolations(ListVideosRequestSchema, { page_size: v }).map((x) => x.field), ["page_size"], `page_size ${JSON.stringify(v)}`);
  }
  t.same(integerViolations(CreateUploadRequestSchema, { sizeBytes: 1.5 }).map((x) => x.field), ["size_bytes"], "1.5");
  for (const v of ["16", "-3", "007", 16, -3, 0]) t.same(integerViolations(CreateUploadRequestSchema, { sizeBytes: v }), [], `${JSON.stringify(v)} is taken`);
  t.same(integerViolations(CreateUploadRequestSchema, { contentType: "1e2", nope: "0x10" }), [], "string fields and unknown keys are not its business");
});

t.test("invalidUtf8Violations names the string fields holding U+FFFD, with proto paths", async (t) => {
  const json = { video: { title: "caf\uFFFD", tags: ["ok", "x\uFFFD"], labels: { k: "\uFFFD" } } };
  t.same(invalidUtf8Violations(UpdateVideoRequestSchema, json).map((v) => v.field), ["video.title", "video.tags[1]", 'video.labels["k"]']);
  t.same(invalidUtf8Violations(UpdateVideoRequestSchema, { video: { "caf\uFFFD": "x" } }).map((v) => v.field), ["UpdateVideoRequest"], "the message when no field can be named");
});
