import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import t from "tap";
import {
  compareVersions,
  crc32,
  flywayChecksum,
  parseMigrationFileName,
  parseVersion,
  planMigrations,
  readMigrations,
  type HistoryRow,
  type MigrationFile,
} from "../../server/db/migration-files.js";

const bytes = (s: string) => new TextEncoder().encode(s);

t.test("crc32", async (t) => {
  // 0xCBF43926 is the published check value of CRC-32/ISO-HDLC (the zlib and
  // java.util.zip.CRC32 polynomial) for the ASCII string "123456789".
  t.equal(crc32(bytes("123456789")), 0xcbf43926);
  t.equal(crc32(new Uint8Array()), 0);
  // Continuing from a previous value equals one pass over the concatenation.
  t.equal(crc32(bytes("56789"), crc32(bytes("1234"))), 0xcbf43926);
});

t.test("flywayChecksum matches Flyway's ChecksumCalculator", async (t) => {
  // The expected values were printed by a Java program that runs Flyway's
  // algorithm with the JDK's own classes (java 17):
  //   CRC32 crc = new CRC32();
  //   BufferedReader r = new BufferedReader(new StringReader(content), 4096);
  //   String line = r.readLine();            // first line: strip a leading U+FEFF
  //   if (line != null) { line = stripBom(line);
  //     do { crc.update(line.getBytes(UTF_8)); } while ((line = r.readLine()) != null); }
  //   System.out.println((int) crc.getValue());
  // "1234\n56789\r\n" is "123456789" without terminators: the check value
  // 0xCBF43926 read as a signed int, 0xCBF43926 - 2^32 = -873187034.
  t.equal(flywayChecksum("1234\n56789\r\n"), -873187034);
  // BOM, non-ASCII text, CRLF, LF, a blank line, a lone CR, no final newline.
  const mixed = "\uFEFF-- gr\u00f6\u00dfe \u2713\r\nCREATE TABLE t (id int);\n\nINSERT INTO t VALUES (1);\rSELECT 1;";
  t.equal(flywayChecksum(mixed), -607686697);
  t.equal(flywayChecksum(bytes(mixed)), -607686697, "same from UTF-8 bytes");
  t.equal(flywayChecksum(""), 0);
  t.equal(flywayChecksum("\n\r\n"), 0);

  // Line endings and a BOM never matter; content does.
  const unix = "SELECT 1;\nSELECT 2;\n";
  t.equal(flywayChecksum(unix.replaceAll("\n", "\r\n")), flywayChecksum(unix));
  t.equal(flywayChecksum("\uFEFF" + unix), flywayChecksum(unix));
  t.not(flywayChecksum(unix + "-- edited\n"), flywayChecksum(unix));
});

// An independent CRC32 implementation: zlib's, in node:zlib since Node 20.15.
const zlibCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

t.test(
  "checksum of the real V1 migration agrees with node:zlib",
  { skip: zlibCrc32 ? false : "node:zlib has no crc32 in this Node version" },
  async (t) => {
    const content = await readFile(new URL("../../migrations/V1__create_videos.sql", import.meta.url));
    // What Flyway hashes: the file with its BOM and every line terminator removed.
    const stripped = content.toString("utf8").replace(/^\uFEFF/, "").replace(/[\r\n]/g, "");
    t.equal(flywayChecksum(content), zlibCrc32!(Buffer.from(stripped, "utf8")) | 0);
  },
);

t.test("versions compare numerically, part by part", async (t) => {
  const sorted = ["10", "2", "1.1", "1", "1.0.1", "1_2", "20240131120000123"]
    .map((v) => ({ v, parts: parseVersion(v) }))
    .sort((a, b) => compareVersions(a.parts, b.parts))
    .map((x) => x.v);
  t.same(sorted, ["1", "1.0.1", "1.1", "1_2", "2", "10", "20240131120000123"]);
  t.equal(compareVersions(parseVersion("1"), parseVersion("1.0")), 0, "trailing zeros do not count");
  t.equal(compareVersions(parseVersion("1_1"), parseVersion("1.1")), 0, "_ and . both separate parts");
  t.throws(() => parseVersion("1.a"), /Invalid migration version "1\.a"/);
});

