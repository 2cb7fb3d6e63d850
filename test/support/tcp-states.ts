import { readFile } from "node:fs/promises";

// The kernel's view of a server's sockets (/proc/net/tcp and tcp6): what a
// leaked connection looks like from outside the process (CLOSE-WAIT: the peer
// closed, the server never did).

const STATES: Record<string, string> = {
  "01": "ESTABLISHED",
  "02": "SYN_SENT",
  "03": "SYN_RECV",
  "04": "FIN_WAIT1",
  "05": "FIN_WAIT2",
  "06": "TIME_WAIT",
  "07": "CLOSE",
  "08": "CLOSE_WAIT",
  "09": "LAST_ACK",
  "0A": "LISTEN",
  "0B": "CLOSING",
};

/** States of the sockets whose local port is `port` (the server's side), listening socket excluded. */
export async function serverSocketStates(port: number): Promise<string[]> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const out: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await readFile(file, "utf8").catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || !f[1].endsWith(`:${hex}`)) continue;
      const state = STATES[f[3]] ?? f[3];
      if (state !== "LISTEN") out.push(state);
    }
  }
  return out;
}

/** How many of the server's sockets on `port` are in CLOSE-WAIT. */
export async function closeWaitCount(port: number): Promise<number> {
  return (await serverSocketStates(port)).filter((s) => s === "CLOSE_WAIT").length;
}
