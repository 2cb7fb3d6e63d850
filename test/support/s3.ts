import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";

// S3 for tests: the emulator `npm test` starts (moto, TEST_S3_ENDPOINT), one
// bucket per test file, and an HTTP fault proxy that sits between the service
// and the emulator, counts every S3 request by operation and can answer
// `503 SlowDown`, delay answers or reset connections on demand.

export const s3Endpoint = process.env.TEST_S3_ENDPOINT;

// moto accepts any credentials; the service's SDK reads them from the
// environment, so hand runs (TEST_S3_ENDPOINT set by hand) need them too.
process.env.AWS_ACCESS_KEY_ID ??= "test";
process.env.AWS_SECRET_ACCESS_KEY ??= "test";
process.env.AWS_REGION ??= "us-east-1";

export function s3SkipReason(): string | false {
  return s3Endpoint ? false : "TEST_S3_ENDPOINT is not set: run `npm test`, which starts an S3 emulator (moto)";
}

/** The service's environment for a bucket behind `endpoint` (the emulator, or a proxy in front of it). */
export function s3Env(bucket: string, endpoint = s3Endpoint!): Record<string, string> {
  return { S3_BUCKET: bucket, S3_ENDPOINT: endpoint, S3_FORCE_PATH_STYLE: "true", S3_REGION: "us-east-1" };
}

export interface TestBucket {
  name: string;
  /** A client straight to the emulator (never through a fault proxy). */
  client: S3Client;
  /** Keys of the objects under prefix. */
  keys(prefix?: string): Promise<string[]>;
  /** Multipart uploads in progress under prefix (ListMultipartUploads). */
  multipartUploads(prefix?: string): Promise<{ key: string; uploadId: string }[]>;
  /** Size of an object, or undefined when there is none. */
  size(key: string): Promise<number | undefined>;
}

/** A fresh bucket on the emulator, emptied and removed in teardown. */
export async function createTestBucket(t: { teardown(fn: () => unknown): void }): Promise<TestBucket> {
  if (!s3Endpoint) throw new Error(s3SkipReason() as string);
  const name = "vms-test-" + randomBytes(6).toString("hex");
  const client = new S3Client({ endpoint: s3Endpoint, region: "us-east-1", forcePathStyle: true });
  await client.send(new CreateBucketCommand({ Bucket: name }));

  const keys = async (prefix = "") => {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: name, Prefix: prefix, ContinuationToken: token }));
      out.push(...(page.Contents ?? []).map((o) => o.Key!));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  };
  const multipartUploads = async (prefix = "") => {
    const page = await client.send(new ListMultipartUploadsCommand({ Bucket: name, Prefix: prefix }));
    return (page.Uploads ?? []).map((u) => ({ key: u.Key!, uploadId: u.UploadId! }));
  };
  const size = async (key: string) => {
    try {
      return Number((await client.send(new HeadObjectCommand({ Bucket: name, Key: key }))).ContentLength);
    } catch (e) {
      if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
      throw e;
    }
  };

  t.teardown(async () => {
    for (const u of await multipartUploads()) await client.send(new AbortMultipartUploadCommand({ Bucket: name, Key: u.key, UploadId: u.uploadId }));
    for (const key of await keys()) await client.send(new DeleteObjectCommand({ Bucket: name, Key: key }));
    await client.send(new DeleteBucketCommand({ Bucket: name }));
    client.destroy();
  });
  return { name, client, keys, multipartUploads, size };
}

// ---- fault proxy --------------------------------------------------------------

/** The S3 operation of a path-style request, from its method and query. */
export function s3Operation(method: string, url: URL): string {
  const q = url.searchParams;
  const object = url.pathname.split("/").filter(Boolean).length > 1;
  switch (method) {
    case "HEAD":
      return object ? "HeadObject" : "HeadBucket";
    case "GET":
      if (q.has("uploads")) return "ListMultipartUploads";
      if (q.has("uploadId")) return "ListParts";
      return object ? "GetObject" : "ListObjects";
    case "PUT":
      if (q.has("partNumber")) return "UploadPart";
      return object ? "PutObject" : "CreateBucket";
    case "POST":
      if (q.has("uploads")) return "CreateMultipartUpload";
      if (q.has("uploadId")) return "CompleteMultipartUpload";
      return "Post";
    case "DELETE":
      if (q.has("uploadId")) return "AbortMultipartUpload";
      return object ? "DeleteObject" : "DeleteBucket";
    default:
      return method;
  }
}

