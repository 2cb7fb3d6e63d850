import { readdir, readFile } from "node:fs/promises";
import { basename, join, sep } from "node:path";
import type { Selectable } from "kysely";
import type { FlywaySchemaHistoryTable } from "./schema.js";

// The pure half of the migration runner: Flyway's file naming, version order
// and checksum, and the comparison of files on disk with flyway_schema_history.
// Everything here must agree with Flyway bit for bit, or the official Flyway
// image would refuse a database this runner migrated (and vice versa).

export interface MigrationFile {
  script: string; // path relative to the migrations dir, as Flyway records it
  version: string; // Flyway's display form: underscores become dots ("1_1" → "1.1")
  parts: bigint[]; // numeric parts, trailing zeros dropped, for ordering
  description: string;
  checksum: number;
  sql: string;
}

// The subset of a flyway_schema_history row that validation looks at.
export type HistoryRow = Pick<
  Selectable<FlywaySchemaHistoryTable>,
  "installed_rank" | "version" | "description" | "type" | "script" | "checksum" | "success"
>;

// --- CRC32 (IEEE 802.3, the polynomial of java.util.zip.CRC32) ---------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

// Unsigned CRC32 of `bytes`, continuing from `crc` (like zlib's crc32(data, value)),
// so a checksum can be fed line by line as Flyway does.
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// Flyway's ChecksumCalculator: decode as UTF-8, drop a leading BOM, split with
// BufferedReader.readLine semantics (\n, \r or \r\n), CRC32 the UTF-8 bytes of
// each line without its terminator, and cast the result to a Java int. Line
// endings therefore never change the checksum; any other byte does.
export function flywayChecksum(content: string | Uint8Array): number {
  let text = typeof content === "string" ? content : new TextDecoder("utf-8").decode(content);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const encoder = new TextEncoder();
  let crc = 0;
  for (const line of text.split(/\r\n|\r|\n/)) crc = crc32(encoder.encode(line), crc);
  return crc | 0;
}

// --- versions and file names --------------------------------------------------

// Flyway's MigrationVersion: "_" and "." both separate numeric parts, compared
// as integers (1 < 1.1 < 2 < 10). Trailing zero parts are dropped, so 1 = 1.0.
// BigInt because timestamp versions (V20240131120000123__) exceed 2^53.
export function parseVersion(version: string): bigint[] {
  if (!/^\d+([._]\d+)*$/.test(version)) throw new Error(`Invalid migration version "${version}"`);
  const parts = version.split(/[._]/).map((p) => BigInt(p));
  while (parts.length > 1 && parts[parts.length - 1] === 0n) parts.pop();
  return parts;
}

export function compareVersions(a: readonly bigint[], b: readonly bigint[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0n;
    const y = b[i] ?? 0n;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

// Equal versions ("1", "1.0", "1_0") share one key.
export function versionKey(parts: readonly bigint[]): string {
  return parts.join(".");
}

// Flyway stores at most 200 characters of a description and 1000 of a script
// name, cutting with "..." (AbbreviationUtils); comparisons must cut the same way.
function abbreviate(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 3) + "...";
}

// "V1_1__add_index.sql" → version "1.1", description "add index". Returns
// undefined for files that are not SQL; throws for SQL files this runner
// cannot handle (repeatable R__ and undo U__ migrations, malformed names),
// since Flyway would run or reject those and we must not silently skip them.
export function parseMigrationFileName(
  fileName: string,
): { version: string; parts: bigint[]; description: string } | undefined {
  if (!fileName.endsWith(".sql")) return undefined;
  const name = fileName.slice(0, -".sql".length);
  const separator = name.indexOf("__");
  const version = name.slice(1, separator).replaceAll("_", ".");
  if (!name.startsWith("V") || separator < 0 || !/^\d+(\.\d+)*$/.test(version)) {
    throw new Error(`Unsupported migration file name ${fileName}: expected V<version>__<description>.sql`);
  }
  return {
    version,
    parts: parseVersion(version),
    description: abbreviate(name.slice(separator + 2).replaceAll("_", " "), 200),
  };
}

// All versioned migrations under dir (subdirectories too, as Flyway scans
// them), in version order. Two files with the same version are refused.
export async function readMigrations(dir: string): Promise<MigrationFile[]> {
  const files: MigrationFile[] = [];
  for (const path of await readdir(dir, { recursive: true })) {
    const parsed = parseMigrationFileName(basename(path));
    if (!parsed) continue;
    const bytes = await readFile(join(dir, path));
    files.push({
      script: abbreviate(path.split(sep).join("/"), 1000),
      ...parsed,
      checksum: flywayChecksum(bytes),
      sql: new TextDecoder("utf-8").decode(bytes).replace(/^\uFEFF/, ""),
    });
  }
  files.sort((a, b) => compareVersions(a.parts, b.parts));
  for (let i = 1; i < files.length; i++) {
    if (compareVersions(files[i - 1].parts, files[i].parts) === 0) {
      throw new Error(
        `Found more than one migration with version ${files[i].version}: ${files[i - 1].script} and ${files[i].script}`,
      );
    }
  }
  return files;
}

// --- comparing files with the history -----------------------------------------

// What migrate would apply, and why it must refuse to (one line per problem,
// each naming the file). Mirrors Flyway's validate with its defaults: a failed
// row, an applied migration edited or deleted on disk, and a new migration
// older than the newest applied one (outOfOrder=false) all stop the run.
export function planMigrations(
  files: readonly MigrationFile[],
  history: readonly HistoryRow[],
): { pending: MigrationFile[]; problems: string[] } {
  const problems: string[] = [];
  const applied = new Set<string>();
  let latest: bigint[] = [];
  let baseline: bigint[] = [];
  const byVersion = new Map(files.map((f) => [versionKey(f.parts), f]));

  for (const row of history) {
    if (!row.success) {
      problems.push(
        `Migration ${row.script} failed earlier (flyway_schema_history installed_rank ${row.installed_rank} has success = false): ` +
          `undo its partial changes and delete that row by hand`,
      );
      continue;
    }
    // Rows without a version are Flyway's own bookkeeping (schema creation).
    if (row.version === null) continue;
    const parts = parseVersion(row.version);
    applied.add(versionKey(parts));
    if (compareVersions(parts, latest) > 0) latest = parts;
    // A BASELINE row (written by `flyway baseline`) stands for every version up
    // to it; other non-SQL rows have no file we could compare with.
    if (row.type === "BASELINE") {
      if (compareVersions(parts, baseline) > 0) baseline = parts;
      continue;
    }
    if (row.type !== "SQL") continue;
    const file = byVersion.get(versionKey(parts));
    if (!file) {
      problems.push(`Migration ${row.script} (version ${row.version}) was applied but is missing from the migrations directory`);
    } else if (file.checksum !== row.checksum) {
      problems.push(
        `Migration ${file.script} was changed after it was applied: checksum ${file.checksum} on disk, ${row.checksum} in flyway_schema_history`,
      );
    } else if (file.description !== row.description) {
      problems.push(
        `Migration ${file.script} was renamed after it was applied: description "${file.description}" on disk, "${row.description}" in flyway_schema_history`,
      );
    }
  }

  const pending = files.filter(
    (f) => !applied.has(versionKey(f.parts)) && compareVersions(f.parts, baseline) > 0,
  );
  for (const f of pending) {
    if (compareVersions(f.parts, latest) < 0) {
      problems.push(
        `Migration ${f.script} (version ${f.version}) is older than the latest applied version ${latest.join(".")}: ` +
          `out-of-order migrations are refused, give it a higher version`,
      );
    }
  }
  return { pending, problems };
}
