// One TCP port, HTTP/1.1 and HTTP/2, cleartext or TLS, one request handler.
//
// Cleartext: Node's http2.createServer() only speaks h2c (prior knowledge),
// and http.createServer() only HTTP/1.x, so a plain net.Server accepts the
// connection, reads until the 24-byte HTTP/2 client connection preface can be
// compared, puts the bytes back (socket.unshift) and hands the socket to one
// of two non-listening servers by emitting 'connection' on it.
//
// TLS: http2.createSecureServer({ allowHTTP1: true }) negotiates h2 or
// http/1.1 through ALPN natively, so the TLS path is just that server.
//
// Graceful close: stop accepting, GOAWAY to HTTP/2 sessions, close idle
// HTTP/1.1 connections, answer in-flight HTTP/1.1 requests with
// "Connection: close", wait for in-flight requests up to graceMs, then destroy
// whatever is left.

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { AddressInfo } from "node:net";
import type tls from "node:tls";
import { unsentBytes, watchSession, type WatchedSession } from "./connection-lifecycle.js";

export type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;
/** What connectNodeAdapter(...) from @connectrpc/connect-node returns. */
export type NodeHandler = (req: NodeRequest, res: NodeResponse) => void;

export interface ListenerOptions {
  handler: NodeHandler;
  /** Serve TLS (ALPN h2 + http/1.1) instead of cleartext (h2c prior knowledge + HTTP/1.1). */
  tls?: { cert: Buffer | string; key: Buffer | string };
  /** HTTP/1.1 max header bytes, and HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE. Default 16 KiB. */
  maxHeaderSize?: number;
  /** HTTP/1.1: time allowed to receive the request headers. Default 30 s. */
  headersTimeoutMs?: number;
  /** HTTP/1.1: time allowed to receive the whole request (0 = none). Default 300 s. */
  requestTimeoutMs?: number;
  /**
   * Idle connections are closed after this: HTTP/1.1 keep-alive, and HTTP/2
   * connections with no open stream (GOAWAY). Default 75 s, longer than
   * gateways keep idle upstream connections (nginx: 60 s).
   */
  idleTimeoutMs?: number;
  /** HTTP/2 PING interval on connections with open streams (0 = none). Default 30 s. */
  pingIntervalMs?: number;
  /** Connections accepted at once by this process; more are closed on accept. Default 1000. */
  maxConnections?: number;
  /**
   * Requests and streams in progress at once in this process, every protocol
   * together; more are refused (HTTP/2 RST_STREAM REFUSED_STREAM, HTTP/1.1 503).
   * Default 1000.
   */
  maxActiveRequests?: number;
  /**
   * Time a new connection has to send enough bytes to be classified (cleartext),
   * or to finish the TLS handshake. Idle sockets are destroyed. Default 10 s.
   */
  prefaceTimeoutMs?: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (at most maxActiveRequests). Default 256. */
  maxConcurrentStreams?: number;
  /** HTTP/2 per-session memory cap in MB (Node's maxSessionMemory). Default 10. */
  maxSessionMemoryMb?: number;
  /** Called for socket/session/handler errors that were absorbed (never thrown). */
  onError?: (err: Error, context: string) => void;
}

export interface Listener {
  listen(port: number, host: string): Promise<AddressInfo>;
  /**
   * Stop accepting connections; let in-flight requests finish for up to
   * graceMs, then destroy what is left. Idempotent: later calls share the
   * first call's promise.
   */
  close(graceMs: number): Promise<void>;
  /** Requests whose response has neither finished nor been closed. */
  readonly activeRequests: number;
}

/** "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (RFC 9113 §3.4). */
export const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

const keepUnconsumed = () => {};

/** How long a drained HTTP/2 connection waits for the client to close its side (dropWhenEnded). */
const H2_LINGER_MS = 1000;

// "tcp": TLS mode's raw socket under a TLSSocket (only destroyed at the deadline).
type ConnKind = "sniffing" | "h1" | "h2" | "tcp";
interface ConnState {
  kind: ConnKind;
  /** Bytes received while sniffing (cleartext only). */
  sniffedBytes: number;
  /** HTTP/1.1 requests on this connection whose response is not done. */
  inflight: number;
}

