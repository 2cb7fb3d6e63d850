import type { Video } from "../../gen/video/v1/video_pb.js";
import { Video_Visibility } from "../../gen/video/v1/video_pb.js";
import type { VisibilityColumn } from "../db/schema.js";
import type { FieldViolation } from "../errors.js";
import { visibilityColumn } from "./enums.js";

// The resource rules of CONTRACT.md, as pure functions: each mutable field is
// normalised and checked on its own, so a request is rejected as a whole with
// every bad field named.

export const MUTABLE_FIELDS = ["title", "description", "tags", "labels", "visibility"] as const;
export type MutableField = (typeof MUTABLE_FIELDS)[number];

export interface VideoFields {
  title: string;
  description: string;
  tags: string[];
  labels: Record<string, string>;
  visibility: VisibilityColumn;
}

const LIMITS = { title: 200, description: 5000, tags: 30, tag: 64, labels: 64, labelValue: 256 };
const LABEL_KEY = /^[a-z][a-z0-9_.-]{0,62}$/;
// C0/C1 controls, plus DEL. Titles and tags allow none; free text allows newlines and tabs.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;
const CONTROL_EXCEPT_WHITESPACE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/u;
// PostgreSQL text cannot hold U+0000; nowhere may it reach the database.
const NUL = /\u0000/;

const length = (s: string) => [...s].length;

type Check<T> = (value: T, field: string, out: FieldViolation[]) => T;

const title: Check<string> = (raw, field, out) => {
  const value = raw.trim();
  if (value === "") out.push({ field, description: "is required" });
  else if (length(value) > LIMITS.title) out.push({ field, description: `must be at most ${LIMITS.title} characters` });
  else if (CONTROL.test(value)) out.push({ field, description: "must not contain control characters" });
  return value;
};

const description: Check<string> = (value, field, out) => {
  if (length(value) > LIMITS.description) {
    out.push({ field, description: `must be at most ${LIMITS.description} characters` });
  } else if (CONTROL_EXCEPT_WHITESPACE.test(value)) {
    out.push({ field, description: "must not contain control characters other than tab and newline" });
  }
  return value;
};

/** Trimmed, lower-cased, de-duplicated, first occurrence kept. */
export function normaliseTags(raw: readonly string[], field: string, out: FieldViolation[]): string[] {
  const tags: string[] = [];
  raw.forEach((t, i) => {
    const tag = t.trim().toLowerCase();
    if (tag === "" || length(tag) > LIMITS.tag) {
      out.push({ field: `${field}[${i}]`, description: `must be 1 to ${LIMITS.tag} characters` });
    } else if (CONTROL.test(tag)) {
      out.push({ field: `${field}[${i}]`, description: "must not contain control characters" });
    } else if (!tags.includes(tag)) {
      tags.push(tag);
    }
  });
  if (tags.length > LIMITS.tags) out.push({ field, description: `must have at most ${LIMITS.tags} distinct tags` });
  return tags;
}

const labels: Check<Record<string, string>> = (value, field, out) => {
  const entries = Object.entries(value);
  if (entries.length > LIMITS.labels) out.push({ field, description: `must have at most ${LIMITS.labels} entries` });
  for (const [k, v] of entries.slice(0, LIMITS.labels + 1)) {
    if (!LABEL_KEY.test(k)) {
      out.push({ field: `${field}[${JSON.stringify(k.slice(0, 80))}]`, description: "key must match [a-z][a-z0-9_.-]{0,62}" });
    } else if (length(v) > LIMITS.labelValue) {
      out.push({ field: `${field}[${JSON.stringify(k)}]`, description: `value must be at most ${LIMITS.labelValue} characters` });
    } else if (NUL.test(v)) {
      out.push({ field: `${field}[${JSON.stringify(k)}]`, description: "value must not contain U+0000" });
    }
  }
  return value;
};

function visibility(value: Video_Visibility, field: string, out: FieldViolation[]): VisibilityColumn {
  if (value === Video_Visibility.UNSPECIFIED) return "private";
  const column = visibilityColumn(value);
  if (!column) out.push({ field, description: "must be VISIBILITY_PRIVATE, VISIBILITY_UNLISTED or VISIBILITY_PUBLIC" });
  return column ?? "private";
}

/**
 * Validates and normalises the mutable fields named in `fields` (all of them
 * for create and full replace). Output-only fields of `video` are ignored.
 */
export function videoFields(
  video: Video,
  fields: readonly MutableField[],
  prefix = "video",
): { value: Partial<VideoFields>; violations: FieldViolation[] } {
  const out: FieldViolation[] = [];
  const value: Partial<VideoFields> = {};
  const at = (f: string) => `${prefix}.${f}`;
  for (const f of fields) {
    switch (f) {
      case "title":
        value.title = title(video.title, at(f), out);
        break;
      case "description":
        value.description = description(video.description, at(f), out);
        break;
      case "tags":
        value.tags = normaliseTags(video.tags, at(f), out);
        break;
      case "labels":
        value.labels = labels(video.labels, at(f), out);
        break;
      case "visibility":
        value.visibility = visibility(video.visibility, at(f), out);
        break;
    }
  }
  return { value, violations: out };
}

/**
 * The fields of `value` that differ from what is stored. Labels are a map:
 * their order does not count (jsonb keeps its own); tags are a list: it does.
 */
export function changedFields(stored: Readonly<VideoFields>, value: Partial<VideoFields>): MutableField[] {
  const same = (f: MutableField) =>
    f === "labels"
      ? JSON.stringify(Object.entries(stored.labels).sort()) === JSON.stringify(Object.entries(value.labels!).sort())
      : JSON.stringify(stored[f]) === JSON.stringify(value[f]);
  return MUTABLE_FIELDS.filter((f) => value[f] !== undefined && !same(f));
}

const OUTPUT_ONLY = new Set(["id", "state", "owner_id", "source", "thumbnails", "etag", "create_time", "update_time"]);

/**
 * AIP-134: an empty mask or "*" means every mutable field; output-only paths
 * are ignored; anything else is an error naming the path.
 */
export function updateMaskFields(paths: readonly string[] | undefined): { fields: MutableField[]; violations: FieldViolation[] } {
  if (!paths || paths.length === 0 || (paths.length === 1 && paths[0] === "*")) {
    return { fields: [...MUTABLE_FIELDS], violations: [] };
  }
  const fields: MutableField[] = [];
  const violations: FieldViolation[] = [];
  for (const path of paths) {
    if ((MUTABLE_FIELDS as readonly string[]).includes(path)) {
      if (!fields.includes(path as MutableField)) fields.push(path as MutableField);
    } else if (!OUTPUT_ONLY.has(path)) {
      violations.push({ field: "update_mask", description: `unknown or immutable field path "${path.slice(0, 100)}"` });
    }
  }
  return { fields, violations };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/** A video id is a UUID; anything else can name no video. */
export function videoId(raw: string, field: string, out: FieldViolation[]): string {
  if (raw === "") out.push({ field, description: "is required" });
  else if (!isUuid(raw)) out.push({ field, description: "must be a video id (a UUID)" });
  return raw.toLowerCase();
}
