import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import t from "tap";
import { s3SkipReason } from "../support/s3.js";
import { teeOutput } from "../support/log-capture.js";

// S3 over HTTPS with a private CA, trusted through the standard Node setting
// (NODE_EXTRA_CA_CERTS), against the S3 emulator serving TLS: a streamed
// upload works when the CA is trusted, and fails as UNAVAILABLE (never
// silently insecure) when it is not.

const root = path.resolve(import.meta.dirname, "../..");

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms: number): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function startService(t: { teardown(fn: () => void): void }, env: Record<string, string>): Promise<number> {
  const child = spawn(process.execPath, ["--import", "tsx", "server/main.ts"], { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  teeOutput(child.stdout, child.pid);
  teeOutput(child.stderr, child.pid);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  t.teardown(() => child.kill("SIGKILL"));
  return waitFor("the service", () => {
    const line = out.split("\n").find((l) => l.includes('"message":"serving"'));
    return line ? (JSON.parse(line) as { port: number }).port : undefined;
  }, 60_000);
}

t.test("S3 behind TLS with a private CA", { skip: s3SkipReason() }, async (t) => {
  // A private trust anchor: a self-signed certificate for localhost that no
  // system store knows (the emulator's TLS wants an RSA key).
  const dir = mkdtempSync(path.join(tmpdir(), "vms-s3ca-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const certFile = path.join(dir, "ca.pem");
  const keyFile = path.join(dir, "key.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], { stdio: "ignore" });

  const port = await freePort();
  const moto = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port), "-s", "-c", certFile, "-k", keyFile], { stdio: "ignore" });
  t.teardown(() => moto.kill("SIGKILL"));
  const endpoint = `https://localhost:${port}`;
  const admin = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    requestHandler: new NodeHttpHandler({ httpsAgent: new https.Agent({ ca: readFileSync(certFile) }) }),
  });
  await waitFor("the TLS emulator", () => admin.send(new CreateBucketCommand({ Bucket: "vms-tls" })).then(() => true, () => undefined), 30_000);

  const base = {
    PORT: "0",
    S3_BUCKET: "vms-tls",
    S3_ENDPOINT: endpoint,
    S3_FORCE_PATH_STYLE: "true",
    S3_MAX_RETRIES: "1",
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: "us-east-1",
    LOG_LEVEL: "info",
  };
  const upload = async (svcPort: number) => {
    const created = await fetch(`http://127.0.0.1:${svcPort}/videos`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ title: "over TLS" }) });
    const video = (await created.json()) as { id: string };
    return fetch(`http://127.0.0.1:${svcPort}/videos/${video.id}/content`, { method: "PUT", headers: { "content-type": "video/mp4" }, body: Buffer.alloc(64 * 1024, 7) });
  };

  const trusted = await startService(t, { ...base, DATA_DIR: mkdtempSync(path.join(dir, "a-")), NODE_EXTRA_CA_CERTS: certFile });
  const ok = await upload(trusted);
  t.equal(ok.status, 200, "a streamed upload reaches S3 over TLS when the CA is trusted");
  t.match(await ok.json(), { state: "STATE_UPLOADED", source: { sizeBytes: String(64 * 1024) } });

  const untrusted = await startService(t, { ...base, DATA_DIR: mkdtempSync(path.join(dir, "b-")) });
  const refused = await upload(untrusted);
  t.equal(refused.status, 503, "without the CA the store is unreachable (UNAVAILABLE), never used insecurely");
});
