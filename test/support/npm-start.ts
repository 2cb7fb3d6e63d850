import { spawn } from "node:child_process";
import { once } from "node:events";

// The service started as a process the way operators start it — `npm start`
// in a directory, or an image's CMD — its output captured, resolved once it
// logs "serving" (PORT=0 by default, so the port comes from that line).

export interface Serving {
  port: number;
  stdout(): string;
  stderr(): string;
  /** SIGTERM (to the group when it has its own); resolves once it has exited and closed its output. */
  stop(): Promise<void>;
  /** The exit code, once it has exited (null after a signal). */
  exitCode(): number | null;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface ServeOptions {
  cwd: string;
  env: Record<string, string | undefined>;
  /** Its own process group (npm, its shell and node), signalled as one. */
  group?: boolean;
  timeoutMs?: number;
}

export async function startServing(t: Teardown, command: string, args: string[], o: ServeOptions): Promise<Serving> {
  const child = spawn(command, args, { cwd: o.cwd, env: o.env, stdio: ["ignore", "pipe", "pipe"], detached: o.group });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  // With a group, npm dies of the signal at once; the service behind it is done when the pipes close.
  const exited = Promise.all([once(child, "exit"), once(child.stdout, "close"), once(child.stderr, "close")]).then(() => {});
  const signal = (s: NodeJS.Signals) => {
    try {
      if (o.group) process.kill(-child.pid!, s);
      else child.kill(s);
    } catch {
      // already gone
    }
  };
  t.teardown(() => signal("SIGKILL"));
  const until = Date.now() + (o.timeoutMs ?? 60_000);
  for (;;) {
    const line = stdout.split("\n").find((l) => l.includes('"message":"serving"'));
    if (line) {
      const port = (JSON.parse(line) as { port: number }).port;
      return { port, stdout: () => stdout, stderr: () => stderr, stop: async () => (signal("SIGTERM"), exited), exitCode: () => child.exitCode };
    }
    if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}: ${stderr}`);
    if (Date.now() > until) throw new Error(`${command} did not serve within ${o.timeoutMs ?? 60_000} ms: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `npm start` in cwd on PORT=0, loopback, with env on top of this process's. */
export function startNpm(t: Teardown, cwd: string, env: Record<string, string>): Promise<Serving> {
  return startServing(t, "npm", ["start", "--silent"], {
    cwd,
    env: { ...process.env, NODE_OPTIONS: "", PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    group: true,
  });
}
