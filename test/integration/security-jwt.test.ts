import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import {
  AUDIENCE,
  ISSUER,
  bearer,
  captureLogs,
  defaultDatabase,
  hmacToken,
  makeKey,
  now,
  sign,
  startSecuredServer,
  unsignedToken,
  type SigningKey,
} from "../support/jwt.js";
import { startTestServer, type Asserts, type TestServer } from "../support/server.js";

// Bearer token validation (issue: security) against a real server: the JWKS
// URL mode with a local JWKS endpoint, the JWT_PUBLIC_KEY_FILE mode with PEM
// and JWKS files, the attacks a verifier must refuse, clock skew, key
// rotation, and an identity provider that is down.

const textOf = (s: string) => new TextEncoder().encode(s);

interface Outcome {
  /** "OK:<owner id>" or the code name. */
  grpc: string;
  rest: string;
  message: string;
}

/** CreateVideo as an editor with this Authorization value, over gRPC and REST. */
async function attempt(s: TestServer, authorization: Record<string, string>): Promise<Outcome> {
  const client = createClient(VideoService, s.transports.grpc);
  let grpc: string;
  let message = "";
  try {
    grpc = `OK:${(await client.createVideo({ video: { title: "jwt" } }, { headers: authorization })).ownerId}`;
  } catch (e) {
    const err = ConnectError.from(e);
    grpc = Code[err.code];
    message = err.rawMessage;
  }
  const res = await s.clients.rest("POST", "/videos", { json: { title: "jwt" }, headers: authorization });
  const rest = res.status === 200 ? `OK:${res.json.ownerId}` : `${res.status} ${res.json?.error?.status}`;
  return { grpc, rest, message };
}

async function accepted(t: Asserts, s: TestServer, token: string, sub: string, what: string) {
  const o = await attempt(s, bearer(token));
  t.equal(o.grpc, `OK:${sub}`, `${what}: accepted over gRPC (${o.message})`);
  t.equal(o.rest, `OK:${sub}`, `${what}: accepted over REST`);
}

async function refused(t: Asserts, s: TestServer, authorization: Record<string, string>, what: string, code = Code.Unauthenticated) {
  const o = await attempt(s, authorization);
  const http = code === Code.Unauthenticated ? "401 UNAUTHENTICATED" : "503 UNAVAILABLE";
  t.equal(o.grpc, Code[code], `${what}: ${Code[code]} over gRPC (${o.message})`);
  t.equal(o.rest, http, `${what}: ${http} over REST`);
}

const EDITOR = ["editor"];

t.test("JWKS URL mode: accepted tokens", async (t) => {
  const sec = await startSecuredServer(t);
  await accepted(t, sec.s, await sign(sec.key, { sub: "rs-user", roles: EDITOR }), "rs-user", "RS256 token from the JWKS");
  await accepted(t, sec.s, await sign(sec.ecKey, { sub: "ec-user", roles: EDITOR }), "ec-user", "ES256 token from the JWKS");
  await accepted(t, sec.s, await sign(sec.key, { sub: "multi-aud", roles: EDITOR, aud: ["another-api", AUDIENCE] }), "multi-aud", "aud array that includes the audience");
  const o = await attempt(sec.s, { authorization: `bearer ${await sign(sec.key, { sub: "case", roles: EDITOR })}` });
  t.equal(o.grpc, "OK:case", 'the scheme is case-insensitive ("bearer")');
  // The key set is fetched once and cached, not per call.
  t.equal(sec.jwks.fetches, 1, "the JWKS was fetched once for all those calls");
});

