import { createContextKey, type HandlerContext } from "@connectrpc/connect";

// Who is calling. The auth interceptor sets it from the verified token; with
// auth disabled (loopback only) every caller is the local developer.
export interface Caller {
  subject: string;
  roles: readonly string[];
}

export const LOCAL_CALLER: Caller = { subject: "local-developer", roles: ["admin"] };

export const callerKey = createContextKey<Caller>(LOCAL_CALLER, { description: "the authenticated caller" });

export const callerOf = (ctx: HandlerContext): Caller => ctx.values.get(callerKey);
