import type { DescMessage } from "@bufbuild/protobuf";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { invalidArgument } from "../errors.js";
import type { NodeRequest } from "./listener.js";
import { integerViolations, invalidUtf8Violations, parseStrictJson } from "./strict-json.js";

// A Connect unary JSON request is held to the same strict JSON as REST
// (strict-json.ts) before connect-es decodes it: connect-es decodes bytes
// that are not UTF-8 as U+FFFD and takes "0x10" or 1e2 as integers. The
// refusal (INVALID_ARGUMENT naming the fields) is thrown from the body, which
// connect-es reports like any request it cannot read.

/** True for a Connect unary call with an uncompressed JSON body. */
export function isConnectUnaryJson(req: NodeRequest, h: UniversalHandler): boolean {
  const encoding = req.headers["content-encoding"];
  return (
    h.method.methodKind === "unary" &&
    req.method === "POST" &&
    /^application\/json\s*(;|$)/i.test(String(req.headers["content-type"] ?? "")) &&
    (encoding === undefined || encoding === "identity")
  );
}

/**
 * The body, checked: at most `limit` bytes are held; a larger body is passed
 * on unread for connect-es to refuse by its own limit, a body that is not
 * JSON is passed on for connect-es to report as it does.
 */
export async function* strictJsonBody(body: AsyncIterable<Uint8Array>, input: DescMessage, limit: number): AsyncGenerator<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    chunks.push(r.value);
    size += r.value.byteLength;
    if (size > limit) {
      yield* chunks;
      for (let n = await it.next(); !n.done; n = await it.next()) yield n.value;
      return;
    }
  }
  const bytes = Buffer.concat(chunks);
  let parsed;
  try {
    parsed = parseStrictJson(bytes);
  } catch {
    yield bytes;
    return;
  }
  if (parsed.invalidUtf8) throw invalidArgument(invalidUtf8Violations(input, parsed.value));
  const violations = integerViolations(input, parsed.value);
  if (violations.length > 0) throw invalidArgument(violations);
  yield bytes;
}
