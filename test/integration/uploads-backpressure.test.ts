import dc from "node:diagnostics_channel";
import http from "node:http";
import type net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { sql } from "kysely";
import t from "tap";
import { createTestBucket, s3SkipReason, startS3FaultProxy, type S3FaultProxy } from "../support/s3.js";
import type { Asserts } from "../support/server.js";
import { MiB, bytes, contentMessages, sha256, startUploadServer, type UploadHarness } from "../support/uploads.js";

// A streamed upload (REST PUT /videos/{id}/content, gRPC UploadVideoContent)
// reads the client only as fast as storage accepts the bytes: with S3 slow to
// take each part, and with the handler held up before its first read (the
// database busy), what the service has read from the client's connection
// stays within the parts it may hold (parts in flight + the one being filled)
// of what has reached storage, whatever the size of the file. Measured as
// bytes: read from the service's sockets (node:net's diagnostics channel) and
// request-body bytes the S3 proxy passed on to the emulator.

const BODY = 64 * MiB;
// Socket, request and stream buffers on the way: a few hundred KiB each.
const SLACK = 4 * MiB;

interface ReadAhead {
  /** Largest (bytes read from the client − bytes accepted by storage) seen. */
  max: number;
  samples: number;
}

/** Runs `upload` while sampling how far the service's reading of its clients runs ahead of storage. */
async function measureReadAhead<T>(h: UploadHarness, proxy: S3FaultProxy, upload: () => Promise<T>): Promise<{ result: T; ahead: ReadAhead }> {
  const sockets: net.Socket[] = [];
  const onSocket = (m: unknown) => {
    const socket = (m as { socket: net.Socket }).socket;
    if (socket.localPort === h.s.port) sockets.push(socket);
  };
  dc.subscribe("net.server.socket", onSocket);
  const storedBefore = proxy.forwardedBodyBytes;
  const ahead: ReadAhead = { max: 0, samples: 0 };
  const sample = () => {
    const read = sockets.reduce((n, s) => n + s.bytesRead, 0);
    ahead.max = Math.max(ahead.max, read - (proxy.forwardedBodyBytes - storedBefore));
    ahead.samples++;
  };
  const timer = setInterval(sample, 5);
  try {
    const result = await upload();
    sample();
    return { result, ahead };
  } finally {
    clearInterval(timer);
    dc.unsubscribe("net.server.socket", onSocket);
  }
}

/**
 * Keeps the service's only database connection (DB_POOL_MAX=1; PGlite has
 * one) in a transaction for ms: an upload that starts meanwhile waits in its
 * first query, before it reads any of the body.
 */
async function holdDatabase(h: UploadHarness, ms: number): Promise<void> {
  let started!: () => void;
  const holding = new Promise<void>((resolve) => (started = resolve));
  void h.s.ctx.db.transaction().execute(async (trx) => {
    await sql`select 1`.execute(trx);
    started();
    await sleep(ms);
  });
  await holding;
}

/** PUT /videos/{id}/content from a client that writes as fast as its connection takes the bytes. */
function restPut(h: UploadHarness, id: string, data: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port: h.s.port, method: "PUT", path: `/videos/${id}/content`, agent: false, headers: { "content-type": "video/mp4", "content-length": String(data.length) } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (body += d)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    let at = 0;
    const more = () => {
      while (at < data.length) {
        const piece = data.subarray(at, at + MiB);
        at += piece.length;
        if (!req.write(piece)) return void req.once("drain", more);
      }
      req.end();
    };
    more();
  });
}

