import t from "tap";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Code } from "@connectrpc/connect";
import { createFsObjectHandler } from "../../server/storage/fs-object-routes.js";
import { FsStore } from "../../server/storage/fs-store.js";
import { sourceKey } from "../../server/storage/keys.js";
import { signedUrl } from "../../server/storage/signing.js";

const MiB = 1024 * 1024;
const sha = (...bufs: Buffer[]) => bufs.reduce((h, b) => h.update(b), createHash("sha256")).digest("hex");
const newKey = () => sourceKey(randomUUID(), randomUUID());

// ---- fixture: a store under a temp dir, served by a plain HTTP server ----

const base = await mkdtemp(join(tmpdir(), "vms-fs-store-"));
const root = join(base, "data", "objects");
const sentinel = join(base, "sentinel.txt");
await writeFile(sentinel, "untouched");
const signingKey = await FsStore.loadOrCreateSigningKey(join(base, "data", "object-signing.key"));

let received = 0;
let handler: ReturnType<typeof createFsObjectHandler> = () => false;
const server = http.createServer((req, res) => {
  if (!handler(req, res)) {
    res.statusCode = 404;
    res.end("not an object route");
  }
});
server.listen(0, "127.0.0.1");
await once(server, "listening");
const port = (server.address() as AddressInfo).port;
const baseUrl = `http://127.0.0.1:${port}`;
const store = new FsStore({ root, publicBaseUrl: baseUrl, signingKey });
// Keys whose upload session a test has closed (the service asks its database).
const closedKeys = new Set<string>();
handler = createFsObjectHandler(store, { maxObjectBytes: 64 * MiB, acceptsBytes: async (key) => !closedKeys.has(key), onBytes: (n) => (received += n) });

t.teardown(async () => {
  server.closeAllConnections();
  server.close();
  await rm(base, { recursive: true, force: true });
});

/** Every file under root whose name marks it as a temp file. */
async function tempFiles(): Promise<string[]> {
  if (!existsSync(root)) return [];
  const all = (await readdir(root, { recursive: true })) as string[];
  return all.filter((p) => p.split("/").pop()!.startsWith(".tmp-"));
}

async function put(url: string, body: Buffer, headers: Record<string, string>) {
  const res = await fetch(url, { method: "PUT", headers, body: body as Uint8Array as BodyInit });
  return { status: res.status, etag: res.headers.get("etag"), text: await res.text() };
}

/** A request with the path sent exactly as given (fetch would normalise it). */
function raw(
  method: string,
  path: string,
  o: { headers?: Record<string, string>; body?: Buffer; chunked?: boolean } = {},
): Promise<{ status: number; text: string; body: Buffer; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers: o.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString(), body: Buffer.concat(chunks), headers: res.headers }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (o.body && o.chunked) {
      // No content-length: Node sends it chunked.
      for (let i = 0; i < o.body.length; i += 512) req.write(o.body.subarray(i, i + 512));
      req.end();
    } else req.end(o.body);
  });
}

const pathAndQuery = (url: string) => {
  const u = new URL(url);
  return u.pathname + u.search;
};

// ---- single PUT ----

t.test("presigned PUT, then head and sha256", async (t) => {
  const key = newKey();
  const body = randomBytes(300_000);
  const before = received;
  const p = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: body.length, checksumSha256: sha(body), expiresInS: 60 });
  t.match(p.url, new RegExp(`^${baseUrl}/_objects/videos/[0-9a-f-]{36}/source/[0-9a-f-]{36}\\?`));
  const q = new URL(p.url).searchParams;
  t.equal(q.get("X-Vms-Op"), "put");
  t.equal(q.get("X-Vms-Size"), String(body.length));
  t.equal(q.get("X-Vms-Content-Type"), "video/mp4");
  t.equal(q.get("X-Vms-Sha256"), sha(body));
  t.match(q.get("X-Vms-Signature"), /^[0-9a-f]{64}$/);
  t.same(p.headers, { "content-type": "video/mp4" });

  const res = await put(p.url, body, p.headers);
  t.equal(res.status, 200);
  t.equal(res.etag, `"${sha(body)}"`);
  t.equal(received - before, body.length, "onBytes saw every byte");
  t.same(await store.head(key), { sizeBytes: body.length, contentType: "video/mp4", checksumSha256: sha(body) });
  t.equal(await store.sha256(key), sha(body));
  t.same(await readFile(join(root, "objects", key)), body);
  t.same(await tempFiles(), []);

  // Without a signed checksum (and a content type with parameters).
  const key2 = newKey();
  const type = 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"';
  const p2 = await store.presignPut(key2, { contentType: type, sizeBytes: 5, expiresInS: 60 });
  t.equal((await put(p2.url, Buffer.from("hello"), p2.headers)).status, 200);
  t.same(await store.head(key2), { sizeBytes: 5, contentType: type, checksumSha256: sha(Buffer.from("hello")) });

  // An empty object, and an overwrite.
  const p3 = await store.presignPut(key2, { contentType: "video/webm", sizeBytes: 0, expiresInS: 60 });
  t.equal((await put(p3.url, Buffer.alloc(0), p3.headers)).status, 200);
  t.same(await store.head(key2), { sizeBytes: 0, contentType: "video/webm", checksumSha256: sha(Buffer.alloc(0)) });

  await store.delete(key2);
  t.equal(await store.head(key2), undefined);
  t.notOk(existsSync(join(root, "objects", `${key2}.meta.json`)), "sidecar removed too");
  await store.delete(key2); // absent: no error
  await t.rejects(store.sha256(key2), { code: Code.NotFound });
});

