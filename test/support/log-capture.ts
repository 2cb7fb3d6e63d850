import { appendFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import winston from "winston";
import Transport from "winston-transport";

// Every log line the services under test write, teed into .tap/service-logs/
// (one file per process), so the run's last step (test/support/log-secrets.ts,
// tap's `after`) can grep them all for secrets. The `before` step empties it.

export const CAPTURE_DIR = path.resolve(import.meta.dirname, "../../.tap/service-logs");

const MESSAGE = Symbol.for("message");

// Synchronous appends: a test process may exit right after its last line.
class AppendTransport extends Transport {
  constructor(private readonly file: string) {
    super({ level: "silly" });
  }
  override log(info: Record<symbol, unknown>, done: () => void) {
    appendFileSync(this.file, `${String(info[MESSAGE])}\n`);
    done();
  }
}

/**
 * Tees an in-process server's logger into the capture, at every level; the
 * console keeps the level and silence it had.
 */
export function teeLogger(logger: winston.Logger): winston.Logger {
  mkdirSync(CAPTURE_DIR, { recursive: true });
  for (const t of logger.transports) {
    t.level = logger.level;
    t.silent = logger.silent;
  }
  logger.level = "silly";
  logger.silent = false;
  logger.add(new AppendTransport(path.join(CAPTURE_DIR, `${process.pid}.jsonl`)));
  return logger;
}

/** Tees a service process's stdout (its JSON log) into the capture. */
export function teeOutput(stdout: Readable | null | undefined, childPid: number | undefined): void {
  if (!stdout) return;
  mkdirSync(CAPTURE_DIR, { recursive: true });
  const file = path.join(CAPTURE_DIR, `${process.pid}-${childPid ?? "child"}.jsonl`);
  stdout.on("data", (chunk: Buffer | string) => appendFileSync(file, chunk));
}
