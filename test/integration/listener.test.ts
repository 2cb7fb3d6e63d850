import t from "tap";
import { execFile } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import tls from "node:tls";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import {
  createListener,
  HTTP2_PREFACE,
  type Listener,
  type ListenerOptions,
  type NodeRequest,
  type NodeResponse,
} from "../../server/transport/listener.js";

/** A tap test (what a t.test callback receives). */
type Asserts = Parameters<Parameters<typeof t.test>[0]>[0];

interface HasTeardown {
  teardown(fn: () => unknown): void;
}

interface Echo {
  method: string | undefined;
  url: string | undefined;
  httpVersion: string;
}

// Echo handler. /slow answers after 300 ms, /hang never answers. Every
// request is announced on `arrivals` once the handler has it.
const arrivals = new EventEmitter();
function echoHandler(req: NodeRequest, res: NodeResponse): void {
  arrivals.emit("request", req.url);
  if (req.url?.startsWith("/hold")) {
    arrivals.emit("held", req, res);
    return;
  }
  const reply = () => {
    const body = JSON.stringify({ method: req.method, url: req.url, httpVersion: req.httpVersion } satisfies Echo);
    res.setHeader("content-type", "application/json");
    res.end(body);
  };
  if (req.url?.startsWith("/hang")) return;
  if (req.url?.startsWith("/slow")) {
    setTimeout(reply, 300);
    return;
  }
  reply();
}

async function start(
  tt: HasTeardown,
  extra: Partial<ListenerOptions> = {},
): Promise<{ listener: Listener; port: number }> {
  const listener = createListener({ handler: echoHandler, ...extra });
  const addr = await listener.listen(0, "127.0.0.1");
  tt.teardown(() => listener.close(0));
  return { listener, port: addr.port };
}

interface H1Result {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  reusedSocket: boolean;
  socket: net.Socket;
}

function h1Request(
  options: https.RequestOptions & Pick<tls.ConnectionOptions, "ALPNProtocols"> & { protocol?: "http:" | "https:" },
): Promise<H1Result> {
  const mod = options.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request({ method: "GET", ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
          reusedSocket: req.reusedSocket,
          socket: req.socket as net.Socket,
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

function h2Request(
  client: http2.ClientHttp2Session,
  path: string,
  method = "GET",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = client.request({ ":path": path, ":method": method });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => resolve({ status, body: Buffer.concat(chunks).toString() }));
    stream.on("error", reject);
    stream.end();
  });
}

function h2Connect(tt: HasTeardown, authority: string, options: http2.SecureClientSessionOptions = {}) {
  const client = http2.connect(authority, options);
  client.on("error", () => {}); // surfaced through the request instead
  tt.teardown(() => {
    client.destroy();
  });
  return client;
}

/** Write chunks to a raw socket one by one, pausing between them; collect the reply until EOF. */
async function rawExchange(port: number, chunks: (string | Buffer)[], gapMs = 5): Promise<Buffer> {
  const socket = net.connect(port, "127.0.0.1");
  socket.setNoDelay(true);
  const received: Buffer[] = [];
  socket.on("data", (c: Buffer) => received.push(c));
  const closed = new Promise<void>((resolve) => {
    socket.on("close", () => resolve());
    socket.on("error", () => {}); // a reset after the reply is fine here
  });
  await once(socket, "connect");
  for (const c of chunks) {
    socket.write(c);
    await sleep(gapMs);
  }
  await closed;
  return Buffer.concat(received);
}

function bytes(s: string): string[] {
  return [...s];
}

/**
 * TCP proxy forwarding client->server bytes one at a time (with a pause) for
 * the first `slowBytes` bytes, so the server sees a preface split over many
 * reads even though the client library wrote it at once.
 */