t.test("a wrong checksum is refused with 400 and nothing is stored", async (t) => {
  const key = newKey();
  const body = randomBytes(10_000);
  const p = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: body.length, checksumSha256: sha(Buffer.from("other")), expiresInS: 60 });
  const res = await put(p.url, body, p.headers);
  t.equal(res.status, 400);
  t.match(res.text, /<Code>BadDigest<\/Code>/);
  t.equal(await store.head(key), undefined);
  t.same(await tempFiles(), []);
});

t.test("expired, tampered and unsigned URLs are refused with 403", async (t) => {
  const key = newKey();
  const body = randomBytes(1000);
  const headers = { "content-type": "video/mp4" };
  const params = (over: Record<string, string>) =>
    new Map(Object.entries({ "X-Vms-Op": "put", "X-Vms-Expires": String(Math.floor(Date.now() / 1000) + 60), "X-Vms-Size": "1000", "X-Vms-Content-Type": "video/mp4", ...over }));

  const expired = signedUrl(baseUrl, signingKey, "PUT", key, params({ "X-Vms-Expires": String(Math.floor(Date.now() / 1000) - 5) }));
  let res = await put(expired, body, headers);
  t.equal(res.status, 403, "expired");
  t.match(res.text, /expired/);
  t.notMatch(res.text, new URL(expired).searchParams.get("X-Vms-Signature")!, "the signature is not echoed");

  // A URL signed with another key.
  res = await put(signedUrl(baseUrl, randomBytes(32), "PUT", key, params({})), body, headers);
  t.equal(res.status, 403, "foreign key");
  t.match(res.text, /SignatureDoesNotMatch/);

  const good = (await store.presignPut(key, { contentType: "video/mp4", sizeBytes: 1000, expiresInS: 60 })).url;
  const tamper = (f: (u: URL) => void) => {
    const u = new URL(good);
    f(u);
    return u.toString();
  };
  const cases: [string, string, Buffer][] = [
    ["signature", tamper((u) => u.searchParams.set("X-Vms-Signature", u.searchParams.get("X-Vms-Signature")!.replace(/^./, (c) => (c === "0" ? "1" : "0")))), body],
    ["short signature", tamper((u) => u.searchParams.set("X-Vms-Signature", "abcd")), body],
    ["no signature", tamper((u) => u.searchParams.delete("X-Vms-Signature")), body],
    ["size", tamper((u) => u.searchParams.set("X-Vms-Size", "2000")), randomBytes(2000)],
    ["expiry", tamper((u) => u.searchParams.set("X-Vms-Expires", String(Number(u.searchParams.get("X-Vms-Expires")) + 3600))), body],
    ["added checksum", tamper((u) => u.searchParams.set("X-Vms-Sha256", sha(body))), body],
    ["op", tamper((u) => u.searchParams.set("X-Vms-Op", "part")), body],
    ["unknown X-Vms param", tamper((u) => u.searchParams.set("X-Vms-Extra", "1")), body],
    ["duplicated param", tamper((u) => u.searchParams.append("X-Vms-Size", "1000")), body],
    ["key", tamper((u) => (u.pathname = u.pathname.replace(/source\/[0-9a-f]/, (m) => m.slice(0, -1) + (m.endsWith("a") ? "b" : "a")))), body],
    ["other video", tamper((u) => (u.pathname = `/_objects/${newKey()}`)), body],
  ];
  for (const [name, url, b] of cases) {
    const r = await put(url, b, headers);
    t.equal(r.status, 403, `tampered ${name}`);
    t.match(r.text, /^<\?xml[\s\S]*<Code>(AccessDenied|SignatureDoesNotMatch)<\/Code>/);
  }
  // The signed content type is enforced like a signed header.
  t.equal((await put(good, body, { "content-type": "text/html" })).status, 403, "other content-type");

  t.equal(await store.head(key), undefined, "nothing was stored");
  // A non-X-Vms parameter is neither signed nor harmful.
  t.equal((await put(tamper((u) => u.searchParams.set("cachebust", "1")), body, headers)).status, 200);
  t.same(await tempFiles(), []);
});

