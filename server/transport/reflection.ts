// gRPC server reflection (grpc.reflection.v1 and v1alpha) for connect-node, so
// `buf curl`, grpcurl and friends work without a local schema. Wire it next to
// the real services:
//
//   connectNodeAdapter({ routes: (router) => {
//     router.service(VideoService, impl);
//     reflectionRoutes([VideoService, Health])(router);
//   } })
import {
  create,
  createRegistry,
  fromBinary,
  toBinary,
  type DescFile,
  type DescMessage,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "../../gen/google/rpc/status_pb.js";

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;
type Answer = MessageInitShape<typeof v1.ServerReflectionResponseSchema>["messageResponse"];

export function reflectionRoutes(services: DescService[]): (router: ConnectRouter) => void {
  const all = [...services, v1.ServerReflection, v1alpha.ServerReflection];
  const serviceNames = [...new Set(all.map((s) => s.typeName))];

  // Every file the services need, keyed by its path ("video/v1/video.proto").
  const files = new Map<string, DescFile>();
  const addFile = (f: DescFile): void => {
    if (files.has(f.proto.name)) return;
    files.set(f.proto.name, f);
    f.dependencies.forEach(addFile);
  };
  all.forEach((s) => addFile(s.file));
  // Errors carry google.rpc.Status details (BadRequest, ErrorInfo…) as Any
  // messages that no service's schema mentions: without their files a client
  // resolving through reflection (buf curl, grpcurl) shows them as base64.
  addFile(file_google_rpc_status);
  addFile(file_google_rpc_error_details);
  const registry = createRegistry(...files.values());

  const encoded = new Map<DescFile, Uint8Array>();
  const encode = (f: DescFile): Uint8Array => {
    let b = encoded.get(f);
    if (!b) encoded.set(f, (b = toBinary(FileDescriptorProtoSchema, f.proto)));
    return b;
  };

  // Types are in the registry; members (methods, fields, oneofs, enum values)
  // are found through their parent's name.
  const fileOfSymbol = (name: string): DescFile | undefined => {
    const type = registry.get(name);
    if (type) return type.file;
    const dot = name.lastIndexOf(".");
    const scope = dot < 0 ? "" : name.slice(0, dot);
    const member = name.slice(dot + 1);
    const parent = registry.get(scope);
    if (parent?.kind === "service" && parent.methods.some((m) => m.name === member)) return parent.file;
    if (parent?.kind === "message" && [...parent.fields, ...parent.oneofs].some((f) => f.name === member)) {
      return parent.file;
    }
    for (const t of registry) {
      if (t.kind !== "enum" || !t.typeName.startsWith(scope) || t.typeName.lastIndexOf(".") !== dot) continue;
      if (t.values.some((v) => v.name === member)) return t.file;
    }
    return undefined;
  };

  // Like grpc-go: the requested file first, then its transitive dependencies
  // that this stream has not received yet.
  const withDeps = (file: DescFile, sent: Set<string>): Answer => {
    const out: Uint8Array[] = [];
    const queue = [file];
    for (let f = queue.shift(); f; f = queue.shift()) {
      if (out.length > 0 && sent.has(f.proto.name)) continue;
      sent.add(f.proto.name);
      out.push(encode(f));
      queue.push(...f.dependencies);
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  };

  const error = (code: Code, message: string): Answer => ({
    case: "errorResponse",
    value: { errorCode: code, errorMessage: message },
  });

  const answer = (req: Request, sent: Set<string>): Answer => {
    const r = req.messageRequest;
    const found = (f: DescFile | undefined, what: string): Answer =>
      f ? withDeps(f, sent) : error(Code.NotFound, `${what} not found`);
    switch (r.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } };
      case "fileByFilename":
        return found(files.get(r.value), `file ${r.value}`);
      case "fileContainingSymbol":
        return found(fileOfSymbol(r.value), `symbol ${r.value}`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = r.value;
        const m = registry.getMessage(containingType);
        const ext = m && registry.getExtensionFor(m, extensionNumber);
        return found(ext?.file, `extension ${extensionNumber} of ${containingType}`);
      }
      case "allExtensionNumbersOfType": {
        const m = registry.getMessage(r.value);
        if (!m) return error(Code.NotFound, `type ${r.value} not found`);
        const numbers: number[] = [];
        for (const t of registry) {
          if (t.kind === "extension" && t.extendee.typeName === m.typeName) numbers.push(t.number);
        }
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: m.typeName, extensionNumber: numbers } };
      }
      default:
        return error(Code.InvalidArgument, "empty message_request");
    }
  };

  async function* info(requests: AsyncIterable<Request>): AsyncIterable<Response> {
    const sent = new Set<string>();
    for await (const req of requests) {
      yield create(v1.ServerReflectionResponseSchema, {
        validHost: req.host,
        originalRequest: req,
        messageResponse: answer(req, sent),
      });
    }
  }

  // v1alpha has the same wire format as v1: re-encode instead of duplicating.
  const recode = <T extends DescMessage>(from: DescMessage, to: T, m: MessageShape<DescMessage>): MessageShape<T> =>
    fromBinary(to, toBinary(from, m));
  async function* infoAlpha(
    requests: AsyncIterable<v1alpha.ServerReflectionRequest>,
  ): AsyncIterable<v1alpha.ServerReflectionResponse> {
    async function* up(): AsyncIterable<Request> {
      for await (const r of requests) {
        yield recode(v1alpha.ServerReflectionRequestSchema, v1.ServerReflectionRequestSchema, r);
      }
    }
    for await (const res of info(up())) {
      yield recode(v1.ServerReflectionResponseSchema, v1alpha.ServerReflectionResponseSchema, res);
    }
  }

  return (router) => {
    router.service(v1.ServerReflection, { serverReflectionInfo: info });
    router.service(v1alpha.ServerReflection, { serverReflectionInfo: infoAlpha });
  };
}
