// What happens to an accepted HTTP/2 connection over its life, apart from
// reading and writing it: when the peer leaves, when it is idle, when it is
// silent but holds streams open, and when Node's own bookkeeping says it must
// be replaced. The listener hands every HTTP/2 session to watchSession() and
// reports each stream's end to it.

import type http2 from "node:http2";
import type net from "node:net";

export interface LifecycleOptions {
  /** A connection with no open stream for this long is sent GOAWAY and closed. 0 = never. */
  idleTimeoutMs: number;
  /**
   * While a connection holds open streams, a PING is sent this often; a PING
   * still unanswered at the next one ends the connection. 0 = never.
   */
  pingIntervalMs: number;
  /** Node's maxSessionMemory for the session, in bytes. */
  sessionMemoryBytes: number;
}

export interface WatchedSession {
  streamOpened(): void;
  /** unsentBytes: response bytes handed to the stream that never left it (a reset stream). */
  streamClosed(unsentBytes: number): void;
}

/**
 * A session's life apart from its streams' I/O:
 *
 * - The peer closed its side (TCP FIN): an HTTP/2 peer cannot half-close a
 *   connection (it could no longer send WINDOW_UPDATE, RST_STREAM or GOAWAY),
 *   so the session is destroyed, and with it every stream, whose handlers see
 *   their call cancelled. The listener's sockets allow half-open connections
 *   (HTTP/1.1 needs it), so without this the socket stayed in CLOSE-WAIT and
 *   its streams open for good.
 * - Idle (no open stream) for idleTimeoutMs: GOAWAY and close, so a gateway's
 *   pooled connection is not kept forever by a peer that vanished. The default
 *   outlasts gateways' own upstream keep-alive (nginx: 60 s), so the gateway
 *   closes first and never sends on a connection being closed here.
 * - Streams open but nothing to send (an idle WatchEvents): a PING every
 *   pingIntervalMs keeps proxies that time out silent upstreams (nginx
 *   grpc_read_timeout, 60 s) from cutting the stream, and finds a peer that is
 *   gone without a FIN (no PING ACK by the next interval: destroyed).
 * - Node does not give back the session memory counted for response bytes
 *   still queued in a stream the peer reset (node_http2.cc: Http2Stream::Destroy
 *   drops its write queue without decrementing the session's outbound
 *   length). A few abandoned large responses then exceed maxSessionMemory and
 *   every later stream on the connection is refused with ENHANCE_YOUR_CALM,
 *   with no GOAWAY, so clients keep using it. The bytes lost that way are
 *   counted here, and at half the session's memory the session is closed with
 *   GOAWAY: calls in flight finish, clients open a new connection for the next.
 */
export function watchSession(session: http2.ServerHttp2Session, socket: net.Socket, opt: LifecycleOptions): WatchedSession {
  let open = 0;
  let lostBytes = 0;
  let idleTimer: NodeJS.Timeout | undefined;
  let pingTimer: NodeJS.Timeout | undefined;
  let pingOutstanding = false;

  const ended = () => session.closed || session.destroyed;

  const onPeerEnd = () => {
    if (!session.destroyed) session.destroy();
  };
  // A paused socket whose buffer is empty still emits 'end' (net's read(0) at EOF).
  socket.once("end", onPeerEnd);

  function armIdle() {
    if (opt.idleTimeoutMs <= 0 || idleTimer || ended()) return;
    idleTimer = setTimeout(() => {
      idleTimer = undefined;
      if (open === 0 && !ended()) session.close();
    }, opt.idleTimeoutMs);
    idleTimer.unref();
  }

  function ping() {
    if (ended()) return;
    if (pingOutstanding) {
      session.destroy(new Error(`no PING ACK within ${opt.pingIntervalMs} ms`));
      return;
    }
    pingOutstanding = true;
    // ping() throws only when too many are in flight; one at a time here.
    session.ping((err) => {
      if (!err) pingOutstanding = false;
    });
  }

  function stopPing() {
    if (pingTimer) clearInterval(pingTimer);
    pingTimer = undefined;
    pingOutstanding = false;
  }

  session.once("close", () => {
    if (idleTimer) clearTimeout(idleTimer);
    stopPing();
  });
  armIdle();

  return {
    streamOpened() {
      open++;
      if (idleTimer) clearTimeout(idleTimer);
      idleTimer = undefined;
      if (opt.pingIntervalMs > 0 && !pingTimer) {
        pingTimer = setInterval(ping, opt.pingIntervalMs);
        pingTimer.unref();
      }
    },
    streamClosed(unsentBytes) {
      open--;
      lostBytes += unsentBytes;
      if (lostBytes * 2 >= opt.sessionMemoryBytes && !ended()) session.close();
      if (open > 0) return;
      stopPing();
      armIdle();
    },
  };
}

/**
 * Response bytes a closed HTTP/2 stream never sent (0 once it finished): an
 * upper bound of what Node leaves counted against its session.
 */
export function unsentBytes(stream: http2.ServerHttp2Stream): number {
  return stream.writableLength;
}
