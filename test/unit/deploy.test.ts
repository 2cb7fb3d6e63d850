import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { parse } from "yaml";
import { loadConfig } from "../../server/config.js";

// The Kubernetes manifests and the compose stack drift silently: nothing runs
// them in CI. These checks catch the drifts that break them — a migration the
// Flyway job never sees, an environment variable the service never reads, a
// topic or bucket the stack does not create.

const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");

t.test("the Flyway job's ConfigMap carries every migration", async (t) => {
  const kustomization = read("deploy/k8s/kustomization.yaml");
  const listed = [...kustomization.matchAll(/^\s*-\s*\.\.\/\.\.\/migrations\/(\S+)\s*$/gm)].map((m) => m[1]).sort();
  const files = readdirSync(path.join(root, "migrations")).filter((f) => /^V\d+__.+\.sql$/.test(f)).sort();
  t.ok(files.length >= 4, "migrations found");
  t.same(listed, files, "kustomization.yaml lists exactly the files in migrations/");
});

/**
 * Whether the service reads a variable: server/config.ts, or a library that
 * reads its own — the OpenTelemetry SDK OTEL_* (CONTRACT.md), the AWS SDK's
 * credential chain AWS_*, the Pub/Sub client PUBSUB_EMULATOR_HOST (README).
 */
function readByService(name: string): boolean {
  if (name.startsWith("OTEL_") || name.startsWith("AWS_") || name === "PUBSUB_EMULATOR_HOST") return true;
  return new RegExp(`\\b${name}\\b`).test(read("server/config.ts"));
}

t.test("every variable the Deployment sets is one the service reads", async (t) => {
  const deployment = read("deploy/k8s/deployment.yaml");
  const set = [...deployment.matchAll(/name:\s*([A-Z][A-Z0-9_]+)\b/g)].map((m) => m[1]);
  t.ok(set.length >= 8, `${set.length} variables set`);
  for (const name of set) t.ok(readByService(name), `${name} is read by the service`);
  t.match(read("deploy/Dockerfile"), /HOST=0\.0\.0\.0/, "the image binds every interface (the default is loopback)");
});

interface ComposeService {
  image?: string;
  network_mode?: string;
  ports?: string[];
  environment?: Record<string, string>;
  command?: string[];
}

t.test("the compose stack: the service's variables are read and valid, everything stays on loopback, init creates what the service uses", async (t) => {
  const { services } = parse(read("deploy/compose.yaml")) as { services: Record<string, ComposeService> };
  const vms = services.vms;
  const env = vms.environment!;
  for (const name of Object.keys(env)) t.ok(readByService(name), `${name} is read by the service`);
  const cfg = loadConfig(env);
  t.equal(cfg.auth.disabled, true, "auth off for local development, which only a loopback bind allows");
  t.equal(vms.network_mode, "host", "so the service runs on the host's network, bound to 127.0.0.1");
  t.ok(cfg.database.url && cfg.events.pubsub && cfg.storage.s3, "PostgreSQL, Pub/Sub and S3 all configured");
  for (const [name, s] of Object.entries(services)) {
    for (const p of s.ports ?? []) t.match(p, /^127\.0\.0\.1:/, `${name} publishes ${p} on loopback only`);
  }
  const pubsubInit = services["pubsub-init"].environment!;
  t.equal(pubsubInit.TOPIC, env.PUBSUB_TOPIC, "pubsub-init creates the topic the service publishes to");
  t.equal(pubsubInit.PROJECT, env.PUBSUB_PROJECT_ID, "in the service's project");
  t.equal(services["s3-init"].environment!.BUCKET, env.S3_BUCKET, "s3-init creates the service's bucket");
  const published = (service: string) => services[service].ports![0].split(":")[1];
  t.equal(env.PUBSUB_EMULATOR_HOST, `127.0.0.1:${published("pubsub")}`, "the emulator where it is published");
  t.equal(env.S3_ENDPOINT, `http://127.0.0.1:${published("s3")}`, "moto where it is published");
  t.match(env.DATABASE_URL, `@127.0.0.1:${published("postgres")}/${services.postgres.environment!.POSTGRES_DB}`, "PostgreSQL where it is published");
});

t.test("the nginx example's timeouts fit the service's defaults", async (t) => {
  const conf = read("deploy/nginx/video-service.conf");
  const seconds = (directive: string) => [...conf.matchAll(new RegExp(`^\\s*${directive} (\\d+)s;`, "gm"))].map((m) => Number(m[1]) * 1000);
  const { idleTimeoutMs, pingIntervalMs } = loadConfig({}).connections;
  const keepalive = seconds("keepalive_timeout");
  t.equal(keepalive.length, 2, "both upstream pools keep connections alive");
  for (const ms of keepalive) t.ok(ms < idleTimeoutMs, `nginx closes an idle upstream connection (${ms} ms) before the service does (IDLE_TIMEOUT ${idleTimeoutMs} ms)`);
  const grpcRead = seconds("grpc_read_timeout");
  t.equal(grpcRead.length, 1);
  t.ok(grpcRead[0] > pingIntervalMs, `grpc_read_timeout (${grpcRead[0]} ms) outlasts HTTP2_PING_INTERVAL (${pingIntervalMs} ms)`);
});
