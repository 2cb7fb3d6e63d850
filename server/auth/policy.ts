import { Code, ConnectError } from "@connectrpc/connect";
import type { VisibilityColumn } from "../db/schema.js";
import type { Caller } from "./caller.js";

// Who may do what (pure). Roles: viewer reads what is public, unlisted by id,
// and its own; editor also creates, and changes only its own; admin does
// everything (audited when it is someone else's); service reads everything.

export type Role = "viewer" | "editor" | "admin" | "service";

const has = (c: Caller, role: Role) => c.roles.includes(role);

export const seesEverything = (c: Caller) => has(c, "admin") || has(c, "service");
const canRead = (c: Caller) => seesEverything(c) || has(c, "viewer") || has(c, "editor");

interface Owned {
  owner_id: string;
  visibility: VisibilityColumn;
}

const denied = (what: string) => new ConnectError(`the caller may not ${what}`, Code.PermissionDenied);

export function assertMayRead(c: Caller): void {
  if (!canRead(c)) throw denied("read videos");
}

/** Whether the video exists as far as the caller can tell (no existence leak). */
export function visible(c: Caller, video: Owned, byId: boolean): boolean {
  if (seesEverything(c) || video.owner_id === c.subject) return canRead(c);
  if (!canRead(c)) return false;
  return video.visibility === "public" || (byId && video.visibility === "unlisted");
}

export function assertMayCreate(c: Caller): void {
  if (!has(c, "editor") && !has(c, "admin")) throw denied("create videos");
}

/**
 * How the caller may change this video: as its owner, or as an admin acting on
 * someone else's (which is audited). A video it cannot see reads as absent.
 */
export function writeAccess(c: Caller, video: Owned, id: string): "owner" | "admin" {
  if (has(c, "admin")) return video.owner_id === c.subject ? "owner" : "admin";
  if (has(c, "editor") && video.owner_id === c.subject) return "owner";
  if (!visible(c, video, true)) throw new ConnectError(`video ${id} not found`, Code.NotFound);
  throw denied(`change video ${id}`);
}

export function assertMayReadEvents(c: Caller): void {
  if (!seesEverything(c)) throw denied("read the event history");
}

export function assertMayReadAudit(c: Caller): void {
  if (!has(c, "admin")) throw denied("read the audit log");
}

/** Processing reports come from the transcoding service only. */
export function assertMayReportProcessing(c: Caller): void {
  if (!has(c, "service")) throw denied("report processing states (role service)");
}
