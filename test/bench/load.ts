// Closed-loop load generators that cost the client as little as possible, so
// that on a small machine the figures measure the server, not the client:
//
//   - HTTP/1.1: raw keep-alive TCP connections, one request in flight on each,
//     pre-built request bytes, a minimal response parser (status line,
//     content-length or chunked body).
//   - HTTP/2 (gRPC): raw frames over a few TCP connections; the request header
//     block is HPACK-encoded once without the dynamic table, so every request
//     reuses the same bytes; responses are read at frame level (status from
//     the indexed :status byte, DATA length, END_STREAM), never HPACK-decoded.
//
// The same generator drives the bare baseline and the subject, so both pay
// the same client cost.

import net from "node:net";
import { performance } from "node:perf_hooks";

export interface Completion {
  /** HTTP status; -1 when it could not be read cheaply (a non-indexed :status). */
  status: number;
  /** Response body bytes (HTTP/1.1), or DATA payload bytes (HTTP/2). */
  bodyBytes: number;
  /** Transport failure (reset, closed connection). */
  error?: string;
}

/** One request slot: sends a request, calls back once with its completion. */
type Send = (done: (c: Completion) => void) => void;

interface Channel {
  /** Sends the next request on this channel. */
  send: Send;
  close(): void;
}

export interface RunOptions {
  concurrency: number;
  warmMs: number;
  durationMs: number;
  /** Decides whether a completion counts as a success. */
  ok: (c: Completion) => boolean;
  /** Called when the measured window opens and closes (e.g. to sample server CPU). */
  onWindowStart?: () => void;
  onWindowEnd?: () => void;
}

export interface RunResult {
  requests: number;
  errors: number;
  seconds: number;
  /** Latencies in ms of the successful requests completed in the window. */
  latencies: Float64Array;
  firstError?: string;
}

// ---------------------------------------------------------------- driver ---

async function drive(channels: Channel[], slotsPerChannel: number, opts: RunOptions): Promise<RunResult> {
  let lat = new Float64Array(1 << 16);
  let n = 0;
  let errors = 0;
  let firstError: string | undefined;
  let measuring = false;
  let stopping = false;
  let windowStart = 0;
  let windowEnd = 0;
  let inflight = 0;
  let drained: (() => void) | undefined;

  const issue = (ch: Channel) => {
    inflight++;
    const t0 = performance.now();
    ch.send((c) => {
      inflight--;
      const t1 = performance.now();
      if (measuring && t1 >= windowStart && (!stopping || t1 <= windowEnd)) {
        if (opts.ok(c)) {
          if (n === lat.length) {
            const bigger = new Float64Array(lat.length * 2);
            bigger.set(lat);
            lat = bigger;
          }
          lat[n++] = t1 - t0;
        } else {
          errors++;
          firstError ??= c.error ?? `status ${c.status}, ${c.bodyBytes} body bytes`;
        }
      }
      if (stopping) {
        if (inflight === 0) drained?.();
      } else if (c.error) {
        // A broken connection: back off instead of spinning on errors.
        setTimeout(() => (stopping ? inflight === 0 && drained?.() : issue(ch)), 50);
      } else {
        issue(ch);
      }
    });
  };

  for (const ch of channels) for (let i = 0; i < slotsPerChannel; i++) issue(ch);
  await sleep(opts.warmMs);
  opts.onWindowStart?.();
  windowStart = performance.now();
  measuring = true;
  await sleep(opts.durationMs);
  windowEnd = performance.now();
  stopping = true;
  opts.onWindowEnd?.();
  if (inflight > 0) {
    await Promise.race([new Promise<void>((r) => (drained = r)), sleep(10_000)]);
  }
  for (const ch of channels) ch.close();
  return { requests: n, errors, seconds: (windowEnd - windowStart) / 1000, latencies: lat.subarray(0, n), firstError };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// --------------------------------------------------------------- HTTP/1.1 ---

export interface H1Request {
  method: "GET" | "POST";
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export function h1Bytes(port: number, r: H1Request): Buffer {
  const body = r.body === undefined ? undefined : Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body);
  let head = `${r.method} ${r.path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n`;
  for (const [k, v] of Object.entries(r.headers ?? {})) head += `${k}: ${v}\r\n`;
  if (body) head += `content-length: ${body.length}\r\n`;
  head += "\r\n";
  return body ? Buffer.concat([Buffer.from(head, "latin1"), body]) : Buffer.from(head, "latin1");
}

const CRLFCRLF = Buffer.from("\r\n\r\n");

/** Parses one response at the front of buf; undefined if incomplete. */
function parseH1(buf: Buffer): { status: number; bodyBytes: number; end: number } | undefined {
  const headEnd = buf.indexOf(CRLFCRLF);
  if (headEnd < 0) return undefined;
  const status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + (buf[11] - 48);
  const head = buf.toString("latin1", 0, headEnd).toLowerCase();
  const bodyStart = headEnd + 4;
  const cl = /\r\ncontent-length:[ \t]*(\d+)/.exec(head);
  if (cl) {
    const len = Number(cl[1]);
    if (buf.length < bodyStart + len) return undefined;
    return { status, bodyBytes: len, end: bodyStart + len };
  }
  if (/\r\ntransfer-encoding:[ \t]*chunked/.test(head)) {
    let pos = bodyStart;
    let bodyBytes = 0;
    for (;;) {
      const lineEnd = buf.indexOf("\r\n", pos, "latin1");
      if (lineEnd < 0) return undefined;
      const size = parseInt(buf.toString("latin1", pos, lineEnd), 16);
      if (size === 0) {
        // No trailers expected: "0\r\n\r\n".
        const end = buf.indexOf(CRLFCRLF, pos);
        if (end < 0) return undefined;
        return { status, bodyBytes, end: end + 4 };
      }
      pos = lineEnd + 2 + size + 2;
      if (buf.length < pos) return undefined;
      bodyBytes += size;
    }
  }
  return { status, bodyBytes: 0, end: bodyStart };
}

class H1Connection implements Channel {
  private socket: net.Socket;
  private buf: Buffer | undefined;
  private pending: ((c: Completion) => void) | undefined;
  private closed = false;

  constructor(
    private port: number,
    private next: () => Buffer,
  ) {
    this.socket = this.connect();
  }

  private connect(): net.Socket {
    const s = net.connect({ port: this.port, host: "127.0.0.1", noDelay: true });
    s.on("data", (chunk: Buffer) => this.onData(chunk));
    s.on("error", () => {});
    s.on("close", () => {
      const cb = this.pending;
      this.pending = undefined;
      this.buf = undefined;
      if (!this.closed) this.socket = this.connect();
      cb?.({ status: 0, bodyBytes: 0, error: "connection closed" });
    });
    return s;
  }

  send(done: (c: Completion) => void) {
    this.pending = done;
    this.socket.write(this.next());
  }

  private onData(chunk: Buffer) {
    this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    const r = parseH1(this.buf);
    if (!r) return;
    this.buf = r.end === this.buf.length ? undefined : this.buf.subarray(r.end);
    const cb = this.pending;
    this.pending = undefined;
    cb?.({ status: r.status, bodyBytes: r.bodyBytes });
  }

  close() {
    this.closed = true;
    this.socket.destroy();
  }
}

/** concurrency keep-alive connections, one request in flight on each. */
export function runH1(port: number, next: () => Buffer, opts: RunOptions): Promise<RunResult> {
  const channels = Array.from({ length: opts.concurrency }, () => new H1Connection(port, next));
  return drive(channels, 1, opts);
}

// ----------------------------------------------------------------- HTTP/2 ---

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const DATA = 0x0, HEADERS = 0x1, RST_STREAM = 0x3, SETTINGS = 0x4, PING = 0x6, GOAWAY = 0x7;
const END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY = 0x20;
const BIG_WINDOW = 1 << 30;

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const f = Buffer.allocUnsafe(9 + payload.length);
  f.writeUIntBE(payload.length, 0, 3);
  f[3] = type;
  f[4] = flags;
  f.writeUInt32BE(streamId, 5);
  payload.copy(f, 9);
  return f;
}