t.test("a body that does not match the signed size is refused and nothing is written", async (t) => {
  const key = newKey();
  const p = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: 1024, expiresInS: 60 });
  const path = pathAndQuery(p.url);

  // Declared larger: refused before reading.
  let res = await raw("PUT", path, { headers: { ...p.headers, "content-length": "2048" }, body: randomBytes(2048) });
  t.equal(res.status, 400, "larger content-length");
  t.match(res.text, /EntityTooLarge/);
  // Declared smaller.
  res = await raw("PUT", path, { headers: { ...p.headers, "content-length": "1000" }, body: randomBytes(1000) });
  t.equal(res.status, 400, "smaller content-length");
  t.match(res.text, /IncompleteBody/);
  // No length (chunked), more bytes than signed: counted while streaming.
  res = await raw("PUT", path, { headers: p.headers, body: randomBytes(4096), chunked: true });
  t.equal(res.status, 400, "chunked, too long");
  t.match(res.text, /EntityTooLarge/);
  // No length, fewer bytes.
  res = await raw("PUT", path, { headers: p.headers, body: randomBytes(1000), chunked: true });
  t.equal(res.status, 400, "chunked, too short");
  t.match(res.text, /IncompleteBody/);

  t.equal(await store.head(key), undefined);
  t.same(await tempFiles(), []);

  // Objects are capped at maxObjectBytes even when signed.
  const big = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: 65 * MiB, expiresInS: 60 });
  res = await raw("PUT", pathAndQuery(big.url), { headers: { ...big.headers, "content-length": String(65 * MiB) } });
  t.equal(res.status, 400, "over maxObjectBytes");

  // A client that goes away mid-body leaves nothing behind.
  const partial = http.request({ host: "127.0.0.1", port, method: "PUT", path, headers: { ...p.headers, "content-length": "1024" }, agent: false });
  partial.on("error", () => {});
  partial.write(randomBytes(500));
  await sleep(100);
  partial.destroy();
  for (let i = 0; i < 100 && (await tempFiles()).length > 0; i++) await sleep(20);
  t.same(await tempFiles(), [], "aborted upload cleaned up");
  t.equal(await store.head(key), undefined);

  // The right body still goes through, chunked too.
  const body = randomBytes(1024);
  res = await raw("PUT", path, { headers: p.headers, body, chunked: true });
  t.equal(res.status, 200);
  t.equal(await store.sha256(key), sha(body));
});

t.test("methods other than GET, HEAD and PUT get 405; a PUT URL does not sign a GET; other paths are not handled", async (t) => {
  const p = await store.presignPut(newKey(), { contentType: "video/mp4", sizeBytes: 1, expiresInS: 60 });
  for (const method of ["POST", "DELETE", "OPTIONS", "PATCH"]) {
    const res = await raw(method, pathAndQuery(p.url));
    t.equal(res.status, 405, method);
    t.equal(res.headers.allow, "GET, HEAD, PUT");
  }
  for (const method of ["GET", "HEAD"]) t.equal((await raw(method, pathAndQuery(p.url))).status, 403, `${method} with a PUT signature`);
  for (const path of ["/_objects", "/objects/x", "/videos", "/_object/x"]) t.equal((await raw("PUT", path)).status, 404, path);
});

t.test("a signed GET URL serves the stored object; a changed or expired one is refused", async (t) => {
  const key = newKey();
  const body = randomBytes(2048);
  await store.put(key, body, "image/webp");
  const url = await store.presignGet(key, 60);
  const res = await raw("GET", pathAndQuery(url));
  t.equal(res.status, 200);
  t.equal(res.headers["content-type"], "image/webp");
  t.equal(sha(res.body), sha(body));
  t.equal((await raw("GET", pathAndQuery(url.replace(/X-Vms-Expires=\d+/, "X-Vms-Expires=9999999999")))).status, 403, "a changed expiry breaks the signature");
  t.equal((await raw("GET", pathAndQuery(await store.presignGet(newKey(), 60)))).status, 404, "a signed URL of a missing object");
});

