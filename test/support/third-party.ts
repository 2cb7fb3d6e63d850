import { spawn, execFile, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

// Clients and a gateway nobody here wrote, run for real: Python's C-core gRPC
// (Debian python3-grpcio) and nginx, both installed by backends.sh
// (backend_gateway), which exports where they are. A missing tool fails the
// test that needs it; nothing is skipped.

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;

function tool(name: "TEST_NGINX" | "TEST_PYTHON"): string {
  const path = process.env[name];
  if (!path) throw new Error(`${name} is not set: run the tests through test/support/backends.sh (npm test), which installs nginx and python3-grpcio`);
  return path;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

// ---- Python stubs -------------------------------------------------------------

let stubs: Promise<string> | undefined;

/** Python modules generated from proto/ by protoc and grpc_python_plugin, once per test process. */
export function pythonStubs(): Promise<string> {
  stubs ??= (async () => {
    const out = await mkdtemp(join(tmpdir(), "vms-pystubs-"));
    process.once("exit", () => void rm(out, { recursive: true, force: true }));
    const protos = ["video/v1/video.proto", "video/v1/events.proto", "video/v1/video_service.proto", "video/v1/event_service.proto", "video/v1/audit_service.proto"];
    const deps = ["google/api/annotations.proto", "google/api/http.proto", "google/api/httpbody.proto", "google/api/field_behavior.proto", "google/rpc/status.proto", "google/rpc/error_details.proto", "health/v1/health.proto"];
    await run(
      "protoc",
      [
        "-I", join(ROOT, "proto"),
        "-I", join(ROOT, "node_modules/google-proto-files"),
        "-I", join(ROOT, "node_modules/grpc-health-check/proto"),
        `--python_out=${out}`,
        `--grpc_out=${out}`,
        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
        ...protos,
        ...deps,
      ],
      { cwd: ROOT },
    );
    return out;
  })();
  return stubs;
}

// ---- the Python client ------------------------------------------------------------

export interface PythonLine {
  check?: string;
  ok?: boolean;
  detail?: string;
  event?: string;
  outcomes?: string[];
}

export interface PythonClient {
  pid: number;
  /** The next line the client prints (JSON), or undefined once it exits. */
  next(): Promise<PythonLine | undefined>;
  /** Reads lines until one with this event; returns the lines before it. */
  until(event: string): Promise<PythonLine[]>;
  send(line: string): void;
  /** Closes its stdin and waits (bounded) for it to exit; then kills it by PID. */
  stop(): Promise<void>;
}

/** Runs test/support/python/video_client.py (see its docstring for the scenarios). */
export async function pythonClient(t: Teardown, target: string, scenario: string, ...args: string[]): Promise<PythonClient> {
  const path = await pythonStubs();
  const child: ChildProcess = spawn(tool("TEST_PYTHON"), [join(ROOT, "test/support/python/video_client.py"), target, scenario, ...args], {
    env: { PATH: process.env.PATH, PYTHONPATH: path, PYTHONDONTWRITEBYTECODE: "1", GRPC_ENABLE_FORK_SUPPORT: "0" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const exited = once(child, "exit");
  const stop = async () => {
    child.stdin!.end();
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    if (child.exitCode === null && child.signalCode === null) await exited;
    clearTimeout(timer);
  };
  t.teardown(stop);
  const next = async (): Promise<PythonLine | undefined> => {
    const r = await lines.next();
    if (r.done) {
      if (stderr.trim()) throw new Error(`python client exited: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
      return undefined;
    }
    return JSON.parse(r.value) as PythonLine;
  };
  return {
    pid: child.pid!,
    next,
    async until(event) {
      const before: PythonLine[] = [];
      for (;;) {
        const line = await next();
        if (line === undefined) throw new Error(`python client exited before "${event}"`);
        if (line.event === event) return before;
        before.push(line);
      }
    },
    send: (line) => child.stdin!.write(line + "\n"),
    stop,
  };
}

// ---- nginx ------------------------------------------------------------------------

export interface Gateway {
  /** REST, Connect and gRPC-Web (HTTP/1.1, proxy_pass). */
  httpPort: number;
  /** gRPC (h2c, grpc_pass). */
  grpcPort: number;
  pid: number;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** The deploy example with its addresses (and any `directive value;` in `overrides`) replaced. */
export async function gatewayConfig(upstreamPort: number, httpPort: number, grpcPort: number, overrides: Record<string, string> = {}): Promise<string> {
  let conf = await readFile(join(ROOT, "deploy/nginx/video-service.conf"), "utf8");
  const replace = (pattern: RegExp, value: string) => {
    if (!pattern.test(conf)) throw new Error(`deploy/nginx/video-service.conf no longer has ${pattern}`);
    conf = conf.replace(pattern, value);
  };
  replace(/server 127\.0\.0\.1:8080;/g, `server 127.0.0.1:${upstreamPort};`);
  replace(/listen 8080;/, `listen 127.0.0.1:${httpPort};`);
  replace(/listen 50051 http2;/, `listen 127.0.0.1:${grpcPort} http2;`);
  for (const [directive, value] of Object.entries(overrides)) replace(new RegExp(`^(\\s*)${directive} [^;\\n]+;`, "gm"), `$1${directive} ${value};`);
  return conf;
}

/** A private nginx on free loopback ports, proxying to the service on upstreamPort; stopped by PID at teardown. */
export async function startGateway(t: Teardown, upstreamPort: number, overrides: Record<string, string> = {}): Promise<Gateway> {
  const dir = await mkdtemp(join(tmpdir(), "vms-nginx-"));
  const httpPort = await freePort();
  const grpcPort = await freePort();
  const site = await gatewayConfig(upstreamPort, httpPort, grpcPort, overrides);
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((n) => `${n}_temp_path ${dir}/${n};`).join(" ");
  await writeFile(
    join(dir, "nginx.conf"),
    `daemon off; master_process off; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http { access_log off; ${temp}
${site}
}
`,
  );
  const nginx = spawn(tool("TEST_NGINX"), ["-p", dir, "-c", join(dir, "nginx.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  nginx.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = once(nginx, "exit");
  t.teardown(async () => {
    nginx.kill("SIGQUIT"); // graceful stop, by PID
    const timer = setTimeout(() => nginx.kill("SIGKILL"), 5000);
    if (nginx.exitCode === null && nginx.signalCode === null) await exited;
    clearTimeout(timer);
    await rm(dir, { recursive: true, force: true });
  });
  // Ready once both ports accept connections (bounded).
  const deadline = Date.now() + 10_000;
  for (const port of [httpPort, grpcPort]) {
    for (;;) {
      if (nginx.exitCode !== null) throw new Error(`nginx exited: ${stderr.trim() || (await readFile(join(dir, "error.log"), "utf8").catch(() => ""))}`);
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => (s.destroy(), resolve(true)));
        s.on("error", () => resolve(false));
      });
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`nginx did not listen on 127.0.0.1:${port} within 10 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { httpPort, grpcPort, pid: nginx.pid! };
}
