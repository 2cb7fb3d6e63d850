import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import t from "tap";
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair } from "jose";
import { loadConfig } from "../../server/config.js";
import { AUDIENCE, ISSUER, makeKey, sign } from "../support/jwt.js";
import { createTestDatabase } from "../support/postgres.js";
import type { Asserts } from "../support/server.js";
import { teeOutput } from "../support/log-capture.js";

// The real entry point refuses to serve without authentication on a
// non-loopback address (issue: security; CONTRACT.md §4): one line on
// stderr naming the variables, a non-zero exit, nothing listening. With JWT
// settings it does serve there, and tokens are required.

const root = path.resolve(import.meta.dirname, "../..");
const tsx = path.join(root, "node_modules/.bin/tsx");

// Nothing from the developer's or CI's environment may decide the outcome.
const INHERITED_OUT = /^(HOST|PORT|AUTH_DISABLED|JWT_|TLS_|DATABASE_URL|DATA_DIR|LOG_LEVEL|PUBSUB_|S3_)/;

function start(t: { teardown(fn: () => unknown): void }, env: Record<string, string>) {
  const dataDir = mkdtempSync(path.join(tmpdir(), "vms-sec-start-"));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !INHERITED_OUT.test(k)));
  const child = spawn(tsx, ["server/main.ts"], {
    cwd: root,
    env: { ...base, PORT: "0", DATA_DIR: dataDir, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  teeOutput(child.stdout, child.pid);
  teeOutput(child.stderr, child.pid);
  t.teardown(() => child.kill("SIGKILL"));
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs until the process exits, or until it serves (which these cases must never do: it is killed). */
async function runToExit(t: Asserts, env: Record<string, string>): Promise<Exit> {
  const p = start(t, env);
  const serving = () => {
    if (p.out().includes('"message":"serving"')) p.child.kill("SIGKILL");
  };
  p.child.stdout.on("data", serving);
  const code = await p.exited;
  return { code, stdout: p.out(), stderr: p.err() };
}

/**
 * A non-zero exit and exactly one stderr line naming each pattern. With
 * `todo`, failures are reported as a known bug and do not fail the run.
 */
function refusedInOneLine(t: Asserts, name: string, exit: Exit, named: RegExp[], todo?: string) {
  const o = todo ? { todo } : {};
  t.not(exit.code, 0, `${name}: non-zero exit`, o);
  t.not(exit.code, null, `${name}: exited by itself`, o);
  const lines = exit.stderr.trim().split("\n");
  t.equal(lines.length, 1, `${name}: one line on stderr (${exit.stderr.trim().split("\n")[0].slice(0, 300)})`, o);
  t.match(lines[0], /^configuration error: /, `${name}: it says what is wrong`, o);
  for (const re of named) t.match(lines[0], re, `${name}: names ${re.source}`, o);
  t.notMatch(exit.stdout, /"message":"serving"/, `${name}: never served`, o);
}

t.test("the process refuses to start with auth off on a non-loopback address, in one line", async (t) => {
  // Each is a start of the whole service: run them side by side, then look.
  const [open, disabled, noClaims, missingKey] = await Promise.all([
    runToExit(t, { HOST: "0.0.0.0" }),
    runToExit(t, { HOST: "0.0.0.0", AUTH_DISABLED: "true" }),
    runToExit(t, { HOST: "0.0.0.0", JWT_JWKS_URL: "https://idp.example/jwks.json" }),
    runToExit(t, { HOST: "0.0.0.0", JWT_PUBLIC_KEY_FILE: "/nonexistent/key.pem", JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }),
  ]);
  refusedInOneLine(t, "HOST=0.0.0.0 and no JWT settings", open, [/HOST/, /JWT_JWKS_URL/, /JWT_PUBLIC_KEY_FILE/]);
  refusedInOneLine(t, "AUTH_DISABLED=true with HOST=0.0.0.0", disabled, [/AUTH_DISABLED/, /loopback/]);
  refusedInOneLine(t, "JWT_JWKS_URL without JWT_ISSUER and JWT_AUDIENCE", noClaims, [/JWT_ISSUER/]);
  refusedInOneLine(t, "JWT_PUBLIC_KEY_FILE=/nonexistent/key.pem", missingKey, [/JWT_PUBLIC_KEY_FILE/]);
});

t.test("a private key given as JWT_PUBLIC_KEY_FILE is refused at start-up, in one line", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "vms-sec-private-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const file = (name: string, text: string) => {
    writeFileSync(path.join(dir, name), text);
    return path.join(dir, name);
  };
  const pem = file("private.pem", await exportPKCS8(privateKey));
  const jwk = file("private.jwk", JSON.stringify(await exportJWK(privateKey)));
  const jwks = file("private-jwks.json", JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1" }, { ...(await exportJWK(privateKey)), kid: "k2" }] }));
  const secret = file("secret.jwk", JSON.stringify({ kty: "oct", k: "c2VjcmV0" }));
  const claims = { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE };
  refusedInOneLine(t, "a PKCS#8 private key PEM", await runToExit(t, { JWT_PUBLIC_KEY_FILE: pem, ...claims }), [/JWT_PUBLIC_KEY_FILE/, /private/]);
  for (const [what, f] of [["a private JWK", jwk], ["a JWKS with a private key in it", jwks], ["a symmetric (oct) JWK", secret]]) {
    t.throws(() => loadConfig({ JWT_PUBLIC_KEY_FILE: f, ...claims }), { message: /^JWT_PUBLIC_KEY_FILE .*private or secret key/ }, what);
  }
  t.equal(loadConfig({ JWT_PUBLIC_KEY_FILE: file("public.pem", await exportSPKI(publicKey)), ...claims }).auth.disabled, false, "the public key of the same pair is taken");
});

t.test("the configuration rules for auth (loadConfig)", async (t) => {
  const refused = (env: Record<string, string>, named: RegExp, what: string) => t.throws(() => loadConfig(env), { message: named }, what);
  const jwks = { JWT_JWKS_URL: "https://idp.example/jwks.json", JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE };
  refused({ HOST: "0.0.0.0" }, /JWT_JWKS_URL/, "0.0.0.0 without JWT settings");
  refused({ HOST: "::" }, /JWT_JWKS_URL/, ":: without JWT settings");
  refused({ HOST: "10.1.2.3", AUTH_DISABLED: "yes" }, /AUTH_DISABLED/, "AUTH_DISABLED=yes on a private address");
  refused({ HOST: "0.0.0.0", AUTH_DISABLED: "true", ...jwks }, /AUTH_DISABLED/, "AUTH_DISABLED=true on 0.0.0.0 even with JWT settings");
  refused({ HOST: "0.0.0.0", JWT_JWKS_URL: jwks.JWT_JWKS_URL, JWT_ISSUER: ISSUER }, /JWT_AUDIENCE/, "JWT_JWKS_URL without JWT_AUDIENCE");
  refused({ HOST: "0.0.0.0", JWT_JWKS_URL: jwks.JWT_JWKS_URL, JWT_AUDIENCE: AUDIENCE }, /JWT_ISSUER/, "JWT_JWKS_URL without JWT_ISSUER");
  refused({ HOST: "0.0.0.0", JWT_PUBLIC_KEY_FILE: "/k.pem", JWT_AUDIENCE: AUDIENCE }, /JWT_ISSUER/, "JWT_PUBLIC_KEY_FILE without JWT_ISSUER");
  refused({ HOST: "0.0.0.0", ...jwks, JWT_PUBLIC_KEY_FILE: "/k.pem" }, /JWT_JWKS_URL.*JWT_PUBLIC_KEY_FILE/, "both key sources");
  refused({ HOST: "0.0.0.0", ...jwks, JWT_JWKS_URL: "file:///etc/passwd" }, /JWT_JWKS_URL/, "a JWKS URL that is not http(s)");
  refused({ TLS_CERT_FILE: "/c.pem" }, /TLS_KEY_FILE/, "a certificate without its key");

  t.same(loadConfig({}).auth, { disabled: true, jwt: undefined }, "loopback by default, no JWT settings: auth off (local development)");
  t.same(loadConfig({ HOST: "localhost" }).auth.disabled, true, "localhost is loopback");
  t.same(loadConfig({ HOST: "::1" }).auth.disabled, true, "::1 is loopback");
  const on = loadConfig({ HOST: "0.0.0.0", ...jwks });
  t.same(on.auth, { disabled: false, jwt: { jwksUrl: jwks.JWT_JWKS_URL, publicKeyFile: undefined, issuer: ISSUER, audience: AUDIENCE, rolesClaim: "roles" } }, "0.0.0.0 with JWT settings: auth on, roles claim \"roles\"");
  t.equal(loadConfig({ ...jwks }).auth.disabled, false, "JWT settings on loopback turn auth on");
  t.equal(loadConfig({ ...jwks, JWT_ROLES_CLAIM: "permissions" }).auth.jwt?.rolesClaim, "permissions", "JWT_ROLES_CLAIM");
  t.throws(() => loadConfig({ AUTH_DISABLED: "false" }), { message: /JWT_JWKS_URL/ }, "AUTH_DISABLED=false on loopback without JWT settings is refused");
  t.throws(() => loadConfig({ AUTH_DISABLED: "false" }), { message: /^(?!.*not loopback)/ }, "AUTH_DISABLED=false on loopback: the message does not call the loopback HOST non-loopback");
});

t.test("with JWT settings it serves on a non-loopback address, and requires tokens", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "vms-sec-key-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = await makeKey("RS256", "k1");
  writeFileSync(path.join(dir, "key.pem"), key.pem);
  // PostgreSQL when there is one: it starts faster than the embedded database.
  const database: Record<string, string> = process.env.TEST_DATABASE_URL ? { DATABASE_URL: await createTestDatabase(t) } : {};
  const p = start(t, {
    HOST: "0.0.0.0",
    JWT_PUBLIC_KEY_FILE: path.join(dir, "key.pem"),
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    LOG_LEVEL: "info",
    ...database,
  });
  const serving = await new Promise<{ port: number; auth: string; address: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not serving after 30 s: ${p.err()}`)), 30_000);
    const check = () => {
      const line = p.out().split("\n").find((l) => l.includes('"message":"serving"'));
      if (line) {
        clearTimeout(timer);
        p.child.stdout.off("data", check);
        resolve(JSON.parse(line));
      }
    };
    p.child.stdout.on("data", check);
    p.exited.then((code) => reject(new Error(`exited ${code}: ${p.err()}`)));
  });
  t.equal(serving.address, "0.0.0.0", "bound to 0.0.0.0");
  t.equal(serving.auth, "jwt", "auth is on");
  const base = `http://127.0.0.1:${serving.port}`;
  t.equal((await fetch(`${base}/videos`)).status, 401, "no token → 401");
  const token = await sign(key, { sub: "ops", roles: ["viewer"] });
  t.equal((await fetch(`${base}/videos`, { headers: { authorization: `Bearer ${token}` } })).status, 200, "a valid token → 200");
  t.equal((await fetch(`${base}/health`)).status, 200, "/health stays open");
  p.child.kill("SIGTERM");
  t.equal(await p.exited, 0, "SIGTERM: exit 0");
  t.notOk(p.out().includes(token), "the token is not in the process's logs");
  t.notOk(p.out().includes(token.split(".")[2]), "nor its signature");
});