async function startDribbleProxy(tt: HasTeardown, upstreamPort: number, slowBytes: number): Promise<number> {
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((down) => {
    const up = net.connect(upstreamPort, "127.0.0.1");
    up.setNoDelay(true);
    sockets.add(down).add(up);
    down.on("error", () => up.destroy());
    up.on("error", () => down.destroy());
    down.on("close", () => up.destroy());
    up.on("close", () => down.destroy());
    up.pipe(down);
    let sent = 0;
    let queue = Promise.resolve();
    down.on("data", (chunk: Buffer) => {
      down.pause();
      queue = queue.then(async () => {
        for (let i = 0; i < chunk.length; ) {
          if (up.destroyed) return;
          if (sent < slowBytes) {
            up.write(chunk.subarray(i, i + 1));
            sent++;
            i++;
            await sleep(3);
          } else {
            up.write(chunk.subarray(i));
            sent += chunk.length - i;
            i = chunk.length;
          }
        }
        down.resume();
      });
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  tt.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => proxy.close(() => resolve()));
  });
  return (proxy.address() as net.AddressInfo).port;
}

/** Types of the HTTP/2 frames in a server byte stream. */
function frameTypes(buf: Buffer): number[] {
  const types: number[] = [];
  for (let i = 0; i + 9 <= buf.length; ) {
    const length = buf.readUIntBE(i, 3);
    types.push(buf[i + 3]);
    i += 9 + length;
  }
  return types;
}

function parseEcho(body: string): Echo {
  return JSON.parse(body) as Echo;
}

t.test("cleartext: HTTP/1.1 and h2c on one port", async (t) => {
  const { port } = await start(t);

  t.test("HTTP/1.1 keep-alive: two sequential requests on one socket", async (t) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const a = await h1Request({ host: "127.0.0.1", port, path: "/one?x=1", agent });
    const b = await h1Request({ host: "127.0.0.1", port, path: "/two", method: "POST", agent });
    t.equal(a.status, 200);
    t.same(parseEcho(a.body), { method: "GET", url: "/one?x=1", httpVersion: "1.1" });
    t.same(parseEcho(b.body), { method: "POST", url: "/two", httpVersion: "1.1" });
    t.equal(b.reusedSocket, true, "second request reused the keep-alive socket");
    t.equal(a.socket, b.socket);
    t.equal(a.headers.connection, "keep-alive");
  });

  t.test("h2c with prior knowledge", async (t) => {
    const client = h2Connect(t, `http://127.0.0.1:${port}`);
    const [a, b] = await Promise.all([h2Request(client, "/h2?y=2"), h2Request(client, "/h2b", "POST")]);
    t.equal(a.status, 200);
    t.same(parseEcho(a.body), { method: "GET", url: "/h2?y=2", httpVersion: "2.0" });
    t.same(parseEcho(b.body), { method: "POST", url: "/h2b", httpVersion: "2.0" });
    const c = await h2Request(client, "/again");
    t.equal(parseEcho(c.body).url, "/again", "session stays usable");
  });

  t.test("HTTP/1.1 request arriving one byte at a time", async (t) => {
    const reply = await rawExchange(
      port,
      bytes("GET /bytewise HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    const text = reply.toString();
    t.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    t.same(parseEcho(text.slice(text.indexOf("\r\n\r\n") + 4)), {
      method: "GET",
      url: "/bytewise",
      httpVersion: "1.1",
    });
  });

  t.test("HTTP/1.1 POST one byte at a time ('P' is also a preface prefix)", async (t) => {
    const reply = await rawExchange(
      port,
      bytes("POST /p HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"),
    );
    const text = reply.toString();
    t.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    t.same(parseEcho(text.slice(text.indexOf("\r\n\r\n") + 4)), { method: "POST", url: "/p", httpVersion: "1.1" });
  });

  t.test("h2c whose preface is split across many writes", async (t) => {
    // 40 bytes: the whole preface plus the start of the SETTINGS frame, one byte per write.
    const proxyPort = await startDribbleProxy(t, port, 40);
    const client = h2Connect(t, `http://127.0.0.1:${proxyPort}`);
    const r = await h2Request(client, "/split");
    t.same(parseEcho(r.body), { method: "GET", url: "/split", httpVersion: "2.0" });
  });

  t.test("h2c preface written in three raw chunks gets a SETTINGS frame back", async (t) => {
    const socket = net.connect(port, "127.0.0.1");
    t.teardown(() => socket.destroy());
    await once(socket, "connect");
    const p = HTTP2_PREFACE;
    for (const part of [p.subarray(0, 3), p.subarray(3, 17), p.subarray(17)]) {
      socket.write(part);
      await sleep(20);
    }
    socket.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // empty SETTINGS
    const [first] = (await once(socket, "data")) as [Buffer];
    t.equal(first[3], 4, "first server frame is SETTINGS");
  });

  t.test("garbage bytes and resets do not take the server down", async (t) => {
    const garbage = await rawExchange(port, [Buffer.from([0, 1, 2, 3, 0xff, 0xfe]), "\r\n\r\n"]);
    t.match(garbage.toString(), /^HTTP\/1\.1 400 /, "not HTTP/2, so the HTTP/1.1 parser answers 400");

    // A valid preface followed by something other than SETTINGS: connection
    // error, the session answers GOAWAY and closes.
    const badH2 = await rawExchange(port, [
      Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 1, 0xee, 0xff, 0, 0, 0, 0, 0x99])]),
    ]);
    t.ok(frameTypes(badH2).includes(7), "bad h2 session got GOAWAY");

    // Oversized header -> 431.
    const big = await rawExchange(port, [
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\nConnection: close\r\n\r\n`,
    ]);
    t.match(big.toString(), /^HTTP\/1\.1 431/);

    // Client resets mid-sniff, mid-request.
    for (const payload of ["", "PRI * HT", "GET /x HTTP/1.1\r\nHo"]) {
      const s = net.connect(port, "127.0.0.1");
      s.on("error", () => {});
      await once(s, "connect");
      if (payload) s.write(payload);
      await sleep(10);
      s.resetAndDestroy();
    }
    await sleep(50);

    const agent = new http.Agent({ keepAlive: false });
    t.teardown(() => agent.destroy());
    const ok = await h1Request({ host: "127.0.0.1", port, path: "/still-up", agent });
    t.same(parseEcho(ok.body).url, "/still-up");
    const client = h2Connect(t, `http://127.0.0.1:${port}`);
    t.same(parseEcho((await h2Request(client, "/still-up-h2")).body).httpVersion, "2.0");
  });
});

