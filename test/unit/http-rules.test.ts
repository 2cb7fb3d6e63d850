import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import { create, createFileRegistry, fromJson, setExtension, type DescService, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
  MethodOptionsSchema,
  file_google_protobuf_timestamp,
} from "@bufbuild/protobuf/wkt";
import t from "tap";
import { http } from "../../gen/google/api/annotations_pb.js";
import { HttpRuleSchema } from "../../gen/google/api/http_pb.js";
import { Video_State, VideoSchema } from "../../gen/video/v1/video_pb.js";
import { ListVideosRequestSchema, UpdateVideoRequestSchema, VideoService } from "../../gen/video/v1/video_service_pb.js";
import {
  RequestMappingError,
  checkRoutes,
  matchPath,
  parseTemplate,
  requestJson,
  routesOf,
  setField,
  splitPath,
  type Route,
} from "../../server/transport/http-rules.js";
import { codeFromConnectName, httpStatusOf, statusNameOf } from "../../server/transport/status.js";

// The REST surface derived from google.api.http (AIP-127) and the error
// mapping of CONTRACT.md §2.

const routes = routesOf([VideoService]);
const route = (httpMethod: string, template: string): Route => {
  const r = routes.find((x) => x.httpMethod === httpMethod && x.template === template);
  if (!r) throw new Error(`no route ${httpMethod} ${template}`);
  return r;
};
const q = (s = "") => new URLSearchParams(s);

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
/** fn throws a RequestMappingError (which the REST layer answers with 400). */
function mappingError(t: TestContext, fn: () => unknown, msg: string) {
  try {
    fn();
    t.fail(`${msg}: expected a RequestMappingError`);
  } catch (e) {
    t.ok(e instanceof RequestMappingError, `${msg}: RequestMappingError`);
    t.ok((e as Error).message.length > 0, `${msg}: with a message`);
  }
}

// A throwaway service built in memory, for what VideoService does not have
// (yet): bool fields, a body "*" binding with a custom verb, bad templates.
function probeService(rules: Record<string, Parameters<typeof create<typeof HttpRuleSchema>>[1]>): DescService {
  const field = (name: string, number: number, type: Type, extra: object = {}) => ({
    name,
    number,
    type,
    label: Label.OPTIONAL,
    jsonName: name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
    ...extra,
  });
  const method = Object.entries(rules).map(([name, rule]) => {
    const options = create(MethodOptionsSchema);
    setExtension(options, http, create(HttpRuleSchema, rule));
    return { name, inputType: ".probe.Req", outputType: ".probe.Req", options };
  });
  const file = create(FileDescriptorProtoSchema, {
    name: "probe/probe.proto",
    package: "probe",
    syntax: "proto3",
    dependency: ["google/protobuf/timestamp.proto"],
    messageType: [
      { name: "Inner", field: [field("id", 1, Type.STRING), field("on", 2, Type.BOOL)] },
      {
        name: "Req",
        field: [
          field("name", 1, Type.STRING),
          field("dry_run", 2, Type.BOOL),
          field("flags", 3, Type.BOOL, { label: Label.REPEATED }),
          field("count", 4, Type.INT32),
          field("inner", 5, Type.MESSAGE, { typeName: ".probe.Inner" }),
          field("when", 6, Type.MESSAGE, { typeName: ".google.protobuf.Timestamp" }),
          field("upload_id", 7, Type.STRING),
        ],
      },
    ],
    service: [{ name: "Probe", method }],
  });
  const registry = createFileRegistry(file, (name) => (name === "google/protobuf/timestamp.proto" ? file_google_protobuf_timestamp : undefined));
  return registry.getService("probe.Probe")!;
}

/** The google.api.http bindings written in the .proto source, read independently of the generated code. */
function bindingsInProtoSource(): string[] {
  const source = readFileSync(new URL("../../proto/video/v1/video_service.proto", import.meta.url), "utf8");
  const out: string[] = [];
  for (const block of source.split(/\brpc\s+/).slice(1)) {
    const name = /^(\w+)/.exec(block)![1];
    const body = block.split(/\n\s*(?:message|service)\s/)[0];
    const patterns = [...body.matchAll(/\b(get|put|post|patch|delete)\s*:\s*"([^"]*)"/g)];
    patterns.forEach((m, i) => {
      const until = i + 1 < patterns.length ? patterns[i + 1].index : body.length;
      const bodyField = /\bbody\s*:\s*"([^"]*)"/.exec(body.slice(m.index, until))?.[1] ?? "";
      out.push(`${name} ${m[1].toUpperCase()} ${m[2]} body=${JSON.stringify(bodyField)}`);
    });
  }
  return out.sort();
}

