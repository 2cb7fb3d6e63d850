import { randomBytes } from "node:crypto";
import pg from "pg";

// Real PostgreSQL for tests. `npm test` starts a server and exports
// TEST_DATABASE_URL (an admin URL); each caller gets a database of its own so
// test files run in parallel without seeing each other's rows.
export const adminUrl = process.env.TEST_DATABASE_URL;

export function postgresSkipReason(): string | false {
  return adminUrl ? false : "TEST_DATABASE_URL is not set: run `npm test`, which starts PostgreSQL";
}

export async function createTestDatabase(t: { teardown(fn: () => unknown): void }): Promise<string> {
  if (!adminUrl) throw new Error(postgresSkipReason() as string);
  const name = "vms_test_" + randomBytes(6).toString("hex");
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  t.teardown(async () => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.end();
  });
  const url = new URL(adminUrl);
  url.pathname = "/" + name;
  return url.toString();
}
