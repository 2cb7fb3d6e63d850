import { createHash } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ListVideosRequest } from "../../gen/video/v1/video_service_pb.js";
import { Video_State, Video_Visibility } from "../../gen/video/v1/video_pb.js";
import type { VideoStateColumn, VisibilityColumn } from "../db/schema.js";
import type { FieldViolation } from "../errors.js";
import { stateColumn, visibilityColumn } from "./enums.js";
import { isUuid, normaliseTags } from "./rules.js";

// ListVideos request → a validated query, and the opaque keyset page token
// (AIP-158). The token carries the last row's sort key and a fingerprint of
// the filters and order it was issued for, so it cannot be replayed against a
// different query.

export const PAGE_SIZE = { default: 50, max: 1000 };
// A page also stops short of this many bytes (binary protobuf), so it fits
// the 4 MiB receive limit gRPC clients have by default (1,000 videos with
// long descriptions and labels run to tens of MB). AIP-158: a page may hold
// fewer than page_size results; next_page_token continues after the last one.
export const MAX_PAGE_BYTES = 3 * 1024 * 1024;

/**
 * At least as many bytes as the row takes in a protobuf message: every
 * string at 3 bytes a UTF-16 unit (UTF-8's worst case), framing and scalars
 * at their largest. Generic over the row's shape, so a new column is counted
 * without a change here; cheap enough for every page, where encoding each
 * video to measure it would cost more than encoding the page.
 */
export function bytesAtMost(value: unknown): number {
  if (typeof value === "string") return 3 * value.length + 6;
  if (typeof value !== "object" || value === null) return 11;
  if (value instanceof Date) return 24;
  let n = 6;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) n += bytesAtMost(value[i]);
  } else {
    const o = value as Record<string, unknown>;
    for (const k in o) n += 3 * k.length + 6 + bytesAtMost(o[k]);
  }
  return n;
}

/**
 * How many of the results, in order, make a page: as many as fit in
 * maxBytes, at least one (a single result never exceeds it).
 */
export function pageLength(sizes: readonly number[], maxBytes: number): number {
  let total = 0;
  for (let i = 0; i < sizes.length; i++) {
    total += sizes[i];
    if (total > maxBytes) return Math.max(i, 1);
  }
  return sizes.length;
}

export type SortColumn = "create_time" | "update_time" | "title";
export interface Order {
  column: SortColumn;
  desc: boolean;
}

export interface Filters {
  state?: VideoStateColumn;
  visibility?: VisibilityColumn;
  ownerId?: string;
  tags: string[];
  labels: Record<string, string>;
  createTimeAfter?: Date;
  createTimeBefore?: Date;
  q?: string;
}

export interface Cursor {
  // ISO-8601 for the time columns, the title itself for "title".
  value: string;
  id: string;
}

export interface ListQuery {
  pageSize: number;
  order: Order;
  filters: Filters;
  after?: Cursor;
  fingerprint: string;
}

// google.protobuf.Timestamp's range; PostgreSQL (and JavaScript) can hold every
// instant in it, so nothing outside it may reach a query.
const MIN_TIME = Date.parse("0001-01-01T00:00:00.000Z");
const MAX_TIME = Date.parse("9999-12-31T23:59:59.999Z");
const inTimestampRange = (ms: number) => ms >= MIN_TIME && ms <= MAX_TIME;

// Long enough for every token the server issues (a title cursor of 200
// four-byte characters encodes to ~1.2 KiB), short enough to bound the work.
const MAX_TOKEN_LENGTH = 2048;

const ORDER = /^(create_time|update_time|title)(?:\s+(asc|desc))?$/;

export function parseOrderBy(raw: string, out: FieldViolation[]): Order {
  const normalised = raw.trim().toLowerCase().replace(/\s+/g, " ");
  if (normalised === "") return { column: "create_time", desc: true };
  const m = ORDER.exec(normalised);
  if (!m) {
    out.push({
      field: "order_by",
      description: 'must be one of "create_time desc", "create_time", "update_time desc", "update_time", "title"',
    });
    return { column: "create_time", desc: true };
  }
  return { column: m[1] as SortColumn, desc: m[2] === "desc" };
}

