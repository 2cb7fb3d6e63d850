import t from "tap";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { createListener, HTTP2_PREFACE, type ListenerOptions, type NodeRequest, type NodeResponse } from "../../server/transport/listener.js";
import { poll } from "../support/pubsub.js";
import { closeWaitCount, serverSocketStates } from "../support/tcp-states.js";

// How the listener ends, bounds and keeps alive connections: what a gateway
// or a client that goes away sees, and what is left on the server after.

const BIG = Buffer.alloc(6 * 1024 * 1024, 0x61);

/** /hold: never answers, reports its end; /big: a 6 MiB body in one write; else a small answer. */
function handler(ended: (path: string) => void) {
  return (req: NodeRequest, res: NodeResponse) => {
    if (req.url === "/hold") {
      res.once("close", () => ended("/hold"));
      if (res instanceof http2.Http2ServerResponse) res.writeHead(200); // sent at once over HTTP/2
      return;
    }
    res.writeHead(200);
    res.end(req.url === "/big" ? BIG : "ok");
  };
}

async function start(tt: { teardown(fn: () => unknown): void }, extra: Partial<ListenerOptions> = {}) {
  const endedPaths: string[] = [];
  const listener = createListener({ handler: handler((p) => endedPaths.push(p)), ...extra });
  const { port } = await listener.listen(0, "127.0.0.1");
  tt.teardown(() => listener.close(0));
  return { listener, port, endedPaths };
}

function connect(tt: { teardown(fn: () => unknown): void }, port: number) {
  let raw: net.Socket | undefined;
  const client = http2.connect(`http://127.0.0.1:${port}`, {
    createConnection: () => (raw = net.connect(port, "127.0.0.1")),
  });
  client.on("error", () => {});
  tt.teardown(() => client.destroy());
  return { client, raw: () => raw! };
}

function call(client: http2.ClientHttp2Session, path: string): Promise<{ status: number; rstCode: number | undefined; bytes: number }> {
  return new Promise((resolve) => {
    const s = client.request({ ":path": path });
    let status = 0;
    let bytes = 0;
    s.on("response", (h) => (status = Number(h[":status"])));
    s.on("data", (d: Buffer) => (bytes += d.length));
    s.on("error", () => {});
    s.on("close", () => resolve({ status, rstCode: s.rstCode, bytes }));
    s.end();
  });
}

t.test("a connection the peer closes (TCP FIN) is closed, and its streams end", async (t) => {
  t.test("HTTP/2: an open stream's handler sees it end and no CLOSE-WAIT socket is left", async (t) => {
    const { port, endedPaths } = await start(t);
    const { client, raw } = connect(t, port);
    const s = client.request({ ":path": "/hold" });
    s.on("error", () => {});
    await once(s, "response");
    raw().end(); // FIN, as nginx sends when its client cancels, or a Python channel's close()
    await poll(() => endedPaths.includes("/hold"), 3000, "the held stream's handler to end");
    await poll(async () => (await serverSocketStates(port)).length === 0 || undefined, 3000, "the server to close its socket");
    t.equal(await closeWaitCount(port), 0);
  });

  t.test("HTTP/2: connections that send the preface and close leave no socket behind", async (t) => {
    const { port } = await start(t);
    const sockets = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const s = net.connect(port, "127.0.0.1");
        await once(s, "connect");
        s.write(HTTP2_PREFACE);
        s.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // empty SETTINGS
        s.end();
        s.on("error", () => {});
        s.resume();
        return s;
      }),
    );
    await poll(async () => (await closeWaitCount(port)) === 0 || undefined, 3000, "no CLOSE-WAIT socket on the server");
    t.same(await serverSocketStates(port).then((s) => s.filter((x) => x !== "TIME_WAIT" && x !== "FIN_WAIT2")), []);
    for (const s of sockets) s.destroy();
  });

  t.test("HTTP/1.1: a held request ends when its client half-closes", async (t) => {
    const { port, endedPaths } = await start(t);
    const s = net.connect(port, "127.0.0.1");
    await once(s, "connect");
    s.write("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    await sleep(100);
    s.end();
    s.resume();
    await poll(() => endedPaths.includes("/hold"), 3000, "the held request's handler to end");
    await poll(async () => (await closeWaitCount(port)) === 0 || undefined, 3000, "no CLOSE-WAIT socket on the server");
    t.pass();
  });
});

t.test("abandoned large responses do not poison an HTTP/2 connection", async (t) => {
  const { port } = await start(t);
  let { client } = connect(t, port);
  let goaways = 0;
  const calm: number[] = [];
  for (let i = 0; i < 8; i++) {
    if (client.closed || client.destroyed) {
      goaways++;
      ({ client } = connect(t, port)); // what a gRPC client does after GOAWAY
    }
    client.on("goaway", () => {});
    const abandoned = await new Promise<number | undefined>((resolve) => {
      const s = client.request({ ":path": "/big" });
      s.on("error", () => {});
      s.on("data", () => {});
      const timer = setTimeout(() => s.close(http2.constants.NGHTTP2_CANCEL), 20); // a 20 ms deadline
      s.on("close", () => {
        clearTimeout(timer);
        resolve(s.rstCode);
      });
      s.end();
    });
    if (abandoned === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM) calm.push(i);
    if (client.closed || client.destroyed) continue;
    const small = await call(client, "/small");
    if (small.rstCode === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM) calm.push(i);
  }
  t.same(calm, [], "no stream was refused with ENHANCE_YOUR_CALM");
  if (client.closed || client.destroyed) ({ client } = connect(t, port));
  const last = await call(client, "/small");
  t.equal(last.status, 200, "a call after the abandoned ones is answered");
  t.comment(`connections replaced after GOAWAY: ${goaways}`);
});