t.test("cleartext: silent sockets are destroyed after prefaceTimeoutMs", async (t) => {
  const { port } = await start(t, { prefaceTimeoutMs: 150 });
  const started = Date.now();
  for (const payload of ["", "PRI * HTTP/2"]) {
    const s = net.connect(port, "127.0.0.1");
    s.on("error", () => {});
    await once(s, "connect");
    if (payload) s.write(payload);
    await once(s, "close");
  }
  t.ok(Date.now() - started < 2000, "both idle sockets were closed by the server");
});

t.test("cleartext: limits", async (t) => {
  const { listener, port } = await start(t, { headersTimeoutMs: 200, requestTimeoutMs: 1000 });

  t.test("HTTP/1.1 headersTimeout is enforced on the handed-over socket", async (t) => {
    const started = Date.now();
    // Headers never complete; the server answers 408 and closes.
    const reply = await rawExchange(port, ["GET /slowloris HTTP/1.1\r\n", "Host: x\r\n"]);
    t.match(reply.toString(), /^HTTP\/1\.1 408/);
    t.ok(Date.now() - started < 1500, "cut within the headers timeout (+ sweep interval)");
  });

  t.test("HTTP/2 header list cap (SETTINGS_MAX_HEADER_LIST_SIZE) and stream cap are advertised and enforced", async (t) => {
    const client = h2Connect(t, `http://127.0.0.1:${port}`);
    const [settings] = (await once(client, "remoteSettings")) as [http2.Settings];
    t.equal(settings.maxHeaderListSize, 16 * 1024);
    t.equal(settings.maxConcurrentStreams, 256);
    await sleep(20); // let our SETTINGS ACK reach the server: the cap applies from then on
    const code = await new Promise<number>((resolve) => {
      const s = client.request({ ":path": "/big", "x-big": "a".repeat(20_000) });
      s.on("error", () => {});
      s.on("close", () => resolve(s.rstCode ?? -1));
      s.resume();
      s.end();
    });
    t.not(code, 0, `oversized header block refused (RST_STREAM ${code})`);
    t.same(parseEcho((await h2Request(client, "/after-big")).body).url, "/after-big", "session still usable");
  });

  t.test("client aborts release activeRequests", async (t) => {
    const client = h2Connect(t, `http://127.0.0.1:${port}`);
    const arrived = waitForArrivals(["/hang-a1", "/hang-a2"]);
    const stream = client.request({ ":path": "/hang-a2" });
    stream.on("error", () => {});
    stream.end();
    const req = http.request({ host: "127.0.0.1", port, path: "/hang-a1", agent: false });
    req.on("error", () => {});
    req.end();
    await arrived;
    t.equal(listener.activeRequests, 2);
    stream.close(http2.constants.NGHTTP2_CANCEL);
    req.destroy();
    for (let i = 0; i < 50 && listener.activeRequests > 0; i++) await sleep(10);
    t.equal(listener.activeRequests, 0);
  });
});