function parseFilters(req: ListVideosRequest, out: FieldViolation[]): Filters {
  const filters: Filters = { tags: [], labels: {} };
  if (req.state !== Video_State.UNSPECIFIED) {
    filters.state = stateColumn(req.state);
    if (!filters.state) out.push({ field: "state", description: "is not a known state" });
  }
  if (req.visibility !== Video_Visibility.UNSPECIFIED) {
    filters.visibility = visibilityColumn(req.visibility);
    if (!filters.visibility) out.push({ field: "visibility", description: "is not a known visibility" });
  }
  if (req.ownerId !== "") {
    if (req.ownerId.length > 256 || req.ownerId.includes("\u0000")) out.push({ field: "owner_id", description: "is not a valid owner id" });
    else filters.ownerId = req.ownerId;
  }
  filters.tags = normaliseTags(req.tags, "tags", out);
  req.labels.forEach((pair, i) => {
    const eq = pair.indexOf("=");
    const key = eq < 0 ? "" : pair.slice(0, eq);
    const value = eq < 0 ? "" : pair.slice(eq + 1);
    // Characters, not UTF-16 units: the same measure as a stored label value (rules.ts).
    if (!/^[a-z][a-z0-9_.-]{0,62}$/.test(key) || [...value].length > 256 || value.includes("\u0000")) {
      out.push({ field: `labels[${i}]`, description: 'must be "key=value" with a valid label key and value' });
    } else if (key in filters.labels && filters.labels[key] !== value) {
      // A video holds one value per key: env=a AND env=b can match nothing.
      out.push({ field: `labels[${i}]`, description: `key "${key}" is already given with another value` });
    } else {
      filters.labels[key] = value;
    }
  });
  for (const [field, ts] of [["create_time_after", req.createTimeAfter], ["create_time_before", req.createTimeBefore]] as const) {
    if (!ts) continue;
    const d = timestampDate(ts);
    if (!inTimestampRange(d.getTime())) {
      out.push({ field, description: "must be a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z" });
    } else if (field === "create_time_after") {
      filters.createTimeAfter = d;
    } else {
      filters.createTimeBefore = d;
    }
  }
  if (req.q !== "") {
    if ([...req.q].length > 200 || /[\u0000-\u001f]/.test(req.q)) out.push({ field: "q", description: "must be at most 200 characters without control characters" });
    else filters.q = req.q;
  }
  return filters;
}

function fingerprintOf(order: Order, filters: Filters): string {
  const canonical = JSON.stringify([
    order.column,
    order.desc,
    filters.state ?? null,
    filters.visibility ?? null,
    filters.ownerId ?? null,
    [...filters.tags].sort(),
    Object.entries(filters.labels).sort(([a], [b]) => (a < b ? -1 : 1)),
    filters.createTimeAfter?.toISOString() ?? null,
    filters.createTimeBefore?.toISOString() ?? null,
    filters.q ?? null,
  ]);
  return createHash("sha256").update(canonical).digest("base64url").slice(0, 16);
}

export const pageToken = {
  encode(fingerprint: string, cursor: Cursor): string {
    return Buffer.from(JSON.stringify({ f: fingerprint, v: cursor.value, i: cursor.id })).toString("base64url");
  },

  /** Returns the cursor, or a description of why the token is unusable. */
  decode(token: string, fingerprint: string, order: Order): Cursor | string {
    if (token.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) return "is not a valid page token";
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    } catch {
      return "is not a valid page token";
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || Object.keys(parsed).length !== 3) {
      return "is not a valid page token";
    }
    const { f, v, i } = parsed as Record<string, unknown>;
    if (typeof f !== "string" || typeof v !== "string" || typeof i !== "string" || !isUuid(i)) {
      return "is not a valid page token";
    }
    if (f !== fingerprint) return "was issued for different filters or order_by";
    // The value becomes a query parameter: only what the server could have issued.
    if (order.column === "title" ? v.includes("\u0000") : !inTimestampRange(Date.parse(v))) return "is not a valid page token";
    return { value: v, id: i };
  },
};

export function listQuery(req: ListVideosRequest): { query: ListQuery; violations: FieldViolation[] } {
  const out: FieldViolation[] = [];
  if (req.pageSize < 0) out.push({ field: "page_size", description: "must not be negative" });
  const pageSize = req.pageSize <= 0 ? PAGE_SIZE.default : Math.min(req.pageSize, PAGE_SIZE.max);
  const order = parseOrderBy(req.orderBy, out);
  const filters = parseFilters(req, out);
  const fingerprint = fingerprintOf(order, filters);
  const query: ListQuery = { pageSize, order, filters, fingerprint };
  if (req.pageToken !== "") {
    const cursor = pageToken.decode(req.pageToken, fingerprint, order);
    if (typeof cursor === "string") out.push({ field: "page_token", description: cursor });
    else query.after = cursor;
  }
  return { query, violations: out };
}