t.test("JWKS URL mode: refused tokens", async (t) => {
  const sec = await startSecuredServer(t);
  const { s, key } = sec;
  const admin = { sub: "mallory", roles: ["admin", "editor"] };
  const valid = await sign(key, admin);
  const [header, body, signature] = valid.split(".");

  await refused(t, s, {}, "no Authorization header");
  await refused(t, s, { authorization: "Basic bWFsbG9yeTpzZWNyZXQ=" }, "Basic credentials");
  await refused(t, s, { authorization: "Bearer" }, "Bearer with no token");
  await refused(t, s, { authorization: "Bearer not-a-jwt" }, "Bearer with garbage");
  await refused(t, s, { authorization: `Bearer ${header}.${body}` }, "a JWS without its signature part");

  await refused(t, s, bearer(unsignedToken(admin, key.kid)), 'alg "none" (with the kid of a published key)');
  await refused(t, s, bearer(unsignedToken(admin)), 'alg "none" (no kid)');
  await refused(t, s, bearer(`${header}.${body}.`), "a valid header and payload with an empty signature");
  await refused(t, s, bearer(await hmacToken(textOf(key.pem), admin, key.kid)), "HS256 signed with the public key (PEM) as the secret");
  await refused(t, s, bearer(await hmacToken(textOf(JSON.stringify(key.jwk)), admin, key.kid)), "HS256 signed with the public JWK as the secret");

  const impostor = await makeKey("RS256", key.kid);
  await refused(t, s, bearer(await sign(impostor, admin)), "signed by another key under the published kid (bad signature)");
  await refused(t, s, bearer(await sign(await makeKey("RS256", "unknown-kid"), admin)), "signed by a key that is not published");
  const forgedBody = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body, "base64url").toString()), sub: "root" })).toString("base64url");
  await refused(t, s, bearer(`${header}.${forgedBody}.${signature}`), "payload changed after signing");

  await refused(t, s, bearer(await sign(key, { ...admin, iss: "https://issuer.evil.test/" })), "wrong issuer");
  await refused(t, s, bearer(await sign(key, { ...admin, iss: null })), "no issuer");
  await refused(t, s, bearer(await sign(key, { ...admin, aud: "another-api" })), "wrong audience");
  await refused(t, s, bearer(await sign(key, { ...admin, aud: null })), "no audience");
  await refused(t, s, bearer(await sign(key, { ...admin, iat: now() - 7200, exp: now() - 120 })), "expired two minutes ago");
  await refused(t, s, bearer(await sign(key, { ...admin, exp: null })), "no exp");
  await refused(t, s, bearer(await sign(key, { ...admin, nbf: now() + 120 })), "nbf two minutes in the future");
  await refused(t, s, bearer(await sign(key, { roles: admin.roles })), "no sub");
  await refused(t, s, bearer(await sign(key, { ...admin, sub: "" })), "an empty sub");
  await refused(t, s, bearer(await sign(key, { ...admin, sub: 42 as unknown as string })), "a sub that is not a string");

  // Refusals say why without echoing the token.
  const o = await attempt(s, bearer(await sign(key, { ...admin, exp: now() - 120 })));
  t.match(o.message, /expired/, "an expired token is reported as expired");
  t.notMatch(o.message, /eyJ/, "the error does not echo the token");
});

t.test("clock skew: a few seconds either way are tolerated", async (t) => {
  const sec = await startSecuredServer(t);
  const { s, key } = sec;
  await accepted(t, s, await sign(key, { sub: "early", roles: EDITOR, iat: now() + 20, nbf: now() + 20 }), "early", "iat and nbf 20 s in the future");
  await accepted(t, s, await sign(key, { sub: "late", roles: EDITOR, iat: now() - 3600, exp: now() - 20 }), "late", "exp 20 s in the past");
  await refused(t, s, bearer(await sign(key, { sub: "later", roles: EDITOR, iat: now() - 3600, exp: now() - 90 })), "exp 90 s in the past");
  await refused(t, s, bearer(await sign(key, { sub: "earlier", roles: EDITOR, nbf: now() + 90 })), "nbf 90 s in the future");
});