// ---- request body backpressure ---------------------------------------------------

const MiB = 1024 * 1024;
const BODY_MIB = 48;
// What the server may have read of a body nobody reads: socket and request
// buffers (a few 64 KiB reads), an HTTP/2 stream window. Far below the body.
const READ_AHEAD_LIMIT = 2 * MiB;

/** Resolves with the next /hold request, unread. */
function nextHeld(): Promise<{ req: NodeRequest; res: NodeResponse }> {
  return new Promise((resolve) => arrivals.once("held", (req: NodeRequest, res: NodeResponse) => resolve({ req, res })));
}

/** Bytes read from the connection under a request (TCP, TLS, or the HTTP/2 session's socket). */
function connectionBytesRead(req: NodeRequest): number {
  return req.socket.bytesRead;
}

/** Writes `mib` MiB through write()/drain, as a client library does; resolves once all is written. */
function writeBody(w: { write(b: Buffer): boolean; once(ev: "drain", fn: () => void): unknown; end(): unknown }, mib: number): Promise<void> {
  const chunk = Buffer.alloc(MiB, 7);
  let i = 0;
  return new Promise((resolve) => {
    const more = () => {
      while (i < mib) {
        i++;
        if (!w.write(chunk)) return void w.once("drain", more);
      }
      w.end();
      resolve();
    };
    more();
  });
}

/**
 * The client sends BODY_MIB MiB to a handler that does not read: the server
 * must stop reading the connection after a small buffer (the rest waits in
 * the client and the kernel), then deliver every byte once the handler reads.
 * How far the server read is sampled until it stops growing.
 */
async function expectBodyBackpressure(t: Asserts, held: Promise<{ req: NodeRequest; res: NodeResponse }>, label: string) {
  const { req, res } = await held;
  let read = connectionBytesRead(req);
  for (let stable = 0; stable < 5; ) {
    await sleep(40);
    const now = connectionBytesRead(req);
    stable = now === read ? stable + 1 : 0;
    read = now;
  }
  t.ok(read < READ_AHEAD_LIMIT, `${label}: the server read ${(read / MiB).toFixed(2)} MiB of a ${BODY_MIB} MiB body nobody reads (limit ${READ_AHEAD_LIMIT / MiB} MiB)`);
  let received = 0;
  req.on("data", (c: Buffer) => (received += c.length));
  await once(req, "end");
  t.equal(received, BODY_MIB * MiB, `${label}: once read, the whole body arrives`);
  res.end(String(received));
}

t.test("cleartext: a request body is read only as fast as the handler reads it", async (t) => {
  const { port } = await start(t);

  t.test("HTTP/1.1", async (t) => {
    const held = nextHeld();
    const req = http.request({ host: "127.0.0.1", port, method: "PUT", path: "/hold-h1", agent: false, headers: { "content-length": String(BODY_MIB * MiB) } });
    const answered = new Promise<string>((resolve, reject) => {
      req.on("response", (r) => {
        let body = "";
        r.on("data", (d: Buffer) => (body += d)).on("end", () => resolve(body));
      });
      req.on("error", reject);
    });
    const written = writeBody(req, BODY_MIB);
    await expectBodyBackpressure(t, held, "HTTP/1.1");
    await written;
    t.equal(await answered, String(BODY_MIB * MiB));
  });

  t.test("h2c", async (t) => {
    const client = h2Connect(t, `http://127.0.0.1:${port}`);
    const held = nextHeld();
    const stream = client.request({ ":method": "PUT", ":path": "/hold-h2" });
    const answered = new Promise<string>((resolve, reject) => {
      let body = "";
      stream.on("data", (d: Buffer) => (body += d)).on("end", () => resolve(body));
      stream.on("error", reject);
    });
    const written = writeBody(stream, BODY_MIB);
    await expectBodyBackpressure(t, held, "h2c");
    await written;
    t.equal(await answered, String(BODY_MIB * MiB));
  });
});

