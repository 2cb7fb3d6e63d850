import { once } from "node:events";
import { ConfigError, loadConfig, type Config } from "./config.js";
import { createLogger } from "./logger.js";
import { packageVersion } from "./package-files.js";
import { startTracing } from "./telemetry/tracing.js";

// Entry point: configuration, context, migrations, serving, and a graceful
// exit on SIGTERM/SIGINT.

function configOrExit(): Config {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`configuration error: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
}

const cfg = configOrExit();
const log = createLogger(cfg.logLevel);
const tracing = await startTracing(cfg.tracing, log, packageVersion);
// Imported once tracing is set up: the gRPC instrumentation must see
// @grpc/grpc-js being loaded (by the Pub/Sub SDK, below AppContext).
const { AppContext } = await import("./context.js");
const { migrate } = await import("./db/migrate.js");
const { createServer } = await import("./transport/server.js");
const ctx = await AppContext.fromConfig(cfg, { logger: log });

try {
  if (cfg.database.migrateOnStart) {
    const { applied } = await migrate(ctx.database, { dir: cfg.migrationsDir, logger: log });
    log.info("migrations checked", { applied });
  }
} catch (e) {
  log.error("start-up failed", { error: (e as Error).message });
  await ctx.close();
  await tracing.shutdown();
  process.exit(1);
}

const server = createServer(ctx);
const address = await server.listen(cfg.port, cfg.host);
log.info("serving", {
  address: address.address,
  port: address.port,
  tls: Boolean(cfg.tls),
  database: ctx.database.kind,
  auth: cfg.auth.disabled ? "disabled (loopback only)" : "jwt",
});

let stopping = false;
async function stop(signal: string) {
  if (stopping) return;
  stopping = true;
  log.info("shutting down", { signal, grace_ms: cfg.shutdownGraceMs });
  await server.close(cfg.shutdownGraceMs);
  await ctx.close();
  await tracing.shutdown();
  log.info("stopped");
  // Let winston flush its last lines before exiting.
  log.end();
  await Promise.race([once(log, "finish"), new Promise((r) => setTimeout(r, 1000))]);
  process.exit(0);
}
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
