import { create } from "@bufbuild/protobuf";
import { fileURLToPath } from "node:url";
import {
  DummyDriver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type CompiledQuery,
} from "kysely";
import pg from "pg";
import t from "tap";
import { ListVideosRequestSchema } from "../../gen/video/v1/video_service_pb.js";
import { Video_State, Video_Visibility } from "../../gen/video/v1/video_pb.js";
import { openPostgres } from "../../server/db/database.js";
import { migrate } from "../../server/db/migrate.js";
import type { Database } from "../../server/db/schema.js";
import { listQuery, pageToken, type ListQuery } from "../../server/videos/list-query.js";
import { videos } from "../../server/videos/repository.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";

// The indexes of migrations/V1 serve the queries videos.list actually builds:
// 20k rows, VACUUM ANALYZE, then EXPLAIN (FORMAT JSON) of the SQL the repository
// produces (captured from Kysely, run with its parameters, so the planner sees
// the values as it does for a custom plan). Keyset pages must walk an index in
// order (no Sort node) so that page N costs about what page 1 costs.

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
type Init = Parameters<typeof create<typeof ListVideosRequestSchema>>[1];

const ROWS = 20_000;
const migrations = fileURLToPath(new URL("../../migrations/", import.meta.url));

// Distributions: owner-N 1% each, tag tN 0.5% each (plus "common" everywhere),
// label batch=bN 0.2% each, "zebracorn" in 0.25% of titles, state failed 0.2%.
const SEED = `
insert into videos (id, title, description, tags, labels, visibility, state, owner_id, etag, create_time, update_time)
select
  md5('video-' || g)::uuid,
  (array['Cat', 'Dog', 'Surfing', 'Cooking', 'Travel', 'Music', 'Gaming', 'News'])[1 + g % 8]
    || ' video number ' || g || case when g % 400 = 0 then ' zebracorn' else '' end,
  'description ' || g,
  array['t' || (g % 200), 'common'],
  jsonb_build_object('env', case when g % 2 = 0 then 'prod' else 'dev' end, 'batch', 'b' || (g % 500)),
  (array['private', 'unlisted', 'public'])[1 + g % 3],
  case when g % 500 = 0 then 'failed' else 'ready' end,
  'owner-' || (g % 100),
  md5('etag-' || g),
  timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' + (g % 7) * interval '1 millisecond',
  timestamptz '2024-01-01 00:00:00+00' + ((g * 7919) % ${ROWS}) * interval '1 minute'
from generate_series(1, ${ROWS}) g`;

interface PlanNode {
  "Node Type": string;
  "Index Name"?: string;
  "Relation Name"?: string;
  "Index Cond"?: string;
  Plans?: PlanNode[];
}

const flatten = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(flatten)];
const describe = (nodes: PlanNode[]) => nodes.map((n) => n["Node Type"] + (n["Index Name"] ? ` on ${n["Index Name"]}` : "")).join(" → ");

// Kysely that compiles but never executes: captures what videos.list sends.
function capturingKysely() {
  const captured: CompiledQuery[] = [];
  const db = new Kysely<Database>({
    dialect: {
      createAdapter: () => new PostgresAdapter(),
      createDriver: () => new DummyDriver(),
      createIntrospector: (k) => new PostgresIntrospector(k),
      createQueryCompiler: () => new PostgresQueryCompiler(),
    },
    log: (event) => {
      if (event.level === "query") captured.push(event.query);
    },
  });
  return { db, captured };
}

async function setUp(t: TestContext) {
  const url = await createTestDatabase(t);
  const handle = openPostgres({ url, poolMax: 1 });
  t.teardown(() => handle.close());
  await migrate(handle, { dir: migrations });
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.teardown(() => client.end());
  await client.query(SEED);
  // VACUUM as autovacuum would after a bulk load: until then the GIN indexes
  // (fastupdate) keep the new entries in their pending list, which the planner
  // prices as a full scan of that list, and it picks a Seq Scan for q.
  await client.query("VACUUM ANALYZE videos");
  return client;
}

