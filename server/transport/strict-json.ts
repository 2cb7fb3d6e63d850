import { ScalarType, type DescField, type DescMessage, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import type { FieldViolation } from "../errors.js";

// Strict proto3 JSON input, for REST and Connect JSON alike (pure). What
// protobuf-es and JSON.parse let through, and a caller must not rely on:
//   - bytes that are not UTF-8: decoded as U+FFFD and stored as such (gRPC's
//     binary decoding refuses them);
//   - integers written as "0x10", " 10", "+10", "0b1" or 1e2: converted by
//     Number()/BigInt(), so a typo becomes a different number.
// Integer fields take a JSON number written as an integer literal, or a
// string of decimal digits (proto3 JSON's form for 64-bit values).

const utf8 = new TextDecoder("utf-8", { fatal: true });
const lossy = new TextDecoder("utf-8");

/**
 * The body as JSON. Numbers written with a fraction or an exponent become
 * strings of their source text, so that integer fields can refuse them (1e2
 * and 100 are one value once parsed); float fields take such strings as the
 * same number. No request message holds a google.protobuf.Value, whose
 * numbers this would turn into strings.
 * `invalidUtf8`: the bytes were not UTF-8; `value` then holds U+FFFD where
 * they were, for invalidUtf8Violations to name the fields.
 */
export function parseStrictJson(bytes: Uint8Array): { value: JsonValue; invalidUtf8: boolean } {
  let text: string;
  let invalidUtf8 = false;
  try {
    text = utf8.decode(bytes);
  } catch {
    text = lossy.decode(bytes);
    invalidUtf8 = true;
  }
  return { value: JSON.parse(quoteNonIntegerNumbers(text)) as JsonValue, invalidUtf8 };
}

/** `{"a":1e2,"b":"1e2","c":1.5,"d":7}` → `{"a":"1e2","b":"1e2","c":"1.5","d":7}`; strings are left alone. */
export function quoteNonIntegerNumbers(text: string): string {
  let out = "";
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // Skip the string, escapes included.
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
      continue;
    }
    if (c !== 0x2d /* - */ && (c < 0x30 || c > 0x39)) continue;
    let end = i + 1;
    while (end < text.length && /[0-9.eE+-]/.test(text[end])) end++;
    const token = text.slice(i, end);
    if (/[.eE]/.test(token)) {
      out += text.slice(from, i) + JSON.stringify(token);
      from = end;
    }
    i = end - 1;
  }
  return from === 0 ? text : out + text.slice(from);
}

const SIGNED = new Set([ScalarType.INT32, ScalarType.SINT32, ScalarType.SFIXED32, ScalarType.INT64, ScalarType.SINT64, ScalarType.SFIXED64]);
const UNSIGNED = new Set([ScalarType.UINT32, ScalarType.FIXED32, ScalarType.UINT64, ScalarType.FIXED64]);

function integerProblem(scalar: ScalarType, v: JsonValue): string | undefined {
  const signed = SIGNED.has(scalar);
  if (!signed && !UNSIGNED.has(scalar)) return undefined;
  if (typeof v === "number") return Number.isInteger(v) ? undefined : "must be an integer";
  if (typeof v !== "string") return undefined; // the decoder names other types
  return (signed ? /^-?[0-9]+$/ : /^[0-9]+$/).test(v) ? undefined : `must be a decimal integer, got ${JSON.stringify(v.slice(0, 40))}`;
}

const isObject = (v: JsonValue | undefined): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);
const nested = (f: DescField) => f.message !== undefined && !f.message.typeName.startsWith("google.protobuf.");

/**
 * Calls `visit` on every scalar value of a proto3-JSON message, with its
 * proto field path ("video.size_bytes", "parts[2].part_number",
 * "labels[\"k\"]"). Unknown keys are skipped (the decoder names them).
 */
function eachScalar(desc: DescMessage, json: JsonValue, path: string, visit: (field: DescField, value: JsonValue, at: string) => void): void {
  if (!isObject(json)) return;
  for (const [key, value] of Object.entries(json)) {
    const field = desc.fields.find((f) => f.jsonName === key || f.name === key);
    if (!field || value === null) continue;
    const at = (path ? path + "." : "") + field.name;
    const one = (v: JsonValue, where: string) => {
      if (nested(field)) eachScalar(field.message!, v, where, visit);
      else if (field.fieldKind !== "message") visit(field, v, where);
    };
    if (field.fieldKind === "list" && Array.isArray(value)) value.forEach((v, i) => one(v, `${at}[${i}]`));
    else if (field.fieldKind === "map" && isObject(value)) {
      for (const [k, v] of Object.entries(value)) {
        if (field.mapKind === "message") eachScalar(field.message, v, `${at}[${JSON.stringify(k)}]`, visit);
        else visit(field, v, `${at}[${JSON.stringify(k)}]`);
      }
    } else if (field.fieldKind !== "list" && field.fieldKind !== "map") one(value, at);
  }
}

/** Integer fields whose value is not written as a plain decimal integer. */
export function integerViolations(desc: DescMessage, json: JsonValue, path = ""): FieldViolation[] {
  const out: FieldViolation[] = [];
  eachScalar(desc, json, path, (field, value, at) => {
    const scalar = field.fieldKind === "map" ? (field.mapKind === "scalar" ? field.scalar : undefined) : field.scalar;
    const problem = scalar === undefined ? undefined : integerProblem(scalar, value);
    if (problem) out.push({ field: at, description: problem });
  });
  return out;
}

/** The string fields that held bytes that were not UTF-8 (now U+FFFD); the whole body when none can be named. */
export function invalidUtf8Violations(desc: DescMessage, json: JsonValue, path = ""): FieldViolation[] {
  const out: FieldViolation[] = [];
  eachScalar(desc, json, path, (_field, value, at) => {
    if (typeof value === "string" && value.includes("\uFFFD")) out.push({ field: at, description: "is not valid UTF-8" });
  });
  return out.length > 0 ? out : [{ field: path || desc.name, description: "the request body is not valid UTF-8" }];
}
