import { createHmac, timingSafeEqual } from "node:crypto";

// Signed URLs of the filesystem object store, served by this service under
// /_objects/. A URL carries its parameters as X-Vms-* query parameters and an
// HMAC-SHA256 over a canonical string of the method, the canonical path and
// every X-Vms-* parameter (sorted by name, values percent-encoded), so no
// parameter can be added, removed or changed without invalidating it. The
// canonical path is rebuilt from the decoded key, so alternative encodings of
// the same key neither break nor bypass the signature.

export const OBJECTS_PATH = "/_objects/";
export const PARAM_PREFIX = "X-Vms-";
export const SIGNATURE_PARAM = "X-Vms-Signature";
const ALGORITHM = "VMS1-HMAC-SHA256";

/** Every parameter a signed URL may carry (besides the signature). */
export const SIGNED_PARAMS = new Set([
  "X-Vms-Op",
  "X-Vms-Expires",
  "X-Vms-Size",
  "X-Vms-Content-Type",
  "X-Vms-Sha256",
  "X-Vms-Upload",
  "X-Vms-Part",
  "X-Vms-If-None-Match",
]);

export const objectPath = (key: string) => OBJECTS_PATH + key.split("/").map(encodeURIComponent).join("/");

export function canonicalString(method: string, key: string, params: ReadonlyMap<string, string>): string {
  const names = [...params.keys()].filter((n) => n !== SIGNATURE_PARAM).sort();
  const query = names.map((n) => `${encodeURIComponent(n)}=${encodeURIComponent(params.get(n)!)}`).join("&");
  return `${ALGORITHM}\n${method.toUpperCase()}\n${objectPath(key)}\n${query}`;
}

export function signature(signingKey: Buffer, method: string, key: string, params: ReadonlyMap<string, string>): Buffer {
  return createHmac("sha256", signingKey).update(canonicalString(method, key, params)).digest();
}

/** The full signed URL (params must not contain the signature). */
export function signedUrl(baseUrl: string, signingKey: Buffer, method: string, key: string, params: ReadonlyMap<string, string>): string {
  const query = new URLSearchParams([...params]);
  query.set(SIGNATURE_PARAM, signature(signingKey, method, key, params).toString("hex"));
  return `${baseUrl.replace(/\/+$/, "")}${objectPath(key)}?${query}`;
}

/** Constant-time comparison of a presented hex signature with the expected one. */
export function signatureMatches(signingKey: Buffer, method: string, key: string, params: ReadonlyMap<string, string>, presentedHex: string): boolean {
  if (!/^[0-9a-f]{64}$/i.test(presentedHex)) return false;
  const expected = signature(signingKey, method, key, params);
  const presented = Buffer.from(presentedHex, "hex");
  return presented.length === expected.length && timingSafeEqual(presented, expected);
}