// Properties of the HTTP/1.1 fallback of Http2SecureServer(allowHTTP1) that
// Node's http connection listener reads but @types/node does not declare.
interface Http1Knobs {
  maxHeaderSize?: number;
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
  requireHostHeader: boolean;
}

export function createListener(options: ListenerOptions): Listener {
  const handler = options.handler;
  const maxHeaderSize = options.maxHeaderSize ?? 16 * 1024;
  const requestTimeout = options.requestTimeoutMs ?? 300_000;
  const headersTimeout = options.headersTimeoutMs ?? Math.min(30_000, requestTimeout || 30_000);
  const keepAliveTimeout = options.idleTimeoutMs ?? 75_000;
  const prefaceTimeout = options.prefaceTimeoutMs ?? 10_000;
  const maxActiveRequests = options.maxActiveRequests ?? 1000;
  const maxConcurrentStreams = Math.min(options.maxConcurrentStreams ?? 256, maxActiveRequests);
  const maxSessionMemory = options.maxSessionMemoryMb ?? 10;
  const lifecycle = {
    idleTimeoutMs: keepAliveTimeout,
    pingIntervalMs: options.pingIntervalMs ?? 30_000,
    sessionMemoryBytes: maxSessionMemory * 1024 * 1024,
  };
  const report = options.onError ?? (() => {});
  if (requestTimeout > 0 && headersTimeout > requestTimeout) {
    throw new RangeError("headersTimeoutMs must be <= requestTimeoutMs");
  }
  // Node enforces headersTimeout/requestTimeout from a periodic sweep; sweep
  // often enough that the timeouts hold to within ~50%.
  const sweepBase = requestTimeout > 0 ? Math.min(headersTimeout || requestTimeout, requestTimeout) : headersTimeout;
  const connectionsCheckingInterval = sweepBase > 0 ? Math.min(30_000, Math.max(100, Math.floor(sweepBase / 2))) : 30_000;

  const h2Settings: http2.Settings = {
    maxConcurrentStreams,
    maxHeaderListSize: maxHeaderSize,
  };
  const h2Options = {
    settings: h2Settings,
    maxSessionMemory,
    maxHeaderListPairs: 128, // header fields per block (Node's default, made explicit)
  };

  let active = 0;
  let draining = false;
  let closing: Promise<void> | undefined;
  const conns = new Map<net.Socket, ConnState>();
  const sessions = new Map<http2.ServerHttp2Session, WatchedSession>();
  const h1Responses = new Set<http.ServerResponse>();

  const onSocketError = (err: Error) => report(err, "socket");

  function track(socket: net.Socket, kind: ConnKind): ConnState {
    const state: ConnState = { kind, sniffedBytes: 0, inflight: 0 };
    conns.set(socket, state);
    socket.on("error", onSocketError);
    socket.once("close", () => conns.delete(socket));
    return state;
  }

  /** End an HTTP/1.1 socket once its queued output has been written. */
  function endSoon(socket: net.Socket) {
    if (socket.destroyed) return;
    if (socket.writableEnded) return;
    socket.end(() => socket.destroy());
  }

  /**
   * Drop a draining HTTP/2 connection shortly after the session has ended
   * our side of it (GOAWAY sent, its streams done). The client's side stays
   * open while it holds a stream it neither read to the end nor cancelled,
   * which would keep close() waiting for the whole grace period. The pause
   * lets a client that is still reading our last frames finish first.
   */
  function dropWhenEnded(socket: net.Socket) {
    const drop = () => setTimeout(() => socket.destroy(), H2_LINGER_MS).unref();
    if (socket.writableFinished) drop();
    else socket.once("finish", drop);
  }

  // ---- per request ----------------------------------------------------------

  const onRequest = (req: NodeRequest, res: NodeResponse) => {
    if (active >= maxActiveRequests) {
      refuse(res);
      return;
    }
    active++;
    let h1Socket: net.Socket | undefined;
    let h1State: ConnState | undefined;
    let h2Session: WatchedSession | undefined;
    if (req instanceof http2.Http2ServerRequest) {
      h2Session = sessions.get(req.stream.session as http2.ServerHttp2Session);
      h2Session?.streamOpened();
    } else {
      const r1 = res as http.ServerResponse;
      h1Socket = req.socket;
      h1State = conns.get(h1Socket);
      if (h1State) h1State.inflight++;
      h1Responses.add(r1);
      if (draining) r1.setHeader("Connection", "close");
    }
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      active--;
      h2Session?.streamClosed(unsentBytes((res as http2.Http2ServerResponse).stream));
      if (h1Socket) {
        h1Responses.delete(res as http.ServerResponse);
        if (h1State) h1State.inflight--;
        // A keep-alive response whose headers went out before draining began:
        // don't wait for the client to send another request, close now.
        if (draining && h1State && h1State.inflight === 0) endSoon(h1Socket);
      }
    };
    res.once("finish", finish);
    res.once("close", finish);
    try {
      handler(req, res);
    } catch (err) {
      report(err instanceof Error ? err : new Error(String(err)), "handler");
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end();
      } else if (res instanceof http2.Http2ServerResponse) {
        res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      } else {
        res.destroy();
      }
    }
  };

  const onSession = (session: http2.ServerHttp2Session) => {
    sessions.set(session, watchSession(session, session.socket as net.Socket, lifecycle));
    // (Node also re-emits this as the server's 'sessionError'; one report is enough.)
    session.on("error", (err) => report(err, "http2 session"));
    session.once("close", () => sessions.delete(session));
    // Accepted before close() began but classified after: refuse new streams.
    if (draining) session.close();
  };

  /** Over the process's limit of requests in progress: not processed, safe to retry. */
  function refuse(res: NodeResponse) {
    if (res instanceof http2.Http2ServerResponse) {
      res.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const body = JSON.stringify({ error: { code: 503, status: "UNAVAILABLE", message: "too many requests in progress; retry" } });
    res.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "retry-after": "1" });
    res.end(body);
  }

  // ---- servers ----------------------------------------------------------------

  let outer: net.Server;
  let h1Server: http.Server | undefined;
  let h2Server: http2.Http2Server | undefined;
  let secureServer: http2.Http2SecureServer | undefined;

  if (options.tls) {
    secureServer = http2.createSecureServer({
      ...h2Options,
      cert: options.tls.cert,
      key: options.tls.key,
      allowHTTP1: true,
      ALPNProtocols: ["h2", "http/1.1"],
      handshakeTimeout: prefaceTimeout,
    });
    const knobs = secureServer as unknown as Http1Knobs;
    knobs.maxHeaderSize = maxHeaderSize;
    knobs.headersTimeout = headersTimeout;
    knobs.requestTimeout = requestTimeout;
    knobs.keepAliveTimeout = keepAliveTimeout;
    knobs.connectionsCheckingInterval = connectionsCheckingInterval;
    knobs.requireHostHeader = true;
    secureServer.on("request", onRequest);
    secureServer.on("session", onSession);
    secureServer.on("tlsClientError", (err: Error) => report(err, "tls"));
    // Raw TCP sockets are tracked too, so a connection stuck in the TLS
    // handshake is destroyed at the grace deadline; the TLS socket on top of
    // it is tracked separately once the handshake is done.
    secureServer.on("connection", (raw: net.Socket) => {
      if (draining) {
        raw.destroy();
        return;
      }
      track(raw, "tcp");
    });
    secureServer.on("secureConnection", (socket: tls.TLSSocket) => {
      track(socket, socket.alpnProtocol === "h2" ? "h2" : "h1");
    });
    outer = secureServer;
  } else {
    h1Server = http.createServer({
      maxHeaderSize,
      headersTimeout,
      requestTimeout,
      keepAliveTimeout,
      connectionsCheckingInterval,
    });
    h1Server.on("request", onRequest);
    h2Server = http2.createServer(h2Options);
    h2Server.on("request", onRequest);
    h2Server.on("session", onSession);
    const h1 = h1Server;
    const h2 = h2Server;

    outer = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      const state = track(socket, "sniffing");
      if (draining) {
        socket.destroy();
        return;
      }
      let buffered: Buffer = Buffer.alloc(0);
      const timer = setTimeout(() => socket.destroy(), prefaceTimeout);
      const cleanup = () => {
        clearTimeout(timer);
        socket.removeListener("data", onData);
        socket.removeListener("end", onEnd);
        socket.removeListener("close", cleanup);
      };
      const onEnd = () => {
        cleanup();
        socket.destroy();
      };
      const onData = (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        state.sniffedBytes = buffered.length;
        const n = Math.min(buffered.length, HTTP2_PREFACE.length);
        const prefix = buffered.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
        if (prefix && buffered.length < HTTP2_PREFACE.length) return; // need more
        cleanup();
        if (prefix) {
          state.kind = "h2";
          socket.pause();
          socket.unshift(buffered);
          // The session takes over the socket's handle and reads the buffered
          // bytes itself. Do NOT resume: that breaks the session (GOAWAY).
          h2.emit("connection", socket);
          if (draining) dropWhenEnded(socket);
        } else {
          state.kind = "h1";
          h1.emit("connection", socket);
          // node:http lets its parser take the socket's handle ("consume"):
          // new bytes then skip the socket's JS stream, and a request body is
          // paused by stopping the handle on the socket's 'pause' event. That
          // only holds for a socket whose JS stream never read: here it read
          // the sniffed bytes, so the stream's own read-ahead (maybeReadMore,
          // after the sniffed chunk and after unshift) restarts the handle
          // after the parser's first pause, and no later 'pause' event stops
          // it — the whole body was read into memory at the client's pace, not
          // the handler's. A 'data' listener added now makes node:http give
          // the handle back ("unconsume"): every byte goes through the JS
          // stream, whose pause/highWaterMark backpressure is the ordinary
          // one. The listener itself has nothing to do.
          socket.on("data", keepUnconsumed);
          // The sniffed bytes, back in front, while the stream still flows.
          socket.unshift(buffered);
        }
      };
      socket.on("data", onData);
      socket.on("end", onEnd);
      socket.once("close", cleanup); // reset or destroyed before classification
    });
  }
  outer.on("error", (err) => report(err, "server"));
  // Past this, net.Server closes new connections as it accepts them.
  outer.maxConnections = options.maxConnections ?? 1000;

  // ---- lifecycle ----------------------------------------------------------------

  function listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      outer.once("error", onError);
      outer.listen(port, host, () => {
        outer.removeListener("error", onError);
        // http.Server starts its connection bookkeeping (headersTimeout /
        // requestTimeout sweep, closeIdleConnections) on 'listening'. The
        // inner cleartext server never listens itself, so start it here.
        h1Server?.emit("listening");
        resolve(outer.address() as AddressInfo);
      });
    });
  }

  function destroyAll() {
    for (const session of sessions.keys()) session.destroy();
    for (const socket of conns.keys()) socket.destroy();
  }

  function close(graceMs: number): Promise<void> {
    if (closing) return closing;
    draining = true;
    closing = new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      // Resolves once the listening server is closed and every connection it
      // accepted is gone (net.Server 'close' semantics).
      outer.close(() => {
        if (timer) clearTimeout(timer);
        resolve();
      });
      // Stops the inner server's timeout sweep and closes its idle keep-alive
      // connections (the secure server does both in its own close()).
      h1Server?.close();

      for (const session of sessions.keys()) session.close(); // GOAWAY; streams finish
      for (const res of h1Responses) {
        if (!res.headersSent) res.setHeader("Connection", "close");
      }
      for (const [socket, state] of conns) {
        if (state.kind === "sniffing" && state.sniffedBytes === 0) {
          socket.destroy(); // connected but said nothing yet: nothing to preserve
        } else if (state.kind === "h1" && state.inflight === 0) {
          endSoon(socket); // idle keep-alive, or a request still arriving
        } else if (state.kind === "h2") {
          dropWhenEnded(socket);
        }
      }
      timer = setTimeout(destroyAll, Math.max(0, graceMs));
      timer.unref();
    });
    return closing;
  }

  return {
    listen,
    close,
    get activeRequests() {
      return active;
    },
  };
}
