import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { createMetrics } from "../../server/metrics.js";

// One Node.js everywhere the service runs: the `node` dev dependency that npm
// scripts put first on PATH (npm start, npm test on a machine whose own node
// is older), the image's base, and what `engines` promises.

const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");
const pkg = JSON.parse(read("package.json")) as { version: string; engines: { node: string }; devDependencies: Record<string, string> };

/** Whether version (x.y.z) satisfies a caret range ^a.b.c. */
function caret(range: string, version: string): boolean {
  const [ra, rb, rc] = range.replace(/^\^/, "").split(".").map(Number);
  const [a, b, c] = version.replace(/^v/, "").split(".").map(Number);
  return a === ra && (b > rb || (b === rb && c >= rc));
}

t.test("npm scripts run on the pinned Node 24, which engines allows", async (t) => {
  const pinned = pkg.devDependencies.node;
  t.match(pinned, /^24\.\d+\.\d+$/, "the node dev dependency is an exact 24.x version");
  t.match(pkg.engines.node, /^\^24\.\d+\.\d+$/, "engines: the Node 24 LTS line");
  t.ok(caret(pkg.engines.node, pinned), `${pinned} satisfies engines ${pkg.engines.node}`);
  // What `npm start` and `npm test` get, whatever node runs npm itself.
  const scriptNode = execFileSync("npm", ["exec", "--", "node", "-p", "process.version"], { cwd: root, encoding: "utf8" }).trim();
  t.equal(scriptNode, `v${pinned}`, "node inside npm scripts is the pinned one");
});

t.test("the image is built on the same Node", async (t) => {
  const image = /^ARG NODE_IMAGE=node:(\S+)-bookworm-slim$/m.exec(read("deploy/Dockerfile"))?.[1];
  t.equal(image, pkg.devDependencies.node, "deploy/Dockerfile's base is node:<the pinned version>-bookworm-slim");
});

t.test("/metrics says which build runs: build_info carries package.json's version (the image tag's) and the node version", async (t) => {
  const text = await createMetrics().registry.metrics();
  t.match(text, new RegExp(`^build_info\\{version="${pkg.version.replace(/\./g, "\\.")}",node="${process.version}"\\} 1$`, "m"));
});
