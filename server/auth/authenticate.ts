import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { callerKey, type Caller } from "./caller.js";
import type { TokenVerifier } from "./jwt.js";

// Services anyone may call: load balancers probe health, engineers list methods.
const OPEN_SERVICES = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);

/** The token of an `Authorization: Bearer …` header, or UNAUTHENTICATED saying what is wrong with it. */
export function bearerToken(header: string): string {
  const m = /^Bearer\s+([A-Za-z0-9_\-.=]+)$/i.exec(header.trim());
  if (!m) throw new ConnectError(header ? "the authorization header is not a bearer token" : "a bearer token is required", Code.Unauthenticated);
  return m[1];
}

/** Set by the REST transcoder when it has verified the token itself (before reading the body). */
export const authenticatedKey = createContextKey(false, { description: "the caller was verified before the interceptor chain" });

/** The caller of an Authorization header, or UNAUTHENTICATED. */
export function verifyAuthorization(verify: TokenVerifier): (authorization: string) => Promise<Caller> {
  return (authorization) => verify(bearerToken(authorization));
}

/** Verifies the bearer token and puts the caller in the context values. */
export function authenticate(verify: TokenVerifier): Interceptor {
  const caller = verifyAuthorization(verify);
  return (next) => async (req) => {
    if (OPEN_SERVICES.has(req.service.typeName) || req.contextValues.get(authenticatedKey)) return next(req);
    req.contextValues.set(callerKey, await caller(req.header.get("authorization") ?? ""));
    return next(req);
  };
}
