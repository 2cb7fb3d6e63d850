import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";

// Who is calling. The auth interceptor sets it from the verified token; with
// auth disabled (loopback only) the localDeveloper interceptor sets the local
// developer. Nothing else does: a call that reached a handler without either
// has no caller, and is refused rather than run as anyone (fail closed).
export interface Caller {
  subject: string;
  roles: readonly string[];
}

export const LOCAL_CALLER: Caller = { subject: "local-developer", roles: ["admin"] };

export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "the authenticated caller" });

export const callerOf = (ctx: HandlerContext): Caller => {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw new ConnectError("the call has no authenticated caller", Code.Unauthenticated);
  return caller;
};

/** Auth off (loopback only): every call is the local developer's, said explicitly. */
export function localDeveloper(): Interceptor {
  return (next) => (req) => {
    req.contextValues.set(callerKey, LOCAL_CALLER);
    return next(req);
  };
}
