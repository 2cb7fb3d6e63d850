import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";

// The Kubernetes manifests drift silently: nothing runs them in CI. These
// checks catch the two drifts that break a rollout — a migration the Flyway
// job never sees, and an environment variable the service never reads.

const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");

t.test("the Flyway job's ConfigMap carries every migration", async (t) => {
  const kustomization = read("deploy/k8s/kustomization.yaml");
  const listed = [...kustomization.matchAll(/^\s*-\s*\.\.\/\.\.\/migrations\/(\S+)\s*$/gm)].map((m) => m[1]).sort();
  const files = readdirSync(path.join(root, "migrations")).filter((f) => /^V\d+__.+\.sql$/.test(f)).sort();
  t.ok(files.length >= 4, "migrations found");
  t.same(listed, files, "kustomization.yaml lists exactly the files in migrations/");
});

t.test("every variable the Deployment sets is one the service reads", async (t) => {
  const deployment = read("deploy/k8s/deployment.yaml");
  const set = [...deployment.matchAll(/name:\s*([A-Z][A-Z0-9_]+)\b/g)].map((m) => m[1]);
  t.ok(set.length >= 8, `${set.length} variables set`);
  const config = read("server/config.ts");
  for (const name of set) {
    // OTEL_* are read by the OpenTelemetry SDK itself (CONTRACT.md).
    const read = name.startsWith("OTEL_") || new RegExp(`\\b${name}\\b`).test(config);
    t.ok(read, `${name} is read by server/config.ts`);
  }
  t.match(read("deploy/Dockerfile"), /HOST=0\.0\.0\.0/, "the image binds every interface (the default is loopback)");
});
