import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { CAPTURE_DIR } from "./log-capture.js";
import { findSecrets } from "./log-secrets.js";

// tap's `after` (package.json): greps every log line the run's services wrote
// (teed by log-capture.ts) for secrets; finding one fails the run (exit 1).

const files = readdirSync(CAPTURE_DIR, { withFileTypes: true }).filter((f) => f.isFile()).map((f) => f.name);
let lines = 0;
const found: string[] = [];
for (const f of files) {
  const text = readFileSync(path.join(CAPTURE_DIR, f), "utf8");
  lines += text.split("\n").length - 1;
  found.push(...findSecrets(text).map((s) => `${f}: ${s}`));
}
if (found.length > 0) {
  process.stdout.write(`# log secrets: ${found.length} in the services' log lines (${CAPTURE_DIR}):\n${found.slice(0, 50).map((s) => `#   ${s}`).join("\n")}\n`);
  process.exitCode = 1;
} else {
  process.stdout.write(`# log secrets: none in ${lines} log lines from ${files.length} processes\n`);
}
