import { readdirSync } from "node:fs";
import { Readable } from "node:stream";
import t from "tap";
import { create, toJson, type DescField, type DescMessage, type DescMethod, type DescService, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/health/v1/health_pb.js";
import { ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { Video_State, Video_Visibility, type Video } from "../../gen/video/v1/video_pb.js";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { routesOf, type Route } from "../../server/transport/http-rules.js";
import { httpStatusOf, statusNameOf } from "../../server/transport/status.js";
import { bearer, makeKey, now, sign, startSecuredServer, type SecuredServer } from "../support/jwt.js";
import { expectRestError, storedRow, type Asserts, type TestServer } from "../support/server.js";

// The authorisation matrix (issue: security): every RPC the service exposes ×
// every kind of caller, over gRPC and over each of the RPC's REST bindings,
// with the exact code. The RPCs are read from the generated descriptors and
// from what the server serves (reflection, REST routes), so a new RPC without
// a row in EXPECTED fails this test instead of shipping unguarded.

// Every RPC × caller × visibility × protocol, each on a fresh video: longer
// than the default per-file limit since the media RPCs joined.
t.setTimeout(600_000);

// ---- the callers ----------------------------------------------------------------

const CALLERS = [
  "noToken",
  "badSignature",
  "wrongIssuer",
  "wrongAudience",
  "expired",
  "viewer",
  "editorOwner",
  "editorOther",
  "admin",
  "service",
] as const;
type Caller = (typeof CALLERS)[number];

/** Subjects and roles of the callers that hold a valid token. The target videos belong to editorOwner. */
const IDENTITIES = {
  viewer: { sub: "viewer-vera", roles: ["viewer"] },
  editorOwner: { sub: "editor-alice", roles: ["editor"] },
  editorOther: { sub: "editor-bob", roles: ["editor"] },
  admin: { sub: "admin-ada", roles: ["admin"] },
  service: { sub: "svc-transcoder", roles: ["service"] },
} as const;

/** Every caller's Authorization token (undefined: none sent). The invalid ones claim the admin role. */
async function tokens(sec: SecuredServer): Promise<Record<Caller, string | undefined>> {
  const admin = IDENTITIES.admin;
  // Same kid as the published key, so only the signature is wrong.
  const impostor = await makeKey("RS256", sec.key.kid);
  return {
    noToken: undefined,
    badSignature: await sign(impostor, { ...admin }),
    wrongIssuer: await sec.token(admin.sub, [...admin.roles], { iss: "https://issuer.evil.test/" }),
    wrongAudience: await sec.token(admin.sub, [...admin.roles], { aud: "some-other-service" }),
    // Well beyond the verifier's clock tolerance.
    expired: await sec.token(admin.sub, [...admin.roles], { iat: now() - 7200, exp: now() - 600 }),
    viewer: await sec.token(IDENTITIES.viewer.sub, [...IDENTITIES.viewer.roles]),
    editorOwner: await sec.token(IDENTITIES.editorOwner.sub, [...IDENTITIES.editorOwner.roles]),
    editorOther: await sec.token(IDENTITIES.editorOther.sub, [...IDENTITIES.editorOther.roles]),
    admin: await sec.token(admin.sub, [...admin.roles]),
    service: await sec.token(IDENTITIES.service.sub, [...IDENTITIES.service.roles]),
  };
}

// ---- the expected outcomes ---------------------------------------------------------

const OK = "OK";
type Outcome = typeof OK | Code;
type Row = Record<Caller, Outcome>;
const VISIBILITIES = ["PRIVATE", "UNLISTED", "PUBLIC"] as const;
type Visibility = (typeof VISIBILITIES)[number];

const { Unauthenticated: UNAUTHENTICATED, PermissionDenied: DENIED, NotFound: NOT_FOUND } = Code;

/** Missing, forged, foreign or expired tokens: UNAUTHENTICATED on every RPC. */
const BAD_TOKENS = {
  noToken: UNAUTHENTICATED,
  badSignature: UNAUTHENTICATED,
  wrongIssuer: UNAUTHENTICATED,
  wrongAudience: UNAUTHENTICATED,
  expired: UNAUTHENTICATED,
} as const;

/** What a cell's request may refer to besides the target video (an upload session…). */
type Extra = Record<string, string>;

type Entry =
  | { on: "nothing"; request: () => object; expect: Row }
  | {
      on: "video";
      /** Prepared by the owner on each fresh target before the call (e.g. an upload session). */
      setup?: (s: TestServer, target: Video, ownerToken: string) => Promise<Extra>;
      /** The request; for a client stream, its messages. */
      request: (target: Video, extra: Extra) => object | object[];
      /** Called on a fresh video of editorOwner's, once per visibility. */
      expect: Record<Visibility, Row>;
    };

const readWriteOthers = (others: Outcome, service: Outcome): Row => ({
  ...BAD_TOKENS,
  viewer: others,
  editorOwner: OK,
  editorOther: others,
  admin: OK,
  service,
});

/** Changes to a video: its owner (an editor) and admins; the rest see it (403) or not (404). */
const writesOfOwnerOrAdmin: Record<Visibility, Row> = {
  PRIVATE: readWriteOthers(NOT_FOUND, DENIED),
  UNLISTED: readWriteOthers(DENIED, DENIED),
  PUBLIC: readWriteOthers(DENIED, DENIED),
};

/** The bytes the upload RPCs send. */
const CONTENT = new TextEncoder().encode("not really a video");

/** An upload session opened by the video's owner. */
async function openUpload(s: TestServer, v: Video, ownerToken: string): Promise<string> {
  const upload = await createClient(VideoService, s.transports.grpc).createUpload(
    { id: v.id, contentType: "video/mp4", sizeBytes: BigInt(CONTENT.length) },
    { headers: bearer(ownerToken) },
  );
  return upload.uploadId;
}

/** Puts the bytes where the upload session's presigned URL would have (straight into the store). */
async function storeUploadedBytes(s: TestServer, uploadId: string): Promise<void> {
  const { object_key } = await s.ctx.db.selectFrom("uploads").select("object_key").where("id", "=", uploadId).executeTakeFirstOrThrow();
  await s.ctx.store.putStream(object_key, Readable.from([Buffer.from(CONTENT)]), "video/mp4", AbortSignal.timeout(10_000));
}

/** A small valid PNG (1x1, grey) for the thumbnail rows. */
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg==", "base64");

/** Processing reports: the service role only; the others are refused before the video is looked at. */
const SERVICE_ONLY: Row = { ...BAD_TOKENS, viewer: DENIED, editorOwner: DENIED, editorOther: DENIED, admin: DENIED, service: OK };

/** The target with a verified upload (STATE_UPLOADED), as CompleteUpload leaves it. */
async function uploaded(s: TestServer, v: Video, ownerToken: string): Promise<void> {
  const uploadId = await openUpload(s, v, ownerToken);
  await storeUploadedBytes(s, uploadId);
  await createClient(VideoService, s.transports.grpc).completeUpload({ id: v.id, uploadId }, { headers: bearer(ownerToken) });
}

/**
 * REST routes that are not google.api.http bindings, written by hand for
 * one RPC; each is checked with that RPC's row.
 */
const HAND_WRITTEN_REST: Record<string, { httpMethod: string; template: string; path: (v: Video) => string; body: Uint8Array; contentType: string }[]> = {
  "video.v1.VideoService/UploadVideoContent": [
    { httpMethod: "PUT", template: "/videos/{id}/content", path: (v) => `/videos/${v.id}/content`, body: CONTENT, contentType: "video/mp4" },
  ],
};

/** Keyed by "package.Service/Method". Every RPC needs a row; the test fails for one without. */
const EXPECTED: Record<string, Entry> = {
  "video.v1.VideoService/CreateVideo": {
    on: "nothing",
    request: () => ({ video: { title: "matrix" } }),
    expect: { ...BAD_TOKENS, viewer: DENIED, editorOwner: OK, editorOther: OK, admin: OK, service: DENIED },
  },
  "video.v1.VideoService/GetVideo": {
    on: "video",
    request: (v) => ({ id: v.id }),
    expect: {
      // Someone else's private video does not exist as far as the caller can tell.
      PRIVATE: readWriteOthers(NOT_FOUND, OK),
      UNLISTED: readWriteOthers(OK, OK),
      PUBLIC: readWriteOthers(OK, OK),
    },
  },
  "video.v1.VideoService/ListVideos": {
    on: "nothing",
    request: () => ({}),
    expect: { ...BAD_TOKENS, viewer: OK, editorOwner: OK, editorOther: OK, admin: OK, service: OK },
  },
  "video.v1.VideoService/UpdateVideo": {
    on: "video",
    request: (v) => ({ video: { id: v.id, title: "changed by the matrix" }, updateMask: { paths: ["title"] } }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/DeleteVideo": {
    on: "video",
    request: (v) => ({ id: v.id }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/CreateUpload": {
    on: "video",
    request: (v) => ({ id: v.id, contentType: "video/mp4", sizeBytes: BigInt(CONTENT.length) }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/CompleteUpload": {
    on: "video",
    setup: async (s, v, owner) => {
      const uploadId = await openUpload(s, v, owner);
      await storeUploadedBytes(s, uploadId);
      return { uploadId };
    },
    request: (v, x) => ({ id: v.id, uploadId: x.uploadId }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/AbortUpload": {
    on: "video",
    setup: async (s, v, owner) => ({ uploadId: await openUpload(s, v, owner) }),
    request: (v, x) => ({ id: v.id, uploadId: x.uploadId }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/UploadVideoContent": {
    on: "video",
    request: (v) => [{ data: { case: "metadata", value: { id: v.id, contentType: "video/mp4" } } }, { data: { case: "chunk", value: CONTENT } }],
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/GenerateThumbnails": {
    on: "video",
    setup: async (s, v, owner) => {
      await uploaded(s, v, owner);
      return {};
    },
    request: (v) => ({ videoId: v.id, timeOffsets: [{ seconds: 0n }] }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/CreateThumbnail": {
    on: "video",
    request: (v) => ({ videoId: v.id, image: { contentType: "image/png", data: PNG } }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/DeleteThumbnail": {
    on: "video",
    setup: async (s, v, owner) => {
      const th = await createClient(VideoService, s.transports.grpc).createThumbnail({ videoId: v.id, image: { contentType: "image/png", data: PNG } }, { headers: bearer(owner) });
      return { thumbnailId: th.id };
    },
    request: (v, x) => ({ videoId: v.id, thumbnailId: x.thumbnailId }),
    expect: writesOfOwnerOrAdmin,
  },
  "video.v1.VideoService/StartProcessing": {
    on: "video",
    setup: async (s, v, owner) => {
      await uploaded(s, v, owner);
      return {};
    },
    request: (v) => ({ id: v.id }),
    expect: { PRIVATE: SERVICE_ONLY, UNLISTED: SERVICE_ONLY, PUBLIC: SERVICE_ONLY },
  },
  "video.v1.VideoService/FinishProcessing": {
    on: "video",
    setup: async (s, v, owner) => {
      await uploaded(s, v, owner);
      await s.ctx.db.updateTable("videos").set({ state: "processing" }).where("id", "=", v.id).execute();
      return {};
    },
    request: (v) => ({ id: v.id, result: Video_State.READY }),
    expect: { PRIVATE: SERVICE_ONLY, UNLISTED: SERVICE_ONLY, PUBLIC: SERVICE_ONLY },
  },
  "video.v1.EventService/ListEvents": {
    on: "nothing",
    request: () => ({}),
    expect: { ...BAD_TOKENS, viewer: DENIED, editorOwner: DENIED, editorOther: DENIED, admin: OK, service: OK },
  },
  "video.v1.EventService/WatchEvents": {
    on: "nothing",
    request: () => ({}),
    expect: { ...BAD_TOKENS, viewer: DENIED, editorOwner: DENIED, editorOther: DENIED, admin: OK, service: OK },
  },
  "video.v1.AuditService/ListAuditEvents": {
    on: "nothing",
    request: () => ({}),
    expect: { ...BAD_TOKENS, viewer: DENIED, editorOwner: DENIED, editorOther: DENIED, admin: OK, service: DENIED },
  },
};

/** Services anyone may call without a token. */
const OPEN_SERVICES = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

// ---- what the service exposes ---------------------------------------------------------

/** Every service in the generated code of the video.v1 package. */
async function generatedServices(): Promise<DescService[]> {
  const dir = new URL("../../gen/video/v1/", import.meta.url);
  const services: DescService[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith("_pb.ts"))) {
    const mod = (await import(new URL(file.replace(/\.ts$/, ".js"), dir).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) {
      if (value && typeof value === "object" && (value as { kind?: unknown }).kind === "service") services.push(value as DescService);
    }
  }
  return services;
}

/** The services the running server lists through gRPC reflection (called without a token). */
async function reflectedServices(transport: Transport): Promise<string[]> {
  const client = createClient(ServerReflection, transport);
  async function* requests() {
    yield { messageRequest: { case: "listServices" as const, value: "" } };
  }
  return withDeadline(10_000, async (signal) => {
    for await (const res of client.serverReflectionInfo(requests(), { signal })) {
      if (res.messageResponse.case === "listServicesResponse") return res.messageResponse.value.service.map((s) => s.name);
      throw new Error(`unexpected reflection response ${res.messageResponse.case}`);
    }
    throw new Error("no reflection response");
  });
}

/**
 * Runs a streaming call with a deadline whose timer is cleared afterwards
 * (a client timeoutMs keeps its timer, and the process, alive until it fires).
 */
async function withDeadline<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no answer within ${ms} ms`)), ms);
  try {
    return await fn(ac.signal);
  } finally {
    clearTimeout(timer);
  }
}

const fullName = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;

// ---- calling an RPC generically ----------------------------------------------------------

type AnyClient = Record<string, (req: object | AsyncIterable<object>, options: object) => Promise<unknown> | AsyncIterable<unknown>>;

/** Calls the method over gRPC; "OK" or the code of the error. Server streams: the first message counts. */
async function callGrpc(transport: Transport, method: DescMethod, request: object | object[], token: string | undefined): Promise<{ outcome: Outcome; message: string }> {
  const client = createClient(method.parent, transport) as unknown as AnyClient;
  const headers = bearer(token);
  try {
    if (method.methodKind === "server_streaming") {
      // A permitted watcher gets the events published so far at once.
      await withDeadline(10_000, async (signal) => {
        for await (const _ of client[method.localName](request, { headers, signal }) as AsyncIterable<unknown>) break;
      });
    } else if (method.methodKind === "unary") {
      await client[method.localName](request, { headers });
    } else if (method.methodKind === "client_streaming") {
      const messages = Array.isArray(request) ? request : [request];
      await client[method.localName](
        (async function* () {
          yield* messages;
        })(),
        { headers },
      );
    } else {
      throw new Error(`${fullName(method)}: ${method.methodKind} methods need their own caller here`);
    }
    return { outcome: OK, message: "" };
  } catch (e) {
    const err = ConnectError.from(e);
    return { outcome: err.code, message: err.rawMessage };
  }
}

/** The JSON name of a (dotted) proto field path, resolved against the message. */
function jsonPath(desc: DescMessage, path: string): string[] {
  const out: string[] = [];
  let d: DescMessage | undefined = desc;
  for (const name of path.split(".")) {
    const f: DescField | undefined = d?.fields.find((x) => x.name === name);
    if (!f) throw new Error(`${desc.typeName} has no field ${path}`);
    out.push(f.jsonName);
    d = f.fieldKind === "message" ? f.message : undefined;
  }
  return out;
}

/**
 * The HTTP request a REST client sends for this route and request message,
 * following the google.api.http rule: path variables from the fields they
 * name, the body field (or "*"), and the remaining fields as query parameters.
 */
function restRequest(route: Route, init: object): { path: string; body: JsonValue | undefined } {
  const json = toJson(route.method.input, create(route.method.input, init as MessageInitShape<DescMessage>)) as JsonObject;
  let path = "";
  for (const seg of route.segments) {
    if ("literal" in seg) {
      path += "/" + seg.literal;
      continue;
    }
    const names = jsonPath(route.method.input, seg.field);
    let v: JsonValue | undefined = json;
    for (const n of names) v = (v as JsonObject | undefined)?.[n];
    if (typeof v !== "string" || v === "") throw new Error(`${route.template}: the request has no ${seg.field}`);
    path += "/" + encodeURIComponent(v);
    if (names.length === 1) delete json[names[0]];
  }
  if (route.verb) path += ":" + route.verb;
  let body: JsonValue | undefined;
  if (route.body === "*") {
    body = { ...json };
    for (const k of Object.keys(json)) delete json[k];
  } else if (route.body !== "") {
    const [name] = jsonPath(route.method.input, route.body);
    body = json[name];
    delete json[name];
  }
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(json)) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item !== null && typeof item === "object") throw new Error(`${route.template}: ${k} cannot be a query parameter`);
      query.append(k, String(item));
    }
  }
  const qs = query.toString();
  return { path: qs ? `${path}?${qs}` : path, body };
}

// ---- the test --------------------------------------------------------------------------------

t.test("authorisation matrix: every RPC × every caller, over gRPC and REST", async (t) => {
  // Events are relayed quickly so that a permitted WatchEvents has one to read.
  const sec = await startSecuredServer(t, { env: { RELAY_POLL_MS: "20" } });
  const { s } = sec;
  const token = await tokens(sec);
  const owner = token.editorOwner;

  // 1. The RPCs: generated services and what the server lists, minus the open ones.
  const generated = await generatedServices();
  const reflected = await reflectedServices(s.transports.grpc);
  t.ok(generated.length >= 3, `found the generated services (${generated.map((g) => g.typeName).join(", ")})`);
  for (const name of reflected) {
    if (OPEN_SERVICES.includes(name)) continue;
    t.ok(
      generated.some((g) => g.typeName === name),
      `the served service ${name} is in gen/video/v1 (so its methods get matrix rows)`,
    );
  }
  for (const g of generated) t.ok(reflected.includes(g.typeName), `${g.typeName} is served`);
  const methods = generated.flatMap((g) => g.methods);
  for (const m of methods) {
    if (!(fullName(m) in EXPECTED)) t.fail(`${fullName(m)} has no row in the authorisation matrix: add one to EXPECTED`);
  }
  for (const name of Object.keys(EXPECTED)) {
    t.ok(
      methods.some((m) => fullName(m) === name),
      `the row ${name} names an RPC that exists`,
    );
  }

  // 2. The REST routes: exactly the google.api.http bindings of those RPCs.
  const declared = routesOf(generated);
  const served = s.server.routes;
  t.same(
    served.map((r) => `${r.httpMethod} ${r.template}`).sort(),
    declared.map((r) => `${r.httpMethod} ${r.template}`).sort(),
    "the server serves every google.api.http binding, and nothing else",
  );
  for (const r of served) t.ok(fullName(r.method) in EXPECTED, `${r.httpMethod} ${r.template} (${fullName(r.method)}) has a row`);

  // A published event, so that permitted WatchEvents calls have one to read.
  const events = createClient(EventService, s.transports.grpc);
  await createClient(VideoService, s.transports.grpc).createVideo({ video: { title: "seed" } }, { headers: bearer(owner) });
  for (let i = 0; ; i++) {
    const page = await events.listEvents({}, { headers: bearer(token.admin) });
    if (page.events.length > 0) break;
    if (i > 250) throw new Error("the seed event was never published");
    await new Promise((r) => setTimeout(r, 20));
  }

  const videoClient = createClient(VideoService, s.transports.grpc);
  const visibilityOf: Record<Visibility, Video_Visibility> = {
    PRIVATE: Video_Visibility.PRIVATE,
    UNLISTED: Video_Visibility.UNLISTED,
    PUBLIC: Video_Visibility.PUBLIC,
  };
  /** A fresh video of the owner's, with what the row's setup prepared, and a snapshot of its state. */
  async function prepare(entry: Entry, visibility: Visibility | undefined) {
    if (entry.on !== "video" || !visibility) return { request: entry.on === "nothing" ? entry.request() : {}, snapshot: undefined };
    const target = await videoClient.createVideo(
      { video: { title: `target ${visibility}`, visibility: visibilityOf[visibility] } },
      { headers: bearer(owner) },
    );
    const extra = entry.setup ? await entry.setup(s, target, owner!) : {};
    return { target, request: entry.request(target, extra), snapshot: await snapshot(target.id) };
  }

  /** The video's row and its upload sessions, as stored. */
  async function snapshot(videoId: string) {
    return {
      video: await storedRow(s.ctx, videoId),
      uploads: await s.ctx.db.selectFrom("uploads").selectAll().where("video_id", "=", videoId).orderBy("id").execute(),
    };
  }

  // A denied or refused call must leave the video and its uploads exactly as they were.
  async function unchanged(t: Asserts, videoId: string, before: unknown, label: string) {
    t.same(await snapshot(videoId), before, `${label}: nothing changed`);
  }

  let cells = 0;
  for (const method of methods) {
    const entry = EXPECTED[fullName(method)];
    if (!entry) continue;
    const routes = served.filter((r) => fullName(r.method) === fullName(method));
    const handWritten = HAND_WRITTEN_REST[fullName(method)] ?? [];
    await t.test(fullName(method), async (t) => {
      const cases: { visibility?: Visibility; row: Row }[] =
        entry.on === "video" ? VISIBILITIES.map((v) => ({ visibility: v, row: entry.expect[v] })) : [{ row: entry.expect }];
      for (const { visibility, row } of cases) {
        for (const caller of CALLERS) {
          const want = row[caller];
          const wantName = want === OK ? "OK" : Code[want];
          const where = `${caller}${visibility ? ` on a ${visibility} video` : ""}`;

          // gRPC
          const g = await prepare(entry, visibility);
          const got = await callGrpc(s.transports.grpc, method, g.request, token[caller]);
          t.equal(got.outcome === OK ? "OK" : Code[got.outcome], wantName, `gRPC ${where} → ${wantName} (${got.message})`);
          if (g.target && want !== OK) await unchanged(t, g.target.id, g.snapshot, `gRPC ${where}`);
          cells++;

          // REST, each google.api.http binding
          for (const route of routes) {
            const r = await prepare(entry, visibility);
            const { path, body } = restRequest(route, r.request as object);
            // A google.api.HttpBody body goes as the raw bytes with their content type.
            const raw = route.method.input.fields.find((f) => f.name === route.body)?.message?.typeName === "google.api.HttpBody" ? (body as { contentType: string; data: string }) : undefined;
            const res = await s.clients.rest(route.httpMethod, path, {
              headers: { ...bearer(token[caller]), ...(raw && { "content-type": raw.contentType }) },
              ...(raw ? { body: Buffer.from(raw.data, "base64") } : body === undefined ? {} : { json: body }),
            });
            const label = `REST ${route.httpMethod} ${route.template} ${where}`;
            if (want === OK) t.equal(res.status, 200, `${label} → 200 (${res.text.slice(0, 200)})`);
            else expectRestError(t, res, httpStatusOf(want), statusNameOf(want), undefined, `${label} →`);
            if (r.target && want !== OK) await unchanged(t, r.target.id, r.snapshot, label);
            cells++;
          }

          // REST, hand-written routes of the same RPC
          for (const route of handWritten) {
            const r = await prepare(entry, visibility);
            if (!r.target) throw new Error(`${route.template}: hand-written routes need a target video`);
            const res = await s.clients.rest(route.httpMethod, route.path(r.target), {
              headers: { ...bearer(token[caller]), "content-type": route.contentType },
              body: route.body,
            });
            const label = `REST ${route.httpMethod} ${route.template} ${where}`;
            if (want === OK) t.equal(res.status, 200, `${label} → 200 (${res.text.slice(0, 200)})`);
            else expectRestError(t, res, httpStatusOf(want), statusNameOf(want), undefined, `${label} →`);
            if (want !== OK) await unchanged(t, r.target.id, r.snapshot, label);
            cells++;
          }
        }
      }
    });
  }
  t.ok(cells >= 250, `${cells} cells checked`);

  // 3. Secrets never in logs: nothing any caller sent as a token appears in any line.
  const lines = sec.logs.lines;
  t.ok(lines.filter((l) => l.includes('"message":"call"')).length >= cells, "every call was logged (the logs were captured)");
  const secrets = Object.values(token).filter((x): x is string => Boolean(x));
  const leaks = lines.filter((l) => secrets.some((tok) => l.includes(tok) || tok.split(".").slice(1).some((part) => part.length > 16 && l.includes(part))));
  t.same(leaks, [], "no log line carries a bearer token or a part of one");
  t.notMatch(lines.join("\n"), /Bearer\s/i, "no log line carries an Authorization header");
});

t.test("who sees what: visibility and ownership, without existence leaks", async (t) => {
  const sec = await startSecuredServer(t);
  const { s } = sec;
  const token = await tokens(sec);
  const videos = createClient(VideoService, s.transports.grpc);
  const label = `v${Date.now()}`;
  const make = (visibility: Video_Visibility, tok: string) =>
    videos.createVideo({ video: { title: `${label} ${Video_Visibility[visibility]}`, visibility } }, { headers: bearer(tok) });
  const priv = await make(Video_Visibility.PRIVATE, token.editorOwner!);
  const unlisted = await make(Video_Visibility.UNLISTED, token.editorOwner!);
  const pub = await make(Video_Visibility.PUBLIC, token.editorOwner!);
  t.equal(priv.ownerId, IDENTITIES.editorOwner.sub, "the owner is the token's subject");

  // A viewer's own video (created while it held the editor role).
  const viewerAsEditor = await sec.token(IDENTITIES.viewer.sub, ["editor"]);
  const viewersOwn = await make(Video_Visibility.PRIVATE, viewerAsEditor);

  const listed = async (tok: string) =>
    (await videos.listVideos({ q: label, pageSize: 100 }, { headers: bearer(tok) })).videos.map((v) => v.id).sort();
  const sorted = (...v: Video[]) => v.map((x) => x.id).sort();
  t.same(await listed(token.viewer!), sorted(pub, viewersOwn), "a viewer lists public videos and its own (unlisted ones are by id only)");
  t.same(await listed(token.editorOther!), sorted(pub), "another editor lists only the public one");
  t.same(await listed(token.editorOwner!), sorted(priv, unlisted, pub), "the owner lists all of its own");
  t.same(await listed(token.admin!), sorted(priv, unlisted, pub, viewersOwn), "an admin lists everything");
  t.same(await listed(token.service!), sorted(priv, unlisted, pub, viewersOwn), "a service lists everything");

  // The viewer reads its own private video but cannot change it.
  t.equal((await videos.getVideo({ id: viewersOwn.id }, { headers: bearer(token.viewer) })).id, viewersOwn.id, "a viewer reads its own video");
  await t.rejects(
    videos.updateVideo({ video: { id: viewersOwn.id, title: "x" }, updateMask: { paths: ["title"] } }, { headers: bearer(token.viewer) }),
    { code: DENIED },
    "a viewer cannot change even its own video",
  );

  // Someone else's private video answers exactly like a video that does not exist.
  const missing = "01900000-0000-7000-8000-000000000000";
  for (const [rpc, call] of [
    ["GetVideo", (id: string) => videos.getVideo({ id }, { headers: bearer(token.editorOther) })],
    ["UpdateVideo", (id: string) => videos.updateVideo({ video: { id, title: "x" }, updateMask: { paths: ["title"] } }, { headers: bearer(token.editorOther) })],
    ["UpdateVideo with a stale etag", (id: string) => videos.updateVideo({ video: { id, title: "x", etag: "stale" } }, { headers: bearer(token.editorOther) })],
    ["DeleteVideo", (id: string) => videos.deleteVideo({ id }, { headers: bearer(token.editorOther) })],
  ] as const) {
    const a = await (call(priv.id) as Promise<unknown>).then(() => undefined, (e: unknown) => ConnectError.from(e));
    const b = await (call(missing) as Promise<unknown>).then(() => undefined, (e: unknown) => ConnectError.from(e));
    t.equal(a && Code[a.code], "NotFound", `${rpc}: someone else's private video is NOT_FOUND`);
    t.equal(a?.rawMessage.replace(priv.id, "ID"), b?.rawMessage.replace(missing, "ID"), `${rpc}: with the message of a missing video`);
    const ra = await s.clients.rest("GET", `/videos/${priv.id}`, { headers: bearer(token.editorOther) });
    const rb = await s.clients.rest("GET", `/videos/${missing}`, { headers: bearer(token.editorOther) });
    t.equal(ra.text.replace(priv.id, "ID"), rb.text.replace(missing, "ID"), `${rpc}: REST bodies are the same too`);
  }

  // A valid token without any known role reads nothing.
  const nobody = await sec.token("nobody", []);
  await t.rejects(videos.listVideos({}, { headers: bearer(nobody) }), { code: DENIED }, "no roles: ListVideos is denied");
  await t.rejects(videos.getVideo({ id: pub.id }, { headers: bearer(nobody) }), { code: DENIED }, "no roles: GetVideo is denied");
  // Roles come as a JSON array only: a string is refused, never split (README, security).
  const spaced = await sec.token("spaced", "viewer editor" as unknown as string[]);
  await t.rejects(videos.createVideo({ video: { title: "spaced" } }, { headers: bearer(spaced) }), { code: Code.Unauthenticated }, 'roles "viewer editor" as one string is refused');
});

t.test("health, readiness, metrics and reflection stay open without a token", async (t) => {
  const sec = await startSecuredServer(t);
  const { s } = sec;
  for (const path of ["/health", "/health/ready", "/metrics"]) {
    const res = await s.clients.rest("GET", path);
    t.equal(res.status, 200, `GET ${path} without a token → 200`);
  }
  const health = createClient(Health, s.transports.grpc);
  for (const headers of [{}, { authorization: "Bearer not.a.token" }] as Record<string, string>[]) {
    const res = await health.check({ service: "" }, { headers }).catch((e: unknown) => ({ status: `failed: ${ConnectError.from(e).message}` }));
    t.equal(res.status, HealthCheckResponse_ServingStatus.SERVING, `grpc.health.v1.Health/Check ${"authorization" in headers ? "with a junk token" : "without a token"} → SERVING`);
  }
  await withDeadline(10_000, async (signal) => {
    for await (const res of health.watch({ service: "" }, { signal })) {
      t.equal(res.status, HealthCheckResponse_ServingStatus.SERVING, "grpc.health.v1.Health/Watch without a token");
      break;
    }
  });
  const services = await reflectedServices(s.transports.grpc);
  t.ok(services.includes(VideoService.typeName), `reflection lists services without a token (${services.join(", ")})`);
  // And the protected ones are not open.
  const res = await s.clients.rest("GET", "/videos");
  expectRestError(t, res, 401, "UNAUTHENTICATED", undefined, "GET /videos without a token");
  // Without a token, a bad body is not even read: the caller learns nothing
  // of the validation rules.
  for (const [what, req] of [
    ["an unknown field", { json: { title: "x", bogus: 1 } }],
    ["malformed JSON", { body: '{"title":' }],
    ["a wrong type", { json: { title: 5 } }],
  ] as const) {
    expectRestError(t, await s.clients.rest("POST", "/videos", req), 401, "UNAUTHENTICATED", undefined, `POST /videos with ${what} and no token`);
    const basic = await s.clients.rest("POST", "/videos", { ...req, headers: { authorization: "Basic dXNlcjpwYXNz" } });
    expectRestError(t, basic, 401, "UNAUTHENTICATED", undefined, `POST /videos with ${what} and Basic credentials`);
    t.equal(basic.headers.get("www-authenticate"), 'Bearer realm="video-management-service"');
  }
  // Nor with a token that does not verify: it is checked before the body too.
  const impostor = await sign(await makeKey("RS256", sec.key.kid), { sub: "mallory", roles: ["admin"] });
  for (const [what, authorization] of [
    ["a junk bearer token", "Bearer not.a.token"],
    ["a token signed by another key", `Bearer ${impostor}`],
  ] as const) {
    for (const [body, req] of [
      ["an unknown field", { json: { title: "x", bogus: 1 } }],
      ["malformed JSON", { body: '{"title":' }],
    ] as const) {
      const res = await s.clients.rest("POST", "/videos", { ...req, headers: { authorization } });
      expectRestError(t, res, 401, "UNAUTHENTICATED", undefined, `POST /videos with ${body} and ${what}`);
    }
  }
  const valid = await sec.token("editor-1", ["editor"]);
  const bad = await s.clients.rest("POST", "/videos", { json: { title: "x", bogus: 1 }, headers: { authorization: `Bearer ${valid}` } });
  expectRestError(t, bad, 400, "INVALID_ARGUMENT", undefined, "with a valid token, the same body gets its validation error");
});
