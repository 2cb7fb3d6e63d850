import type { HandlerContext } from "@connectrpc/connect";
import type { Transaction } from "kysely";
import { callerOf } from "../auth/caller.js";
import { writeAccess } from "../auth/policy.js";
import type { Database } from "../db/schema.js";
import { notFound } from "../errors.js";
import { videos, type VideoRow } from "../videos/repository.js";

/** The video, locked, when the caller may change it (owner or admin); NOT_FOUND when it cannot see it. */
export async function videoToChange(trx: Transaction<Database>, hc: HandlerContext, id: string): Promise<VideoRow> {
  const current = await videos.findForUpdate(trx, id);
  if (!current) throw notFound(`video ${id}`);
  writeAccess(callerOf(hc), current, id);
  return current;
}
