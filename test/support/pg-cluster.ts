import { execFile } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./pubsub.js";

// A PostgreSQL cluster of one test's own, for the faults that would break
// every other test file on the shared server `npm test` starts: stopping it
// (fast, as a rolling restart does, or immediate, as a crash does, with crash
// recovery at the next start) and starting it again on the same port and
// data directory. It runs the binaries test/support/backends.sh installs.

const run = promisify(execFile);

/** The newest installed major version's bin directory, or undefined. */
function binDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  let versions: string[];
  try {
    versions = readdirSync(root).filter((v) => /^\d+$/.test(v));
  } catch {
    return undefined;
  }
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  return newest ? path.join(root, newest, "bin") : undefined;
}

export function privateClusterSkipReason(): string | false {
  return binDir() ? false : "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (npm test installs Debian's postgresql)";
}

export interface PrivateCluster {
  /** postgres://…/postgres on 127.0.0.1 (trust authentication: loopback only, for tests). */
  readonly adminUrl: string;
  /** A new database's URL. */
  createDatabase(name: string): Promise<string>;
  /** pg_ctl stop: "fast" ends sessions cleanly (a planned restart); "immediate" kills the server (a crash). */
  stop(mode: "fast" | "immediate"): Promise<void>;
  start(): Promise<void>;
}

export async function startPrivateCluster(t: { teardown(fn: () => unknown): void }): Promise<PrivateCluster> {
  const bin = binDir();
  if (!bin) throw new Error(privateClusterSkipReason() as string);
  // PostgreSQL refuses to run as root: as the postgres user then, in a directory it owns.
  const root = process.getuid?.() === 0;
  const as = (cmd: string, args: string[]) => (root ? run("runuser", ["-u", "postgres", "--", cmd, ...args], { cwd: "/" }) : run(cmd, args, { cwd: "/" }));
  const dir = mkdtempSync(path.join(tmpdir(), "vms-pg-"));
  const data = path.join(dir, "data");
  if (root) {
    const id = async (flag: string) => Number((await run("id", [flag, "postgres"])).stdout.trim());
    chownSync(dir, await id("-u"), await id("-g"));
  }
  await as(path.join(bin, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]);
  const port = await freePort();
  const options = `-c listen_addresses=127.0.0.1 -p ${port} -k '' -c fsync=off -c max_connections=50`;
  const pgCtl = (args: string[]) => as(path.join(bin, "pg_ctl"), ["-D", data, "-w", "-t", "30", ...args]);
  let running = false;

  const cluster: PrivateCluster = {
    adminUrl: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async createDatabase(name) {
      const c = new pg.Client({ connectionString: cluster.adminUrl });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } finally {
        await c.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(name)}`;
    },
    async stop(mode) {
      await pgCtl(["-m", mode, "stop"]);
      running = false;
    },
    async start() {
      await pgCtl(["-l", path.join(dir, "server.log"), "-o", options, "start"]);
      running = true;
    },
  };
  t.teardown(async () => {
    if (running) await cluster.stop("immediate").catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });
  await cluster.start();
  return cluster;
}
