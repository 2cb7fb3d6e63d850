import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromBinary, toBinary, type DescMessage, type DescService, type MessageInitShape, type MessageShape, create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { loadConfig, type Config } from "../../server/config.js";
import { AppContext } from "../../server/context.js";
import { migrate } from "../../server/db/migrate.js";
import { createLogger } from "../../server/logger.js";
import { createServer } from "../../server/transport/server.js";
import { teeLogger } from "./log-capture.js";
import { createTestDatabase, postgresSkipReason } from "./postgres.js";

// A real server on an ephemeral loopback port, with one client per protocol,
// for end-to-end tests. Everything it starts is stopped in t.teardown.

export type DatabaseKind = "pglite" | "postgres";

/** The backends every e2e behaviour runs against; PostgreSQL only when TEST_DATABASE_URL is set. */
export const DATABASES: readonly { kind: DatabaseKind; skip: string | false }[] = [
  { kind: "pglite", skip: false },
  { kind: "postgres", skip: postgresSkipReason() },
];

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface StartOptions {
  database: DatabaseKind;
  /** Extra environment for loadConfig (MAX_BODY_BYTES, SHUTDOWN_GRACE_MS…). */
  env?: Record<string, string>;
  /** The server's clock (create_time, update_time); the real one by default. */
  clock?: () => Date;
  /** Apply the migrations before serving (default true). */
  migrate?: boolean;
}

export type VideoClient = Client<typeof VideoService>;

export interface RestResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body; undefined when it is not JSON. */
  json: any;
}

export interface RestRequest {
  /** Serialised with JSON.stringify and sent as application/json. */
  json?: unknown;
  /** Sent as is (for malformed bodies); content-type defaults to application/json. */
  body?: string | Uint8Array;
  headers?: Record<string, string>;
}

export interface TestServer {
  baseUrl: string;
  port: number;
  ctx: AppContext;
  cfg: Config;
  server: ReturnType<typeof createServer>;
  clients: {
    /** gRPC through Connect's transport (HTTP/2, binary). */
    grpc: VideoClient;
    /** gRPC through @grpc/grpc-js; errors are turned into ConnectErrors so tests compare alike. */
    grpcJs: VideoClient;
    /** Connect protocol over HTTP/1.1, JSON. */
    connect: VideoClient;
    /** Connect protocol over HTTP/2, binary. */
    connectH2: VideoClient;
    /** gRPC-Web over HTTP/1.1, binary. */
    grpcWeb: VideoClient;
    rest: (method: string, path: string, req?: RestRequest) => Promise<RestResponse>;
  };
  /** The raw @grpc/grpc-js client on the same port, for bytes no typed client would send. */
  grpcJsRaw: GrpcJsRaw;
  transports: { grpc: Transport; connect: Transport; connectH2: Transport; grpcWeb: Transport };
}

/** Every typed RPC client, by name, for "the same behaviour over every protocol". */
export function rpcClients(s: TestServer): [string, VideoClient][] {
  const c = s.clients;
  return [
    ["grpc (connect-node)", c.grpc],
    ["grpc (@grpc/grpc-js)", c.grpcJs],
    ["connect http/1.1", c.connect],
    ["connect http/2", c.connectH2],
    ["grpc-web", c.grpcWeb],
  ];
}

