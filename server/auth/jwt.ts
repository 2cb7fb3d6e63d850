import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import { createLocalJWKSet, createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey } from "jose";
import type { JwtConfig } from "../config.js";
import type { Caller } from "./caller.js";

// Bearer token validation with jose: asymmetric algorithms only (never
// "none", never HMAC with a guessable secret), issuer and audience required,
// small clock skew. JWKS are fetched, cached and refreshed on an unknown kid
// (key rotation) by jose itself.

export const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
const CLOCK_TOLERANCE_S = 30;

export type TokenVerifier = (token: string) => Promise<Caller>;

export function keyFromFile(file: string): KeyObject | JWTVerifyGetKey {
  const text = readFileSync(file, "utf8");
  if (text.trimStart().startsWith("{")) {
    const json = JSON.parse(text) as { keys?: unknown[] };
    return json.keys ? createLocalJWKSet(json as Parameters<typeof createLocalJWKSet>[0]) : createPublicKey({ key: json as never, format: "jwk" });
  }
  return createPublicKey(text);
}

export function rolesFrom(claim: unknown): string[] {
  if (Array.isArray(claim)) return claim.filter((r): r is string => typeof r === "string");
  if (typeof claim === "string") return claim.split(/[\s,]+/).filter(Boolean);
  return [];
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
      return { subject: payload.sub, roles: rolesFrom(payload[cfg.rolesClaim]) };
    } catch (e) {
      throw tokenError(e);
    }
  };
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
