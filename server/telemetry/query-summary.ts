// A low-cardinality name for a SQL statement, from its parameterised text:
// the operation and the table it is about ("SELECT videos", "INSERT outbox",
// "DELETE outbox_pending"), OpenTelemetry's `db.query.summary`. Values never
// appear: Kysely's SQL carries them as $n placeholders. It labels the
// database latency histogram, so it must stay bounded: verbs times tables.

// The first table a statement writes ("insert into x", "update x", "delete from x"),
// which names a CTE-wrapped write by what it changes ("for update" and
// "on conflict do update" are not writes of their own).
const WRITE = /(?<!\b(?:for|do|key)\s+)\b(insert\s+into|update|delete\s+from)\s+"?([a-z_][a-z0-9_]*)"?(?!\s*\()/i;
// The first table read: "from x" / "join x", not "from unnest(…)" or "from (subquery)".
const READ = /\b(?:from|join)\s+"?([a-z_][a-z0-9_]*)"?(?!\s*\()(?=\s|$|,|\))/gi;
const VERB = /^\s*([a-z]+)/i;

export function querySummary(sql: string): string {
  const verb = VERB.exec(sql)?.[1]?.toUpperCase() ?? "QUERY";
  if (verb === "BEGIN" || verb === "COMMIT" || verb === "ROLLBACK" || verb === "SAVEPOINT" || verb === "RELEASE" || verb === "SET") return verb;
  const write = WRITE.exec(sql);
  if (write && (verb === "WITH" || verb !== "SELECT")) return `${write[1].split(/\s+/)[0].toUpperCase()} ${write[2].toLowerCase()}`;
  for (const m of sql.matchAll(READ)) {
    const table = m[1].toLowerCase();
    if (!KEYWORDS.has(table)) return `${verb === "WITH" ? "SELECT" : verb} ${table}`;
  }
  return verb === "WITH" ? "SELECT" : verb;
}

// Words that can follow FROM or JOIN without naming a table.
const KEYWORDS = new Set(["lateral", "only", "select"]);
