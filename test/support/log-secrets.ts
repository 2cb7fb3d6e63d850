// What counts as a secret in a log line, described by the secrets themselves
// (independently of the service's redaction rules): used by the suite-wide
// scan (log-secrets-after.ts) and the redaction e2e test.

export const SECRET_PATTERNS: [string, RegExp][] = [
  ["a JWT", /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}/],
  ["an Authorization credential", /\b(?:Bearer|Basic)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}/i],
  ["an authorization field", /"(?:proxy-)?authorization"\s*:\s*"(?!\[REDACTED\])[^"]+"/i],
  ["an S3 presigned signature", /X-Amz-Signature=(?!\[REDACTED\])[0-9a-f]{16,}/i],
  ["an S3 session token", /X-Amz-Security-Token=(?!\[REDACTED\])[^&\s"]{8,}/i],
  ["a filesystem store signature", /X-Vms-Signature=(?!\[REDACTED\])[0-9a-f]{16,}/i],
  ["a URL password (DATABASE_URL)", /\b[a-z][a-z0-9+.-]*:\/\/[^:/?#@\s"']+:(?!\[REDACTED\]@)[^@/?#\s"']+@/i],
];

/** The secrets found in a text, as "<kind>: <excerpt>". */
export function findSecrets(text: string): string[] {
  const found: string[] = [];
  for (const line of text.split("\n")) {
    for (const [kind, pattern] of SECRET_PATTERNS) {
      const m = pattern.exec(line);
      if (m) found.push(`${kind}: …${line.slice(Math.max(0, m.index - 60), m.index + 20)}…`);
    }
  }
  return found;
}

