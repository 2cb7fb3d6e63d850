// npm start: runs the compiled service (dist/server/main.js) in this process,
// after rebuilding dist/ in a development checkout whose sources changed
// (see build.mjs). Node's compile cache keeps V8's bytecode of the service
// and its dependencies between starts (in the OS temporary directory).

import { existsSync } from "node:fs";
import module from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { buildIfStale, dist } from "./build.mjs";

try {
  await buildIfStale();
} catch (e) {
  process.stderr.write(`start: ${e.message}\n`);
  process.exit(1);
}
const main = path.join(dist, "server", "main.js");
if (!existsSync(main)) {
  process.stderr.write(`start: ${path.relative(process.cwd(), main)} is missing: run npm run build (with dev dependencies installed)\n`);
  process.exit(1);
}
module.enableCompileCache?.();
await import(pathToFileURL(main).href);
