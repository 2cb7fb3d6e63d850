import net from "node:net";

// A TCP proxy on 127.0.0.1 for fault injection between the service and a
// backend (the Pub/Sub emulator): pass bytes through, cut the link (reset
// every open connection and every new one), or hold the backend's answers
// (requests still reach it; responses wait until release) so a process can be
// killed after the backend acted but before the caller heard back.

export interface ProxyStats {
  /** Connections accepted since the start. */
  connections: number;
  /** Bytes forwarded client → backend since the start. */
  upBytes: number;
  /** Bytes forwarded backend → client since the start (held bytes not counted until released). */
  downBytes: number;
  /** Backend → client bytes waiting in held mode. */
  heldBytes: number;
}

export interface TcpProxy {
  /** "127.0.0.1:PORT", for PUBSUB_EMULATOR_HOST and the like. */
  readonly address: string;
  readonly port: number;
  readonly mode: "pass" | "cut" | "hold";
  readonly stats: ProxyStats;
  /** Resets every open connection and each new one until restore(). */
  cut(): void;
  /** Forwards again (after cut or hold; held bytes are delivered first). */
  restore(): void;
  /** From now on client → backend bytes flow, backend → client bytes are kept back. */
  hold(): void;
  /** Resets every open connection, dropping held bytes, but keeps accepting new ones. */
  dropConnections(): void;
  close(): Promise<void>;
}

/**
 * Resets a connection (RST), or closes it if it is already ending: Node 20's
 * resetAndDestroy() on a socket whose shutdown is pending fails with EINVAL
 * and leaves the handle open, and the process then spins at 100% CPU when it
 * exits instead of exiting.
 */
function reset(s: net.Socket) {
  if (s.writableEnded || s.destroyed) s.destroy();
  else s.resetAndDestroy();
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  held: Buffer[];
}

export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const i = target.lastIndexOf(":");
  const targetHost = target.slice(0, i);
  const targetPort = Number(target.slice(i + 1));
  if (!targetHost || !Number.isInteger(targetPort)) throw new Error(`proxy target must be host:port, got "${target}"`);

  let mode: TcpProxy["mode"] = "pass";
  const pairs = new Set<Pair>();
  const stats: ProxyStats = { connections: 0, upBytes: 0, downBytes: 0, heldBytes: 0 };

  const resetPair = (p: Pair) => {
    stats.heldBytes -= p.held.reduce((n, b) => n + b.length, 0);
    p.held = [];
    reset(p.client);
    reset(p.upstream);
    pairs.delete(p);
  };

  const server = net.createServer((client) => {
    stats.connections++;
    if (mode === "cut") {
      client.on("error", () => {});
      reset(client);
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    const p: Pair = { client, upstream, held: [] };
    pairs.add(p);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on("data", (d) => {
      stats.upBytes += d.length;
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (mode === "hold") {
        p.held.push(d);
        stats.heldBytes += d.length;
      } else {
        stats.downBytes += d.length;
        client.write(d);
      }
    });
    const end = () => {
      if (!pairs.has(p)) return;
      pairs.delete(p);
      stats.heldBytes -= p.held.reduce((n, b) => n + b.length, 0);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    address: `127.0.0.1:${port}`,
    port,
    get mode() {
      return mode;
    },
    stats,
    cut() {
      mode = "cut";
      for (const p of [...pairs]) resetPair(p);
    },
    restore() {
      mode = "pass";
      for (const p of pairs) {
        for (const b of p.held) {
          stats.downBytes += b.length;
          stats.heldBytes -= b.length;
          p.client.write(b);
        }
        p.held = [];
      }
    },
    hold() {
      mode = "hold";
    },
    dropConnections() {
      for (const p of [...pairs]) resetPair(p);
    },
    async close() {
      for (const p of [...pairs]) resetPair(p);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
