// npm run build: compiles server/ and gen/ to dist/ with tsc (type-checked),
// makes the PGlite template for this PGlite version if it is missing
// (server/db/pglite-template.ts), then writes dist/.built, the stamp a later
// start compares the sources with.
// `--if-stale` builds only when dist/ is missing or older than a source, and
// only where this checkout can build: npm ci's `prepare` and npm start use it,
// so a production install (--omit=dev, no TypeScript) or the image (no
// sources) takes dist/ as it is. Plain JavaScript: it runs before anything is
// compiled.

import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const dist = path.join(root, "dist");
const stamp = path.join(dist, ".built");
const tsc = path.join(root, "node_modules", ".bin", "tsc");
const SOURCE_DIRS = ["server", "gen"];
const SOURCE_FILES = ["tsconfig.json", "tsconfig.build.json"];

const canBuild = () => existsSync(tsc) && existsSync(path.join(root, "server"));

const mtime = (p) => {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
};

/** The newest modification time of anything the build reads. */
function newestSource() {
  let newest = Math.max(...SOURCE_FILES.map((f) => mtime(path.join(root, f))));
  for (const dir of SOURCE_DIRS) {
    for (const entry of readdirSync(path.join(root, dir), { recursive: true, withFileTypes: true })) {
      if (entry.isFile()) newest = Math.max(newest, mtime(path.join(entry.parentPath, entry.name)));
    }
  }
  return newest;
}

export async function build() {
  if (!canBuild()) throw new Error("cannot build: TypeScript is not installed (run npm ci without --omit=dev)");
  // A clean tree: a source file deleted since the last build must not linger as dist/…js.
  for (const dir of SOURCE_DIRS) rmSync(path.join(dist, dir), { recursive: true, force: true });
  rmSync(stamp, { force: true });
  // Without the caller's NODE_OPTIONS: a build started under a loader (tap's
  // --import=tsx in the tests) made tsc's own require() fail on Node 24
  // (ERR_REQUIRE_CYCLE_MODULE), and the compiler needs none.
  const { NODE_OPTIONS: _loaders, ...env } = process.env;
  const r = spawnSync(tsc, ["-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) throw new Error(`tsc failed (exit ${r.status ?? r.signal})`);
  const { pgliteTemplateFile, writePgliteTemplate } = await import(pathToFileURL(path.join(dist, "server/db/pglite-template.js")).href);
  if (!existsSync(pgliteTemplateFile)) await writePgliteTemplate();
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
}

/** Builds when this checkout can and dist/ is missing or older than a source; says why on stderr. */
export async function buildIfStale() {
  if (!canBuild()) return;
  const built = mtime(stamp);
  if (built >= 0 && newestSource() <= built) return;
  process.stderr.write(built < 0 ? "build: compiling to dist/\n" : "build: sources changed, recompiling dist/\n");
  await build();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    await (process.argv[2] === "--if-stale" ? buildIfStale() : build());
  } catch (e) {
    process.stderr.write(`build: ${e.message}\n`);
    process.exit(1);
  }
}
