import { createHash } from "node:crypto";
import pg from "pg";

// Kysely's PostgreSQL driver sends every query unnamed, so PostgreSQL plans it
// again on each call. Naming each statement by a hash of its SQL makes `pg`
// prepare it once per pooled connection and reuse it afterwards (pg keeps the
// names it has prepared per connection). Kysely and Pool#query pass a values array;
// a bare string (the migration runner's scripts) keeps the simple protocol,
// which is what multi-statement SQL needs.
const names = new Map<string, string>();

export function statementName(text: string): string {
  let name = names.get(text);
  if (name === undefined) {
    name = "k_" + createHash("sha1").update(text).digest("base64url").slice(0, 20);
    if (names.size < 10_000) names.set(text, name);
  }
  return name;
}

export class NamedStatementClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    // A connection that dies while its client is checked out but between
    // queries — the relay's transaction waiting for the bus's acks, say —
    // emits 'error' on the client, and the pool listens only to idle ones:
    // unheard, that error ended the process when the database crashed. The
    // client is already marked unusable by then: its next query fails (the
    // caller gets UNAVAILABLE) and the pool discards it on release.
    this.on("error", () => {});
  }

  // pg's overloads are not worth restating; the call is forwarded unchanged
  // except for the added name.
  override query(...args: any[]): any {
    const [text, values, callback] = args;
    // (text, values) from Kysely; (text, values, callback) from pg.Pool#query.
    if (typeof text === "string" && Array.isArray(values) && (args.length === 2 || (args.length === 3 && typeof callback === "function"))) {
      return (super.query as (...a: any[]) => any)({ name: statementName(text), text, values }, ...args.slice(2));
    }
    return (super.query as (...a: any[]) => any)(...args);
  }
}
