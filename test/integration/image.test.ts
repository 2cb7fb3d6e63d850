import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";
import { contextFiles, replay, type Stage } from "../support/dockerfile.js";
import { AUDIENCE, ISSUER, makeKey } from "../support/jwt.js";
import { startServing } from "../support/npm-start.js";

// deploy/Dockerfile built and started without Docker (none runs where the
// tests do): the context as .dockerignore leaves it, every stage's COPY and
// deploy/image.sh steps replayed in a temporary directory, then the runtime
// stage's tree is checked and its CMD started with the image's environment.

const root = path.resolve(import.meta.dirname, "../..");
const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { version: string; devDependencies: Record<string, string> };

/** Every file under dir, relative, not descending into node_modules. */
function tree(dir: string, rel = ""): string[] {
  return readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (!e.isDirectory()) return [p];
    return p === "node_modules" ? [p + "/"] : tree(dir, p);
  });
}

t.test("the Dockerfile's stages build a runtime tree with dist/, production dependencies and migrations only, and it serves /health", async (t) => {
  const work = mkdtempSync(path.join(tmpdir(), "vms-image-"));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  // A secret lying in the checkout must not reach the context.
  writeFileSync(path.join(root, ".env.image-test"), "DATABASE_URL=postgres://u:secret@db/x\n");
  t.teardown(() => rmSync(path.join(root, ".env.image-test"), { force: true }));
  const context = path.join(work, "context");
  const files = contextFiles(root, readFileSync(path.join(root, ".dockerignore"), "utf8"));
  t.notOk(files.some((f) => /^(test|node_modules|dist|\.git|\.data|\.tap)\/|^\.env/.test(f)), "the context holds no tests, dependencies, builds, git data or .env files");
  for (const f of files) cpSync(path.join(root, f), path.join(context, f));

  // The build stage's dependencies are this checkout's (the same lockfile):
  // a full `npm ci` of every dev dependency takes minutes on a loaded machine,
  // more than a test file may. image.sh's build step installs only where
  // node_modules is absent, as it always is in Docker (.dockerignore). The
  // deps stage, whose node_modules ships, runs its `npm ci --omit=dev` for real.
  const beforeRun = (s: Stage, dir: string) => {
    if (s.name === "build") symlinkSync(path.join(root, "node_modules"), path.join(dir, "node_modules"));
  };
  const stages = replay(path.join(root, "deploy/Dockerfile"), context, path.join(work, "stages"), { buildArgs: { VERSION: pkg.version, REVISION: "test" }, beforeRun });
  t.same(stages.map((s) => s.name), ["build", "deps", "runtime"], "multi-stage: build, deps, runtime");
  const runtime = stages.at(-1) as Stage;
  t.match(runtime.from, /^node:24\.\d+\.\d+-\w+-slim$/, "Node 24 slim, an exact version");
  t.equal(new Set(stages.map((s) => s.from)).size, 1, "every stage on the same base");

  // System packages: the one RUN step not replayed.
  t.equal(runtime.skipped.length, 1, "one system-package step");
  t.match(runtime.skipped[0], /apt-get install -y --no-install-recommends ffmpeg tini/, "ffmpeg for the media jobs and tini from Debian");
  t.match(runtime.skipped[0], /rm -rf \/var\/lib\/apt\/lists/, "apt lists removed");
  t.match(runtime.user, /^\d+:\d+$/, "a numeric user and group (runAsNonRoot can check it)");
  t.not(runtime.user!.split(":")[0], "0", "not root");
  t.same(runtime.entrypoint, ["/usr/bin/tini", "--"], "an init process forwards signals and reaps children");
  t.equal(runtime.labels["org.opencontainers.image.version"], pkg.version, "OCI version label from package.json");
  for (const l of ["title", "description", "licenses", "revision"]) t.ok(runtime.labels[`org.opencontainers.image.${l}`], `OCI ${l} label`);

  // The runtime tree.
  const appDir = path.join(runtime.root, runtime.workdir);
  const files2 = tree(appDir);
  t.ok(files2.includes("dist/server/main.js"), "the compiled entry point");
  t.ok(files2.some((f) => /^dist\/pglite-.*\.tar\.gz$/.test(f)), "the PGlite template");
  t.ok(files2.some((f) => /^migrations\/V1__/.test(f)), "the migrations");
  t.notOk(files2.some((f) => /^(test|server|gen|scripts|deploy)\//.test(f) || f.endsWith(".ts")), "no tests, no TypeScript sources, no build scripts");
  t.notOk(files2.some((f) => /(^|\/)(\.env[^/]*|\.npmrc|id_rsa|.*\.pem|.*\.key)$/.test(f)), "no secrets");
  const installed = new Set(readdirSync(path.join(appDir, "node_modules")).flatMap((d) => (d.startsWith("@") ? readdirSync(path.join(appDir, "node_modules", d)).map((s) => `${d}/${s}`) : [d])));
  // Dev-only per the lockfile: a dev dependency that a production one also
  // needs (@types/node, @grpc/grpc-js) is rightly there.
  const lock = JSON.parse(readFileSync(path.join(root, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean }> };
  const devOnly = Object.entries(lock.packages).filter(([p, e]) => e.dev && /^node_modules\/(@[^/]+\/)?[^/]+$/.test(p)).map(([p]) => p.slice("node_modules/".length));
  t.ok(devOnly.includes("tsx") && devOnly.includes("typescript") && devOnly.includes("node"), "tsx, TypeScript and the node package are dev-only");
  t.same(devOnly.filter((d) => installed.has(d)), [], "no dev-only package in node_modules");
  t.ok(installed.has("@connectrpc/connect-node") && installed.has("pg"), "the production dependencies");

  // Start it as the image would (CMD, the image's ENV), on loopback: the
  // image binds every interface, which requires JWT settings — given here too.
  const key = await makeKey("ES256", "image-test");
  const keyFile = path.join(work, "jwt.pem");
  writeFileSync(keyFile, key.pem);
  const dataDir = path.join(work, "data");
  mkdirSync(dataDir);
  const [cmd, ...args] = runtime.cmd!;
  const server = await startServing(t, cmd === "node" ? process.execPath : cmd, args, {
    cwd: appDir,
    env: { PATH: process.env.PATH, ...runtime.env, HOST: "127.0.0.1", PORT: "0", DATA_DIR: dataDir, JWT_PUBLIC_KEY_FILE: keyFile, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, NODE_COMPILE_CACHE: path.join(work, "cc") },
  });
  const port = server.port;
  t.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, "GET /health");
  t.equal((await fetch(`http://127.0.0.1:${port}/videos`)).status, 401, "auth is on: JWT settings are in force");
  t.match(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), `build_info{version="${pkg.version}"`, "/metrics carries the version the image is tagged with");
  await server.stop();
  t.equal(server.exitCode(), 0, "SIGTERM: drains and exits 0");
  t.ok(existsSync(path.join(work, "cc")), "Node's compile cache is written where NODE_COMPILE_CACHE points");
});
