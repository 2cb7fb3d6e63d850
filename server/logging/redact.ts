// Secrets never reach a log line, whoever logged them: a last pass over every
// string in the line before it is written. What it removes: Authorization
// values (and any field named like a credential), presigned URL signatures
// (S3's X-Amz-Signature / X-Amz-Security-Token, the filesystem store's
// X-Vms-Signature), the password of any URL with credentials (DATABASE_URL),
// and JWTs anywhere.

export const REDACTED = "[REDACTED]";

const RULES: [RegExp, string][] = [
  [/\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`],
  [/\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, REDACTED],
  [/\b(X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|X-Vms-Signature)=[^&\s"']+/gi, `$1=${REDACTED}`],
  [/\b([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s"']+):[^@/?#\s"']*@/gi, `$1:${REDACTED}@`],
];
// One cheap test before the rules, so lines without a suspect pay little.
const SUSPECT = /bearer|basic|eyJ|X-Amz-|X-Vms-Signature|:\/\/[^/\s]*@/i;
const SECRET_KEY = /^(authorization|proxy-authorization|password|passwd|secret|token|access_token|refresh_token|cookie|set-cookie|x-amz-security-token)$/i;

export function redactString(s: string): string {
  if (!SUSPECT.test(s)) return s;
  for (const [pattern, replacement] of RULES) s = s.replace(pattern, replacement);
  return s;
}

/**
 * Redacts every string of a log line, nested objects and arrays included.
 * The line's own top-level fields are replaced in place (winston builds that
 * object per call); nested values are copied, never changed: they may be the
 * caller's (an event's attributes).
 */
export function redact<T extends Record<string, unknown>>(info: T): T {
  for (const key of Object.keys(info)) (info as Record<string, unknown>)[key] = redactField(key, info[key], 0);
  return info;
}

function redactField(key: string, value: unknown, depth: number): unknown {
  if (value !== undefined && SECRET_KEY.test(key)) return REDACTED;
  if (typeof value === "string") return redactString(value);
  if (value === null || typeof value !== "object" || depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => redactField("", v, depth + 1));
  if (value instanceof Date) return value;
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) copy[k] = redactField(k, v, depth + 1);
  return copy;
}
