import http from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";
import winston from "winston";
import { startTestServer, type StartOptions, type Teardown, type TestServer } from "./server.js";

// Signing keys, tokens and a JWKS endpoint for the security tests, and a test
// server that validates bearer tokens against them with its logs captured.

export const ISSUER = "https://issuer.vms.test/";
export const AUDIENCE = "video-management-service";

export type Algorithm = "RS256" | "ES256";

export interface SigningKey {
  kid: string;
  alg: Algorithm;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** The public key as a JWK with kid, alg and use set, as a JWKS publishes it. */
  jwk: JWK;
  /** The public key as SPKI PEM (what JWT_PUBLIC_KEY_FILE holds). */
  pem: string;
}

export async function makeKey(alg: Algorithm, kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicKey, jwk, pem: await exportSPKI(publicKey) };
}

export interface Claims {
  sub?: string;
  roles?: unknown;
  /** `null` leaves the claim out. */
  iss?: string | null;
  aud?: string | string[] | null;
  /** Seconds since the epoch; default: now + 1 h. `null` leaves the claim out. */
  exp?: number | null;
  nbf?: number;
  iat?: number;
  [claim: string]: unknown;
}

/** Seconds since the epoch (from new Date(), as jose reads the clock, so a patched Date.now does not move it). */
export const now = () => Math.floor(new Date().getTime() / 1000);

/** The payload a valid token carries, with `claims` laid over it (undefined values are dropped). */
export function payload(claims: Claims): JWTPayload {
  const base: Record<string, unknown> = { iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 3600 };
  for (const [k, v] of Object.entries(claims)) {
    if (v === undefined) continue;
    if (v === null) delete base[k];
    else base[k] = v;
  }
  return base as JWTPayload;
}

/** A compact JWS signed with `key` (its alg and kid, unless overridden). */
export function sign(key: SigningKey, claims: Claims, header: { kid?: string; alg?: string } = {}): Promise<string> {
  return new SignJWT(payload(claims))
    .setProtectedHeader({ alg: header.alg ?? key.alg, kid: header.kid ?? key.kid, typ: "JWT" })
    .sign(key.privateKey);
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** An unsecured JWT (alg "none", empty signature): must never be accepted. */
export function unsignedToken(claims: Claims, kid?: string): string {
  return `${b64({ alg: "none", typ: "JWT", ...(kid ? { kid } : {}) })}.${b64(payload(claims))}.`;
}

/** An HS256 token whose HMAC secret is `secret` (e.g. the verifier's public key): must never be accepted. */
export function hmacToken(secret: Uint8Array, claims: Claims, kid?: string): Promise<string> {
  return new SignJWT(payload(claims)).setProtectedHeader({ alg: "HS256", typ: "JWT", ...(kid ? { kid } : {}) }).sign(secret);
}

// ---- a JWKS endpoint --------------------------------------------------------

export interface JwksServer {
  url: string;
  /** The keys currently published; change it to rotate. */
  keys: SigningKey[];
  /** How many times the key set was fetched. */
  fetches: number;
  /**
   * Simulate an identity provider fault: answer with this HTTP status (and no
   * key set), or with 200 and a body that is not a key set ("malformed").
   */
  failWith: number | "malformed" | undefined;
}

export async function startJwksServer(t: Teardown, keys: SigningKey[]): Promise<JwksServer> {
  const state: JwksServer = { url: "", keys: [...keys], fetches: 0, failWith: undefined };
  const server = http.createServer((req, res) => {
    if (req.url !== "/.well-known/jwks.json") {
      res.writeHead(404).end();
      return;
    }
    state.fetches++;
    if (state.failWith === "malformed") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: "rotating, back soon" }));
      return;
    }
    if (state.failWith) {
      res.writeHead(state.failWith, { "content-type": "text/plain" }).end("identity provider unavailable");
      return;
    }
    const body = JSON.stringify({ keys: state.keys.map((k) => k.jwk) });
    res.writeHead(200, { "content-type": "application/jwk-set+json", "content-length": Buffer.byteLength(body) }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  return state;
}

// ---- a test server that validates tokens, with its logs captured ---------------------

export interface CapturedLogs {
  /** Every log line the server wrote, as written (JSON). */
  lines: string[];
  /** The lines parsed. */
  records(): Record<string, unknown>[];
}

/**
 * Routes the server's winston logger into memory at `level` (all levels by
 * default). The lines are the exact JSON the console transport would print.
 */
export function captureLogs(logger: winston.Logger, level = "silly"): CapturedLogs {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line !== "") lines.push(line);
      done();
    },
  });
  // With E2E_LOG set the console keeps its copy (other transports, the run's
  // log capture, stay).
  if (!process.env.E2E_LOG) for (const c of logger.transports.filter((x) => x instanceof winston.transports.Console)) logger.remove(c);
  logger.add(new winston.transports.Stream({ stream: sink }));
  logger.level = level;
  logger.silent = false;
  return { lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

export interface SecuredServer {
  s: TestServer;
  jwks: JwksServer;
  logs: CapturedLogs;
  /** The key the default tokens are signed with (RS256, published). */
  key: SigningKey;
  /** A second published key (ES256). */
  ecKey: SigningKey;
  /** A valid token for this subject and these roles, signed with `key`. */
  token(sub: string, roles: string[], claims?: Claims): Promise<string>;
}

/** The PostgreSQL test database when there is one (faster to start), else PGlite. */
export const defaultDatabase = (): StartOptions["database"] => (process.env.TEST_DATABASE_URL ? "postgres" : "pglite");

/** A test server in JWKS-URL mode: the RS256 and ES256 keys are published by a local JWKS endpoint. */
export async function startSecuredServer(t: Teardown, options: Partial<StartOptions> = {}): Promise<SecuredServer> {
  const key = await makeKey("RS256", "rsa-1");
  const ecKey = await makeKey("ES256", "ec-1");
  const jwks = await startJwksServer(t, [key, ecKey]);
  const s = await startTestServer(t, {
    ...options,
    database: options.database ?? defaultDatabase(),
    env: { JWT_JWKS_URL: jwks.url, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, ...options.env },
  });
  const logs = captureLogs(s.ctx.logger);
  return { s, jwks, logs, key, ecKey, token: (sub, roles, claims = {}) => sign(key, { sub, roles, ...claims }) };
}

export const bearer = (token: string | undefined): Record<string, string> => (token === undefined ? {} : { authorization: `Bearer ${token}` });