t.test("routes derived from VideoService", async (t) => {
  const got = routes.map((r) => `${r.method.name} ${r.httpMethod} ${r.template} body=${JSON.stringify(r.body)}`).sort();
  t.same(
    got,
    [
      'AbortUpload DELETE /videos/{id}/uploads/{upload_id} body=""',
      'CompleteUpload POST /videos/{id}/uploads/{upload_id}:complete body="*"',
      'CreateThumbnail POST /videos/{video_id}/thumbnails body="image"',
      'CreateUpload POST /videos/{id}/uploads body="*"',
      'CreateVideo POST /videos body="video"',
      'DeleteThumbnail DELETE /videos/{video_id}/thumbnails/{thumbnail_id} body=""',
      'DeleteVideo DELETE /videos/{id} body=""',
      'FinishProcessing POST /videos/{id}:finishProcessing body="*"',
      'GenerateThumbnails POST /videos/{video_id}/thumbnails:generate body="*"',
      'GetVideo GET /videos/{id} body=""',
      'ListVideos GET /videos body=""',
      'StartProcessing POST /videos/{id}:startProcessing body="*"',
      'UpdateVideo PATCH /videos/{video.id} body="video"',
      'UpdateVideo PUT /videos/{video.id} body="video"',
    ],
    "exactly the bindings of CONTRACT.md's table that the proto declares, PATCH additional binding included",
  );
  t.same(got, bindingsInProtoSource(), "exactly the bindings written in proto/video/v1/video_service.proto");
  t.equal(new Set(routes.map((r) => `${r.httpMethod} ${r.template}`)).size, routes.length, "no route twice");
  for (const r of routes) t.equal(r.method.parent.typeName, "video.v1.VideoService");
  t.equal(route("PATCH", "/videos/{video.id}").method, route("PUT", "/videos/{video.id}").method, "PATCH and PUT are the same RPC");
  t.same(route("PUT", "/videos/{video.id}").segments, [{ literal: "videos" }, { field: "video.id", multi: false }]);
  t.equal(route("GET", "/videos").verb, undefined);
  t.equal(route("POST", "/videos/{id}/uploads/{upload_id}:complete").verb, "complete");
  t.doesNotThrow(() => checkRoutes(routes), "every path variable names a string field");
});

t.test("routesOf reads custom patterns, verbs and additional bindings of any service", async (t) => {
  const svc = probeService({
    Complete: {
      pattern: { case: "post", value: "/probes/{name}/uploads/{upload_id}:complete" },
      body: "*",
      additionalBindings: [{ pattern: { case: "custom", value: { kind: "HEAD", path: "/probes/{name}" } } }],
    },
    NoRule: {},
  });
  const got = routesOf([svc]).map((r) => [r.method.name, r.httpMethod, r.template, r.body, r.verb]);
  t.same(got, [
    ["Complete", "POST", "/probes/{name}/uploads/{upload_id}:complete", "*", "complete"],
    ["Complete", "HEAD", "/probes/{name}", "", undefined],
  ], "a method with an empty rule gets no route");
});

t.test("parseTemplate", async (t) => {
  t.same(parseTemplate("/videos"), { segments: [{ literal: "videos" }], verb: undefined });
  t.same(parseTemplate("/videos/{id}"), { segments: [{ literal: "videos" }, { field: "id", multi: false }], verb: undefined });
  t.same(parseTemplate("/videos/{id}/uploads/{upload_id}:complete"), {
    segments: [{ literal: "videos" }, { field: "id", multi: false }, { literal: "uploads" }, { field: "upload_id", multi: false }],
    verb: "complete",
  }, "custom verb after the last variable");
  t.same(parseTemplate("/videos:batchGet"), { segments: [{ literal: "videos" }], verb: "batchGet" }, "custom verb after a literal");
  t.same(parseTemplate("/videos/{video.id}"), { segments: [{ literal: "videos" }, { field: "video.id", multi: false }], verb: undefined });
  t.same(parseTemplate("/files/{name=**}"), { segments: [{ literal: "files" }, { field: "name", multi: true }], verb: undefined });
  t.same(parseTemplate("/files/{name=*}"), { segments: [{ literal: "files" }, { field: "name", multi: false }], verb: undefined });
  for (const bad of ["videos", "", "/videos/*", "/videos/{id", "/videos/id}", "/videos/{id=videos/*}", "/a/b*c", "/videos/{}"]) {
    t.throws(() => parseTemplate(bad), `${JSON.stringify(bad)} is refused at start-up`);
  }
});

