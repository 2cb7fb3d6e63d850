import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Teardown } from "./server.js";

// A throw-away PKI made with the openssl CLI: a CA, a server certificate it
// signs (for localhost and 127.0.0.1), and a second, unrelated CA that a
// client can wrongly trust.

const run = promisify(execFile);

export interface TestPki {
  dir: string;
  /** PEM of the CA that signed the server certificate. */
  ca: Buffer;
  /** PEM of a CA that signed nothing here. */
  otherCa: Buffer;
  /** Paths for TLS_CERT_FILE and TLS_KEY_FILE. */
  certFile: string;
  keyFile: string;
}

const openssl = (dir: string, args: string[]) => run("openssl", args, { cwd: dir, timeout: 30_000 });

async function makeCa(dir: string, name: string, cn: string) {
  await openssl(dir, [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

export async function makePki(t: Teardown): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "vms-tls-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await Promise.all([makeCa(dir, "ca", "VMS Test CA"), makeCa(dir, "other-ca", "Unrelated Test CA")]);
  await openssl(dir, [
    "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
  ]);
  await writeFile(
    join(dir, "server.ext"),
    [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ].join("\n"),
  );
  await openssl(dir, [
    "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
  ]);
  return {
    dir,
    ca: await readFile(join(dir, "ca.pem")),
    otherCa: await readFile(join(dir, "other-ca.pem")),
    certFile: join(dir, "server.pem"),
    keyFile: join(dir, "server.key"),
  };
}