function hpackInt(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  value -= max;
  while (value >= 128) {
    out.push((value & 0x7f) | 0x80);
    value >>= 7;
  }
  out.push(value);
  return out;
}

function hpackString(s: string): number[] {
  const bytes = Buffer.from(s, "utf8");
  return [...hpackInt(bytes.length, 7, 0x00), ...bytes];
}

/**
 * A request header block that never touches the HPACK dynamic table, so the
 * same bytes serve every request on every connection.
 */
export function h2HeaderBlock(method: "GET" | "POST", path: string, authority: string, headers: Record<string, string>): Buffer {
  const out: number[] = [];
  out.push(method === "GET" ? 0x82 : 0x83); // :method (static 2 / 3)
  out.push(0x86); // :scheme http (static 6)
  out.push(...hpackInt(4, 4, 0x00), ...hpackString(path)); // :path, literal without indexing
  out.push(...hpackInt(1, 4, 0x00), ...hpackString(authority)); // :authority
  for (const [k, v] of Object.entries(headers)) out.push(0x00, ...hpackString(k), ...hpackString(v));
  return Buffer.from(out);
}

// Indexed :status in the HPACK static table (RFC 7541 Appendix A).
const STATIC_STATUS: Record<number, number> = { 0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500 };

interface H2Stream {
  done: (c: Completion) => void;
  status: number | undefined;
  dataBytes: number;
}

class H2Session implements Channel {
  private socket: net.Socket;
  private buf: Buffer | undefined;
  private nextId = 1;
  private streams = new Map<number, H2Stream>();
  private out: Buffer[] = [];
  private flushQueued = false;
  private unacked = 0;
  private dead: string | undefined;