t.test("a streamed upload reads the client no faster than storage accepts the bytes", { skip: s3SkipReason() }, async (t) => {
  const bucket = await createTestBucket(t);
  const proxy = await startS3FaultProxy(t);
  const h = await startUploadServer(t, { kind: "s3", bucket, endpoint: proxy.endpoint, env: { DB_POOL_MAX: "1" } });
  const { partSizeBytes, partsInFlight } = h.s.cfg.storage.s3!.stream;
  const limit = (partsInFlight + 1) * partSizeBytes + SLACK;
  const data = bytes(BODY);
  // Storage is slow: every part waits before S3 starts reading it.
  proxy.inject({ kind: "late", ops: ["UploadPart"], delayMs: 600 });

  // message: what the service reads of a message before handing any of it on (gRPC: the whole message).
  const expectBounded = (t: Asserts, ahead: ReadAhead, what: string, message = 0) => {
    t.ok(ahead.samples > 20, `${what}: sampled while the upload ran (${ahead.samples} samples)`);
    t.ok(
      ahead.max <= limit + message,
      `${what}: read at most ${(ahead.max / MiB).toFixed(1)} MiB ahead of storage (limit ${((limit + message) / MiB).toFixed(0)} MiB: ${partsInFlight} parts in flight + 1 being filled, ${partSizeBytes / MiB} MiB each, + ${message / MiB} MiB message + ${SLACK / MiB} MiB)`,
    );
  };

  t.test("REST PUT /videos/{id}/content (HTTP/1.1)", async (t) => {
    const v = await h.newVideo();
    const parts = proxy.count("UploadPart");
    await holdDatabase(h, 500);
    const { result: res, ahead } = await measureReadAhead(h, proxy, () => restPut(h, v.id, data));
    t.equal(res.status, 200, res.body.slice(0, 300));
    const video = JSON.parse(res.body);
    t.same([video.source?.sizeBytes, video.source?.checksumSha256], [String(BODY), sha256(data)], "every byte stored");
    t.equal(proxy.count("UploadPart", 0) - parts, BODY / partSizeBytes, "each part went through the slow proxy");
    expectBounded(t, ahead, "REST");
  });

  t.test("gRPC UploadVideoContent (HTTP/2)", async (t) => {
    const v = await h.newVideo();
    await holdDatabase(h, 500);
    const { result: video, ahead } = await measureReadAhead(h, proxy, () =>
      // In the largest chunks a message may carry (4 MiB): still bounded.
      h.s.clients.grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, data, 4 * MiB)),
    );
    t.same([video.source?.sizeBytes, video.source?.checksumSha256], [BigInt(BODY), sha256(data)], "every byte stored");
    expectBounded(t, ahead, "gRPC", 4 * MiB);
  });

  // Part buffers outlive an upload and are handed from one to the next: with
  // three streams at once (parts finishing out of order behind the slow
  // proxy), then one after another, each must store exactly its own bytes.
  t.test("streams at once and one after another each store their own bytes", async (t) => {
    const bodies = [bytes(20 * MiB + 123), bytes(17 * MiB), bytes(3 * MiB + 1)];
    const videos = await Promise.all(bodies.map(() => h.newVideo()));
    const results = await Promise.all([
      restPut(h, videos[0]!.id, bodies[0]!).then((r) => JSON.parse(r.body).source),
      h.s.clients.grpc.uploadVideoContent(contentMessages({ id: videos[1]!.id, contentType: "video/mp4" }, bodies[1]!)).then((v) => v.source),
      restPut(h, videos[2]!.id, bodies[2]!).then((r) => JSON.parse(r.body).source),
    ]);
    // The stored object read back, not only the checksum the service took on the way.
    const stored = (source: { objectKey?: string } | undefined) => h.s.ctx.store.sha256(source?.objectKey ?? "");
    for (const [i, source] of results.entries()) {
      t.same([String(source?.sizeBytes), source?.checksumSha256, await stored(source)], [String(bodies[i]!.length), sha256(bodies[i]!), sha256(bodies[i]!)], `stream ${i + 1} of 3 at once`);
    }
    for (const [i, body] of bodies.entries()) {
      const v = await h.newVideo();
      const source = JSON.parse((await restPut(h, v.id, body)).body).source;
      t.same([source?.checksumSha256, await stored(source)], [sha256(body), sha256(body)], `stream ${i + 1} of 3 one after another`);
    }
  });
});