t.test("limits per process", async (t) => {
  t.test("streams: past maxActiveRequests, HTTP/2 streams are refused (REFUSED_STREAM) and HTTP/1.1 gets 503", async (t) => {
    const { port } = await start(t, { maxActiveRequests: 2 });
    const a = connect(t, port).client;
    const b = connect(t, port).client;
    for (const c of [a, b]) {
      const s = c.request({ ":path": "/hold" });
      s.on("error", () => {});
      await once(s, "response");
    }
    const refused = await call(connect(t, port).client, "/small");
    t.equal(refused.rstCode, http2.constants.NGHTTP2_REFUSED_STREAM);
    const h1 = await fetch(`http://127.0.0.1:${port}/small`);
    t.equal(h1.status, 503);
    t.equal(h1.headers.get("retry-after"), "1");
    a.destroy();
    await sleep(100);
    const after = await call(connect(t, port).client, "/small");
    t.equal(after.status, 200, "answered again once a stream ended");
  });

  t.test("connections: past maxConnections, new connections are closed", async (t) => {
    const { port } = await start(t, { maxConnections: 2 });
    const held = [net.connect(port, "127.0.0.1"), net.connect(port, "127.0.0.1")];
    for (const s of held) await once(s, "connect");
    await sleep(50);
    const extra = net.connect(port, "127.0.0.1");
    extra.on("error", () => {});
    extra.resume();
    const started = Date.now();
    await once(extra, "close");
    t.ok(Date.now() - started < 2000, "the third connection was closed at once (not by the 10 s preface timeout)");
    for (const s of held) s.destroy();
    await poll(async () => (await fetch(`http://127.0.0.1:${port}/small`, { headers: { connection: "close" } }).catch(() => undefined))?.status, 3000, "a new connection once others closed");
  });
});

t.test("idle and silent connections", async (t) => {
  t.test("an HTTP/2 connection with no open stream is sent GOAWAY after idleTimeoutMs", async (t) => {
    const { port } = await start(t, { idleTimeoutMs: 300 });
    const { client } = connect(t, port);
    t.equal((await call(client, "/small")).status, 200);
    const [code] = await once(client, "goaway");
    t.equal(code, http2.constants.NGHTTP2_NO_ERROR);
  });

  t.test("an HTTP/2 connection holding a silent stream is sent PINGs and kept", async (t) => {
    const { port } = await start(t, { idleTimeoutMs: 300, pingIntervalMs: 100 });
    const { client } = connect(t, port);
    let pings = 0;
    client.on("ping", () => pings++);
    const s = client.request({ ":path": "/hold" });
    s.on("error", () => {});
    await once(s, "response");
    await sleep(700);
    t.ok(pings >= 3, `PINGs received: ${pings}`);
    t.notOk(s.closed, "the stream is still open");
  });

  t.test("an HTTP/2 peer that stops answering PINGs (gone without a FIN) is disconnected and its streams end", async (t) => {
    const { port, endedPaths } = await start(t, { pingIntervalMs: 100 });
    const s = net.connect(port, "127.0.0.1");
    t.teardown(() => s.destroy());
    await once(s, "connect");
    s.resume(); // reads everything, answers nothing
    const frame = (type: number, flags: number, stream: number, payload: Buffer) => {
      const head = Buffer.alloc(9);
      head.writeUIntBE(payload.length, 0, 3);
      head[3] = type;
      head[4] = flags;
      head.writeUInt32BE(stream, 5);
      return Buffer.concat([head, payload]);
    };
    // HPACK: :method GET (static 2), :scheme http (6), :path "/hold" and :authority "x" as literals.
    const block = Buffer.concat([Buffer.from([0x82, 0x86, 0x04, 5]), Buffer.from("/hold"), Buffer.from([0x01, 1]), Buffer.from("x")]);
    s.write(Buffer.concat([HTTP2_PREFACE, frame(0x4, 0, 0, Buffer.alloc(0)), frame(0x4, 0x1, 0, Buffer.alloc(0)), frame(0x1, 0x4 | 0x1, 1, block)]));
    await poll(() => endedPaths.includes("/hold"), 3000, "the stream of the silent peer to end");
    await once(s, "close");
    t.pass("the server closed the connection");
  });

  t.test("HTTP/1.1 keep-alive lasts idleTimeoutMs, then the server closes the connection", async (t) => {
    const { port } = await start(t, { idleTimeoutMs: 600 });
    const s = net.connect(port, "127.0.0.1");
    t.teardown(() => s.destroy());
    let text = "";
    s.on("data", (d: Buffer) => (text += d.toString()));
    const answers = () => text.split("HTTP/1.1 200").length - 1;
    s.write("GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    await poll(() => answers() === 1 || undefined, 2000, "the first answer");
    await sleep(400);
    s.write("GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    await poll(() => answers() === 2 || undefined, 2000, "the second answer on the same connection");
    const idleFrom = Date.now();
    await once(s, "end");
    const idle = Date.now() - idleFrom;
    t.ok(idle >= 500 && idle < 3000, `closed by the server after ${idle} ms idle`);
  });
});
