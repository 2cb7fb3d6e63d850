import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { pg_trgm } from "@electric-sql/pglite/contrib/pg_trgm";
import { packageRoot } from "../package-files.js";

// PGlite creates a new data directory by running initdb in WebAssembly: 5 to
// 15 s on a shared 2-core machine, most of a first `npm start`. Unpacking the
// same initdb result from a tarball takes a fraction of that, so the build
// (scripts/build.mjs) makes one per PGlite version and a new data directory
// starts from it. Without the file (no build yet) PGlite runs initdb as before.

const pgliteVersion: string = (
  JSON.parse(readFileSync(path.join(fileURLToPath(import.meta.resolve("@electric-sql/pglite")), "../../package.json"), "utf8")) as { version: string }
).version;

/** Where the build leaves the template: a different PGlite version has a different name, so a stale one is never used. */
export const pgliteTemplateFile = path.join(packageRoot, "dist", `pglite-${pgliteVersion}-initdb.tar.gz`);

/** The template to unpack into dataDir, when there is one and dataDir (undefined: in memory) holds no cluster yet. */
export function pgliteTemplateFor(dataDir: string | undefined): Blob | undefined {
  if (dataDir && existsSync(path.join(dataDir, "PG_VERSION"))) return undefined;
  if (!existsSync(pgliteTemplateFile)) return undefined;
  return new Blob([readFileSync(pgliteTemplateFile)]);
}

/** Runs initdb once in memory and writes its data directory as the template; the build calls this. */
export async function writePgliteTemplate(file = pgliteTemplateFile): Promise<void> {
  const pglite = await PGlite.create({ extensions: { pg_trgm } });
  try {
    const dump = await pglite.dumpDataDir("gzip");
    writeFileSync(file, Buffer.from(await dump.arrayBuffer()));
  } finally {
    await pglite.close();
  }
}
