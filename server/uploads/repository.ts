import type { Insertable, Kysely, Transaction } from "kysely";
import type { Database, UploadsTable } from "../db/schema.js";
import { isUuid } from "../videos/rules.js";

type Db = Kysely<Database> | Transaction<Database>;

export const uploadColumns = [
  "id",
  "video_id",
  "state",
  "kind",
  "object_key",
  "store_upload_id",
  "content_type",
  "size_bytes",
  "part_size",
  "checksum_sha256",
  "request_id",
  "owner_id",
  "expire_time",
  "create_time",
] as const;

export const uploads = {
  find(db: Db, videoId: string, uploadId: string) {
    return db.selectFrom("uploads").select(uploadColumns).where("id", "=", uploadId).where("video_id", "=", videoId).executeTakeFirst();
  },

  findForUpdate(trx: Transaction<Database>, videoId: string, uploadId: string) {
    return trx.selectFrom("uploads").select(uploadColumns).where("id", "=", uploadId).where("video_id", "=", videoId).forUpdate().executeTakeFirst();
  },

  findByRequest(db: Db, videoId: string, requestId: string) {
    return db.selectFrom("uploads").select(uploadColumns).where("video_id", "=", videoId).where("request_id", "=", requestId).executeTakeFirst();
  },

  insert(trx: Transaction<Database>, row: Insertable<UploadsTable>) {
    return trx.insertInto("uploads").values(row).execute();
  },

  setState(trx: Transaction<Database>, id: string, state: UploadsTable["state"], now: Date) {
    return trx.updateTable("uploads").set({ state, update_time: now }).where("id", "=", id).execute();
  },

  ofVideo(trx: Transaction<Database>, videoId: string) {
    return trx.selectFrom("uploads").select(["id", "state", "kind", "object_key", "store_upload_id", "expire_time"]).where("video_id", "=", videoId).execute();
  },

  /** True while an open, unexpired session uploads to key (its id is the key's last segment, see keys.ts). */
  async openAt(db: Db, key: string, now: Date): Promise<boolean> {
    const id = key.slice(key.lastIndexOf("/") + 1);
    if (!isUuid(id)) return false;
    const row = await db
      .selectFrom("uploads")
      .select("id")
      .where("id", "=", id)
      .where("object_key", "=", key)
      .where("state", "=", "open")
      .where("expire_time", ">", now)
      .executeTakeFirst();
    return row !== undefined;
  },
};

export type UploadRow = NonNullable<Awaited<ReturnType<typeof uploads.find>>>;