export async function startTestServer(t: Teardown, options: StartOptions): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "vms-e2e-"));
  // Run after the server and context are closed, in this order (tap's own
  // teardown order is not something to lean on).
  const later: (() => unknown)[] = [() => rm(dataDir, { recursive: true, force: true })];
  const databaseUrl = options.database === "postgres" ? await createTestDatabase({ teardown: (fn) => later.unshift(fn) }) : undefined;

  const cfg = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    LOG_LEVEL: "error",
    // Media jobs would probe (and fail) the stand-in bytes most tests upload,
    // changing their videos behind their backs: off unless a test asks.
    THUMBNAIL_CONCURRENCY: "0",
    ...(databaseUrl ? { DATABASE_URL: databaseUrl, DB_POOL_MAX: "5" } : {}),
    ...options.env,
  });
  // Silent unless E2E_LOG is set: expected failures would otherwise flood the TAP output.
  // Teed into the run's log capture at every level (the secrets scan reads it).
  const logger = teeLogger(createLogger(process.env.E2E_LOG || cfg.logLevel, !process.env.E2E_LOG));
  const ctx = await AppContext.fromConfig(cfg, { logger, ...(options.clock ? { clock: options.clock } : {}) });
  let server: ReturnType<typeof createServer> | undefined;
  const agent = new http.Agent({ keepAlive: true });
  const sessions: Http2SessionManager[] = [];
  let grpcJsClient: grpc.Client | undefined;

  t.teardown(async () => {
    grpcJsClient?.close();
    for (const s of sessions) s.abort();
    agent.destroy();
    if (server) await server.close(1000);
    await ctx.close();
    for (const fn of later) await fn();
  });

  if (options.migrate !== false) await migrate(ctx.database, { dir: cfg.migrationsDir });
  server = createServer(ctx);
  const address = await server.listen(0, "127.0.0.1");
  const port = address.port;
  const baseUrl = `http://127.0.0.1:${port}`;

  const h2 = () => {
    const m = new Http2SessionManager(baseUrl);
    sessions.push(m);
    return m;
  };
  const transports = {
    grpc: createGrpcTransport({ baseUrl, sessionManager: h2() }),
    connect: createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
    connectH2: createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, sessionManager: h2() }),
    grpcWeb: createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, nodeOptions: { agent } }),
  };
  grpcJsClient = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const grpcJsRaw = rawGrpcJs(grpcJsClient);

  async function rest(method: string, path: string, req: RestRequest = {}): Promise<RestResponse> {
    const headers: Record<string, string> = { ...req.headers };
    let body: string | Uint8Array | undefined;
    if (req.json !== undefined) body = JSON.stringify(req.json);
    else if (req.body !== undefined) body = req.body;
    if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
      headers["content-type"] = "application/json";
    }
    // fetch takes any Uint8Array at run time; the DOM typings only list ArrayBuffer views of ArrayBuffer.
    const res = await fetch(baseUrl + path, { method, headers, body: body as string | undefined });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  }

  return {
    baseUrl,
    port,
    ctx,
    cfg,
    server,
    transports,
    grpcJsRaw,
    clients: {
      grpc: createClient(VideoService, transports.grpc),
      grpcJs: grpcJsTypedClient(VideoService, grpcJsRaw),
      connect: createClient(VideoService, transports.connect),
      connectH2: createClient(VideoService, transports.connectH2),
      grpcWeb: createClient(VideoService, transports.grpcWeb),
      rest,
    },
  };
}

// ---- @grpc/grpc-js ----------------------------------------------------------

export interface GrpcJsRaw {
  client: grpc.Client;
  /** A unary call with raw request bytes; resolves with the response bytes or rejects with the grpc-js ServiceError. */
  call(path: string, request: Uint8Array, metadata?: Record<string, string>): Promise<Buffer>;
}

function rawGrpcJs(client: grpc.Client): GrpcJsRaw {
  return {
    client,
    call(path, request, metadata = {}) {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest<Uint8Array, Buffer>(
          path,
          (b) => Buffer.from(b),
          (b) => b,
          request,
          md,
          { deadline: Date.now() + 30_000 },
          (err, value) => (err ? reject(err) : resolve(value!)),
        );
      });
    },
  };
}

/** A grpc-js ServiceError as the ConnectError a Connect client would have thrown (details included). */
export function connectErrorFromGrpcJs(err: grpc.ServiceError): ConnectError {
  const trailer = new Headers();
  trailer.set("grpc-status", String(err.code));
  trailer.set("grpc-message", encodeURIComponent(err.details ?? ""));
  const bin = err.metadata?.get("grpc-status-details-bin")[0];
  if (bin !== undefined) trailer.set("grpc-status-details-bin", Buffer.from(bin as Buffer).toString("base64").replace(/=+$/, ""));
  return findTrailerError(trailer) ?? new ConnectError(err.details ?? err.message, err.code as number);
}

