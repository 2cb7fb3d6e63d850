import type { HandlerContext } from "@connectrpc/connect";
import type { Transaction } from "kysely";
import { v7 as uuidv7 } from "uuid";
import type winston from "winston";
import { callerOf } from "../auth/caller.js";
import type { Database } from "../db/schema.js";
import { requestInfoKey } from "../transport/interceptors.js";

// Admin actions on other callers' videos: one append-only row in the same
// transaction as the change, and — once that commits — the same record as a
// log line on the "audit" channel for ELK.

export type Changes = Record<string, { before: unknown; after: unknown }>;

export interface AuditEntry {
  event_id: string;
  actor: string;
  actor_roles: string[];
  action: string;
  video_id: string;
  changes: Changes;
  request_id: string;
  trace_id: string;
  create_time: Date;
}

export async function recordAdminAction(
  trx: Transaction<Database>,
  hc: HandlerContext,
  videoId: string,
  changes: Changes,
  time: Date,
): Promise<AuditEntry> {
  const caller = callerOf(hc);
  const info = hc.values.get(requestInfoKey);
  const entry: AuditEntry = {
    event_id: uuidv7(),
    actor: caller.subject,
    actor_roles: [...caller.roles],
    action: `${hc.service.typeName}/${hc.method.name}`,
    video_id: videoId,
    changes,
    request_id: info.requestId,
    trace_id: info.traceId,
    create_time: time,
  };
  await trx.insertInto("audit_events").values({ ...entry, changes: JSON.stringify(changes) }).execute();
  return entry;
}

export function logAudit(logger: winston.Logger, entry: AuditEntry | undefined): void {
  if (entry) logger.info("audit", { channel: "audit", ...entry, create_time: entry.create_time.toISOString() });
}

/** before/after of each field that differs. */
export function diff(before: Record<string, unknown>, after: Record<string, unknown>, fields: readonly string[]): Changes {
  const changes: Changes = {};
  for (const f of fields) {
    if (JSON.stringify(before[f]) !== JSON.stringify(after[f])) changes[f] = { before: before[f], after: after[f] };
  }
  return changes;
}
