import { randomUUID } from "node:crypto";
import t from "tap";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Video_State, Video_Visibility, type Video } from "../../gen/video/v1/video_pb.js";
import {
  DATABASES,
  UUID_V7,
  countVideos,
  expectCode,
  expectRestError,
  rpcClients,
  startTestServer,
  storedRow,
  type TestServer,
  type VideoClient,
} from "../support/server.js";

// Create, Get, List, Update and Delete over every protocol the one port
// serves (CONTRACT.md §1, §2): gRPC through two client stacks, Connect over
// HTTP/1.1 and HTTP/2, gRPC-Web, and the REST routes derived from the
// google.api.http annotations.

type T = Parameters<Parameters<typeof t.test>[0]>[0];

const tag = () => "t" + randomUUID().slice(0, 8);

/** What a caller may rely on for every freshly written video. */
function checkFresh(t: T, v: Video, msg: string) {
  t.match(v.id, UUID_V7, `${msg}: id is a UUIDv7`);
  t.equal(v.state, Video_State.PENDING_UPLOAD, `${msg}: state`);
  t.equal(v.ownerId, "local-developer", `${msg}: owner is the caller`);
  t.ok(v.etag.length > 0, `${msg}: etag`);
  t.ok(v.createTime && v.updateTime, `${msg}: timestamps`);
}

async function roundTrip(t: T, s: TestServer, name: string, c: VideoClient) {
  const label = tag();
  const before = await countVideos(s.ctx);
  const created = await c.createVideo({
    video: {
      title: `  ${name} round trip  `,
      description: "line one\nline two\ttabbed",
      tags: [label, " Second "],
      labels: { suite: "crud", proto: "x" },
      visibility: Video_Visibility.UNLISTED,
    },
  });
  checkFresh(t, created, name);
  t.equal(created.title, `${name} round trip`, "title is trimmed");
  t.equal(created.description, "line one\nline two\ttabbed", "description is stored verbatim");
  t.same(created.tags, [label, "second"], "tags are normalised");
  t.same(created.labels, { suite: "crud", proto: "x" });
  t.equal(created.visibility, Video_Visibility.UNLISTED);
  t.same(created.createTime, created.updateTime, "a new video was created and updated at the same instant");
  t.equal(await countVideos(s.ctx), before + 1, "one row was written");

  const got = await c.getVideo({ id: created.id });
  t.same(got, created, "GetVideo returns what CreateVideo returned");

  const listed = await c.listVideos({ tags: [label] });
  t.same(listed.videos.map((v) => v.id), [created.id], "ListVideos finds it by its tag");
  t.equal(listed.nextPageToken, "", "one page");

  const replaced = await c.updateVideo({ video: { id: created.id, title: "replaced", etag: created.etag } });
  t.equal(replaced.title, "replaced");
  t.equal(replaced.description, "", "full replace clears fields left out");
  t.same(replaced.tags, []);
  t.same(replaced.labels, {});
  t.equal(replaced.visibility, Video_Visibility.PRIVATE, "visibility falls back to private");
  t.not(replaced.etag, created.etag, "etag changed");
  t.same(replaced.createTime, created.createTime, "create_time is kept");
  t.ok(timestampDate(replaced.updateTime!) >= timestampDate(created.updateTime!), "update_time moves forward");

  const masked = await c.updateVideo({
    video: { id: created.id, title: "ignored: not in the mask", description: "masked", tags: ["Only"] },
    updateMask: { paths: ["description", "tags"] },
  });
  t.equal(masked.title, "replaced", "a field outside update_mask is unchanged");
  t.equal(masked.description, "masked");
  t.same(masked.tags, ["only"]);
  t.not(masked.etag, replaced.etag, "etag changed again");

  t.equal((await c.deleteVideo({ id: created.id, etag: masked.etag })).$typeName, "google.protobuf.Empty", "DeleteVideo returns Empty");
  t.equal(await storedRow(s.ctx, created.id), undefined, "the row is gone");
  await expectCode(t, c.getVideo({ id: created.id }), Code.NotFound, undefined, "get after delete");
  await expectCode(t, c.deleteVideo({ id: created.id }), Code.NotFound, undefined, "delete after delete");
  await expectCode(t, c.updateVideo({ video: { id: created.id, title: "x" } }), Code.NotFound, undefined, "update after delete");
  t.equal(await countVideos(s.ctx), before, "no rows left behind");
}

