import t from "tap";
import { errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { DATABASES, countVideos, expectRestError, startTestServer, violationFields, type Asserts, type TestServer } from "../support/server.js";

// Strict JSON input (issue 12 item 5), over REST (body and query) and the
// Connect protocol's JSON: bytes that are not UTF-8 are INVALID_ARGUMENT
// (gRPC's binary decoding already refuses them), and an integer field takes
// a plain decimal integer only — "0x10", " 10", "+10", "1e2" and 1e2 are
// INVALID_ARGUMENT naming the field, not read as 16, 10 or 100.

const INVALID_UTF8_TITLE = Buffer.concat([Buffer.from('{"title":"caf'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
const NOT_INTEGERS: [string, string][] = [
  ["hex string", '"0x10"'],
  ["leading space", '" 10"'],
  ["trailing space", '"10 "'],
  ["plus sign", '"+10"'],
  ["binary string", '"0b1"'],
  ["exponent string", '"1e2"'],
  ["exponent literal", "1e2"],
  ["fraction literal", "10.0"],
];

/** A Connect unary call with JSON bytes as they are; the error (if any) decoded from the Connect error body. */
async function connectJson(s: TestServer, method: string, body: Buffer | string): Promise<{ status: number; json: any; error?: ConnectError }> {
  const res = await fetch(`${s.baseUrl}/video.v1.VideoService/${method}`, { method: "POST", headers: { "content-type": "application/json" }, body: body as string });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (res.status === 200) return { status: 200, json: JSON.parse(Buffer.from(bytes).toString()) };
  return { status: res.status, json: undefined, error: errorFromJsonBytes(bytes, undefined, new ConnectError("no error body", Code.Unknown)) };
}

function refusedOverConnect(t: Asserts, r: { status: number; error?: ConnectError }, fields: string[], what: string) {
  t.equal(r.status, 400, `${what}: HTTP 400`);
  t.equal(r.error && Code[r.error.code], "InvalidArgument", `${what}: invalid_argument (${r.error?.rawMessage})`);
  t.same(r.error ? violationFields(r.error) : [], fields, `${what}: names ${fields.join(", ")}`);
}

async function behaviours(t: Asserts, s: TestServer) {
  await t.test("bytes that are not UTF-8 in a title are INVALID_ARGUMENT naming video.title, nothing stored", async (t) => {
    const before = await countVideos(s.ctx);
    expectRestError(t, await s.clients.rest("POST", "/videos", { body: INVALID_UTF8_TITLE }), 400, "INVALID_ARGUMENT", ["video.title"], "REST POST /videos");
    const v = await s.clients.grpc.createVideo({ video: { title: "target" } });
    const patch = await s.clients.rest("PATCH", `/videos/${v.id}`, { body: INVALID_UTF8_TITLE });
    expectRestError(t, patch, 400, "INVALID_ARGUMENT", ["video.title"], "REST PATCH");
    const connect = await connectJson(s, "CreateVideo", Buffer.concat([Buffer.from('{"video":'), INVALID_UTF8_TITLE, Buffer.from("}")]));
    refusedOverConnect(t, connect, ["video.title"], "Connect JSON CreateVideo");
    t.equal(await countVideos(s.ctx), before + 1, "only the target video was created");
    t.equal((await s.clients.grpc.getVideo({ id: v.id })).title, "target", "the PATCH changed nothing");

    // A real U+FFFD (valid UTF-8 EF BF BD) is a character like any other.
    const replacement = "caf\uFFFD";
    t.equal((await s.clients.rest("POST", "/videos", { json: { title: replacement } })).json?.title, replacement, "REST keeps a real U+FFFD");
    t.equal((await connectJson(s, "CreateVideo", JSON.stringify({ video: { title: replacement } }))).json?.title, replacement, "Connect keeps a real U+FFFD");
  });

  await t.test("an integer field takes a decimal integer only: REST body, REST query and Connect JSON name the field", async (t) => {
    const v = await s.clients.grpc.createVideo({ video: { title: "sizes" } });
    for (const [what, literal] of NOT_INTEGERS) {
      const body = `{"contentType":"video/mp4","sizeBytes":${literal}}`;
      expectRestError(t, await s.clients.rest("POST", `/videos/${v.id}/uploads`, { body }), 400, "INVALID_ARGUMENT", ["size_bytes"], `REST body sizeBytes ${literal} (${what})`);
      refusedOverConnect(t, await connectJson(s, "CreateUpload", `{"id":"${v.id}",${body.slice(1)}`), ["size_bytes"], `Connect sizeBytes ${literal} (${what})`);
      const query = literal.replace(/^"|"$/g, "");
      expectRestError(t, await s.clients.rest("GET", `/videos?page_size=${encodeURIComponent(query)}`), 400, "INVALID_ARGUMENT", ["page_size"], `REST query page_size=${query} (${what})`);
      refusedOverConnect(t, await connectJson(s, "ListVideos", `{"pageSize":${literal}}`), ["page_size"], `Connect pageSize ${literal} (${what})`);
    }
    t.equal((await s.clients.rest("GET", "/videos?page_size=2")).status, 200, "page_size=2 is taken");
    t.equal((await connectJson(s, "ListVideos", '{"pageSize":2}')).status, 200, "pageSize 2 is taken");
    t.equal((await connectJson(s, "ListVideos", '{"pageSize":"2"}')).status, 200, 'pageSize "2" (proto3 JSON string form) is taken');
    const upload = await s.clients.rest("POST", `/videos/${v.id}/uploads`, { body: '{"contentType":"video/mp4","sizeBytes":"16"}' });
    t.equal(upload.status, 200, `sizeBytes "16" is taken (${upload.text.slice(0, 200)})`);
    t.match(upload.json?.url ?? "", /[?&]X-Vms-Size=16(&|$)/, "a session for 16 bytes (the filesystem store signs the size)");
  });
}

for (const db of DATABASES) {
  t.test(`strict input on ${db.kind}`, { skip: db.skip }, async (t) => {
    await behaviours(t, await startTestServer(t, { database: db.kind }));
  });
}