t.test("matchPath", async (t) => {
  const get = route("GET", "/videos/{id}");
  const list = route("GET", "/videos");
  const put = route("PUT", "/videos/{video.id}");
  t.same(matchPath(get, ["videos", "abc"], undefined), { id: "abc" });
  t.same(matchPath(list, ["videos"], undefined), {});
  t.same(matchPath(put, ["videos", "v1"], undefined), { "video.id": "v1" }, "variables keyed by field path");
  t.equal(matchPath(get, ["videos"], undefined), undefined, "too short");
  t.equal(matchPath(get, ["videos", "a", "b"], undefined), undefined, "too long");
  t.equal(matchPath(get, ["videos", ""], undefined), undefined, "an empty variable does not match");
  t.equal(matchPath(get, ["movies", "abc"], undefined), undefined, "literal differs");
  t.equal(matchPath(get, ["Videos", "abc"], undefined), undefined, "literals are case-sensitive");
  t.equal(matchPath(list, ["videos", "abc"], undefined), undefined);
  t.equal(matchPath(get, ["videos", "abc"], "complete"), undefined, "a verb the route does not have");

  const complete: Route = { ...get, body: "*", template: "/videos/{id}/uploads/{upload_id}:complete", ...parseTemplate("/videos/{id}/uploads/{upload_id}:complete") };
  t.same(matchPath(complete, ["videos", "v1", "uploads", "u1"], "complete"), { id: "v1", upload_id: "u1" }, "custom verb route");
  t.equal(matchPath(complete, ["videos", "v1", "uploads", "u1"], undefined), undefined, "verb missing");
  t.equal(matchPath(complete, ["videos", "v1", "uploads", "u1"], "cancel"), undefined, "another verb");
  t.same(
    matchPath(complete, splitPath("/videos/v%201/uploads/u1:complete").segments, splitPath("/videos/v%201/uploads/u1:complete").verb),
    { id: "v 1", upload_id: "u1" },
    "with splitPath",
  );

  const files: Route = { ...get, ...parseTemplate("/files/{name=**}") };
  t.same(matchPath(files, ["files", "a", "b", "c"], undefined), { name: "a/b/c" }, "** takes the rest");
});

t.test("splitPath", async (t) => {
  t.same(splitPath("/videos"), { segments: ["videos"], verb: undefined });
  t.same(splitPath("/videos/abc"), { segments: ["videos", "abc"], verb: undefined });
  t.same(splitPath("/videos/v1/uploads/u1:complete"), { segments: ["videos", "v1", "uploads", "u1"], verb: "complete" });
  t.same(splitPath("/videos:batchGet"), { segments: ["videos"], verb: "batchGet" });
  t.same(splitPath("/videos/a%20b"), { segments: ["videos", "a b"], verb: undefined }, "percent-decoded");
  t.same(splitPath("/videos/a%2Fb"), { segments: ["videos", "a/b"], verb: undefined }, "an encoded slash stays inside its segment");
  t.same(splitPath("/videos/a%3Ab"), { segments: ["videos", "a:b"], verb: undefined }, "an encoded colon is not a verb separator");
  t.same(splitPath("/videos/a%3ab:complete"), { segments: ["videos", "a:b"], verb: "complete" });
  t.same(splitPath("/videos/a:b/uploads"), { segments: ["videos", "a:b", "uploads"], verb: undefined }, "a colon before the last segment is data");
  t.same(splitPath("/videos/%F0%9F%98%80"), { segments: ["videos", "😀"], verb: undefined }, "UTF-8 escapes");
  t.same(splitPath("/videos/a+b"), { segments: ["videos", "a+b"], verb: undefined }, "+ is not a space in a path");
  for (const bad of ["/videos/%", "/videos/%zz", "/videos/%E0%A4%A", "/videos/%C0%AF", "/videos/%ED%A0%80", "/videos/%FF"]) {
    t.throws(() => splitPath(bad), URIError, `${bad}: malformed escape throws (the caller answers 400)`);
  }
});

