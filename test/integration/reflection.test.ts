import t from "tap";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { createClient, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { reflectionRoutes } from "../../server/transport/reflection.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { Video_State, VideoSchema } from "../../gen/video/v1/video_pb.js";
import { Health } from "../../gen/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { bufCurl } from "../support/buf.js";

const runBuf = bufCurl;

// A fixture: GetVideo answers with a fixed video, the rest is unimplemented.
const routes = (router: ConnectRouter): void => {
  router.service(VideoService, {
    getVideo: (req) => create(VideoSchema, { id: req.id, title: "fixture", tags: ["a"], state: Video_State.READY }),
  });
  reflectionRoutes([VideoService, Health])(router);
};

async function startServer(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const server = http2.createServer(connectNodeAdapter({ routes }));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(async () => {
    for (const s of sessions) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test("buf curl uses server reflection", async (t) => {
  const url = await startServer(t);

  const list = await runBuf(["--list-methods", url]);
  t.equal(list.code, 0, list.stderr);
  const methods = list.stdout.trim().split("\n").filter((l) => l.startsWith("video.v1.VideoService/"));
  t.same(methods.sort(), [
    "video.v1.VideoService/AbortUpload",
    "video.v1.VideoService/CompleteUpload",
    "video.v1.VideoService/CreateThumbnail",
    "video.v1.VideoService/CreateUpload",
    "video.v1.VideoService/CreateVideo",
    "video.v1.VideoService/DeleteThumbnail",
    "video.v1.VideoService/DeleteVideo",
    "video.v1.VideoService/FinishProcessing",
    "video.v1.VideoService/GenerateThumbnails",
    "video.v1.VideoService/GetVideo",
    "video.v1.VideoService/ListVideos",
    "video.v1.VideoService/StartProcessing",
    "video.v1.VideoService/UpdateVideo",
    "video.v1.VideoService/UploadVideoContent",
  ]);
  t.match(list.stdout, /grpc\.health\.v1\.Health\/Check/);
  t.match(list.stdout, /grpc\.reflection\.v1\.ServerReflection\/ServerReflectionInfo/);

  for (const extra of [[], ["--reflect-protocol", "grpc-v1"], ["--reflect-protocol", "grpc-v1alpha"]]) {
    for (const protocol of ["grpc", "connect"]) {
      const call = await runBuf([
        ...extra,
        "--protocol",
        protocol,
        `${url}/video.v1.VideoService/GetVideo`,
        "-d",
        '{"id":"x"}',
      ]);
      const label = [protocol, ...extra].join(" ");
      t.equal(call.code, 0, `${label}: ${call.stderr}`);
      t.same(JSON.parse(call.stdout), { id: "x", title: "fixture", tags: ["a"], state: "STATE_READY" }, label);
    }
  }

  // Request encoding needs the dependencies too (Timestamp, FieldMask, enums).
  const listCall = await runBuf([
    "--protocol",
    "grpc",
    `${url}/video.v1.VideoService/ListVideos`,
    "-d",
    '{"state":"STATE_READY","createTimeAfter":"2024-01-01T00:00:00Z","tags":["a"]}',
  ]);
  // Exit code 8 * 12 (UNIMPLEMENTED): the request was encoded and sent, the fixture just lacks ListVideos.
  t.equal(listCall.code, 96, listCall.stderr);
  t.match(listCall.stdout + listCall.stderr, /ListVideos is not implemented/);
});

t.test("reflection resolves google.rpc.Status and the error detail types", async (t) => {
  const url = await startServer(t);
  const client = createClient(v1.ServerReflection, createGrpcTransport({ baseUrl: url }));
  const symbols = ["google.rpc.Status", "google.rpc.BadRequest", "google.rpc.ErrorInfo"];
  const res = await ask<typeof v1.ServerReflectionRequestSchema, typeof v1.ServerReflectionResponseSchema>(
    (r) => client.serverReflectionInfo(r),
    symbols.map((value) => create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value } })),
  );
  const first = (r: v1.ServerReflectionResponse) =>
    r.messageResponse.case === "fileDescriptorResponse" ? fromBinary(FileDescriptorProtoSchema, r.messageResponse.value.fileDescriptorProto[0]).name : r.messageResponse.case;
  t.same(res.map(first), ["google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/error_details.proto"]);
  t.ok(
    res.slice(0, 2).every((r) => r.messageResponse.case === "fileDescriptorResponse" && r.messageResponse.value.fileDescriptorProto.length >= 2),
    "with their dependencies (google/protobuf/any.proto, duration.proto) the first time",
  );
});

async function ask<Req extends DescMessage, Res extends DescMessage>(
  call: (reqs: AsyncIterable<MessageShape<Req>>) => AsyncIterable<MessageShape<Res>>,
  requests: MessageShape<Req>[],
): Promise<MessageShape<Res>[]> {
  async function* gen(): AsyncIterable<MessageShape<Req>> {
    yield* requests;
  }
  const out: MessageShape<Res>[] = [];
  for await (const res of call(gen())) out.push(res);
  return out;
}

t.test("reflection over a Connect gRPC client", async (t) => {
  const url = await startServer(t);
  const client = createClient(v1.ServerReflection, createGrpcTransport({ baseUrl: url }));
  const req = (r: MessageInitShape<typeof v1.ServerReflectionRequestSchema>["messageRequest"]) =>
    create(v1.ServerReflectionRequestSchema, { host: "h", messageRequest: r });
  const names = (res: v1.ServerReflectionResponse): string[] =>
    res.messageResponse.case === "fileDescriptorResponse"
      ? res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name)
      : [];

  const res = await ask<typeof v1.ServerReflectionRequestSchema, typeof v1.ServerReflectionResponseSchema>(
    (r) => client.serverReflectionInfo(r),
    [
      req({ case: "fileContainingSymbol", value: "no.such.Symbol" }),
      req({ case: "fileContainingSymbol", value: "video.v1.Video" }),
      req({ case: "fileContainingSymbol", value: "video.v1.VideoService" }),
      req({ case: "fileContainingSymbol", value: "video.v1.VideoService.GetVideo" }),
      req({ case: "fileContainingSymbol", value: "video.v1.Video.State" }),
      req({ case: "fileContainingSymbol", value: "video.v1.Video.STATE_READY" }),
      req({ case: "fileContainingSymbol", value: "video.v1.Video.title" }),
      req({ case: "fileByFilename", value: "google/protobuf/timestamp.proto" }),
      req({ case: "fileByFilename", value: "nope.proto" }),
      req({ case: "listServices", value: "" }),
      req({ case: "allExtensionNumbersOfType", value: "google.protobuf.MethodOptions" }),
      req({
        case: "fileContainingExtension",
        value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 1052 },
      }),
      req({ case: "fileContainingExtension", value: { containingType: "video.v1.Video", extensionNumber: 100 } }),
    ],
  );
  t.equal(res.length, 13);

  const [unknown, video, service, method, enumType, enumValue, field, ts, nope, list, exts, ext, noExt] = res;
  t.equal(unknown.validHost, "h");
  t.equal(unknown.originalRequest?.messageRequest.value, "no.such.Symbol");
  t.equal(unknown.messageResponse.case, "errorResponse");
  if (unknown.messageResponse.case === "errorResponse") t.equal(unknown.messageResponse.value.errorCode, 5);

  // The requested file first, then transitive dependencies, each once per stream.
  t.same(names(video), [
    "video/v1/video.proto",
    "google/api/field_behavior.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/descriptor.proto",
  ]);
  t.equal(names(service)[0], "video/v1/video_service.proto");
  t.same(new Set(names(service)), new Set([
    "video/v1/video_service.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/protobuf/any.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
  ]));
  t.same(names(method), ["video/v1/video_service.proto"], "already sent deps are not repeated");
  t.same(names(enumType), ["video/v1/video.proto"]);
  t.same(names(enumValue), ["video/v1/video.proto"]);
  t.same(names(field), ["video/v1/video.proto"]);
  t.same(names(ts), ["google/protobuf/timestamp.proto"]);
  t.equal(nope.messageResponse.case, "errorResponse");

  t.equal(list.messageResponse.case, "listServicesResponse");
  if (list.messageResponse.case === "listServicesResponse") {
    t.same(list.messageResponse.value.service.map((s) => s.name).sort(), [
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "video.v1.VideoService",
    ]);
  }
  t.equal(exts.messageResponse.case, "allExtensionNumbersResponse");
  if (exts.messageResponse.case === "allExtensionNumbersResponse") {
    t.same(exts.messageResponse.value.extensionNumber, [72295728]);
  }
  t.same(names(ext), ["google/api/field_behavior.proto"]);
  t.equal(noExt.messageResponse.case, "errorResponse");

  // The embedded descriptor keeps the google.api.http options (as unknown fields).
  if (service.messageResponse.case === "fileDescriptorResponse") {
    const fd = fromBinary(FileDescriptorProtoSchema, service.messageResponse.value.fileDescriptorProto[0]);
    const get = fd.service[0].method.find((m) => m.name === "GetVideo");
    t.ok(get?.options?.$unknown?.some((u) => u.no === 72295728), "http rule kept");
  }
});

t.test("v1alpha answers like v1", async (t) => {
  const url = await startServer(t);
  const client = createClient(v1alpha.ServerReflection, createGrpcTransport({ baseUrl: url }));
  const [res] = await ask<typeof v1alpha.ServerReflectionRequestSchema, typeof v1alpha.ServerReflectionResponseSchema>(
    (r) => client.serverReflectionInfo(r),
    [
      create(v1alpha.ServerReflectionRequestSchema, {
        messageRequest: { case: "fileContainingSymbol", value: "video.v1.Video" },
      }),
    ],
  );
  t.equal(res.$typeName, "grpc.reflection.v1alpha.ServerReflectionResponse");
  t.equal(res.messageResponse.case, "fileDescriptorResponse");
  if (res.messageResponse.case === "fileDescriptorResponse") {
    const first = fromBinary(FileDescriptorProtoSchema, res.messageResponse.value.fileDescriptorProto[0]);
    t.equal(first.name, "video/v1/video.proto");
  }
});
