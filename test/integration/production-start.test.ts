import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";
import { startNpm } from "../support/npm-start.js";

// Production installs only the dependencies (npm ci --omit=dev) and runs the
// compiled dist/: nothing it starts may reach for tsx, TypeScript or another
// dev dependency. A temporary copy holds exactly what a release ships — no
// server/ or gen/ sources — installed the production way, then `npm start`.

const root = path.resolve(import.meta.dirname, "../..");

t.test("a production install (npm ci --omit=dev) of the compiled build starts and serves /health", async (t) => {
  execFileSync(process.execPath, ["scripts/build.mjs", "--if-stale"], { cwd: root, stdio: "inherit" });
  const dir = mkdtempSync(path.join(tmpdir(), "vms-prod-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const p of ["package.json", "package-lock.json", "dist", "migrations", "scripts"]) cpSync(path.join(root, p), path.join(dir, p), { recursive: true });

  // Offline from npm's cache where it has the packages (the usual case here), the registry otherwise.
  execFileSync("npm", ["ci", "--omit=dev", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] });
  const installed = readdirSync(path.join(dir, "node_modules"));
  for (const dev of ["tsx", "typescript", "tap", "node", "@bufbuild/buf"]) t.notOk(existsSync(path.join(dir, "node_modules", dev)), `${dev} is not installed`);
  t.ok(installed.includes("@connectrpc"), "the production dependencies are");
  t.notOk(existsSync(path.join(dir, "server")), "no TypeScript sources in the copy");

  const server = await startNpm(t, dir, { DATA_DIR: path.join(dir, ".data") });
  const health = await fetch(`http://127.0.0.1:${server.port}/health`);
  t.equal(health.status, 200, "GET /health");
  const ready = await fetch(`http://127.0.0.1:${server.port}/health/ready`);
  t.equal(ready.status, 200, "GET /health/ready: migrations from the copy's migrations/ applied");
  await server.stop();
  t.match(server.stdout().trim().split("\n").at(-1), /"message":"stopped"/, "drains and stops on SIGTERM");
  t.notMatch(server.stderr(), /tsx|typescript|Cannot find (module|package)/i, "nothing looked for a dev dependency");
});