t.test("the list queries use the indexes of V1", { skip: postgresSkipReason() }, async (t) => {
  const client = await setUp(t);
  const { rows: count } = await client.query<{ n: string }>("select count(*) as n from videos");
  t.equal(Number(count[0].n), ROWS, `${ROWS} videos`);

  const { db: capture, captured } = capturingKysely();

  /** The SQL and parameters videos.list sends for this request (with a page token when `deep`). */
  async function listSql(init: Init, deepRow?: number): Promise<CompiledQuery> {
    let { query, violations } = listQuery(create(ListVideosRequestSchema, init));
    t.same(violations, [], "a valid request");
    if (deepRow !== undefined) query = await deepPage(init, query, deepRow);
    captured.length = 0;
    await videos.list(capture, query);
    t.equal(captured.length, 1, "videos.list sends one query");
    return captured[0];
  }

  // A page token pointing at the row `offset` places into the ordered result,
  // as the server would have issued it at the end of an earlier page.
  async function deepPage(init: Init, query: ListQuery, offset: number): Promise<ListQuery> {
    const { column, desc } = query.order;
    const dir = desc ? "desc" : "asc";
    const { rows } = await client.query(`select ${column} as value, id from videos order by ${column} ${dir}, id ${dir} offset $1 limit 1`, [offset]);
    const value = rows[0].value instanceof Date ? rows[0].value.toISOString() : String(rows[0].value);
    const token = pageToken.encode(query.fingerprint, { value, id: rows[0].id });
    const next = listQuery(create(ListVideosRequestSchema, { ...init, pageToken: token }));
    t.same(next.violations, [], "the page token is accepted");
    t.ok(next.query.after, "the query continues after a cursor");
    return next.query;
  }

  async function explain(q: CompiledQuery): Promise<PlanNode[]> {
    const { rows } = await client.query(`explain (format json) ${q.sql}`, q.parameters as unknown[]);
    const plan = (rows[0]["QUERY PLAN"] as { Plan: PlanNode }[])[0].Plan;
    return flatten(plan);
  }

  async function expectIndex(
    t: TestContext,
    what: string,
    init: Init,
    index: string,
    opts: { deepRow?: number; noSort?: boolean } = {},
  ) {
    const q = await listSql(init, opts.deepRow);
    const nodes = await explain(q);
    const plan = describe(nodes);
    t.ok(nodes.some((n) => n["Index Name"] === index), `${what}: uses ${index} (plan: ${plan})`);
    t.notOk(nodes.some((n) => n["Node Type"] === "Seq Scan"), `${what}: no sequential scan`);
    if (opts.noSort) t.notOk(nodes.some((n) => /Sort/.test(n["Node Type"])), `${what}: rows come in index order, no Sort node`);
    // The query really answers, with these parameters, within the page size.
    const { rows } = await client.query(q.sql, q.parameters as unknown[]);
    t.ok(rows.length > 0 && rows.length <= 51, `${what}: returns a page (${rows.length} rows)`);
    return q;
  }

  t.test("default order (create_time desc): first and deep page walk videos_create_time_id", async (t) => {
    const first = await expectIndex(t, "page 1", {}, "videos_create_time_id", { noSort: true });
    const deep = await expectIndex(t, "page 300", {}, "videos_create_time_id", { deepRow: 15_000, noSort: true });
    t.match(deep.sql, /\(\"create_time\", \"id\"\) < \(\$\d+, \$\d+\)/, "keyset: a row comparison, never OFFSET");
    t.notMatch(deep.sql, /offset/i);
    const deepPlan = await explain(deep);
    const scan = deepPlan.find((n) => n["Index Name"] === "videos_create_time_id");
    t.match(scan?.["Index Cond"], /ROW\(create_time, id\) < ROW\(/, "the cursor is an index condition: the scan starts at the cursor");
    // Measured, not estimated: buffers touched by each page.
    const blocks = async (q: CompiledQuery) => {
      const { rows } = await client.query(`explain (analyze, buffers, format json) ${q.sql}`, q.parameters as unknown[]);
      const top = (rows[0]["QUERY PLAN"] as { Plan: PlanNode & { "Shared Hit Blocks": number; "Shared Read Blocks": number } }[])[0].Plan;
      return top["Shared Hit Blocks"] + top["Shared Read Blocks"];
    };
    const [b1, b300] = [await blocks(first), await blocks(deep)];
    t.ok(b300 <= 2 * b1 + 5, `page 300 touches about as many buffers as page 1 (${b300} vs ${b1})`);
  });

  t.test("create_time ascending, deep page", async (t) => {
    await expectIndex(t, "create_time asc", { orderBy: "create_time" }, "videos_create_time_id", { deepRow: 15_000, noSort: true });
  });

  t.test("update_time desc, deep page: videos_update_time_id", async (t) => {
    await expectIndex(t, "update_time desc", { orderBy: "update_time desc" }, "videos_update_time_id", { deepRow: 15_000, noSort: true });
  });

  t.test("title order: videos_title_id, first and deep page", async (t) => {
    await expectIndex(t, "title page 1", { orderBy: "title" }, "videos_title_id", { noSort: true });
    await expectIndex(t, "title deep page", { orderBy: "title" }, "videos_title_id", { deepRow: 15_000, noSort: true });
  });

  t.test("owner_id filter: videos_owner_create_time, in order", async (t) => {
    await expectIndex(t, "owner_id", { ownerId: "owner-7" }, "videos_owner_create_time", { noSort: true });
  });

  t.test("owner_id filter, next page", async (t) => {
    // Cursor inside owner-7's rows: every 100th row belongs to owner-7 (g % 100 = 7).
    const init: Init = { ownerId: "owner-7" };
    const { query } = listQuery(create(ListVideosRequestSchema, init));
    const { rows } = await client.query("select create_time, id from videos where owner_id = 'owner-7' order by create_time desc, id desc offset 100 limit 1");
    const token = pageToken.encode(query.fingerprint, { value: rows[0].create_time.toISOString(), id: rows[0].id });
    await expectIndex(t, "owner_id page 3", { ...init, pageToken: token }, "videos_owner_create_time", { noSort: true });
  });

  t.test("state filter (selective): videos_state_create_time", async (t) => {
    await expectIndex(t, "state=failed", { state: Video_State.FAILED }, "videos_state_create_time", { noSort: true });
  });

  t.test("visibility filter (a third of the rows): an index in order, no Sort", async (t) => {
    // Not selective, so walking videos_create_time_id and filtering is as good as
    // videos_visibility_create_time; either way no row is sorted.
    const q = await listSql({ visibility: Video_Visibility.PUBLIC }, 15_000);
    const nodes = await explain(q);
    t.ok(nodes.some((n) => n["Index Name"] === "videos_visibility_create_time" || n["Index Name"] === "videos_create_time_id"), `plan: ${describe(nodes)}`);
    t.notOk(nodes.some((n) => /Sort|Seq Scan/.test(n["Node Type"])), "no Sort, no Seq Scan");
  });

  t.test("tags filter: the GIN index videos_tags", async (t) => {
    const q = await expectIndex(t, "tags=t7", { tags: ["t7"] }, "videos_tags");
    t.match(q.sql, /"tags" @> \$\d+::text\[\]/, "containment, which GIN serves");
    await expectIndex(t, "tags=t7,common", { tags: ["t7", "common"] }, "videos_tags");
  });

  t.test("labels filter: the GIN index videos_labels", async (t) => {
    const q = await expectIndex(t, "labels batch=b7", { labels: ["batch=b7"] }, "videos_labels");
    t.match(q.sql, /"labels" @> \$\d+::jsonb/, "containment, which jsonb_path_ops serves");
    await expectIndex(t, "labels batch=b7,env=dev", { labels: ["batch=b7", "env=dev"] }, "videos_labels");
  });

  t.test("q (selective title substring): the trigram index videos_title_trgm", async (t) => {
    const q = await expectIndex(t, "q=zebracorn", { q: "zebracorn" }, "videos_title_trgm");
    t.match(q.sql, /"title" ilike \$\d+/, "ILIKE, which gin_trgm_ops serves");
    await expectIndex(t, "q=ZebraCorn (case-insensitive)", { q: "ZebraCorn" }, "videos_title_trgm");
    // Not selective: walking the create_time index and filtering finds a page fastest.
    await expectIndex(t, "q=dog video", { q: "dog video" }, "videos_create_time_id", { noSort: true });
  });

  t.test("combined filters still use an index", async (t) => {
    const q = await listSql({ ownerId: "owner-0", tags: ["t0"], q: "zebracorn" });
    const nodes = await explain(q);
    t.ok(nodes.some((n) => n["Index Name"] && /^videos_/.test(n["Index Name"])), `an index is used (plan: ${describe(nodes)})`);
    t.notOk(nodes.some((n) => n["Node Type"] === "Seq Scan"), "no sequential scan");
  });
});