t.test("TLS: ALPN h2 and HTTP/1.1 on one port", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "listener-tls-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const keyPath = join(dir, "k");
  const certPath = join(dir, "c");
  await promisify(execFile)("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
    "-keyout", keyPath, "-out", certPath,
  ]);
  const [key, cert] = await Promise.all([readFile(keyPath), readFile(certPath)]);
  const { listener, port } = await start(t, { tls: { key, cert }, headersTimeoutMs: 200, requestTimeoutMs: 1000 });

  t.test("h2 via ALPN", async (t) => {
    const client = h2Connect(t, `https://localhost:${port}`, { ca: cert });
    const r = await h2Request(client, "/tls-h2");
    t.equal(r.status, 200);
    t.same(parseEcho(r.body), { method: "GET", url: "/tls-h2", httpVersion: "2.0" });
    t.equal(client.alpnProtocol, "h2");
  });

  t.test("a request body is read only as fast as the handler reads it, h2 and HTTP/1.1", async (t) => {
    const client = h2Connect(t, `https://localhost:${port}`, { ca: cert });
    let held = nextHeld();
    const stream = client.request({ ":method": "PUT", ":path": "/hold-tls-h2" });
    stream.on("error", () => {});
    let written = writeBody(stream, BODY_MIB);
    await expectBodyBackpressure(t, held, "TLS h2");
    await written;

    held = nextHeld();
    const req = https.request({ host: "localhost", port, method: "PUT", path: "/hold-tls-h1", ca: cert, agent: false, headers: { "content-length": String(BODY_MIB * MiB) } });
    req.on("error", () => {});
    req.on("response", (r) => r.resume());
    written = writeBody(req, BODY_MIB);
    await expectBodyBackpressure(t, held, "TLS HTTP/1.1");
    await written;
  });

  t.test("HTTP/1.1 via https.request", async (t) => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: cert });
    t.teardown(() => agent.destroy());
    const a = await h1Request({ protocol: "https:", host: "localhost", port, path: "/tls-h1", agent });
    const b = await h1Request({ protocol: "https:", host: "localhost", port, path: "/tls-h1b", agent });
    t.same(parseEcho(a.body), { method: "GET", url: "/tls-h1", httpVersion: "1.1" });
    t.same(parseEcho(b.body).url, "/tls-h1b");
    t.equal(b.reusedSocket, true);
    // https.Agent offers no ALPN at all: the server falls back to HTTP/1.1.
    t.equal((a.socket as tls.TLSSocket).alpnProtocol, false);

    // A client that offers only http/1.1 via ALPN.
    const c = await h1Request({
      protocol: "https:", host: "localhost", port, path: "/tls-alpn-h1", ca: cert, agent: false,
      ALPNProtocols: ["http/1.1"],
    });
    t.same(parseEcho(c.body), { method: "GET", url: "/tls-alpn-h1", httpVersion: "1.1" });
    t.equal((c.socket as tls.TLSSocket).alpnProtocol, "http/1.1");
  });

  t.test("HTTP/1.1 headersTimeout is enforced over TLS too", async (t) => {
    const socket = tls.connect({ host: "localhost", port, ca: cert, ALPNProtocols: ["http/1.1"] });
    const received: Buffer[] = [];
    socket.on("data", (c: Buffer) => received.push(c));
    socket.on("error", () => {});
    await once(socket, "secureConnect");
    socket.write("GET /slowloris HTTP/1.1\r\nHost: x\r\n");
    const started = Date.now();
    await once(socket, "close");
    t.match(Buffer.concat(received).toString(), /^HTTP\/1\.1 408/);
    t.ok(Date.now() - started < 1500);
  });

  t.test("graceful close over TLS lets in-flight requests finish", async (t) => {
    const h1 = h1Request({ protocol: "https:", host: "localhost", port, path: "/slow-tls", ca: cert, agent: false });
    const client = h2Connect(t, `https://localhost:${port}`, { ca: cert });
    const h2 = h2Request(client, "/slow-tls-h2");
    await waitForArrivals(["/slow-tls", "/slow-tls-h2"]);
    t.equal(listener.activeRequests, 2);
    const closed = listener.close(5000);
    const [r1, r2] = await Promise.all([h1, h2]);
    t.same(parseEcho(r1.body).url, "/slow-tls");
    t.equal(r1.headers.connection, "close");
    t.same(parseEcho(r2.body).url, "/slow-tls-h2");
    const before = Date.now();
    await closed;
    t.ok(Date.now() - before < 2000, "close resolved once requests were done");
    t.equal(listener.activeRequests, 0);
  });
});