t.test("requestJson", async (t) => {
  t.test("body field: the body becomes that field; other fields come from the query", async (t) => {
    const post = route("POST", "/videos");
    t.same(requestJson(post, {}, q(), { title: "T", tags: ["a"] }), { video: { title: "T", tags: ["a"] } });
    t.same(requestJson(post, {}, q("request_id=r1"), { title: "T" }), { video: { title: "T" }, requestId: "r1" }, "snake_case query name");
    t.same(requestJson(post, {}, q("requestId=r1"), { title: "T" }), { video: { title: "T" }, requestId: "r1" }, "camelCase query name");
    t.same(requestJson(post, {}, q(), undefined), {}, "no body");
    for (const key of ["video", "video.title", "video.id"]) {
      mappingError(t, () => requestJson(post, {}, q(`${key}=x`), { title: "T" }), `query ${key} names the body field`);
    }
  });

  t.test("path variables override the body", async (t) => {
    const body = { id: "from-body", title: "T" };
    for (const r of [route("PUT", "/videos/{video.id}"), route("PATCH", "/videos/{video.id}")]) {
      const json = requestJson(r, { "video.id": "from-path" }, q("update_mask=title,description"), { ...body });
      t.same(json, { video: { id: "from-path", title: "T" }, updateMask: "title,description" }, `${r.httpMethod}`);
      const msg = fromJson(UpdateVideoRequestSchema, json);
      t.equal(msg.video?.id, "from-path");
      t.same(msg.updateMask?.paths, ["title", "description"], "FieldMask from a query string");
    }
    t.same(requestJson(route("PUT", "/videos/{video.id}"), { "video.id": "p" }, q("updateMask=title"), undefined), { video: { id: "p" }, updateMask: "title" }, "no body, camelCase mask");
    mappingError(t, () => requestJson(route("PUT", "/videos/{video.id}"), { "video.id": "p" }, q("video.id=q"), {}), "query video.id on PUT");
  });

  t.test("no body: path and query", async (t) => {
    const get = route("GET", "/videos/{id}");
    t.same(requestJson(get, { id: "abc" }, q(), undefined), { id: "abc" });
    mappingError(t, () => requestJson(get, { id: "abc" }, q("id=other"), undefined), "a path field from the query");
    mappingError(t, () => requestJson(get, { id: "abc" }, q("nope=1"), undefined), "unknown parameter");
    mappingError(t, () => requestJson(get, { id: "abc" }, q("ID=1"), undefined), "names are case-sensitive");
    const del = route("DELETE", "/videos/{id}");
    t.same(requestJson(del, { id: "abc" }, q("etag=W1"), undefined), { id: "abc", etag: "W1" });
  });

  t.test("ListVideos: query parameters are the request fields", async (t) => {
    const list = route("GET", "/videos");
    const query = q(
      "page_size=10&pageToken=tok&order_by=title&state=STATE_READY&visibility=VISIBILITY_PUBLIC&ownerId=u1" +
        "&tags=a&tags=b&labels=env%3Dprod&labels=team%3Dx&create_time_after=2024-01-01T00:00:00Z&createTimeBefore=2024-02-01T00:00:00Z&q=cat+video",
    );
    const json = requestJson(list, {}, query, undefined);
    t.same(json, {
      pageSize: "10",
      pageToken: "tok",
      orderBy: "title",
      state: "STATE_READY",
      visibility: "VISIBILITY_PUBLIC",
      ownerId: "u1",
      tags: ["a", "b"],
      labels: ["env=prod", "team=x"],
      createTimeAfter: "2024-01-01T00:00:00Z",
      createTimeBefore: "2024-02-01T00:00:00Z",
      q: "cat video",
    });
    const msg = fromJson(ListVideosRequestSchema, json);
    t.equal(msg.pageSize, 10);
    t.equal(msg.state, Video_State.READY);
    t.same(msg.tags, ["a", "b"]);
    t.same(msg.labels, ["env=prod", "team=x"]);
    t.equal(msg.createTimeAfter?.seconds, 1704067200n);
    t.same(requestJson(list, {}, q("tags=one"), undefined), { tags: ["one"] }, "one value of a repeated field is still a list");
    t.same(requestJson(list, {}, q("tags=x&page_size=2&tags=y"), undefined), { tags: ["x", "y"], pageSize: "2" }, "repeated values accumulate in order");
    for (const bad of ["unknown=1", "video.title=x", "q.x=1", "create_time_after.nope=1", "=1", "pageSize.x=1"]) {
      mappingError(t, () => requestJson(list, {}, q(bad), undefined), `${bad} rejected`);
    }
  });

  t.test("body \"*\": the whole request from the body, no query parameters, path wins", async (t) => {
    const [complete] = routesOf([probeService({ Complete: { pattern: { case: "post", value: "/probes/{name}/uploads/{upload_id}:complete" }, body: "*" } })]);
    const vars = matchPath(complete, ["probes", "p1", "uploads", "u1"], "complete")!;
    t.same(vars, { name: "p1", upload_id: "u1" });
    t.same(requestJson(complete, vars, q(), { name: "body", count: 3 }), { name: "p1", count: 3, uploadId: "u1" });
    t.same(requestJson(complete, vars, q(), undefined), { name: "p1", uploadId: "u1" });
    for (const param of ["count=3", "dry_run=true", "nope=1"]) {
      mappingError(t, () => requestJson(complete, vars, q(param), {}), `query ${param} with body "*"`);
    }
    for (const body of [[1], "str", 7, null, true] as JsonValue[]) {
      mappingError(t, () => requestJson(complete, vars, q(), body), `body ${JSON.stringify(body)} is not an object`);
    }
    t.doesNotThrow(() => checkRoutes([complete]));
  });

  t.test("bool conversion and nested fields from the query", async (t) => {
    const [get] = routesOf([probeService({ Get: { pattern: { case: "get", value: "/probes/{name}" } } })]);
    const json = (s: string) => requestJson(get, { name: "p" }, q(s), undefined);
    t.same(json("dry_run=true"), { name: "p", dryRun: true });
    t.same(json("dryRun=false"), { name: "p", dryRun: false });
    t.same(json("dry_run=1"), { name: "p", dryRun: true });
    t.same(json("dry_run=0"), { name: "p", dryRun: false });
    t.same(json("dry_run=yes"), { name: "p", dryRun: "yes" }, "anything else is left for the JSON parser to reject");
    t.same(json("inner.on=true&inner.id=i1"), { name: "p", inner: { on: true, id: "i1" } }, "nested message fields");
    t.same(json("count=5"), { name: "p", count: "5" }, "numbers stay strings (proto3 JSON accepts them)");
    t.same(json("when=2024-01-01T00:00:00Z"), { name: "p", when: "2024-01-01T00:00:00Z" }, "well-known types take their string form");
    mappingError(t, () => json("inner=x"), "a non-WKT message cannot be set from one value");
    mappingError(t, () => json("name=q"), "path field");
  });

  t.test("repeated bool query parameters are converted too", async (t) => {
    const [get] = routesOf([probeService({ Get: { pattern: { case: "get", value: "/probes/{name}" } } })]);
    t.same(requestJson(get, { name: "p" }, q("flags=true&flags=0"), undefined), { name: "p", flags: [true, false] });
  });

  t.test("setField refuses maps and paths through scalars", async (t) => {
    mappingError(t, () => setField(VideoSchema, {}, "labels", "k=v"), "map field");
    mappingError(t, () => setField(VideoSchema, {}, "title.x", "v"), "through a scalar");
    mappingError(t, () => setField(VideoSchema, {}, "nope", "v"), "unknown field");
    const obj: JsonObject = {};
    setField(VideoSchema, obj, "owner_id", "x");
    t.same(obj, { ownerId: "x" }, "written under the JSON name");
  });
});