function grpcJsTypedClient<S extends DescService>(service: S, raw: GrpcJsRaw): Client<S> {
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary") continue;
    const path = `/${service.typeName}/${method.name}`;
    client[method.localName] = async (init: MessageInitShape<DescMessage>) => {
      const req = create(method.input, init);
      try {
        const bytes = await raw.call(path, toBinary(method.input, req));
        return fromBinary(method.output, bytes) as MessageShape<DescMessage>;
      } catch (e) {
        if (e instanceof Error && "code" in e && "metadata" in e) throw connectErrorFromGrpcJs(e as grpc.ServiceError);
        throw e;
      }
    };
  }
  return client as Client<S>;
}

// ---- assertions shared by the e2e files ---------------------------------------

/** A tap test (the type only: importing tap here would start a TAP stream). */
export type Asserts = Parameters<Parameters<(typeof import("tap"))["default"]["test"]>[0]>[0];

/** The field names of a ConnectError's google.rpc.BadRequest detail, sorted. */
export function violationFields(err: ConnectError): string[] {
  return err
    .findDetails(BadRequestSchema)
    .flatMap((d) => d.fieldViolations.map((v) => v.field))
    .sort();
}

/**
 * Awaits a call that must fail with `code`; with `fields`, the error must carry
 * a google.rpc.BadRequest naming exactly those fields. Returns the error.
 */
/** A server stream's first message; rejects with the call's error if it fails before sending one. */
export async function firstMessage<T>(stream: AsyncIterable<T>): Promise<T | undefined> {
  for await (const m of stream) return m;
  return undefined;
}

export async function expectCode(t: Asserts, call: Promise<unknown>, code: Code, fields?: string[], msg = ""): Promise<ConnectError | undefined> {
  try {
    await call;
  } catch (e) {
    const err = ConnectError.from(e);
    t.equal(Code[err.code], Code[code], `${msg} code (${err.rawMessage})`);
    if (fields) t.same(violationFields(err), [...fields].sort(), `${msg} BadRequest field violations`);
    return err;
  }
  t.fail(`${msg} expected ${Code[code]}, the call succeeded`);
  return undefined;
}

/**
 * Asserts the exact AIP-193 REST error shape:
 * {"error":{"code":<http>,"message":"…","status":"<STATUS>","details":[…]}}.
 * With `fields`, details is exactly one google.rpc.BadRequest naming those fields.
 */
export function expectRestError(t: Asserts, res: RestResponse, http: number, status: string, fields?: string[], msg = "") {
  t.equal(res.status, http, `${msg} HTTP status (${res.text.slice(0, 300)})`);
  t.match(res.headers.get("content-type") ?? "", /^application\/json/, `${msg} content-type`);
  const body = res.json;
  t.ok(body && typeof body === "object", `${msg} body is JSON`);
  if (!body || typeof body !== "object") return;
  t.same(Object.keys(body), ["error"], `${msg} only "error" at the top level`);
  const e = body.error ?? {};
  t.same(Object.keys(e).sort(), ["code", "details", "message", "status"], `${msg} error members`);
  t.equal(e.code, http, `${msg} error.code`);
  t.equal(e.status, status, `${msg} error.status`);
  t.ok(typeof e.message === "string" && e.message.length > 0, `${msg} error.message`);
  t.ok(Array.isArray(e.details), `${msg} error.details is an array`);
  if (fields) {
    t.equal(e.details?.length, 1, `${msg} one detail`);
    const d = e.details?.[0] ?? {};
    t.same(Object.keys(d).sort(), ["@type", "fieldViolations"], `${msg} BadRequest members`);
    t.equal(d["@type"], "type.googleapis.com/google.rpc.BadRequest", `${msg} detail @type`);
    const violations: { field?: unknown; description?: unknown }[] = Array.isArray(d.fieldViolations) ? d.fieldViolations : [];
    t.same(violations.map((v) => v.field).sort(), [...fields].sort(), `${msg} field violations`);
    t.ok(violations.every((v) => typeof v.description === "string" && v.description.length > 0), `${msg} each violation is described`);
  }
}

export async function countVideos(ctx: AppContext): Promise<number> {
  const row = await ctx.db.selectFrom("videos").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The stored row, exactly as the database holds it (undefined once deleted). */
export function storedRow(ctx: AppContext, id: string) {
  return ctx.db.selectFrom("videos").selectAll().where("id", "=", id).executeTakeFirst();
}

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