export interface Fault {
  /** Operations it applies to (all when left out). */
  ops?: string[];
  /** How many matching requests it applies to (all until cleared when left out). */
  times?: number;
  /**
   * slowdown: answer `503 SlowDown` (S3's throttling error) without asking the emulator;
   * nosuchupload: answer `404 NoSuchUpload` without asking the emulator (what S3
   *   answers a retried CompleteMultipartUpload whose first attempt succeeded);
   * delay: forward, but hold the answer back for delayMs;
   * late: hold the request back for delayMs, then forward it;
   * reset: read the request, then reset the connection without an answer.
   */
  kind: "slowdown" | "nosuchupload" | "delay" | "late" | "reset";
  delayMs?: number;
}

export interface ProxiedRequest {
  op: string;
  method: string;
  path: string;
  /** The fault applied, if any. */
  fault?: Fault["kind"];
  /** The status the client got (undefined for a reset). */
  status?: number;
}

export interface S3FaultProxy {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  /** "127.0.0.1:PORT", for the TCP proxy. */
  address: string;
  /** Every request seen, in arrival order. */
  requests: ProxiedRequest[];
  /** Request body bytes passed on to the emulator so far (what storage has accepted). */
  readonly forwardedBodyBytes: number;
  /** Requests of one operation seen since `since` (an index into requests). */
  count(op: string, since?: number): number;
  /** From now on, apply this fault (replacing any other). */
  inject(f: Fault): void;
  clear(): void;
  close(): Promise<void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

function withoutHopByHop(headers: http.IncomingHttpHeaders, ...more: string[]): http.IncomingHttpHeaders {
  const out = { ...headers };
  for (const name of [...HOP_BY_HOP, ...more]) delete out[name];
  return out;
}

const SLOW_DOWN = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>vms-test</RequestId></Error>';

const NO_SUCH_UPLOAD =
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.</Message><RequestId>vms-test</RequestId></Error>';

export async function startS3FaultProxy(t: { teardown(fn: () => unknown): void }, target = s3Endpoint!): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  const agent = new http.Agent({ keepAlive: true });
  const requests: ProxiedRequest[] = [];
  let fault: (Fault & { left: number }) | undefined;
  let forwardedBodyBytes = 0;
  // Ends the waits of delayed answers when the proxy closes.
  const closing = new AbortController();

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://proxy");
    const op = s3Operation(req.method ?? "", url);
    const entry: ProxiedRequest = { op, method: req.method ?? "", path: url.pathname };
    requests.push(entry);
    let applied: Fault | undefined;
    if (fault && fault.left > 0 && (!fault.ops || fault.ops.includes(op))) {
      applied = fault;
      fault.left--;
      entry.fault = fault.kind;
    }
    if (applied?.kind === "slowdown" || applied?.kind === "nosuchupload") {
      const [status, body] = applied.kind === "slowdown" ? [503, SLOW_DOWN] : [404, NO_SUCH_UPLOAD];
      req.resume();
      req.once("end", () => {
        entry.status = status;
        res.writeHead(status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    if (applied?.kind === "reset") {
      req.resume();
      req.once("end", () => {
        // resetAndDestroy() on an ending socket fails (EINVAL) and leaks its handle.
        const s = req.socket;
        if (s.writableEnded || s.destroyed) s.destroy();
        else s.resetAndDestroy();
      });
      return;
    }
    if (applied?.kind === "late") {
      req.pause();
      sleep(applied.delayMs ?? 0, undefined, { signal: closing.signal }).then(
        () => forward(req, res, entry, undefined),
        () => res.destroy(),
      );
      return;
    }
    forward(req, res, entry, applied);
  });

  function forward(req: http.IncomingMessage, res: http.ServerResponse, entry: ProxiedRequest, applied: Fault | undefined) {
    // The proxy's own server already answered any 100-continue.
    const headers = withoutHopByHop(req.headers, "expect");
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent },
      async (up) => {
        if (applied?.kind === "delay") await sleep(applied.delayMs ?? 0, undefined, { signal: closing.signal }).catch(() => {});
        entry.status = up.statusCode;
        if (res.destroyed) {
          up.resume();
          return;
        }
        // moto answers "Connection: close"; passing that on would make the
        // proxy close connections the client expects to keep.
        res.writeHead(up.statusCode ?? 502, withoutHopByHop(up.headers));
        up.pipe(res);
      },
    );
    out.on("error", () => res.destroy());
    req.on("aborted", () => out.destroy());
    req.on("data", (d: Buffer) => (forwardedBodyBytes += d.length));
    req.pipe(out);
  }
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const proxy: S3FaultProxy = {
    endpoint: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    requests,
    get forwardedBodyBytes() {
      return forwardedBodyBytes;
    },
    count: (op, since = 0) => requests.slice(since).filter((r) => r.op === op).length,
    inject(f) {
      fault = { ...f, left: f.times ?? Infinity };
    },
    clear() {
      fault = undefined;
    },
    async close() {
      closing.abort();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
  t.teardown(() => proxy.close());
  return proxy;
}
