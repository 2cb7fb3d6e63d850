import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { callerKey } from "./caller.js";
import type { TokenVerifier } from "./jwt.js";

// Services anyone may call: load balancers probe health, engineers list methods.
const OPEN_SERVICES = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);

/** The token of an `Authorization: Bearer …` header, or UNAUTHENTICATED saying what is wrong with it. */
export function bearerToken(header: string): string {
  const m = /^Bearer\s+([A-Za-z0-9_\-.=]+)$/i.exec(header.trim());
  if (!m) throw new ConnectError(header ? "the authorization header is not a bearer token" : "a bearer token is required", Code.Unauthenticated);
  return m[1];
}

/** Verifies the bearer token and puts the caller in the context values. */
export function authenticate(verify: TokenVerifier): Interceptor {
  return (next) => async (req) => {
    if (OPEN_SERVICES.has(req.service.typeName)) return next(req);
    req.contextValues.set(callerKey, await verify(bearerToken(req.header.get("authorization") ?? "")));
    return next(req);
  };
}
