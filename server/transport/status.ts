import { Code } from "@connectrpc/connect";

// Canonical code → HTTP status for REST responses (CONTRACT.md §2, AIP-193).
const HTTP_STATUS: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

export const httpStatusOf = (code: Code): number => HTTP_STATUS[code] ?? 500;

/** "NOT_FOUND" for Code.NotFound, as google.rpc.Code spells it. */
export function statusNameOf(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Code from the Connect protocol's snake_case name ("not_found"). */
export function codeFromConnectName(name: unknown): Code {
  if (typeof name !== "string") return Code.Unknown;
  const key = name.replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());
  if (name === "canceled" || name === "cancelled") return Code.Canceled;
  const code = (Code as unknown as Record<string, number>)[key];
  return typeof code === "number" ? (code as Code) : Code.Unknown;
}
