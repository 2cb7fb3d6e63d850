import { BlockList, isIP } from "node:net";

// Who called, and at which public address, when the service sits behind
// proxies (CONTRACT.md §4 TRUSTED_PROXIES). Forwarded (RFC 7239) and
// X-Forwarded-For / -Proto / -Host are believed only as far as they were
// written by trusted proxies: the hops are walked from the nearest (the
// connection's peer) outwards, and the first address that is not a trusted
// proxy is the client. Anything a client put in front of that — a spoofed
// X-Forwarded-For: 127.0.0.1 — is never reached. With no trusted proxies,
// the client is the peer and the headers are ignored. Pure: no I/O.

export interface Client {
  /** The client's IP address, or an RFC 7239 identifier ("unknown", "_hidden") a trusted proxy gave. */
  address: string;
  /** The scheme and host the client used, when a trusted proxy said so. */
  proto?: "http" | "https";
  host?: string;
}

export interface ForwardingHeaders {
  forwarded?: string;
  xForwardedFor?: string;
  xForwardedProto?: string;
  xForwardedHost?: string;
}

/** "10.0.0.0/8, 127.0.0.1, ::1" as a rule, or the first entry that is not an address or CIDR. */
export function parseTrustedProxies(raw: string): BlockList | { invalid: string } {
  const list = new BlockList();
  for (const item of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [address, prefix, extra] = item.split("/");
    const family = isIP(address);
    const max = family === 4 ? 32 : 128;
    const bits = prefix === undefined ? max : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
    if (family === 0 || extra !== undefined || !(bits >= 0 && bits <= max)) return { invalid: item };
    list.addSubnet(address, bits, family === 4 ? "ipv4" : "ipv6");
  }
  return list;
}

/** An address as BlockList compares it: IPv4-mapped IPv6 (::ffff:10.0.0.1) as IPv4. */
function normalise(address: string): { address: string; family: "ipv4" | "ipv6" } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const a = mapped ? mapped[1] : address;
  const family = isIP(a);
  return family === 0 ? undefined : { address: a, family: family === 4 ? "ipv4" : "ipv6" };
}

export function isTrusted(list: BlockList | undefined, address: string): boolean {
  const n = list && normalise(address);
  return n !== undefined && list!.check(n.address, n.family);
}

/** A Forwarded node ("192.0.2.1:80", "[2001:db8::1]:4711", "unknown", "_hidden") as an address or identifier. */
function nodeAddress(node: string): string | undefined {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(node);
  if (bracketed) return isIP(bracketed[1]) === 6 ? bracketed[1] : undefined;
  const v4 = /^(\d+\.\d+\.\d+\.\d+)(?::\d+)?$/.exec(node);
  if (v4) return isIP(v4[1]) === 4 ? v4[1] : undefined;
  if (isIP(node) === 6) return node; // X-Forwarded-For writes IPv6 bare
  return node === "unknown" || /^_[\w.-]{1,64}$/.test(node) ? node : undefined;
}

const unquote = (v: string) => (v.startsWith('"') && v.endsWith('"') && v.length >= 2 ? v.slice(1, -1).replace(/\\(.)/g, "$1") : v);

interface Hop {
  for?: string;
  proto?: string;
  host?: string;
}

/** RFC 7239 elements, nearest proxy last. Commas inside quoted strings do not split. */
function forwardedHops(header: string): Hop[] {
  const hops: Hop[] = [];
  for (const element of header.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? []) {
    const hop: Hop = {};
    for (const pair of element.match(/(?:[^;"]|"(?:[^"\\]|\\.)*")+/g) ?? []) {
      const eq = pair.indexOf("=");
      if (eq < 0) continue;
      const name = pair.slice(0, eq).trim().toLowerCase();
      if (name === "for" || name === "proto" || name === "host") hop[name] = unquote(pair.slice(eq + 1).trim());
    }
    hops.push(hop);
  }
  return hops;
}

const HOST = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;
const proto = (v: string | undefined) => (v?.toLowerCase() === "https" ? "https" : v?.toLowerCase() === "http" ? "http" : undefined);
const host = (v: string | undefined) => (v !== undefined && v.length <= 255 && HOST.test(v) ? v.toLowerCase() : undefined);
const last = (v: string | undefined) => v?.split(",").at(-1)?.trim();

/** The client of a request that arrived from `peer`, believing only what trusted proxies wrote. */
export function clientOf(peer: string, h: ForwardingHeaders, trusted: BlockList | undefined): Client {
  const peerAddress = normalise(peer)?.address ?? peer;
  if (!isTrusted(trusted, peerAddress)) return { address: peerAddress };
  const hops: Hop[] = h.forwarded
    ? forwardedHops(h.forwarded)
    : (h.xForwardedFor ?? "").split(",").map((a) => a.trim()).filter(Boolean).map((a) => ({ for: a }));
  let client: Client = { address: peerAddress };
  // Each hop was written by the proxy at `client.address`, trusted so far.
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i];
    const address = hop.for === undefined ? undefined : nodeAddress(hop.for);
    if (address === undefined) break; // a hop that names no client: stop at the proxy that wrote it
    client = { address: normalise(address)?.address ?? address, proto: proto(hop.proto) ?? client.proto, host: host(hop.host) ?? client.host };
    if (!isTrusted(trusted, client.address)) break;
  }
  if (!h.forwarded) {
    // X-Forwarded-Proto / -Host have no hops: the nearest proxy's value (the last one) counts.
    client.proto = proto(last(h.xForwardedProto));
    client.host = host(last(h.xForwardedHost));
  }
  return client;
}

/**
 * The base URL the client reached this service at, when a trusted proxy said
 * (forwarded proto or host; the request's own Host fills in a missing host),
 * else undefined.
 */
export function publicBaseUrl(client: Client, authority: string | undefined): string | undefined {
  if (client.proto === undefined && client.host === undefined) return undefined;
  const h = client.host ?? host(authority);
  return h === undefined ? undefined : `${client.proto ?? "http"}://${h}`;
}
