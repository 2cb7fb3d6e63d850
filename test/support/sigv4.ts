import { createHash, createHmac } from "node:crypto";

// Checks a presigned S3 URL the way S3 does (AWS Signature Version 4, query
// string form) for a request carrying the given headers: the emulator never
// checks signatures, so this is how a test learns what S3 would refuse —
// e.g. a part PUT whose Content-Length is not the one signed into its URL.
// Written from the SigV4 specification, not with the SDK that signed the URL.

const rfc3986 = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();
const hex = (data: string) => createHash("sha256").update(data).digest("hex");

/** True when the URL's signature holds for a `method` request with these headers (host is added). */
export function sigV4Accepts(url: string, method: string, headers: Record<string, string>, secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY ?? "test"): boolean {
  const u = new URL(url);
  const q = u.searchParams;
  const signedHeaders = (q.get("X-Amz-SignedHeaders") ?? "").split(";");
  const all: Record<string, string> = { host: u.host };
  for (const [k, v] of Object.entries(headers)) all[k.toLowerCase()] = v.trim();
  // A signed header the request does not carry fails the signature, as on S3.
  if (signedHeaders.some((h) => all[h] === undefined)) return false;
  const query = [...q.entries()]
    .filter(([k]) => k !== "X-Amz-Signature")
    .map(([k, v]) => [rfc3986(k), rfc3986(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonical = [method, u.pathname, query, signedHeaders.map((h) => `${h}:${all[h]}\n`).join(""), signedHeaders.join(";"), "UNSIGNED-PAYLOAD"].join("\n");
  const [, date, region, service] = (q.get("X-Amz-Credential") ?? "").split("/");
  const amzDate = q.get("X-Amz-Date") ?? "";
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, hex(canonical)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date!), region!), service!), "aws4_request");
  return hmac(key, toSign).toString("hex") === q.get("X-Amz-Signature");
}