  constructor(
    port: number,
    private headerBlock: Buffer,
    private body: Buffer | undefined,
  ) {
    this.socket = net.connect({ port, host: "127.0.0.1", noDelay: true });
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(0x2, 0); // ENABLE_PUSH
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(0x4, 6); // INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(BIG_WINDOW, 8);
    const wu = Buffer.alloc(4);
    wu.writeUInt32BE(BIG_WINDOW - 65535, 0);
    this.socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, settings), frame(0x8, 0, 0, wu)]));
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", () => {});
    this.socket.on("close", () => this.fail("connection closed"));
  }

  private fail(reason: string) {
    this.dead ??= reason;
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.done({ status: 0, bodyBytes: 0, error: reason });
  }

  private write(b: Buffer) {
    this.out.push(b);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        const bufs = this.out;
        this.out = [];
        if (!this.socket.destroyed) this.socket.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
      });
    }
  }

  send(done: (c: Completion) => void) {
    if (this.dead) {
      // Do not spin: report once per event-loop turn.
      setImmediate(() => done({ status: 0, bodyBytes: 0, error: this.dead }));
      return;
    }
    const id = this.nextId;
    this.nextId += 2;
    this.streams.set(id, { done, status: undefined, dataBytes: 0 });
    if (this.body) {
      this.write(frame(HEADERS, END_HEADERS, id, this.headerBlock));
      this.write(frame(DATA, END_STREAM, id, this.body));
    } else {
      this.write(frame(HEADERS, END_HEADERS | END_STREAM, id, this.headerBlock));
    }
  }

  private complete(id: number, s: H2Stream, error?: string) {
    this.streams.delete(id);
    s.done({ status: s.status ?? 0, bodyBytes: s.dataBytes, error });
  }

  private onData(chunk: Buffer) {
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    let pos = 0;
    while (buf.length - pos >= 9) {
      const len = buf.readUIntBE(pos, 3);
      if (buf.length - pos < 9 + len) break;
      const type = buf[pos + 3];
      const flags = buf[pos + 4];
      const id = buf.readUInt32BE(pos + 5) & 0x7fffffff;
      const p = pos + 9;
      pos = p + len;
      switch (type) {
        case DATA: {
          const s = this.streams.get(id);
          this.unacked += len;
          if (s) {
            s.dataBytes += flags & PADDED ? len - 1 - buf[p] : len;
            if (flags & END_STREAM) this.complete(id, s);
          }
          break;
        }
        case HEADERS: {
          const s = this.streams.get(id);
          if (!s) break;
          if (s.status === undefined) {
            let q = p;
            if (flags & PADDED) q += 1;
            if (flags & PRIORITY) q += 5;
            s.status = STATIC_STATUS[buf[q]] ?? -1;
          }
          if (flags & END_STREAM) this.complete(id, s);
          break;
        }
        case RST_STREAM: {
          const s = this.streams.get(id);
          if (s) this.complete(id, s, `RST_STREAM ${buf.readUInt32BE(p)}`);
          break;
        }
        case SETTINGS:
          if (!(flags & ACK)) this.write(frame(SETTINGS, ACK, 0, Buffer.alloc(0)));
          break;
        case PING:
          if (!(flags & ACK)) this.write(frame(PING, ACK, 0, Buffer.from(buf.subarray(p, p + 8))));
          break;
        case GOAWAY:
          this.dead = `GOAWAY ${buf.readUInt32BE(p + 4)}`;
          break;
      }
    }
    this.buf = pos === buf.length ? undefined : buf.subarray(pos);
    if (this.unacked > 1 << 20) {
      const wu = Buffer.alloc(4);
      wu.writeUInt32BE(this.unacked, 0);
      this.unacked = 0;
      this.write(frame(0x8, 0, 0, wu));
    }
  }

  close() {
    this.socket.destroy();
  }
}

/** `sessions` HTTP/2 connections sharing `concurrency` streams in flight. */
export function runH2(port: number, headerBlock: Buffer, body: Buffer | undefined, sessions: number, opts: RunOptions): Promise<RunResult> {
  const channels = Array.from({ length: sessions }, () => new H2Session(port, headerBlock, body));
  return drive(channels, Math.ceil(opts.concurrency / sessions), opts);
}

/** gRPC length-prefixed message (uncompressed). */
export function grpcFrame(message: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + message.length);
  b.writeUInt32BE(message.length, 1);
  b.set(message, 5);
  return b;
}

// -------------------------------------------------------------- statistics ---

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** Several runs of the same thing, pooled. */
export function pool(results: RunResult[]) {
  const requests = results.reduce((a, r) => a + r.requests, 0);
  const errors = results.reduce((a, r) => a + r.errors, 0);
  const seconds = results.reduce((a, r) => a + r.seconds, 0);
  const all = new Float64Array(requests);
  let o = 0;
  for (const r of results) {
    all.set(r.latencies, o);
    o += r.latencies.length;
  }
  all.sort();
  return {
    rps: requests / seconds,
    perRun: results.map((r) => r.requests / r.seconds),
    errors,
    firstError: results.find((r) => r.firstError)?.firstError,
    p50: percentile(all, 50),
    p99: percentile(all, 99),
  };
}