t.test("claims the verifier does not take on trust: roles as a string, exp far away, iat in the future", async (t) => {
  const sec = await startSecuredServer(t);
  const { s, key } = sec;
  // The roles claim is a JSON array of strings; anything else is refused, never split.
  await refused(t, s, bearer(await sign(key, { sub: "split", roles: "viewer,editor" })), 'roles "viewer,editor" (a string)');
  await refused(t, s, bearer(await sign(key, { sub: "spaced", roles: "viewer editor" })), 'roles "viewer editor" (a string)');
  await refused(t, s, bearer(await sign(key, { sub: "single", roles: "editor" })), 'roles "editor" (one role, as a string)');
  await refused(t, s, bearer(await sign(key, { sub: "mixed", roles: ["editor", 7] })), "roles with a non-string element");
  const o = await attempt(s, bearer(await sign(key, { sub: "split", roles: "viewer,editor" })));
  t.match(o.message, /"roles" claim/, "the refusal names the roles claim");
  // Lifetime: at most 24 h ahead (plus the 30 s skew); an issue time no later than now plus the skew.
  await refused(t, s, bearer(await sign(key, { sub: "forever", roles: EDITOR, exp: 1e300 })), "exp 1e300");
  await refused(t, s, bearer(await sign(key, { sub: "year", roles: EDITOR, exp: now() + 365 * 86400 })), "exp a year away");
  await accepted(t, s, await sign(key, { sub: "day", roles: EDITOR, exp: now() + 23 * 3600 }), "day", "exp 23 h away");
  await refused(t, s, bearer(await sign(key, { sub: "future", roles: EDITOR, iat: now() + 3600 })), "iat an hour in the future");
  await refused(t, s, bearer(await sign(key, { sub: "future", roles: EDITOR, iat: now() + 90 })), "iat 90 s in the future");
});

// jose times its JWKS cache and re-fetch cool-down with Date.now(); token
// claims are checked against new Date(), which this does not move.
function shiftDateNow(t: Asserts) {
  const real = Date.now;
  let offset = 0;
  Date.now = () => real() + offset;
  t.teardown(() => {
    Date.now = real;
  });
  return (ms: number) => {
    offset += ms;
  };
}

t.test("key rotation: a new key published in the JWKS is picked up without a restart", async (t) => {
  const advance = shiftDateNow(t);
  const sec = await startSecuredServer(t);
  const { s, jwks, key: oldKey } = sec;
  await accepted(t, s, await sign(oldKey, { sub: "before", roles: EDITOR }), "before", "a token signed by the current key");
  t.equal(jwks.fetches, 1, "one fetch so far");

  // The identity provider makes a new key but has not published it yet.
  const newKey: SigningKey = await makeKey("RS256", "rsa-2");
  const early = await sign(newKey, { sub: "too-early", roles: EDITOR });
  await refused(t, s, bearer(early), "a token signed by a key not yet published");

  // Published; past jose's re-fetch cool-down, an unknown kid triggers a re-fetch.
  jwks.keys.push(newKey);
  advance(31_000);
  await accepted(t, s, await sign(newKey, { sub: "after", roles: EDITOR }), "after", "a token signed by the new key (new kid)");
  t.equal(jwks.fetches, 2, "the unknown kid made the service fetch the key set again");
  await accepted(t, s, await sign(oldKey, { sub: "old", roles: EDITOR }), "old", "tokens signed by the old key still pass while it is published");

  // The old key is retired: once the cached set expires, its tokens are refused.
  jwks.keys = jwks.keys.filter((k) => k.kid !== oldKey.kid);
  const old = await sign(oldKey, { sub: "old", roles: EDITOR });
  advance(11 * 60_000);
  await refused(t, s, bearer(old), "a token signed by the retired key, after the cache expired");
  await accepted(t, s, await sign(newKey, { sub: "new", roles: EDITOR }), "new", "the new key keeps working");
});

