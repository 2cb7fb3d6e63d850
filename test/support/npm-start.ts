import { spawn } from "node:child_process";
import { once } from "node:events";

// `npm start` in a directory, as a newcomer or an operator runs it: its own
// process group (npm, the shell, node), stopped as a group by SIGTERM.

export interface NpmStarted {
  port: number;
  stdout(): string;
  stderr(): string;
  /** SIGTERM to the group (npm exits by the signal); resolves once npm has exited and the service has closed its output. */
  stop(): Promise<void>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function startNpm(t: Teardown, cwd: string, env: Record<string, string>, timeoutMs = 60_000): Promise<NpmStarted> {
  const child = spawn("npm", ["start", "--silent"], {
    cwd,
    env: { ...process.env, NODE_OPTIONS: "", PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  // npm dies of the signal at once; the service behind it is done when the pipes close.
  const exited = Promise.all([once(child, "exit"), once(child.stdout, "close"), once(child.stderr, "close")]).then(() => {});
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, s);
    } catch {
      // already gone
    }
  };
  t.teardown(() => signal("SIGKILL"));
  const until = Date.now() + timeoutMs;
  for (;;) {
    const line = stdout.split("\n").find((l) => l.includes('"message":"serving"'));
    if (line) {
      const port = (JSON.parse(line) as { port: number }).port;
      return { port, stdout: () => stdout, stderr: () => stderr, stop: async () => (signal("SIGTERM"), exited) };
    }
    if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}: ${stderr}`);
    if (Date.now() > until) throw new Error(`npm start did not serve within ${timeoutMs} ms: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