t.test("the handler serves HTTP/2 requests too", async (t) => {
  const h2 = http2.createServer((req, res) => {
    if (!handler(req, res)) {
      res.statusCode = 404;
      res.end();
    }
  });
  h2.listen(0, "127.0.0.1");
  await once(h2, "listening");
  const session = http2.connect(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`);
  t.teardown(() => {
    session.destroy();
    h2.close();
  });
  const request = (path: string, headers: Record<string, string>, body: Buffer) =>
    new Promise<{ status: number; etag: string | undefined; text: string }>((resolve, reject) => {
      const stream = session.request({ ":method": "PUT", ":path": path, ...headers });
      let status = 0;
      let etag: string | undefined;
      const chunks: Buffer[] = [];
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        etag = h.etag as string | undefined;
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("close", () => resolve({ status, etag, text: Buffer.concat(chunks).toString() }));
      stream.on("error", reject);
      stream.end(body);
    });
  const key = newKey();
  const body = randomBytes(100_000);
  const p = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: body.length, checksumSha256: sha(body), expiresInS: 60 });
  const tooLong = await request(pathAndQuery(p.url), { ...p.headers, "content-length": String(body.length + 1) }, Buffer.concat([body, Buffer.from("x")]));
  t.equal(tooLong.status, 400);
  t.match(tooLong.text, /EntityTooLarge/);
  const bad = await request(pathAndQuery(p.url), { "content-type": "text/plain" }, body);
  t.equal(bad.status, 403);
  const ok = await request(pathAndQuery(p.url), p.headers, body);
  t.equal(ok.status, 200);
  t.equal(ok.etag, `"${sha(body)}"`);
  t.equal(await store.sha256(key), sha(body));
  t.same(await tempFiles(), []);
});

// ---- multipart ----

t.test("multipart: three presigned parts, completed into their concatenation", async (t) => {
  const videoId = randomUUID();
  const key = sourceKey(videoId, randomUUID());
  const uploadId = await store.createMultipartUpload(key, "video/quicktime");
  t.match(uploadId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(12_345)];
  const urls = await Promise.all(parts.map((p, i) => store.presignPart(key, uploadId, i + 1, 60, p.length)));
  const q = new URL(urls[1]!).searchParams;
  t.equal(q.get("X-Vms-Op"), "part");
  t.equal(q.get("X-Vms-Upload"), uploadId);
  t.equal(q.get("X-Vms-Part"), "2");

  t.same(await store.listMultipartUploads(`videos/${videoId}/`).then((l) => l.map((u) => [u.key, u.uploadId])), [[key, uploadId]]);

  // Out of order, part 2 twice (the last upload wins).
  for (const i of [2, 0, 1, 1]) {
    const res = await put(urls[i]!, parts[i]!, {});
    t.equal(res.status, 200, `part ${i + 1}`);
    t.equal(res.etag, `"${sha(parts[i]!)}"`);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  await t.rejects(store.completeMultipartUpload(key, uploadId, total + 1), { code: Code.FailedPrecondition }, "wrong total");
  t.equal((await store.listMultipartUploads(`videos/${videoId}/`)).length, 1, "still open after a refused completion");

  await store.completeMultipartUpload(key, uploadId, total);
  t.same(await store.head(key), { sizeBytes: total, contentType: "video/quicktime", checksumSha256: sha(...parts) });
  t.equal(await store.sha256(key), sha(...parts));
  t.same(await store.listMultipartUploads(`videos/${videoId}/`), []);
  t.notOk(existsSync(join(root, "multipart", uploadId)), "parts removed");
  t.same(await tempFiles(), []);

  // The upload is gone now.
  await t.rejects(store.completeMultipartUpload(key, uploadId, total), { code: Code.NotFound });
  t.equal((await put(urls[0]!, parts[0]!, {})).status, 404, "part for a completed upload");
  t.notOk(existsSync(join(root, "multipart", uploadId)), "not recreated");
});

t.test("multipart: parts below 5 MiB (but the last), no parts, wrong key", async (t) => {
  const key = newKey();
  const uploadId = await store.createMultipartUpload(key, "video/mp4");
  await t.rejects(store.completeMultipartUpload(key, uploadId), { code: Code.FailedPrecondition }, "no parts");
  for (const n of [1, 2]) t.equal((await put(await store.presignPart(key, uploadId, n, 60, 1000), randomBytes(1000), {})).status, 200);
  await t.rejects(store.completeMultipartUpload(key, uploadId, 2000), { code: Code.FailedPrecondition, message: /smaller than the minimum/ });
  await t.rejects(store.completeMultipartUpload(newKey(), uploadId), { code: Code.NotFound }, "the upload belongs to another key");
  await t.rejects(store.completeMultipartUpload(key, randomUUID()), { code: Code.NotFound });

  // A part URL signed for another key cannot write into this upload.
  const other = newKey();
  t.equal((await put(await store.presignPart(other, uploadId, 3, 60, 10), randomBytes(10), {})).status, 404);
  t.equal(await store.head(key), undefined);

  // A store with a lower minimum (tests, small deployments) completes the same upload.
  const lenient = new FsStore({ root, publicBaseUrl: baseUrl, signingKey, minPartBytes: 1 });
  await lenient.completeMultipartUpload(key, uploadId, 2000);
  t.equal((await store.head(key))?.sizeBytes, 2000);
});

t.test("abort removes the parts; abort of an absent upload is fine", async (t) => {
  const key = newKey();
  const uploadId = await store.createMultipartUpload(key, "video/mp4");
  const url = await store.presignPart(key, uploadId, 1, 60, 2000);
  t.equal((await put(url, randomBytes(2000), {})).status, 200);
  t.ok(existsSync(join(root, "multipart", uploadId, "1")));
  await store.abortMultipartUpload(key, uploadId);
  t.notOk(existsSync(join(root, "multipart", uploadId)));
  await store.abortMultipartUpload(key, uploadId);
  await store.abortMultipartUpload(key, randomUUID());
  t.notOk((await store.listMultipartUploads("")).some((u) => u.uploadId === uploadId));
  // A part arriving after the abort does not bring the upload back.
  t.equal((await put(url, randomBytes(2000), {})).status, 404);
  t.notOk(existsSync(join(root, "multipart", uploadId)));
  await t.rejects(store.completeMultipartUpload(key, uploadId), { code: Code.NotFound });
});

t.test("listMultipartUploads filters by prefix", async (t) => {
  const [a, b] = [randomUUID(), randomUUID()];
  const ka = sourceKey(a, randomUUID());
  const kb = sourceKey(b, randomUUID());
  const ua1 = await store.createMultipartUpload(ka, "video/mp4");
  const ua2 = await store.createMultipartUpload(ka, "video/mp4");
  const ub = await store.createMultipartUpload(kb, "video/mp4");
  const ids = (l: { uploadId: string }[]) => l.map((u) => u.uploadId).sort();
  t.same(ids(await store.listMultipartUploads(`videos/${a}/`)), [ua1, ua2].sort());
  t.same(ids(await store.listMultipartUploads(`videos/${b}/source/`)), [ub]);
  const all = await store.listMultipartUploads("videos/");
  t.ok([ua1, ua2, ub].every((id) => all.some((u) => u.uploadId === id)));
  t.same(ids(await store.listMultipartUploads("")), ids(all));
  t.same(await store.listMultipartUploads(`videos/${randomUUID()}/`), []);
  const one = all.find((u) => u.uploadId === ub)!;
  t.equal(one.key, kb);
  t.ok(one.initiated instanceof Date && Math.abs(one.initiated.getTime() - Date.now()) < 60_000);
  // Stray entries (temp dirs, half-created uploads) are skipped.
  await mkdir(join(root, "multipart", randomUUID()));
  await writeFile(join(root, "multipart", "not-an-upload"), "x");
  t.same(ids(await store.listMultipartUploads("")), ids(all));
  for (const [k, u] of [[ka, ua1], [ka, ua2], [kb, ub]] as const) await store.abortMultipartUpload(k, u);
});

// ---- putStream ----

t.test("putStream streams 50 MiB in bounded memory", async (t) => {
  // A collectable source: every chunk is a fresh buffer, garbage once written.
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  const template = randomBytes(256 * 1024);
  const chunks = 200; // 50 MiB
  const expected = createHash("sha256");
  for (let i = 0; i < chunks; i++) expected.update(template);
  const source = async function* () {
    for (let i = 0; i < chunks; i++) {
      if (i % 32 === 0) gc();
      yield Buffer.from(template);
    }
  };
  // RSS, and the memory held by Buffers (which RSS may hide when the heap has room).
  const before = process.memoryUsage();
  let peakRss = before.rss;
  let peakBuffers = before.arrayBuffers;
  const sample = () => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakBuffers = Math.max(peakBuffers, m.arrayBuffers);
  };
  const sampler = setInterval(sample, 5);
  const key = newKey();
  const out = await store.putStream(key, Readable.from(source()), "video/mp4", new AbortController().signal);
  clearInterval(sampler);
  sample();
  const rssGrowth = (peakRss - before.rss) / MiB;
  const bufferGrowth = (peakBuffers - before.arrayBuffers) / MiB;
  t.comment(`while storing 50 MiB: RSS +${rssGrowth.toFixed(1)} MiB, Buffers +${bufferGrowth.toFixed(1)} MiB at peak`);
  t.ok(rssGrowth < 25, `RSS growth ${rssGrowth.toFixed(1)} MiB is well under 50 MiB`);
  t.ok(bufferGrowth < 25, `Buffer growth ${bufferGrowth.toFixed(1)} MiB is well under 50 MiB`);
  t.same(out, { sizeBytes: 50 * MiB, checksumSha256: expected.digest("hex") });
  t.same(await store.head(key), { sizeBytes: 50 * MiB, contentType: "video/mp4", checksumSha256: out.checksumSha256 });
  t.equal(await store.sha256(key), out.checksumSha256);
  await store.delete(key);
});

t.test("putStream aborted midway, or failing midway, leaves no file and no temp file", async (t) => {
  const key = newKey();
  const controller = new AbortController();
  let sent = 0;
  const source = async function* () {
    for (;;) {
      yield randomBytes(MiB);
      if (++sent === 5) controller.abort();
      await sleep(1);
    }
  };
  await t.rejects(store.putStream(key, Readable.from(source()), "video/mp4", controller.signal), { code: Code.Canceled });
  t.ok(sent >= 5);
  t.equal(await store.head(key), undefined);
  t.same(await tempFiles(), []);

  const failing = async function* () {
    yield randomBytes(MiB);
    throw new Error("source broke");
  };
  const body = Readable.from(failing());
  await t.rejects(store.putStream(key, body, "video/mp4", new AbortController().signal));
  t.ok(body.destroyed);
  t.equal(await store.head(key), undefined);
  t.same(await tempFiles(), []);

  // An existing object survives a failed overwrite untouched.
  await store.putStream(key, Readable.from([Buffer.from("v1")]), "text/plain", new AbortController().signal);
  const c2 = new AbortController();
  c2.abort();
  await t.rejects(store.putStream(key, Readable.from([Buffer.from("v2")]), "text/plain", c2.signal), { code: Code.Canceled });
  t.equal(await store.sha256(key), sha(Buffer.from("v1")));
  t.same(await tempFiles(), []);
});

// ---- traversal ----

t.test("path traversal is refused on every method", async (t) => {
  const video = randomUUID();
  const badKeys = [
    "../../../etc/passwd",
    `videos/${video}/../../../../etc/passwd`,
    `videos/${video}/source/..`,
    `videos/${video}/./x`,
    `videos/${video}//x`,
    `videos/${video}/%2e%2e%2f%2e%2e%2fetc`,
    `videos/${video}/..%2f..%2fetc`,
    "/etc/passwd",
    `/videos/${video}/source/x`,
    `videos\\${video}\\..\\..\\x`,
    `videos/${video}/x\0`,
    `videos/${video}/.hidden`,
    `videos/${video}/x.meta.json`,
    "videos/not-a-uuid/source/x",
    "thumbnails/x",
    "",
  ];
  const good = newKey();
  const uploadId = await store.createMultipartUpload(good, "video/mp4");
  const never = new AbortController().signal;
  const invalid = { code: Code.InvalidArgument };
  for (const key of badKeys) {
    const calls: [string, () => Promise<unknown>][] = [
      ["presignPut", () => store.presignPut(key, { contentType: "video/mp4", sizeBytes: 1, expiresInS: 60 })],
      ["createMultipartUpload", () => store.createMultipartUpload(key, "video/mp4")],
      ["presignPart", () => store.presignPart(key, uploadId, 1, 60, 1)],
      ["completeMultipartUpload", () => store.completeMultipartUpload(key, uploadId)],
      ["abortMultipartUpload", () => store.abortMultipartUpload(key, uploadId)],
      ["head", () => store.head(key)],
      ["sha256", () => store.sha256(key)],
      ["putStream", () => store.putStream(key, Readable.from([Buffer.from("x")]), "video/mp4", never)],
      ["delete", () => store.delete(key)],
    ];
    for (const [name, call] of calls) await t.rejects(call(), invalid, `${name}(${JSON.stringify(key)})`);
  }
  for (const id of ["../../objects", "..", `${randomUUID()}/../x`, "/tmp/x", "not-a-uuid"]) {
    await t.rejects(store.presignPart(good, id, 1, 60, 1), invalid, `presignPart upload ${id}`);
    await t.rejects(store.completeMultipartUpload(good, id), invalid, `complete upload ${id}`);
    await t.rejects(store.abortMultipartUpload(good, id), invalid, `abort upload ${id}`);
  }
  for (const prefix of ["../", "videos/../../", "/etc", "videos/%2e%2e%2f", "videos\\"]) {
    await t.rejects(store.listMultipartUploads(prefix), invalid, `listMultipartUploads(${prefix})`);
  }

  // Over HTTP, raw paths (not normalised by a client), signed or not.
  const paths = [
    "/_objects/../../sentinel.txt",
    "/_objects/../../../etc/passwd",
    `/_objects/videos/${video}/source/../../../../../sentinel.txt`,
    "/_objects/%2e%2e%2f%2e%2e%2f%2e%2e%2fsentinel.txt",
    `/_objects/videos/${video}/source/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsentinel.txt`,
    `/_objects/videos/${video}/source/..%2F..%2F..%2F..%2F..%2Fsentinel.txt`,
    "/_objects//etc/passwd",
    "/_objects/%2Fetc%2Fpasswd",
    `/_objects/videos%5C${video}%5C..%5C..%5Csentinel.txt`,
    "/_objects/%E0%A4%A",
    `/_objects/videos/${video}/source/x%00`,
  ];
  for (const path of paths) {
    const res = await raw("PUT", `${path}?X-Vms-Op=put&X-Vms-Size=5&X-Vms-Expires=9999999999&X-Vms-Content-Type=text/plain&X-Vms-Signature=${"0".repeat(64)}`, {
      headers: { "content-type": "text/plain" },
      body: Buffer.from("owned"),
    });
    t.equal(res.status, 400, `PUT ${path}`);
  }
  // Even a validly signed URL for such a key (the store never issues one) is refused.
  for (const key of ["../../sentinel.txt", `videos/${video}/../../../../../sentinel.txt`, "/tmp/owned"]) {
    const url = signedUrl(baseUrl, signingKey, "PUT", key, new Map([["X-Vms-Op", "put"], ["X-Vms-Expires", "9999999999"], ["X-Vms-Size", "5"], ["X-Vms-Content-Type", "text/plain"]]));
    const res = await raw("PUT", url.slice(baseUrl.length), { headers: { "content-type": "text/plain" }, body: Buffer.from("owned") });
    t.equal(res.status, 400, `signed ${key}`);
  }
  t.equal(await readFile(sentinel, "utf8"), "untouched");
  t.same((await readdir(base)).sort(), ["data", "sentinel.txt"], "nothing written beside the store");
  t.same((await readdir(join(base, "data"))).sort(), ["object-signing.key", "objects"]);
  t.notOk(existsSync("/tmp/owned"));
  await store.abortMultipartUpload(good, uploadId);
});

