import { spawnSync, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";

// .ci/checks in what CI starts from: a shallow clone of the committed tree.
// A breaking change to the contract, made without regenerating gen/, must
// fail the run naming both checks: buf breaking (against the previous commit,
// which a depth-1 clone does not have until the script deepens it) and
// generate (gen/ no longer matches the protos).

const root = path.resolve(import.meta.dirname, "../..");

t.test("in a shallow clone, a breaking proto change without regenerated code fails buf breaking and generate", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "vms-checks-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const head = execFileSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
  execFileSync("git", ["clone", "-q", "--depth=1", "--no-local", `file://${root}`, dir], { stdio: "ignore" });
  execFileSync("git", ["checkout", "-q", head], { cwd: dir });
  t.equal(execFileSync("git", ["rev-parse", "--is-shallow-repository"], { cwd: dir, encoding: "utf8" }).trim(), "true", "a shallow clone");
  symlinkSync(path.join(root, "node_modules"), path.join(dir, "node_modules"));

  const proto = path.join(dir, "proto/video/v1/video.proto");
  writeFileSync(proto, readFileSync(proto, "utf8").replace(/string title = 2/, "string headline = 2"));
  // What a CI shell has: none of the test runner's loaders (they break tsc).
  // tap's process tracking puts one into NODE_OPTIONS of every spawn, so env drops it.
  const r = spawnSync("env", ["-u", "NODE_OPTIONS", "bash", ".ci/checks"], { cwd: dir, encoding: "utf8", env: { PATH: process.env.PATH, HOME: process.env.HOME } });
  const out = r.stdout + r.stderr;
  t.equal(r.status, 1, "the checks fail");
  t.match(out, /buf breaking against \S+ \([0-9a-f]+\)/, "the previous commit was found (the clone deepened)");
  t.match(out, /field "2" with name "headline" on message "Video" changed option "json_name"|Field "2" on message "Video" changed name from "title" to "headline"/, "buf breaking names the renamed field");
  t.match(out, /npm run generate changed gen\//, "generate names the stale gen/");
  t.match(out, /checks: 2 passed, 2 failed/, "typecheck and buf lint pass; the counts for .ci/run's summary");
});
