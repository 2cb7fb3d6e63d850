import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { createLocalJWKSet, createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import type { JwtConfig } from "../config.js";
import type { Caller } from "./caller.js";

// Bearer token validation with jose: asymmetric algorithms only (never
// "none", never HMAC with a guessable secret), issuer and audience required,
// small clock skew. JWKS are fetched, cached and refreshed on an unknown kid
// (key rotation) by jose itself.

export const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
const CLOCK_TOLERANCE_S = 30;
// The longest a token may still be valid for: one that claims to last longer
// (exp: 1e300, in effect never expiring) is refused, so a leaked token ends.
export const MAX_TOKEN_LIFETIME_S = 24 * 3600;

export type TokenVerifier = (token: string) => Promise<Caller>;

// A verifier needs the public half only. createPublicKey() derives it from a
// private key without complaint, so a private key (or a JWK with private or
// secret members) given here would be accepted and then sit on every replica:
// refused, so a misplaced signing key is noticed at start-up.
const PRIVATE_JWK_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k"];

export class PrivateKeyGiven extends Error {
  constructor() {
    super("holds a private or secret key, not a public key: give the verifier the public key only");
  }
}

function assertPublicJwk(jwk: unknown): void {
  if (jwk && typeof jwk === "object" && PRIVATE_JWK_MEMBERS.some((m) => m in jwk)) throw new PrivateKeyGiven();
}

export function keyFromFile(file: string): KeyObject | JWTVerifyGetKey {
  const text = readFileSync(file, "utf8");
  if (text.trimStart().startsWith("{")) {
    const json = JSON.parse(text) as { keys?: unknown[] };
    (json.keys ?? [json]).forEach(assertPublicJwk);
    return json.keys ? createLocalJWKSet(json as Parameters<typeof createLocalJWKSet>[0]) : createPublicKey({ key: json as never, format: "jwk" });
  }
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new PrivateKeyGiven();
  return createPublicKey(text);
}

/**
 * The caller's roles: the claim must be a JSON array of strings. A string is
 * refused, not split: "viewer,admin" or "viewer admin" grants nothing, so a
 * claim some other system fills with free text can never add a role by
 * holding a separator. Unknown role names are kept and grant nothing.
 */
export function rolesFrom(claim: unknown): string[] | undefined {
  if (claim === undefined) return [];
  if (Array.isArray(claim) && claim.every((r) => typeof r === "string")) return claim;
  return undefined;
}

export function createVerifier(cfg: JwtConfig): TokenVerifier {
  const key = cfg.jwksUrl
    ? createRemoteJWKSet(new URL(cfg.jwksUrl), { cacheMaxAge: 10 * 60_000, cooldownDuration: 30_000, timeoutDuration: 5_000 })
    : keyFromFile(cfg.publicKeyFile!);
  return async (token) => {
    try {
      const { payload } = await jwtVerify(token, key as JWTVerifyGetKey, {
        issuer: cfg.issuer,
        audience: cfg.audience,
        algorithms: ALGORITHMS,
        clockTolerance: CLOCK_TOLERANCE_S,
        requiredClaims: ["exp", "sub"],
      });
      // jose checks that "sub" is present, not what it holds: the subject is
      // compared with owner_id as a string, so it must be a non-empty one.
      if (typeof payload.sub !== "string" || payload.sub === "") {
        throw new errors.JWTClaimValidationFailed('"sub" claim must be a non-empty string', payload, "sub", "check_failed");
      }
      checkTimes(payload);
      const roles = rolesFrom(payload[cfg.rolesClaim]);
      if (!roles) throw new errors.JWTClaimValidationFailed(`"${cfg.rolesClaim}" claim must be an array of strings`, payload, cfg.rolesClaim, "invalid");
      return { subject: payload.sub, roles };
    } catch (e) {
      throw tokenError(e);
    }
  };
}

// What jose leaves to the application: an issue time in the future and an
// expiry beyond any sensible lifetime, both with the same clock skew.
function checkTimes(payload: JWTPayload): void {
  const now = Math.floor(new Date().getTime() / 1000);
  if (payload.iat !== undefined && payload.iat > now + CLOCK_TOLERANCE_S) {
    throw new errors.JWTClaimValidationFailed('"iat" claim is in the future', payload, "iat", "check_failed");
  }
  if (payload.exp! > now + MAX_TOKEN_LIFETIME_S + CLOCK_TOLERANCE_S) {
    throw new errors.JWTClaimValidationFailed(`"exp" claim is more than ${MAX_TOKEN_LIFETIME_S / 3600} h away`, payload, "exp", "check_failed");
  }
}

// What the caller learns: why the token was refused, never the token itself.
function tokenError(e: unknown): ConnectError {
  if (e instanceof errors.JWTExpired) return new ConnectError("the token has expired", Code.Unauthenticated);
  if (e instanceof errors.JWTClaimValidationFailed) return new ConnectError(`the token's "${e.claim}" claim is not accepted`, Code.Unauthenticated);
  // The key set could not be had: no answer, a non-200 answer or a malformed
  // set (jose throws a bare JOSEError or JWKSInvalid for those). The token may
  // well be valid, so the caller should retry, not re-authenticate.
  const keySetUnavailable =
    e instanceof errors.JWKSTimeout ||
    e instanceof errors.JWKSInvalid ||
    (e instanceof errors.JOSEError && e.constructor === errors.JOSEError);
  if (keySetUnavailable || (e instanceof Error && /fetch|ECONNREFUSED|network/i.test(e.message) && !(e instanceof errors.JOSEError))) {
    return new ConnectError("signing keys cannot be fetched; retry later", Code.Unavailable);
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return new ConnectError("the token's algorithm is not accepted", Code.Unauthenticated);
  return new ConnectError("the token is not valid", Code.Unauthenticated);
}