t.test("file names", async (t) => {
  t.same(parseMigrationFileName("V1__create_videos.sql"), {
    version: "1",
    parts: [1n],
    description: "create videos",
  });
  t.same(parseMigrationFileName("V1_1__add_title_index.sql"), {
    version: "1.1",
    parts: [1n, 1n],
    description: "add title index",
  });
  t.equal(parseMigrationFileName("V2.0.1__x.sql")?.version, "2.0.1");
  // Flyway splits at the first "__"; later underscores all become spaces.
  t.equal(parseMigrationFileName("V3__a__b.sql")?.description, "a  b");
  t.equal(parseMigrationFileName("V4__" + "x".repeat(250) + ".sql")?.description, "x".repeat(197) + "...");
  t.equal(parseMigrationFileName("README.md"), undefined, "non-SQL files are ignored");
  for (const bad of ["R__views.sql", "U1__undo.sql", "V1_create.sql", "V__x.sql", "Vx__y.sql", "schema.sql"]) {
    t.throws(() => parseMigrationFileName(bad), { message: `Unsupported migration file name ${bad}: expected V<version>__<description>.sql` });
  }
});

t.test("readMigrations", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vms-migrations-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, "later"));
  await writeFile(join(dir, "V10__ten.sql"), "SELECT 10;\n");
  await writeFile(join(dir, "V2__two.sql"), "\uFEFFSELECT 2;\r\n");
  await writeFile(join(dir, "later", "V11__eleven.sql"), "SELECT 11;\n");
  await writeFile(join(dir, "notes.txt"), "not a migration");
  const files = await readMigrations(dir);
  t.same(files.map((f) => f.script), ["V2__two.sql", "V10__ten.sql", "later/V11__eleven.sql"]);
  t.equal(files[0].sql, "SELECT 2;\r\n", "BOM is not sent to the database");
  t.equal(files[0].checksum, flywayChecksum("SELECT 2;"));

  await writeFile(join(dir, "V2.0__again.sql"), "SELECT 2;\n");
  await t.rejects(readMigrations(dir), /more than one migration with version 2(\.0)?: V2(\.0)?__\w+\.sql and V2(\.0)?__\w+\.sql/);
});

t.test("planMigrations", async (t) => {
  const file = (script: string, checksum = 7): MigrationFile => {
    const parsed = parseMigrationFileName(script)!;
    return { script, ...parsed, checksum, sql: "" };
  };
  const row = (file: MigrationFile, rank: number, over: Partial<HistoryRow> = {}): HistoryRow => ({
    installed_rank: rank,
    version: file.version,
    description: file.description,
    type: "SQL",
    script: file.script,
    checksum: file.checksum,
    success: true,
    ...over,
  });
  const v1 = file("V1__one.sql");
  const v2 = file("V2__two.sql");
  const v10 = file("V10__ten.sql");
  const scripts = (p: { pending: MigrationFile[] }) => p.pending.map((f) => f.script);
  const oneProblem = (p: { problems: string[] }, pattern: RegExp) => {
    t.equal(p.problems.length, 1);
    t.match(p.problems[0], pattern);
  };

  t.same(planMigrations([v1, v2, v10], []), { pending: [v1, v2, v10], problems: [] });
  t.same(planMigrations([v1, v2, v10], [row(v1, 1), row(v2, 2)]), { pending: [v10], problems: [] });

  let plan = planMigrations([v1, v2], [row(v1, 1, { checksum: 8 })]);
  oneProblem(plan, /^Migration V1__one\.sql was changed after it was applied: checksum 7 on disk, 8 in/);
  plan = planMigrations([v1, v2], [row(v1, 1, { description: "first" })]);
  oneProblem(plan, /^Migration V1__one\.sql was renamed after it was applied/);
  plan = planMigrations([v2], [row(v1, 1)]);
  oneProblem(plan, /^Migration V1__one\.sql \(version 1\) was applied but is missing/);
  plan = planMigrations([v1, v2], [row(v1, 1), row(v2, 2, { success: false })]);
  oneProblem(plan, /^Migration V2__two\.sql failed earlier \(flyway_schema_history installed_rank 2 has success = false\)/);
  plan = planMigrations([v1, v2, v10], [row(v1, 1), row(v10, 2)]);
  t.same(scripts(plan), ["V2__two.sql"]);
  oneProblem(plan, /^Migration V2__two\.sql \(version 2\) is older than the latest applied version 10: out-of-order/);

  // Flyway's bookkeeping rows: schema creation (no version) is ignored, and a
  // baseline stands for every version up to it.
  const schemaRow: HistoryRow = { ...row(v1, 1), version: null, type: "SCHEMA", checksum: null, script: '"public"' };
  const baselineRow: HistoryRow = { ...row(v2, 2), type: "BASELINE", checksum: null, script: "<< Flyway Baseline >>" };
  plan = planMigrations([v1, v2, v10], [schemaRow, baselineRow]);
  t.same(plan, { pending: [v10], problems: [] });
});