async function waitForArrivals(urls: string[]): Promise<void> {
  const pending = new Set(urls);
  await new Promise<void>((resolve) => {
    const on = (url: string) => {
      pending.delete(url);
      if (pending.size === 0) {
        arrivals.off("request", on);
        resolve();
      }
    };
    arrivals.on("request", on);
  });
}

function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

t.test("graceful close: in-flight requests finish, new connections are refused", async (t) => {
  const { listener, port } = await start(t);

  // An idle keep-alive HTTP/1.1 connection, opened before close.
  const idleAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => idleAgent.destroy());
  const warm = await h1Request({ host: "127.0.0.1", port, path: "/warm", agent: idleAgent });
  const idleClosed = once(warm.socket, "close");

  const client = h2Connect(t, `http://127.0.0.1:${port}`);
  const goaway = once(client, "goaway");
  const arrived = waitForArrivals(["/slow-h1", "/slow-h2"]);
  const h1 = h1Request({ host: "127.0.0.1", port, path: "/slow-h1", agent: false });
  const h2 = h2Request(client, "/slow-h2");
  await arrived;
  t.equal(listener.activeRequests, 2);

  const started = Date.now();
  const closed = listener.close(5000);
  t.equal(await connectOutcome(port), "ECONNREFUSED", "new connection refused once close started");

  const [r1, r2] = await Promise.all([h1, h2]);
  t.equal(r1.status, 200);
  t.same(parseEcho(r1.body), { method: "GET", url: "/slow-h1", httpVersion: "1.1" });
  t.equal(r1.headers.connection, "close", "HTTP/1.1 response marked Connection: close while draining");
  t.equal(r2.status, 200);
  t.same(parseEcho(r2.body), { method: "GET", url: "/slow-h2", httpVersion: "2.0" });
  await goaway;
  t.pass("h2 client got GOAWAY");
  await idleClosed;
  t.pass("idle keep-alive connection closed");

  await closed;
  const elapsed = Date.now() - started;
  t.ok(elapsed < 2000, `close resolved after the slow requests (${elapsed} ms), not at the grace deadline`);
  t.equal(listener.activeRequests, 0);
  t.equal(await listener.close(5000), undefined, "close is idempotent");
});

t.test("graceful close: an HTTP/2 client that leaves a response unread does not hold close() for the grace period", async (t) => {
  const { listener, port } = await start(t);
  const client = h2Connect(t, `http://127.0.0.1:${port}`);
  const arrived = waitForArrivals(["/slow-unread"]);
  // Neither read to its end nor cancelled: the client keeps the stream, its
  // session and the connection open (as a gRPC client that stops iterating a
  // server stream without cancelling it does).
  const stream = client.request({ ":path": "/slow-unread" });
  stream.end();
  const answered = once(stream, "response");
  await arrived;

  const started = Date.now();
  const closed = listener.close(5000);
  await answered;
  t.equal(stream.readableEnded, false, "the response is left unread");
  await closed;
  const elapsed = Date.now() - started;
  t.ok(elapsed < 2500, `close resolved shortly after the response was written (${elapsed} ms), not at the 5 s grace deadline`);
  t.equal(listener.activeRequests, 0);
});

t.test("graceful close: hanging requests are cut at the deadline", async (t) => {
  const { listener, port } = await start(t);
  const client = h2Connect(t, `http://127.0.0.1:${port}`);
  const arrived = waitForArrivals(["/hang-h1", "/hang-h2"]);
  const h1 = h1Request({ host: "127.0.0.1", port, path: "/hang-h1", agent: false }).then(
    () => "answered",
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
  const h2 = h2Request(client, "/hang-h2").then(
    // A destroyed session ends the client stream without a response.
    (r) => (r.status === 200 ? "answered" : `no response (status ${r.status})`),
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
  await arrived;
  t.equal(listener.activeRequests, 2);

  const started = Date.now();
  await listener.close(100);
  const elapsed = Date.now() - started;
  t.ok(elapsed >= 90 && elapsed < 1000, `close(100) resolved promptly (${elapsed} ms)`);
  t.not(await h1, "answered", "HTTP/1.1 request was cut");
  t.not(await h2, "answered", "HTTP/2 request was cut");
  t.equal(listener.activeRequests, 0);
});