t.test("identity provider outage: keys that cannot be fetched are UNAVAILABLE, not a bad token", async (t) => {
  const sec = await startSecuredServer(t);
  sec.jwks.failWith = 503;
  await refused(t, sec.s, bearer(await sec.token("u", EDITOR)), "the JWKS endpoint answers 503", Code.Unavailable);
  sec.jwks.failWith = "malformed";
  await refused(t, sec.s, bearer(await sec.token("u", EDITOR)), "the JWKS endpoint answers with something that is not a key set", Code.Unavailable);
  sec.jwks.failWith = undefined;
  await accepted(t, sec.s, await sec.token("back", EDITOR), "back", "once the endpoint recovers, the same kind of token passes");

  const down = await startTestServer(t, {
    database: defaultDatabase(),
    env: { JWT_JWKS_URL: "http://127.0.0.1:9/jwks.json", JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE },
  });
  captureLogs(down.ctx.logger);
  await refused(t, down, bearer(await sec.token("u", EDITOR)), "the JWKS endpoint refuses connections", Code.Unavailable);
});

t.test("JWT_PUBLIC_KEY_FILE: PEM and JWKS files, custom roles claim", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vms-jwt-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const rsa = await makeKey("RS256", "file-rsa");
  const ec = await makeKey("ES256", "file-ec");
  await writeFile(join(dir, "key.pem"), rsa.pem);
  await writeFile(join(dir, "jwks.json"), JSON.stringify({ keys: [ec.jwk] }));
  const rolesClaim = "https://vms.test/roles";

  const pem = await startTestServer(t, {
    database: defaultDatabase(),
    env: { JWT_PUBLIC_KEY_FILE: join(dir, "key.pem"), JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, JWT_ROLES_CLAIM: rolesClaim },
  });
  captureLogs(pem.ctx.logger);
  await accepted(t, pem, await sign(rsa, { sub: "pem-user", [rolesClaim]: EDITOR }), "pem-user", "PEM: a token signed by the key");
  await accepted(t, pem, await sign(rsa, { sub: "no-kid", [rolesClaim]: EDITOR }, { kid: "whatever" }), "no-kid", "PEM: the kid does not matter");
  await refused(t, pem, bearer(await sign(await makeKey("RS256", "file-rsa"), { sub: "x", [rolesClaim]: EDITOR })), "PEM: another key's signature");
  await refused(t, pem, bearer(await sign(ec, { sub: "x", [rolesClaim]: EDITOR })), "PEM: an ES256 token against the RSA key");
  await refused(t, pem, bearer(await hmacToken(textOf(rsa.pem), { sub: "x", [rolesClaim]: EDITOR })), "PEM: HS256 with the PEM as the secret");
  await refused(t, pem, bearer(unsignedToken({ sub: "x", [rolesClaim]: EDITOR })), 'PEM: alg "none"');
  await refused(t, pem, bearer(await sign(rsa, { sub: "x", [rolesClaim]: EDITOR, iss: "https://issuer.evil.test/" })), "PEM: wrong issuer");

  // Roles come from JWT_ROLES_CLAIM only.
  const audit = createClient(AuditService, pem.transports.grpc);
  const viaClaim = await sign(rsa, { sub: "ada", [rolesClaim]: ["admin"] });
  t.ok(await audit.listAuditEvents({}, { headers: bearer(viaClaim) }), "admin through the configured claim reads the audit log");
  const viaDefault = await sign(rsa, { sub: "ada", roles: ["admin"] });
  await t.rejects(audit.listAuditEvents({}, { headers: bearer(viaDefault) }), { code: Code.PermissionDenied }, 'a "roles" claim is not the configured claim');

  const file = await startTestServer(t, {
    database: defaultDatabase(),
    env: { JWT_PUBLIC_KEY_FILE: join(dir, "jwks.json"), JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE },
  });
  captureLogs(file.ctx.logger);
  await accepted(t, file, await sign(ec, { sub: "jwks-file", roles: EDITOR }), "jwks-file", "JWKS file: a token signed by a key in it");
  await refused(t, file, bearer(await sign(rsa, { sub: "x", roles: EDITOR }, { kid: ec.kid })), "JWKS file: another key under its kid");
});
