import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";
import { parse, parseAllDocuments } from "yaml";
import { loadConfig } from "../../server/config.js";

// The Kubernetes manifests and the compose stack drift silently: nothing runs
// them in CI. Each overlay is rendered with `kubectl kustomize` (what `kubectl
// apply -k` runs, default load restrictor) and the rendered objects are held
// to what a cluster needs to run them and what the service reads; the compose
// stack's variables are checked against the configuration.

const root = path.resolve(import.meta.dirname, "../..");
const read = (p: string) => readFileSync(path.join(root, p), "utf8");
const OVERLAYS = readdirSync(path.join(root, "deploy/k8s/overlays"));

/**
 * Whether the service reads a variable: server/config.ts, or a library that
 * reads its own — the OpenTelemetry SDK OTEL_* (CONTRACT.md), the AWS SDK's
 * credential chain AWS_*, the Pub/Sub client PUBSUB_EMULATOR_HOST (README).
 */
function readByService(name: string): boolean {
  if (name.startsWith("OTEL_") || name.startsWith("AWS_") || name === "PUBSUB_EMULATOR_HOST") return true;
  return new RegExp(`\\b${name}\\b`).test(read("server/config.ts"));
}

type K8s = { kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; spec: any; data?: Record<string, string> };

/** An overlay rendered as `kubectl apply -k` would, its Secrets made from the committed .example files. */
function render(overlay: string, extraMigration?: string): K8s[] {
  const dir = mkdtempSync(path.join(tmpdir(), "vms-k8s-"));
  try {
    cpSync(path.join(root, "deploy/k8s"), path.join(dir, "deploy/k8s"), { recursive: true });
    cpSync(path.join(root, "migrations"), path.join(dir, "migrations"), { recursive: true });
    const o = path.join(dir, "deploy/k8s/overlays", overlay);
    for (const f of readdirSync(o).filter((f) => f.endsWith(".env.example"))) cpSync(path.join(o, f), path.join(o, f.replace(/\.example$/, "")));
    if (extraMigration) {
      // A migration added the way an author adds one: the file and its line in the list.
      const m = path.join(dir, "migrations");
      writeFileSync(path.join(m, extraMigration), "select 1;\n");
      const k = path.join(m, "kustomization.yaml");
      writeFileSync(k, readFileSync(k, "utf8").replace(/files:\n/, `files:\n      - ${extraMigration}\n`));
    }
    const out = execFileSync("kubectl", ["kustomize", o], { encoding: "utf8" });
    return parseAllDocuments(out).map((d) => d.toJSON() as K8s);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const migrationFiles = readdirSync(path.join(root, "migrations")).filter((f) => /^V\d+__.+\.sql$/.test(f)).sort();
const newestVersion = Math.max(...migrationFiles.map((f) => Number(/^V(\d+)__/.exec(f)![1])));

t.test("migrations/kustomization.yaml lists every migration", async (t) => {
  const listed = (parse(read("migrations/kustomization.yaml")) as { configMapGenerator: { files: string[] }[] }).configMapGenerator[0].files.sort();
  t.ok(migrationFiles.length >= 4, "migrations found");
  t.same(listed, migrationFiles, "exactly the files in migrations/");
});

for (const overlay of OVERLAYS) {
  t.test(`overlay ${overlay}: renders with kubectl kustomize into objects a cluster runs`, async (t) => {
    const objects = render(overlay);
    const one = (kind: string, name?: string) => {
      // A generated object's name is its base name plus kustomize's 10-character hash.
      const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name || new RegExp(`^${name}-[a-z0-9]{10}$`).test(o.metadata.name)));
      t.equal(found.length, 1, `one ${kind}${name ? " " + name : ""}`);
      return found[0];
    };
    t.ok(objects.every((o) => o.metadata.namespace), "every object has a namespace");

    const dep = one("Deployment", "video-management");
    const pod = dep.spec.template.spec;
    const [c] = pod.containers;
    t.equal(dep.spec.replicas, 3, "3 replicas");
    t.same(dep.spec.strategy.rollingUpdate.maxUnavailable, 0, "rolling update never drops below 3");
    t.equal(c.startupProbe.httpGet.path, "/health/ready", "startup probe on /health/ready");
    t.equal(c.readinessProbe.httpGet.path, "/health/ready", "readiness on /health/ready");
    t.equal(c.livenessProbe.httpGet.path, "/health", "liveness on /health");
    const env = Object.fromEntries((c.env as { name: string; value?: string }[]).map((e) => [e.name, e.value]));
    t.equal(env.MIGRATE_ON_START, "false", "the migrate Job owns migrations");
    const preStop = c.lifecycle.preStop.sleep.seconds as number;
    t.ok(preStop >= 3, `preStop sleeps ${preStop} s`);
    t.ok(pod.terminationGracePeriodSeconds * 1000 > Number(env.SHUTDOWN_GRACE_MS) + preStop * 1000, "terminationGracePeriodSeconds > preStop + SHUTDOWN_GRACE_MS");
    t.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory, "resources");
    t.match(c.image, /^ghcr\.io\/[\w.-]+\/video-management-service:\d+\.\d+\.\d+$/, "a versioned image from GHCR");
    t.equal(c.image.split(":").at(-1), JSON.parse(read("package.json")).version, "the image tag is package.json's version");
    t.equal(pod.securityContext.runAsNonRoot, true, "runAsNonRoot");
    t.ok(Number.isInteger(pod.securityContext.runAsUser) && pod.securityContext.runAsUser > 0, "a numeric non-root user, which runAsNonRoot can verify");
    t.equal(String(pod.securityContext.runAsUser), /^USER (\d+):/m.exec(read("deploy/Dockerfile"))?.[1], "the image's user");
    t.equal(c.securityContext.readOnlyRootFilesystem, true, "read-only root filesystem");
    t.equal(c.securityContext.allowPrivilegeEscalation, false, "no privilege escalation");
    t.same(c.securityContext.capabilities.drop, ["ALL"], "all capabilities dropped");
    const tmp = (c.volumeMounts as { name: string; mountPath: string }[]).find((m) => m.mountPath === "/tmp");
    t.ok(tmp && pod.volumes.find((v: { name: string; emptyDir?: unknown }) => v.name === tmp.name)?.emptyDir, "writable /tmp (emptyDir) for the compile cache and scratch files");
    t.ok(pod.topologySpreadConstraints?.length >= 1, "replicas spread across zones and nodes");

    // Every variable the pod gets is one the service reads, with a valid value.
    const settings = one("ConfigMap", "video-management-settings");
    const secret = one("Secret", "video-management");
    const fromSecret = Object.fromEntries(Object.entries(secret.data!).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
    const refs = (c.envFrom as { configMapRef?: { name: string }; secretRef?: { name: string } }[]).map((e) => e.configMapRef?.name ?? e.secretRef?.name);
    t.same(refs.sort(), [settings.metadata.name, secret.metadata.name].sort(), "envFrom: the settings ConfigMap and the Secret (hashed names)");
    const podEnv = { ...settings.data, ...fromSecret, ...env };
    for (const name of Object.keys(podEnv)) t.ok(readByService(name), `${name} is read by the service`);
    for (const name of ["DATABASE_URL", "JWT_ISSUER", "JWT_AUDIENCE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) t.ok(name in fromSecret, `the Secret carries ${name}`);
    for (const name of ["S3_BUCKET", "S3_MAX_RETRIES", "S3_TRANSFER_TIMEOUT", "PUBSUB_TOPIC", "RELAY_POLL_MS", "RELAY_BATCH_SIZE"]) t.ok(name in settings.data!, `the settings carry ${name}`);
    const cfg = loadConfig({ ...podEnv, HOST: "0.0.0.0" }); // the image's HOST
    t.equal(cfg.auth.disabled, false, "auth on");
    t.ok(cfg.database.url && cfg.storage.s3 && cfg.events.pubsub, "PostgreSQL, S3 and Pub/Sub configured");
    t.equal(cfg.storage.s3?.maxRetries, Number(settings.data!.S3_MAX_RETRIES), "S3_MAX_RETRIES wired");

    const svc = one("Service", "video-management");
    t.equal(svc.spec.ports[0].appProtocol, "kubernetes.io/h2c", "the Service says h2c");
    t.equal(one("PodDisruptionBudget").spec.minAvailable, 2, "PodDisruptionBudget minAvailable 2");
    const hpa = one("HorizontalPodAutoscaler");
    t.equal(hpa.spec.scaleTargetRef.name, dep.metadata.name, "the HPA scales the Deployment");
    t.ok(hpa.spec.minReplicas >= 3 && hpa.spec.maxReplicas >= hpa.spec.minReplicas, "HPA from 3 replicas");
    const netpol = objects.find((o) => o.kind === "NetworkPolicy" && o.spec.podSelector.matchLabels.app === dep.spec.selector.matchLabels.app);
    t.same(netpol?.spec.policyTypes, ["Ingress", "Egress"], "a NetworkPolicy limits the pods' traffic both ways");

    const job = one("Job");
    const jobPod = job.spec.template.spec;
    t.equal(job.metadata.name, `video-management-migrate-v${newestVersion}`, "the migrate Job is named after the newest migration");
    const cm = one("ConfigMap", "video-management-migrations");
    t.same(Object.keys(cm.data!).sort(), migrationFiles, "its ConfigMap carries every migration");
    t.ok(jobPod.volumes.some((v: { configMap?: { name: string } }) => v.configMap?.name === cm.metadata.name), "the Job mounts that ConfigMap");
    t.ok(Number.isInteger(jobPod.securityContext.runAsUser) && jobPod.securityContext.runAsNonRoot, "the Job runs as a numeric non-root user");
    t.ok(objects.some((o) => o.kind === "Secret" && o.metadata.name === jobPod.containers[0].envFrom[0].secretRef.name), "the Job's Secret is rendered");
    for (const o of objects) {
      for (const k of o.spec?.template?.spec?.containers ?? []) t.notMatch(k.image, /:latest$|^[^:]+$/, `${k.image}: an explicit tag, not :latest`);
    }
  });
}

t.test("adding a migration without renaming the migrate Job is caught: apply would refuse the changed template of a Job of the same name", async (t) => {
  const before = render("prod");
  const after = render("prod", `V${newestVersion + 1}__next.sql`);
  const job = (objs: K8s[]) => objs.find((o) => o.kind === "Job")!;
  const migrations = (objs: K8s[]) => objs.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("video-management-migrations-"))!;
  t.not(migrations(after).metadata.name, migrations(before).metadata.name, "the migrations ConfigMap gets a new hashed name");
  t.not(JSON.stringify(job(after).spec.template), JSON.stringify(job(before).spec.template), "so the Job's (immutable) pod template changes");
  t.equal(job(after).metadata.name, job(before).metadata.name, "under the same name: what apply refuses");
  t.not(job(after).metadata.name, `video-management-migrate-v${newestVersion + 1}`, "which the overlay check (named after the newest migration) reports");
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