t.test("checkRoutes", async (t) => {
  const get = route("GET", "/videos/{id}");
  const put = route("PUT", "/videos/{video.id}");
  const list = route("GET", "/videos");
  const withTemplate = (r: Route, template: string): Route => ({ ...r, template, ...parseTemplate(template) });
  t.doesNotThrow(() => checkRoutes([withTemplate(get, "/videos/{id}:watch")]), "a verb does not matter");
  t.throws(() => checkRoutes([withTemplate(get, "/videos/{nope}")]), /nope/, "a variable naming a missing field");
  t.throws(() => checkRoutes([withTemplate(put, "/videos/{video.nope}")]), /video\.nope/, "a missing nested field");
  t.throws(() => checkRoutes([withTemplate(put, "/videos/{nope.id}")]), /nope\.id/, "a missing parent field");
  t.throws(() => checkRoutes([withTemplate(list, "/videos/{page_size}")]), /page_size/, "a non-string field");
  t.throws(() => checkRoutes([withTemplate(list, "/videos/{tags}")]), /tags/, "a repeated field");
  t.throws(() => checkRoutes([withTemplate(put, "/videos/{video}")]), /video/, "a message field");
  t.throws(() => checkRoutes([withTemplate(put, "/videos/{video.id.x}")]), /video\.id\.x/, "a path through a scalar");
  t.throws(() => checkRoutes([...routes, withTemplate(get, "/videos/{nope}")]), /nope/, "one bad route among good ones");
  t.throws(() => checkRoutes(routesOf([probeService({ Bad: { pattern: { case: "get", value: "/probes/{missing}" } } })])), /missing/, "from annotations");
});

