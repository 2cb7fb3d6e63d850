import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// Files that ship beside the code: package.json and migrations/. This module
// runs from server/ (tsx, tests) or from dist/server/ (the compiled build), so
// the package root is found by walking up to the first package.json rather
// than by a fixed "../".

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const packageRoot = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

/** The version in package.json: the image tag and the build_info metric carry it. */
export const packageVersion: string = (JSON.parse(readFileSync(path.join(packageRoot, "package.json"), "utf8")) as { version: string }).version;