function behaviours(s: () => TestServer) {
  return {
    async "every RPC round-trips over every gRPC, Connect and gRPC-Web client"(t: T) {
      for (const [name, client] of rpcClients(s())) {
        await t.test(name, (t) => roundTrip(t, s(), name, client));
      }
    },

    async "REST: POST, GET with ETag, list by tags, PUT, PATCH, DELETE"(t: T) {
      const { rest } = s().clients;
      const label = tag();
      const post = await rest("POST", "/videos", {
        json: { title: "  REST video ", description: "d", tags: [label, "B", "b"], labels: { k: "v" }, visibility: "VISIBILITY_PUBLIC" },
      });
      t.equal(post.status, 200, post.text);
      t.match(post.headers.get("content-type"), /^application\/json/);
      const v = post.json;
      t.match(v.id, UUID_V7);
      t.same(
        { title: v.title, description: v.description, tags: v.tags, labels: v.labels, visibility: v.visibility, state: v.state, ownerId: v.ownerId },
        { title: "REST video", description: "d", tags: [label, "b"], labels: { k: "v" }, visibility: "VISIBILITY_PUBLIC", state: "STATE_PENDING_UPLOAD", ownerId: "local-developer" },
        "proto3 JSON with camelCase names and enum names",
      );
      t.ok(Date.parse(v.createTime) > 0 && v.createTime === v.updateTime, "RFC 3339 timestamps");

      const get = await rest("GET", `/videos/${v.id}`);
      t.equal(get.status, 200);
      t.same(get.json, v, "GET returns the created video");
      t.equal(get.headers.get("etag"), `"${v.etag}"`, "ETag header is the quoted etag");

      await rest("POST", "/videos", { json: { title: "other", tags: [label] } });
      const page1 = await rest("GET", `/videos?tags=${label}&tags=B&page_size=1`);
      t.equal(page1.status, 200, page1.text);
      t.same(page1.json.videos.map((x: { id: string }) => x.id), [v.id], "tags filter (both tags, normalised) and page_size");
      t.equal(page1.json.nextPageToken, undefined, "no next page: only one video carries both tags");
      const page2 = await rest("GET", `/videos?tags=${label}&pageSize=1`);
      t.equal(page2.json.videos.length, 1, "camelCase query parameter names work too");
      t.type(page2.json.nextPageToken, "string", "two videos carry the tag: a next page");
      const page3 = await rest("GET", `/videos?tags=${label}&pageSize=1&pageToken=${page2.json.nextPageToken}`);
      t.equal(page3.json.videos.length, 1);
      t.not(page3.json.videos[0].id, page2.json.videos[0].id, "the token moved on");

      const put = await rest("PUT", `/videos/${v.id}`, { json: { title: "put title", tags: ["x"] } });
      t.equal(put.status, 200, put.text);
      t.same(
        { title: put.json.title, description: put.json.description, tags: put.json.tags, labels: put.json.labels, visibility: put.json.visibility },
        { title: "put title", description: undefined, tags: ["x"], labels: undefined, visibility: "VISIBILITY_PRIVATE" },
        "PUT replaces every mutable field; absent ones go back to their defaults",
      );
      t.not(put.json.etag, v.etag);
      t.equal(put.headers.get("etag"), `"${put.json.etag}"`, "writes carry the new ETag too");

      const patched = await rest("PATCH", `/videos/${v.id}`, { json: { description: "patched", labels: { a: "1" } } });
      t.equal(patched.status, 200, patched.text);
      t.same(
        { title: patched.json.title, description: patched.json.description, tags: patched.json.tags, labels: patched.json.labels },
        { title: "put title", description: "patched", tags: ["x"], labels: { a: "1" } },
        "PATCH changes only the fields present in the body",
      );
      const patched2 = await rest("PATCH", `/videos/${v.id}`, { json: { visibility: "VISIBILITY_UNLISTED", tags: [] } });
      t.same(
        { title: patched2.json.title, description: patched2.json.description, tags: patched2.json.tags, visibility: patched2.json.visibility },
        { title: "put title", description: "patched", tags: undefined, visibility: "VISIBILITY_UNLISTED" },
        "a field present with its empty value is cleared; the rest stay",
      );
      const patched3 = await rest("PATCH", `/videos/${v.id}?update_mask=title`, { json: { title: "masked", description: "not in the mask" } });
      t.equal(patched3.status, 200, patched3.text);
      t.same([patched3.json.title, patched3.json.description], ["masked", "patched"], "an explicit update_mask wins over the body's fields");

      const del = await rest("DELETE", `/videos/${v.id}`);
      t.equal(del.status, 200, del.text);
      t.same(del.json, {}, "DELETE answers {}");
      expectRestError(t, await rest("GET", `/videos/${v.id}`), 404, "NOT_FOUND", undefined, "GET after DELETE");
      expectRestError(t, await rest("DELETE", `/videos/${v.id}`), 404, "NOT_FOUND", undefined, "DELETE after DELETE");
      expectRestError(t, await rest("PATCH", `/videos/${v.id}`, { json: { title: "x" } }), 404, "NOT_FOUND", undefined, "PATCH after DELETE");
    },

    async "a video written over one protocol reads the same over every other"(t: T) {
      const server = s();
      const created = await server.clients.grpcWeb.createVideo({ video: { title: "cross", tags: ["a"], labels: { x: "y" } } });
      for (const [name, c] of rpcClients(server)) t.same(await c.getVideo({ id: created.id }), created, name);
      const rest = await server.clients.rest("GET", `/videos/${created.id}`);
      t.equal(rest.json.etag, created.etag, "REST");
      t.equal(rest.json.createTime, new Date(Number(timestampDate(created.createTime!))).toISOString(), "REST create_time is the same instant");
    },

    async "ids are server-assigned UUIDv7s, unique and time-ordered"(t: T) {
      const c = s().clients.connect;
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const started = Date.now();
        const v = await c.createVideo({ video: { title: `id ${i}` } });
        t.match(v.id, UUID_V7);
        const ms = parseInt(v.id.replace(/-/g, "").slice(0, 12), 16);
        t.ok(Math.abs(ms - started) < 5_000, "the id's timestamp is the creation time");
        ids.push(v.id);
      }
      t.equal(new Set(ids).size, ids.length, "unique");
      t.same([...ids].sort(), ids, "sorted by creation");
    },

    async "output-only fields sent by the caller are ignored, never stored"(t: T) {
      const server = s();
      const forged = {
        id: "00000000-0000-7000-8000-000000000000",
        state: Video_State.READY,
        ownerId: "mallory",
        etag: "forged-etag",
        source: { objectKey: "../../etc/passwd", sizeBytes: 1n, contentType: "video/mp4" },
        thumbnails: [{ objectKey: "t", url: "http://evil" }],
        createTime: { seconds: 1n },
        updateTime: { seconds: 2n },
      };
      for (const [name, c] of rpcClients(server)) {
        const v = await c.createVideo({ video: { title: "forged", ...forged } });
        t.not(v.id, forged.id, `${name}: id`);
        t.equal(v.state, Video_State.PENDING_UPLOAD, `${name}: state`);
        t.equal(v.ownerId, "local-developer", `${name}: owner`);
        t.not(v.etag, forged.etag, `${name}: etag`);
        t.equal(v.source, undefined, `${name}: source`);
        t.same(v.thumbnails, [], `${name}: thumbnails`);
        t.ok(timestampDate(v.createTime!).getFullYear() > 2000, `${name}: create_time`);
        const row = await storedRow(server.ctx, v.id);
        t.same([row?.state, row?.owner_id, row?.source], ["pending_upload", "local-developer", null], `${name}: stored row`);
        t.equal(await storedRow(server.ctx, forged.id), undefined, `${name}: nothing stored under the caller's id`);

        const u = await c.updateVideo({ video: { ...forged, id: v.id, title: "updated", etag: "" } });
        t.same(
          [u.state, u.ownerId, u.source, u.createTime],
          [Video_State.PENDING_UPLOAD, "local-developer", undefined, v.createTime],
          `${name}: a full replace keeps output-only fields`,
        );
        const masked = await c.updateVideo({ video: { ...forged, id: v.id, etag: "" }, updateMask: { paths: ["state", "owner_id", "create_time"] } });
        t.same([masked.state, masked.ownerId, masked.createTime], [u.state, u.ownerId, u.createTime], `${name}: output-only mask paths are ignored`);
      }
      const post = await server.clients.rest("POST", "/videos", {
        json: { title: "forged", id: forged.id, state: "STATE_READY", ownerId: "mallory", etag: "e", createTime: "2000-01-01T00:00:00Z", source: { objectKey: "k" } },
      });
      t.equal(post.status, 200, post.text);
      t.same(
        [post.json.id === forged.id, post.json.state, post.json.ownerId, post.json.etag === "e", post.json.source, post.json.createTime.startsWith("2000")],
        [false, "STATE_PENDING_UPLOAD", "local-developer", false, undefined, false],
        "REST",
      );
      const patch = await server.clients.rest("PATCH", `/videos/${post.json.id}`, { json: { state: "STATE_READY", ownerId: "mallory" } });
      t.equal(patch.status, 200, patch.text);
      t.same([patch.json.state, patch.json.ownerId, patch.json.title], ["STATE_PENDING_UPLOAD", "local-developer", "forged"], "REST PATCH of output-only fields changes nothing");
    },

    async "etag changes on every write; a stale etag is ABORTED (REST 409, body or If-Match)"(t: T) {
      const server = s();
      const { grpc, rest } = server.clients;
      const seen = new Set<string>();
      const v0 = await grpc.createVideo({ video: { title: "etag" } });
      seen.add(v0.etag);
      const v1 = await grpc.updateVideo({ video: { id: v0.id, title: "etag 1", etag: v0.etag } });
      seen.add(v1.etag);
      const v2 = await grpc.updateVideo({ video: { id: v0.id, title: "etag 2" } });
      seen.add(v2.etag);
      t.not(v2.etag, v1.etag, "a write gets a new etag");

      let title = v2.title;
      for (const [name, c] of rpcClients(server)) {
        const current = (await c.getVideo({ id: v0.id })).etag;
        await expectCode(t, c.updateVideo({ video: { id: v0.id, title: "stale", etag: v0.etag } }), Code.Aborted, undefined, `${name}: stale update`);
        await expectCode(t, c.deleteVideo({ id: v0.id, etag: v1.etag }), Code.Aborted, undefined, `${name}: stale delete`);
        const after = await c.getVideo({ id: v0.id });
        t.equal(after.etag, current, `${name}: a refused write changes nothing`);
        t.equal(after.title, title);
        title = `etag ${name}`;
        const ok = await c.updateVideo({ video: { id: v0.id, title, etag: current } });
        t.notOk(seen.has(ok.etag), `${name}: new etag`);
        seen.add(ok.etag);
      }

      const current = (await rest("GET", `/videos/${v0.id}`)).json.etag;
      expectRestError(t, await rest("PATCH", `/videos/${v0.id}`, { json: { title: "x", etag: v0.etag } }), 409, "ABORTED", undefined, "stale etag in the body");
      expectRestError(t, await rest("PUT", `/videos/${v0.id}`, { json: { title: "x" }, headers: { "if-match": `"${v0.etag}"` } }), 409, "ABORTED", undefined, "stale If-Match");
      expectRestError(t, await rest("PATCH", `/videos/${v0.id}`, { json: { title: "x" }, headers: { "if-match": `W/"${v1.etag}"` } }), 409, "ABORTED", undefined, "stale weak If-Match");
      expectRestError(t, await rest("DELETE", `/videos/${v0.id}`, { headers: { "if-match": `"${v1.etag}"` } }), 409, "ABORTED", undefined, "stale If-Match on DELETE");
      expectRestError(t, await rest("DELETE", `/videos/${v0.id}?etag=${v1.etag}`), 409, "ABORTED", undefined, "stale etag query parameter on DELETE");
      const unchanged = await rest("GET", `/videos/${v0.id}`);
      t.same([unchanged.json.etag, unchanged.json.title], [current, title], "refused REST writes changed nothing");

      const viaIfMatch = await rest("PATCH", `/videos/${v0.id}`, { json: { title: "if-match ok" }, headers: { "if-match": `"${current}"` } });
      t.equal(viaIfMatch.status, 200, viaIfMatch.text);
      t.notOk(seen.has(viaIfMatch.json.etag));
      seen.add(viaIfMatch.json.etag);
      const viaBody = await rest("PUT", `/videos/${v0.id}`, { json: { title: "body ok", etag: viaIfMatch.json.etag } });
      t.equal(viaBody.status, 200, viaBody.text);
      t.notOk(seen.has(viaBody.json.etag));
      const del = await rest("DELETE", `/videos/${v0.id}`, { headers: { "if-match": `"${viaBody.json.etag}"` } });
      t.equal(del.status, 200, "DELETE with the current If-Match");
    },

    async "an update that changes nothing writes nothing: same etag and update_time, no event"(t: T) {
      const server = s();
      const full = { title: "no-op", description: "d", tags: ["a", "b"], labels: { k: "v", a: "b" }, visibility: Video_Visibility.UNLISTED };
      const v = await server.clients.grpc.createVideo({ video: full });
      const events = async () => (await server.ctx.db.selectFrom("outbox").select("sequence").where("video_id", "=", v.id).execute()).length;
      const before = { row: await storedRow(server.ctx, v.id), events: await events() };
      const same = async (what: string, call: () => Promise<{ etag: string; title: string }>) => {
        const u = await call();
        t.same([u.etag, u.title], [v.etag, v.title], `${what}: answers OK with the video, etag kept`);
        t.same(await storedRow(server.ctx, v.id), before.row, `${what}: the row is untouched (etag, update_time, event_sequence)`);
        t.equal(await events(), before.events, `${what}: no VideoUpdated event`);
      };
      for (const [name, c] of rpcClients(server)) {
        await same(`${name}: mask of output-only fields`, () => c.updateVideo({ video: { id: v.id, state: 3, title: "ignored" }, updateMask: { paths: ["state", "owner_id"] } }));
        await same(`${name}: identical values, full replace`, () => c.updateVideo({ video: { id: v.id, ...full, labels: { a: "b", k: "v" } } }));
        await same(`${name}: identical after normalising`, () => c.updateVideo({ video: { id: v.id, title: "  no-op ", tags: ["A", "b", "a"] }, updateMask: { paths: ["title", "tags"] } }));
        await same(`${name}: identical, with the current etag`, () => c.updateVideo({ video: { id: v.id, title: "no-op", etag: v.etag }, updateMask: { paths: ["title"] } }));
      }
      const rest = server.clients.rest;
      await same("REST PATCH of an output-only field", async () => (await rest("PATCH", `/videos/${v.id}`, { json: { state: "STATE_READY" } })).json);
      await same("REST PATCH with the same title", async () => (await rest("PATCH", `/videos/${v.id}`, { json: { title: "no-op" } })).json);
      await expectCode(t, server.clients.grpc.updateVideo({ video: { id: v.id, title: "no-op", etag: "stale" }, updateMask: { paths: ["title"] } }), Code.Aborted, undefined, "a no-op with a stale etag is still ABORTED");
      const changed = await server.clients.grpc.updateVideo({ video: { id: v.id, title: "changed" }, updateMask: { paths: ["title"] } });
      t.not(changed.etag, v.etag, "a real change still gets a new etag");
      t.equal(await events(), before.events + 1, "and one event");
    },

    async "update_mask changes only the named fields; no mask replaces every mutable field"(t: T) {
      const c = s().clients.connectH2;
      const full = { title: "mask", description: "desc", tags: ["a", "b"], labels: { k: "v" }, visibility: Video_Visibility.PUBLIC };
      const v = await c.createVideo({ video: full });
      const other = { title: "other", description: "other", tags: ["z"], labels: { z: "z" }, visibility: Video_Visibility.UNLISTED };
      const pick = (x: Video) => ({ title: x.title, description: x.description, tags: x.tags, labels: x.labels, visibility: x.visibility });
      let expected = pick(v);
      for (const field of ["title", "description", "tags", "labels", "visibility"] as const) {
        const u = await c.updateVideo({ video: { id: v.id, ...other }, updateMask: { paths: [field] } });
        expected = { ...expected, [field]: other[field] };
        t.same(pick(u), expected, `mask [${field}] changes ${field} only`);
      }
      const back = await c.updateVideo({ video: { id: v.id, ...full }, updateMask: { paths: ["title", "labels", "visibility"] } });
      t.same(pick(back), { ...expected, title: "mask", labels: { k: "v" }, visibility: Video_Visibility.PUBLIC }, "a mask of several fields");
      const star = await c.updateVideo({ video: { id: v.id, title: "star" }, updateMask: { paths: ["*"] } });
      t.same(pick(star), { title: "star", description: "", tags: [], labels: {}, visibility: Video_Visibility.PRIVATE }, '"*" replaces everything');
      const none = await c.updateVideo({ video: { id: v.id, ...full } });
      t.same(pick(none), { ...full }, "no mask replaces everything");
      await expectCode(t, c.updateVideo({ video: { id: v.id, title: "x" }, updateMask: { paths: ["nope"] } }), Code.InvalidArgument, ["update_mask"], "unknown mask path");
      t.same(pick(await c.getVideo({ id: v.id })), { ...full }, "a refused mask changed nothing");
    },

    async "request_id makes CreateVideo idempotent: replays return the same video, reuse with another body is ALREADY_EXISTS"(t: T) {
      const server = s();
      const requestId = randomUUID();
      const body = { title: "idempotent", tags: ["One", "two"] };
      const before = await countVideos(server.ctx);
      const first = await server.clients.grpc.createVideo({ video: body, requestId });
      for (const [name, c] of rpcClients(server)) {
        t.same(await c.createVideo({ video: body, requestId }), first, `${name}: a replay returns the original video`);
      }
      t.same(
        await server.clients.grpcJs.createVideo({ video: { title: " idempotent ", tags: ["one", " TWO"] }, requestId: requestId.toUpperCase() }),
        first,
        "the same request after normalisation, and the request_id in upper case, is a replay",
      );
      t.equal(await countVideos(server.ctx), before + 1, "replays created nothing");

      for (const [name, c] of rpcClients(server)) {
        await expectCode(t, c.createVideo({ video: { ...body, title: "different" }, requestId }), Code.AlreadyExists, undefined, `${name}: reuse with another body`);
      }
      t.equal(await countVideos(server.ctx), before + 1, "refused reuse created nothing");

      const key = randomUUID();
      const post = await server.clients.rest("POST", "/videos", { json: body, headers: { "idempotency-key": key } });
      t.equal(post.status, 200, post.text);
      t.not(post.json.id, first.id, "a new key, a new video");
      const replay = await server.clients.rest("POST", "/videos", { json: body, headers: { "idempotency-key": key } });
      t.same(replay.json, post.json, "REST: Idempotency-Key replays");
      t.equal((await server.clients.connect.createVideo({ video: body, requestId: key })).id, post.json.id, "Idempotency-Key is the request_id");
      expectRestError(
        t,
        await server.clients.rest("POST", "/videos", { json: { title: "not the same" }, headers: { "idempotency-key": key } }),
        409,
        "ALREADY_EXISTS",
        undefined,
        "REST reuse with another body",
      );
      t.equal(await countVideos(server.ctx), before + 2, "one row per key");
      const noKey = await server.clients.rest("POST", "/videos", { json: body });
      t.not(noKey.json.id, post.json.id, "without a key every POST creates");
      t.equal(await countVideos(server.ctx), before + 3);
    },

    async "concurrent identical creates with one request_id create exactly one video"(t: T) {
      const server = s();
      const requestId = randomUUID();
      const title = "concurrent " + requestId;
      const before = await countVideos(server.ctx);
      const clients = rpcClients(server).map(([, c]) => c);
      const calls: Promise<string>[] = [];
      for (let i = 0; i < 24; i++) {
        if (i % 6 === 5) {
          calls.push(server.clients.rest("POST", "/videos", { json: { title }, headers: { "idempotency-key": requestId } }).then((r) => r.json.id ?? `HTTP ${r.status} ${r.text}`));
        } else {
          calls.push(clients[i % 6].createVideo({ video: { title }, requestId }).then((v) => v.id));
        }
      }
      const ids = await Promise.all(calls);
      t.equal(new Set(ids).size, 1, `every caller got the same video: ${[...new Set(ids)].join(", ")}`);
      t.match(ids[0], UUID_V7);
      t.equal(await countVideos(server.ctx), before + 1, "exactly one row");
      const rows = await server.ctx.db.selectFrom("videos").select("id").where("title", "=", title).execute();
      t.same(rows.map((r) => r.id), [ids[0]]);
    },
  };
}

for (const db of DATABASES) {
  t.test(`CRUD on ${db.kind}`, { skip: db.skip }, async (t) => {
    const server = await startTestServer(t, { database: db.kind });
    for (const [name, fn] of Object.entries(behaviours(() => server))) {
      await t.test(name, fn);
    }
  });
}
