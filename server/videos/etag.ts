import { randomBytes } from "node:crypto";

// AIP-154: opaque, new on every write. Random rather than derived, so an etag
// never reveals anything about the row.
export const newEtag = () => randomBytes(12).toString("base64url");

/** Accepts the bare etag or an HTTP entity tag ("…" or W/"…"). */
export function sameEtag(given: string, current: string): boolean {
  return given.replace(/^W\//, "").replace(/^"(.*)"$/, "$1") === current;
}
