import { sql, type Insertable, type Kysely, type Selectable, type Transaction, type Updateable } from "kysely";
import type { Database, VideosTable } from "../db/schema.js";
import type { Cursor, ListQuery } from "./list-query.js";

// Every query on videos, as Kysely chains. One projection for every read so
// responses never depend on which query produced the row.

type Db = Kysely<Database> | Transaction<Database>;

export const videoColumns = [
  "id",
  "title",
  "description",
  "tags",
  "labels",
  "visibility",
  "state",
  "owner_id",
  "source",
  "etag",
  "create_time",
  "update_time",
  "event_sequence",
  "thumbnails",
  "default_thumbnail_id",
  "failure_reason",
] as const satisfies readonly (keyof VideosTable)[];

export type VideoRow = Pick<Selectable<VideosTable>, (typeof videoColumns)[number]>;

export const videos = {
  find(db: Db, id: string) {
    return db.selectFrom("videos").select(videoColumns).where("id", "=", id).executeTakeFirst();
  },

  /** The row, locked until the transaction ends, so a check-then-write cannot race. */
  findForUpdate(trx: Transaction<Database>, id: string) {
    return trx.selectFrom("videos").select(videoColumns).where("id", "=", id).forUpdate().executeTakeFirst();
  },

  insert(trx: Transaction<Database>, row: Insertable<VideosTable>) {
    return trx.insertInto("videos").values(row).returning(videoColumns).executeTakeFirstOrThrow();
  },

  update(trx: Transaction<Database>, id: string, changes: Updateable<VideosTable>) {
    return trx.updateTable("videos").set(changes).where("id", "=", id).returning(videoColumns).executeTakeFirstOrThrow();
  },

  remove(trx: Transaction<Database>, id: string) {
    return trx.deleteFrom("videos").where("id", "=", id).executeTakeFirst();
  },

  /** One page plus one row, which tells whether another page exists. */
  list(db: Db, query: ListQuery, visibleTo?: string) {
    const { filters: f, order } = query;
    let q = db.selectFrom("videos").select(videoColumns);
    if (visibleTo !== undefined) q = q.where((eb) => eb.or([eb("visibility", "=", "public"), eb("owner_id", "=", visibleTo)]));
    if (f.state) q = q.where("state", "=", f.state);
    if (f.visibility) q = q.where("visibility", "=", f.visibility);
    if (f.ownerId) q = q.where("owner_id", "=", f.ownerId);
    // Containment operators are what the GIN indexes on tags and labels serve.
    if (f.tags.length > 0) q = q.where("tags", "@>", sql<string[]>`${f.tags}::text[]`);
    if (Object.keys(f.labels).length > 0) q = q.where("labels", "@>", sql<Record<string, string>>`${JSON.stringify(f.labels)}::jsonb`);
    if (f.createTimeAfter) q = q.where("create_time", ">", f.createTimeAfter);
    if (f.createTimeBefore) q = q.where("create_time", "<", f.createTimeBefore);
    if (f.q) q = q.where("title", "ilike", `%${escapeLike(f.q)}%`);
    if (query.after) q = q.where((eb) => eb(eb.refTuple(order.column, "id"), order.desc ? "<" : ">", eb.tuple(...cursorValues(query, query.after!))));
    const direction = order.desc ? "desc" : "asc";
    return q.orderBy(order.column, direction).orderBy("id", direction).limit(query.pageSize + 1).execute();
  },
};

function cursorValues(query: ListQuery, cursor: Cursor): [any, string] {
  return [query.order.column === "title" ? cursor.value : new Date(cursor.value), cursor.id];
}

export function cursorOf(query: ListQuery, row: VideoRow): Cursor {
  const value = row[query.order.column];
  return { value: value instanceof Date ? value.toISOString() : String(value), id: row.id };
}

// ILIKE treats % and _ as wildcards and \ as their escape; a caller's q is a literal.
const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => "\\" + c);

export const createRequests = {
  /** Claims a request id; undefined when it was claimed before (or concurrently, once that commits). */
  claim(trx: Transaction<Database>, row: Insertable<Database["video_create_requests"]>) {
    return trx
      .insertInto("video_create_requests")
      .values(row)
      .onConflict((oc) => oc.column("request_id").doNothing())
      .returning("request_id")
      .executeTakeFirst();
  },

  find(trx: Transaction<Database>, requestId: string) {
    return trx
      .selectFrom("video_create_requests")
      .select(["owner_id", "fingerprint", "video_id"])
      .where("request_id", "=", requestId)
      .executeTakeFirstOrThrow();
  },
};
