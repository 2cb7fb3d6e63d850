import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import t from "tap";
import { VideoUpdatedSchema } from "../../gen/video/v1/events_pb.js";
import { Video_State } from "../../gen/video/v1/video_pb.js";
import { bearer, startSecuredServer } from "../support/jwt.js";
import { expectCode, expectRestError } from "../support/server.js";
import { contentMessages } from "../support/uploads.js";

// The processing states the transcoding service reports (role service):
// UPLOADED → PROCESSING → READY or FAILED with a reason; any other transition
// is FAILED_PRECONDITION; each one a VideoUpdated with its mask (CONTRACT.md §1b).

const sec = await startSecuredServer(t);
const { s } = sec;
const service = { headers: bearer(await sec.token("svc-transcoder", ["service"])) };
const editor = { headers: bearer(await sec.token("editor-alice", ["editor"])) };
const rest = (path: string, json: unknown, o = service) => s.clients.rest("POST", path, { json, ...o });

async function uploadedVideo() {
  const v = await s.clients.grpc.createVideo({ video: { title: "processing" } }, editor);
  await s.clients.grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, Buffer.from("stand-in bytes")), editor);
  return v.id;
}

async function masks(id: string): Promise<string[][]> {
  const rows = await s.ctx.db.selectFrom("outbox").select("payload").where("video_id", "=", id).where("type", "=", "video.v1.VideoUpdated").orderBy("sequence").execute();
  return rows.map((r) => fromBinary(VideoUpdatedSchema, r.payload).updateMask?.paths ?? []);
}

t.test("UPLOADED → PROCESSING → READY over gRPC, each a VideoUpdated; other transitions are FAILED_PRECONDITION", async (t) => {
  const id = await uploadedVideo();
  await expectCode(t, s.clients.grpc.finishProcessing({ id, result: Video_State.READY }, service), Code.FailedPrecondition, undefined, "not processing yet");
  t.equal((await s.clients.grpc.startProcessing({ id }, service)).state, Video_State.PROCESSING);
  await expectCode(t, s.clients.grpc.startProcessing({ id }, service), Code.FailedPrecondition, undefined, "already processing");
  const done = await s.clients.grpc.finishProcessing({ id, result: Video_State.READY }, service);
  t.equal(done.state, Video_State.READY);
  t.equal(done.failureReason, "");
  await expectCode(t, s.clients.grpc.finishProcessing({ id, result: Video_State.FAILED, failureReason: "late" }, service), Code.FailedPrecondition, undefined, "already READY");
  t.same(await masks(id), [["state"], ["state"]]);
});

t.test("PROCESSING → FAILED with a reason over REST", async (t) => {
  const id = await uploadedVideo();
  t.equal((await rest(`/videos/${id}:startProcessing`, {})).json.state, "STATE_PROCESSING");
  const res = await rest(`/videos/${id}:finishProcessing`, { result: "STATE_FAILED", failureReason: " unsupported codec (prores) " });
  t.equal(res.status, 200, res.text.slice(0, 200));
  t.equal(res.json.state, "STATE_FAILED");
  t.equal(res.json.failureReason, "unsupported codec (prores)", "trimmed");
  expectRestError(t, await rest(`/videos/${id}:startProcessing`, {}), 400, "FAILED_PRECONDITION");
  t.same(await masks(id), [["state"], ["state", "failure_reason"]]);
});

t.test("bad input is INVALID_ARGUMENT naming the field, over gRPC and REST; other roles are PERMISSION_DENIED", async (t) => {
  const id = await uploadedVideo();
  const cases: [string, { id: string; result: Video_State; failureReason?: string }, Record<string, unknown>, string[]][] = [
    ["no result", { id, result: Video_State.UNSPECIFIED }, {}, ["result"]],
    ["a result that is not an end state", { id, result: Video_State.PROCESSING }, { result: "STATE_PROCESSING" }, ["result"]],
    ["FAILED without a reason", { id, result: Video_State.FAILED }, { result: "STATE_FAILED" }, ["failure_reason"]],
    ["READY with a reason", { id, result: Video_State.READY, failureReason: "x" }, { result: "STATE_READY", failureReason: "x" }, ["failure_reason"]],
    ["a reason too long", { id, result: Video_State.FAILED, failureReason: "x".repeat(1001) }, { result: "STATE_FAILED", failureReason: "x".repeat(1001) }, ["failure_reason"]],
    ["a bad id", { id: "nope", result: Video_State.READY }, { result: "STATE_READY" }, ["id"]],
  ];
  for (const [what, req, json, fields] of cases) {
    await expectCode(t, s.clients.grpc.finishProcessing(req, service), Code.InvalidArgument, fields, what);
    expectRestError(t, await rest(`/videos/${req.id}:finishProcessing`, json), 400, "INVALID_ARGUMENT", fields, what);
  }
  await expectCode(t, s.clients.grpc.startProcessing({ id: "nope" }, service), Code.InvalidArgument, ["id"]);
  await expectCode(t, s.clients.grpc.startProcessing({ id: "01a23afe-1425-74a7-92e6-b38dacd9f69f" }, service), Code.NotFound);
  await expectCode(t, s.clients.grpc.startProcessing({ id }, editor), Code.PermissionDenied, undefined, "the owner is not the transcoder");
  expectRestError(t, await rest(`/videos/${id}:startProcessing`, {}, editor), 403, "PERMISSION_DENIED");
  t.equal((await s.clients.grpc.getVideo({ id }, service)).state, Video_State.UPLOADED, "nothing changed");
});
