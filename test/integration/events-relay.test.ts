import pg from "pg";
import t from "tap";
import { openPostgres } from "../../server/db/database.js";
import { migrate } from "../../server/db/migrate.js";
import { LogPublisher } from "../../server/events/publishers.js";
import { OutboxRelay } from "../../server/events/relay.js";
import { createLogger } from "../../server/logger.js";
import { createMetrics } from "../../server/metrics.js";
import { createTestDatabase, postgresSkipReason } from "../support/postgres.js";
import { poll } from "../support/pubsub.js";

// The relay's own life cycle, in process, on real PostgreSQL.

const skip = postgresSkipReason();

t.test("stop() right after start() closes the LISTEN connection (none is left holding the process)", { skip }, async (t) => {
  const url = await createTestDatabase(t);
  const database = openPostgres({ url, poolMax: 2 });
  t.teardown(() => database.close());
  await migrate(database, { dir: new URL("../../migrations", import.meta.url).pathname });
  const name = new URL(url).pathname.slice(1);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  const listeners = async () =>
    Number((await admin.query("select count(*) from pg_stat_activity where datname = $1 and query ilike 'LISTEN%'", [name])).rows[0].count);

  const logger = createLogger("error", true);
  for (let i = 0; i < 3; i++) {
    const relay = new OutboxRelay({ database, publisher: new LogPublisher(logger), logger, metrics: createMetrics() }, { batchSize: 10, pollMs: 100, retentionMs: 86_400_000, format: "json" });
    relay.start();
    await relay.stop();
  }
  // Give a connect that was still under way time to finish (and, if buggy, to stay).
  await new Promise((r) => setTimeout(r, 500));
  await poll(async () => (await listeners()) === 0, 3000, "no LISTEN connection left").catch(() => {});
  t.equal(await listeners(), 0, "no LISTEN connection is left behind");
});