// ---- concurrency ----

t.test("concurrent puts to one key end with one complete object, never a mix", async (t) => {
  const key = newKey();
  const size = 2 * MiB;
  const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(size, i + 1));
  const streamed = Array.from({ length: 3 }, (_, i) => Buffer.alloc(size, 100 + i));
  const urls = await Promise.all(bodies.map((b) => store.presignPut(key, { contentType: `video/x-${b[0]}`, sizeBytes: size, expiresInS: 60 })));
  const results = await Promise.all([
    ...bodies.map((b, i) => put(urls[i]!.url, b, urls[i]!.headers).then((r) => r.status)),
    ...streamed.map((b) =>
      store
        .putStream(key, Readable.from((function* () { for (let o = 0; o < size; o += 64 * 1024) yield b.subarray(o, o + 64 * 1024); })()), `video/x-${b[0]}`, new AbortController().signal)
        .then(() => 200),
    ),
  ]);
  t.same(results, Array(11).fill(200));
  const data = await readFile(join(root, "objects", key));
  t.equal(data.length, size);
  t.ok(data.every((x) => x === data[0]), "one writer's bytes only");
  const head = await store.head(key);
  t.same(head, { sizeBytes: size, contentType: `video/x-${data[0]}`, checksumSha256: sha(data) }, "sidecar describes the winner");
  t.same(await tempFiles(), []);
});

