import t from "tap";
import { querySummary } from "../../server/telemetry/query-summary.js";

// The operation label of db_query_duration_seconds: bounded (verb and table),
// from parameterised SQL, and naming a CTE-wrapped write by what it changes.

t.test("a statement is summarised as its operation and the table it is about", async (t) => {
  t.equal(querySummary('select "id", "title" from "videos" where "id" = $1'), "SELECT videos");
  t.equal(querySummary('insert into "videos" ("id") values ($1) on conflict do update set "title" = $2'), "INSERT videos");
  t.equal(querySummary('update "upload_sessions" set "state" = $1 where "id" = $2'), "UPDATE upload_sessions");
  t.equal(querySummary('delete from "videos" where "id" = $1'), "DELETE videos");
  t.equal(querySummary("begin"), "BEGIN");
  t.equal(querySummary("select 1"), "SELECT", "no table: the verb alone");
  t.equal(querySummary("select pg_advisory_xact_lock($1)"), "SELECT");
  t.equal(querySummary('select count(*) as "n" from "outbox_pending"'), "SELECT outbox_pending");
});

t.test("function calls and subqueries after FROM are not tables; a CTE's write names it", async (t) => {
  t.equal(querySummary("select o.id from unnest($1::uuid[]) with ordinality as l(id) cross join lateral (select p.id from outbox_pending p) e join outbox o on o.id = e.id"), "SELECT outbox_pending");
  t.equal(querySummary("with drawn as (select 1), marked as (delete from outbox_pending p using unnest($1::bigint[]) as u(id) returning p.id) insert into outbox_published select 1 from marked"), "DELETE outbox_pending");
  t.equal(querySummary("with h as (select video_id from outbox_pending) select * from h for update"), "SELECT outbox_pending", "FOR UPDATE is no write");
});