t.test("status: canonical code → HTTP status (CONTRACT.md §2 Errors) and status name", async (t) => {
  const table: [Code, number, string][] = [
    [Code.InvalidArgument, 400, "INVALID_ARGUMENT"],
    [Code.OutOfRange, 400, "OUT_OF_RANGE"],
    [Code.FailedPrecondition, 400, "FAILED_PRECONDITION"],
    [Code.Unauthenticated, 401, "UNAUTHENTICATED"],
    [Code.PermissionDenied, 403, "PERMISSION_DENIED"],
    [Code.NotFound, 404, "NOT_FOUND"],
    [Code.AlreadyExists, 409, "ALREADY_EXISTS"],
    [Code.Aborted, 409, "ABORTED"],
    [Code.ResourceExhausted, 429, "RESOURCE_EXHAUSTED"],
    [Code.Canceled, 499, "CANCELLED"],
    [Code.Unimplemented, 501, "UNIMPLEMENTED"],
    [Code.Unavailable, 503, "UNAVAILABLE"],
    [Code.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"],
    [Code.Internal, 500, "INTERNAL"],
    [Code.Unknown, 500, "UNKNOWN"],
    [Code.DataLoss, 500, "DATA_LOSS"],
  ];
  const allCodes = Object.values(Code).filter((v): v is Code => typeof v === "number");
  t.same(table.map(([c]) => c).sort((a, b) => a - b), allCodes.sort((a, b) => a - b), "the table covers every canonical code");
  for (const [code, status, name] of table) {
    t.equal(httpStatusOf(code), status, `${name} → ${status}`);
    t.equal(statusNameOf(code), name, `${Code[code]} is spelled ${name}`);
  }
  t.equal(httpStatusOf(99 as Code), 500, "an unknown code is a 500");
});

t.test("status: codes from Connect protocol names", async (t) => {
  const names: [string, Code][] = [
    ["canceled", Code.Canceled],
    ["cancelled", Code.Canceled],
    ["unknown", Code.Unknown],
    ["invalid_argument", Code.InvalidArgument],
    ["deadline_exceeded", Code.DeadlineExceeded],
    ["not_found", Code.NotFound],
    ["already_exists", Code.AlreadyExists],
    ["permission_denied", Code.PermissionDenied],
    ["resource_exhausted", Code.ResourceExhausted],
    ["failed_precondition", Code.FailedPrecondition],
    ["aborted", Code.Aborted],
    ["out_of_range", Code.OutOfRange],
    ["unimplemented", Code.Unimplemented],
    ["internal", Code.Internal],
    ["unavailable", Code.Unavailable],
    ["data_loss", Code.DataLoss],
    ["unauthenticated", Code.Unauthenticated],
  ];
  for (const [name, code] of names) t.equal(codeFromConnectName(name), code, name);
  for (const junk of ["", "nope", "not found", "toString", "constructor", "__proto__", 5, null, undefined, {}]) {
    t.equal(codeFromConnectName(junk), Code.Unknown, `${JSON.stringify(junk)} → UNKNOWN`);
  }
});