// ---- signing key ----

t.test("the signing key file is created once, 32 bytes, mode 0600", async (t) => {
  const file = join(base, "keys", "nested", "object-signing.key");
  const keys = await Promise.all(Array.from({ length: 8 }, () => FsStore.loadOrCreateSigningKey(file)));
  t.equal(keys[0]!.length, 32);
  t.ok(keys.every((k) => k.equals(keys[0]!)), "concurrent starters agree");
  t.equal((await stat(file)).mode & 0o777, 0o600);
  t.ok((await FsStore.loadOrCreateSigningKey(file)).equals(keys[0]!), "reloaded");
  t.same(await readdir(join(base, "keys", "nested")), ["object-signing.key"], "no temp files left");
  await writeFile(file, "short");
  await t.rejects(FsStore.loadOrCreateSigningKey(file), /32 bytes/);
  t.throws(() => new FsStore({ root, publicBaseUrl: baseUrl, signingKey: Buffer.alloc(8) }));
  await rm(join(base, "keys"), { recursive: true });

  // URLs signed by one store are refused by a store with another key.
  const other = new FsStore({ root, publicBaseUrl: baseUrl, signingKey: randomBytes(32) });
  const p = await other.presignPut(newKey(), { contentType: "video/mp4", sizeBytes: 1, expiresInS: 60 });
  t.equal((await put(p.url, Buffer.from("x"), p.headers)).status, 403);
});

// ---- what a signed URL can no longer do ----

t.test("a part URL takes at most its signed size: more is refused (400) and nothing is kept", async (t) => {
  const key = newKey();
  const uploadId = await store.createMultipartUpload(key, "video/mp4");
  const url = await store.presignPart(key, uploadId, 1, 60, 1000);
  t.equal(new URL(url).searchParams.get("X-Vms-Size"), "1000", "the size is signed into the URL");
  const withLength = await raw("PUT", pathAndQuery(url), { headers: { "content-length": "1001" }, body: randomBytes(1001) });
  t.equal(withLength.status, 400, "a declared length over the part size");
  t.match(withLength.text, /EntityTooLarge/);
  const chunked = await raw("PUT", pathAndQuery(url), { body: randomBytes(200_000), chunked: true });
  t.equal(chunked.status, 400, "an undeclared (chunked) body that runs over the part size");
  t.notOk(existsSync(join(root, "multipart", uploadId, "1")), "no part was stored");
  const bigger = new URL(url);
  bigger.searchParams.set("X-Vms-Size", String(5 * 1024 * MiB));
  t.equal((await raw("PUT", pathAndQuery(bigger.toString()), { body: randomBytes(2000) })).status, 403, "a raised size breaks the signature");
  t.equal((await put(url, randomBytes(1000), {})).status, 200, "the part size itself is taken");
  t.equal((await put(url, randomBytes(10), {})).status, 200, "and less (the last part is shorter)");
  t.same(await tempFiles(), []);
  await store.abortMultipartUpload(key, uploadId);
});

t.test("a create-only URL never replaces an object: 412, and the object is unchanged", async (t) => {
  const key = newKey();
  const first = randomBytes(1000);
  const p = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: first.length, expiresInS: 60, createOnly: true });
  t.equal(new URL(p.url).searchParams.get("X-Vms-If-None-Match"), "*", "the condition is signed into the URL");
  t.equal((await put(p.url, first, p.headers)).status, 200);
  const second = await put(p.url, randomBytes(1000), p.headers);
  t.equal(second.status, 412, "the same URL, other bytes of the same size");
  t.match(second.text, /PreconditionFailed/);
  t.equal(await store.sha256(key), sha(first), "the object holds the first bytes");
  // Two PUTs racing past the early check: the commit (a link, not a rename) lets one win.
  const key2 = newKey();
  const p2 = await store.presignPut(key2, { contentType: "video/mp4", sizeBytes: 2 * MiB, expiresInS: 60, createOnly: true });
  const bodies = Array.from({ length: 4 }, (_, i) => Buffer.alloc(2 * MiB, i + 1));
  const statuses = await Promise.all(bodies.map((b) => put(p2.url, b, p2.headers).then((r) => r.status)));
  t.equal(statuses.filter((s) => s === 200).length, 1, `one writer wins (${statuses})`);
  t.ok(statuses.every((s) => s === 200 || s === 412), "the others are refused");
  const data = await readFile(join(root, "objects", key2));
  t.ok(data.every((x) => x === data[0]), "one writer's bytes only");
  t.same(await store.head(key2), { sizeBytes: 2 * MiB, contentType: "video/mp4", checksumSha256: sha(data) }, "sidecar describes the winner");
  t.same(await tempFiles(), []);
});

t.test("a URL whose upload session is closed takes no bytes (403), single or part", async (t) => {
  const key = newKey();
  const p = await store.presignPut(key, { contentType: "video/mp4", sizeBytes: 10, expiresInS: 60 });
  const uploadId = await store.createMultipartUpload(key, "video/mp4");
  const part = await store.presignPart(key, uploadId, 1, 60, 10);
  closedKeys.add(key);
  try {
    const single = await put(p.url, randomBytes(10), p.headers);
    t.equal(single.status, 403, "single PUT");
    t.match(single.text, /AccessDenied/);
    t.equal((await put(part, randomBytes(10), {})).status, 403, "part");
    t.equal(await store.head(key), undefined, "nothing stored");
    t.notOk(existsSync(join(root, "multipart", uploadId, "1")), "no part stored");
  } finally {
    closedKeys.delete(key);
    await store.abortMultipartUpload(key, uploadId);
  }
});
