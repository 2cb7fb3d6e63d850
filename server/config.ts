import { isIP, type BlockList } from "node:net";
import path from "node:path";
import { keyFromFile, PrivateKeyGiven } from "./auth/jwt.js";
import { list, parseFormat, parseOffset, parseSize, type MediaConfig } from "./media/settings.js";
import { packageRoot } from "./package-files.js";
import { parseTrustedProxies } from "./transport/forwarded.js";
import { parseOrigins } from "./transport/browser-rules.js";

// Every environment variable the service reads, parsed and validated in one
// place. A bad value fails start-up with one line naming the variable.

export class ConfigError extends Error {}

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  database: { url: string | undefined; poolMax: number; migrateOnStart: boolean; idleInTransactionMs: number };
  auth: { disabled: boolean; jwt: JwtConfig | undefined };
  /** CORS_ALLOWED_ORIGINS: origins whose pages may call from a browser; empty: CORS off. */
  cors: { allowedOrigins: string[] };
  tls: { certFile: string; keyFile: string } | undefined;
  logLevel: string;
  shutdownGraceMs: number;
  limits: { maxBodyBytes: number; maxRequestMs: number };
  connections: ConnectionsConfig;
  /** Proxies whose Forwarded / X-Forwarded-* headers are believed; undefined: none. */
  trustedProxies: BlockList | undefined;
  migrationsDir: string;
  storage: {
    s3:
      | {
          bucket: string;
          thumbnailBucket: string;
          endpoint: string | undefined;
          region: string;
          forcePathStyle: boolean;
          maxRetries: number;
          /** How long a part upload or CompleteMultipartUpload may wait on a silent store (metadata calls: 10 s). */
          transferTimeoutMs: number;
          /** Streamed uploads (UploadVideoContent): multipart part size and parts in flight per upload. */
          stream: { partSizeBytes: number; partsInFlight: number };
        }
      | undefined;
    publicBaseUrl: string;
    /** PUBLIC_BASE_URL was set: it wins over what trusted proxies forward. */
    publicBaseUrlSet: boolean;
    uploadExpiryMs: number;
    multipartThresholdBytes: number;
    partSizeBytes: number;
  };
  events: {
    pubsub: { projectId: string | undefined; topic: string } | undefined;
    format: "json" | "protobuf";
    retentionMs: number;
    relayPollMs: number;
    relayBatchSize: number;
  };
  media: MediaConfig;
  /** OTLP protocol spans are exported with; undefined: no export. */
  tracing: { exporter: "http/protobuf" | "http/json" | undefined };
}

type Env = Record<string, string | undefined>;

// The standard OpenTelemetry variables. Spans are exported when an OTLP endpoint
// is configured (or OTEL_TRACES_EXPORTER=otlp asks for the default one);
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turns export off.
function tracing(env: Env): Config["tracing"] {
  const exporters = (env.OTEL_TRACES_EXPORTER?.trim() || "").split(",").map((s) => s.trim()).filter(Boolean);
  const unsupported = exporters.filter((e) => e !== "otlp" && e !== "none");
  if (unsupported.length > 0) throw new ConfigError(`OTEL_TRACES_EXPORTER supports "otlp" or "none", got "${unsupported.join(",")}"`);
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  const off = env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true" || exporters.includes("none");
  if (off || (!endpoint && !exporters.includes("otlp"))) return { exporter: undefined };
  if (endpoint && !/^https?:\/\//.test(endpoint)) throw new ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL");
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL?.trim() || env.OTEL_EXPORTER_OTLP_PROTOCOL?.trim() || "http/protobuf";
  if (protocol !== "http/protobuf" && protocol !== "http/json") {
    throw new ConfigError(`OTEL_EXPORTER_OTLP_PROTOCOL supports "http/protobuf" or "http/json" (OTLP over HTTP, port 4318), got "${protocol}"`);
  }
  return { exporter: protocol };
}

export interface JwtConfig {
  jwksUrl: string | undefined;
  publicKeyFile: string | undefined;
  issuer: string;
  audience: string;
  rolesClaim: string;
}

function jwtConfig(env: Env): JwtConfig | undefined {
  const jwksUrl = env.JWT_JWKS_URL?.trim() || undefined;
  const publicKeyFile = env.JWT_PUBLIC_KEY_FILE?.trim() || undefined;
  if (!jwksUrl && !publicKeyFile) return undefined;
  if (jwksUrl && publicKeyFile) throw new ConfigError("set one of JWT_JWKS_URL and JWT_PUBLIC_KEY_FILE, not both");
  if (jwksUrl && !/^https?:\/\//.test(jwksUrl)) throw new ConfigError("JWT_JWKS_URL must be an http(s) URL");
  const issuer = env.JWT_ISSUER?.trim();
  const audience = env.JWT_AUDIENCE?.trim();
  if (!issuer) throw new ConfigError("JWT_ISSUER must be set when JWT validation is configured");
  if (!audience) throw new ConfigError("JWT_AUDIENCE must be set when JWT validation is configured");
  if (publicKeyFile) {
    // Read now, so a bad key file is one line at start-up, not a failure later.
    try {
      keyFromFile(publicKeyFile);
    } catch (e) {
      if (e instanceof PrivateKeyGiven) throw new ConfigError(`JWT_PUBLIC_KEY_FILE ${e.message}`);
      throw new ConfigError(`JWT_PUBLIC_KEY_FILE cannot be read as a PEM public key, JWK or JWKS: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return { jwksUrl, publicKeyFile, issuer, audience, rolesClaim: env.JWT_ROLES_CLAIM?.trim() || "roles" };
}

function corsOrigins(env: Env): string[] {
  try {
    return parseOrigins(env.CORS_ALLOWED_ORIGINS ?? "");
  } catch (e) {
    throw new ConfigError(`CORS_ALLOWED_ORIGINS must list origins separated by commas (https://app.example.com): ${(e as Error).message}`);
  }
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === "") return fallback;
  if (["true", "1", "yes"].includes(raw)) return true;
  if (["false", "0", "no"].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${env[name]}"`);
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "7d", "12h", "30m", "45s", "500ms", or a bare number of milliseconds. */
export function parseDuration(raw: string): number | undefined {
  const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(raw.trim());
  return m ? Number(m[1]) * UNITS[m[2] ?? "ms"] : undefined;
}

function duration(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const ms = parseDuration(raw);
  if (ms === undefined || ms <= 0) throw new ConfigError(`${name} must be a duration such as 7d, 12h, 30m or 45s, got "${raw}"`);
  return ms;
}

// A bare number is milliseconds, as everywhere; here "60" meant as seconds
// would end every relay batch that waits for the bus, so at least a second.
function idleInTransaction(env: Env): number {
  const ms = duration(env, "DB_IDLE_TRANSACTION_TIMEOUT", 60_000);
  if (ms < 1000) throw new ConfigError(`DB_IDLE_TRANSACTION_TIMEOUT must be at least 1s, got "${env.DB_IDLE_TRANSACTION_TIMEOUT}"`);
  return ms;
}

function events(env: Env): Config["events"] {
  const topic = env.PUBSUB_TOPIC?.trim() || undefined;
  const projectId = env.PUBSUB_PROJECT_ID?.trim() || undefined;
  if (topic && !/^[A-Za-z][\w.~+%-]{2,254}$/.test(topic)) {
    throw new ConfigError(`PUBSUB_TOPIC must be a Pub/Sub topic id (3-255 characters, starting with a letter), got "${topic}"`);
  }
  if (topic && !projectId) throw new ConfigError("PUBSUB_PROJECT_ID must be set when PUBSUB_TOPIC is");
  const format = env.EVENTS_FORMAT?.trim() || "json";
  if (format !== "json" && format !== "protobuf") throw new ConfigError(`EVENTS_FORMAT must be json or protobuf, got "${format}"`);
  return {
    pubsub: topic ? { projectId, topic } : undefined,
    format,
    retentionMs: duration(env, "OUTBOX_RETENTION", 7 * UNITS.d),
    relayPollMs: int(env, "RELAY_POLL_MS", 1000, 10, 600_000),
    relayBatchSize: int(env, "RELAY_BATCH_SIZE", 1000, 1, 5000),
  };
}

const MiB = 1024 * 1024;

function storage(env: Env, host: string, port: number, tls: boolean): Config["storage"] {
  const bucket = env.S3_BUCKET?.trim() || undefined;
  const endpoint = env.S3_ENDPOINT?.trim() || undefined;
  if (endpoint && !/^https?:\/\/[^\s]+$/.test(endpoint)) throw new ConfigError("S3_ENDPOINT must be an http(s) URL");
  const bucketName = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
  if (bucket && !bucketName.test(bucket)) throw new ConfigError(`S3_BUCKET is not a valid bucket name: "${bucket}"`);
  const thumbnailBucket = env.S3_THUMBNAIL_BUCKET?.trim() || bucket;
  if (thumbnailBucket && !bucketName.test(thumbnailBucket)) throw new ConfigError(`S3_THUMBNAIL_BUCKET is not a valid bucket name`);
  const defaultBase = `${tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  const publicBaseUrl = (env.PUBLIC_BASE_URL?.trim() || defaultBase).replace(/\/+$/, "");
  if (!/^https?:\/\//.test(publicBaseUrl)) throw new ConfigError("PUBLIC_BASE_URL must be an http(s) URL");
  const partSizeBytes = int(env, "UPLOAD_PART_SIZE_MB", 64, 5, 5 * 1024) * MiB;
  return {
    s3: bucket
      ? {
          bucket,
          thumbnailBucket: thumbnailBucket!,
          endpoint,
          region: env.S3_REGION?.trim() || "us-east-1",
          forcePathStyle: bool(env, "S3_FORCE_PATH_STYLE", false),
          maxRetries: int(env, "S3_MAX_RETRIES", 5, 0, 20),
          transferTimeoutMs: duration(env, "S3_TRANSFER_TIMEOUT", 30 * UNITS.s),
          // A streamed upload holds about (parts in flight + 1) × part size in
          // memory: the parts being sent plus the one being filled. 2 × 8 MiB
          // keeps one upload near 24 MiB, and S3 (or an emulator) keeps up
          // with a client at that depth on this service's scale; raise the
          // parts in flight for faster links, the part size for files over
          // 10,000 parts (78 GiB at 8 MiB).
          stream: {
            partSizeBytes: int(env, "UPLOAD_STREAM_PART_SIZE_MB", 8, 5, 5 * 1024) * MiB,
            partsInFlight: int(env, "UPLOAD_STREAM_PARTS_IN_FLIGHT", 2, 1, 32),
          },
        }
      : undefined,
    publicBaseUrl,
    publicBaseUrlSet: Boolean(env.PUBLIC_BASE_URL?.trim()),
    uploadExpiryMs: duration(env, "UPLOAD_EXPIRY", 24 * UNITS.h),
    multipartThresholdBytes: int(env, "UPLOAD_MULTIPART_THRESHOLD_MB", 100, 5, 5 * 1024) * MiB,
    partSizeBytes,
  };
}

function media(env: Env): MediaConfig {
  const fail = (m: string) => new ConfigError(m);
  const publicBaseUrl = env.THUMBNAIL_PUBLIC_BASE_URL?.trim().replace(/\/+$/, "") || undefined;
  if (publicBaseUrl && !/^https?:\/\/[^\s?#]+$/.test(publicBaseUrl)) throw fail("THUMBNAIL_PUBLIC_BASE_URL must be an http(s) URL without query or fragment");
  const tool = (name: string, fallback: string) => {
    const v = env[name]?.trim();
    if (v !== undefined && v !== "" && !path.isAbsolute(v)) throw fail(`${name} must be an absolute path, got "${v.slice(0, 80)}"`);
    return v || fallback;
  };
  return {
    concurrency: int(env, "THUMBNAIL_CONCURRENCY", 2, 0, 64),
    offsets: list(env, "THUMBNAIL_OFFSETS", "10%,50%,90%", parseOffset, "offsets such as 10% or 2.5s", fail),
    sizes: list(env, "THUMBNAIL_SIZES", "1280x720,640x360,320x180", parseSize, "WIDTHxHEIGHT boxes (16 to 7680)", fail).sort((a, b) => b.width * b.height - a.width * a.height),
    formats: [...new Set(list(env, "THUMBNAIL_FORMATS", "webp,jpeg", parseFormat, "webp, jpeg or png", fail))],
    maxBytes: int(env, "THUMBNAIL_MAX_BYTES", 2 * MiB, 1024, 32 * MiB),
    maxAttempts: int(env, "THUMBNAIL_MAX_ATTEMPTS", 5, 1, 100),
    urlExpiryMs: duration(env, "THUMBNAIL_URL_EXPIRY", UNITS.h),
    publicBaseUrl,
    leaseMs: duration(env, "THUMBNAIL_JOB_LEASE", 60 * UNITS.s),
    ffmpegPath: tool("FFMPEG_PATH", "ffmpeg"),
    ffprobePath: tool("FFPROBE_PATH", "ffprobe"),
  };
}

export interface ConnectionsConfig {
  /** Connections open at once in this process. */
  max: number;
  /** Requests and streams in progress at once in this process, every protocol together. */
  maxStreams: number;
  /** grpc.health.v1 Watch streams open at once (unauthenticated, long-lived). */
  maxHealthWatches: number;
  /** Idle HTTP/1.1 keep-alive and HTTP/2 connections are closed after this. */
  idleTimeoutMs: number;
  /** HTTP/2 PING interval while a connection holds open streams. */
  pingIntervalMs: number;
}

// Bounds per process (per replica), so a client holding many connections or
// streams cannot take the memory every other caller needs. The idle timeout
// outlasts what gateways keep idle upstream connections for (nginx
// keepalive_timeout 60s; AWS ALB 60s), so the gateway always closes first and
// never sends a request on a connection this side is closing (a 502). The PING
// interval stays under proxies' read timeouts (nginx grpc_read_timeout 60s).
function connections(env: Env): ConnectionsConfig {
  const idleTimeoutMs = duration(env, "IDLE_TIMEOUT", 75 * UNITS.s);
  if (idleTimeoutMs < 1000) throw new ConfigError(`IDLE_TIMEOUT must be at least 1s, got "${env.IDLE_TIMEOUT}"`);
  const pingIntervalMs = duration(env, "HTTP2_PING_INTERVAL", 30 * UNITS.s);
  if (pingIntervalMs < 1000) throw new ConfigError(`HTTP2_PING_INTERVAL must be at least 1s, got "${env.HTTP2_PING_INTERVAL}"`);
  return {
    max: int(env, "MAX_CONNECTIONS", 1000, 1, 1_000_000),
    maxStreams: int(env, "MAX_CONCURRENT_STREAMS", 1000, 1, 1_000_000),
    maxHealthWatches: int(env, "MAX_HEALTH_WATCHES", 100, 1, 1_000_000),
    idleTimeoutMs,
    pingIntervalMs,
  };
}

function trustedProxies(env: Env): BlockList | undefined {
  const raw = env.TRUSTED_PROXIES?.trim();
  if (!raw) return undefined;
  const parsed = parseTrustedProxies(raw);
  if ("invalid" in parsed) throw new ConfigError(`TRUSTED_PROXIES must be IP addresses or CIDRs separated by commas, got "${parsed.invalid}"`);
  return parsed;
}

const LOG_LEVELS = ["error", "warn", "info", "http", "verbose", "debug", "silly"];

export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

export function loadConfig(env: Env = process.env): Config {
  const host = env.HOST?.trim() || "127.0.0.1";
  const jwt = jwtConfig(env);
  const authDisabled = bool(env, "AUTH_DISABLED", isLoopback(host) && !jwt);
  if (authDisabled && !isLoopback(host)) {
    throw new ConfigError(`AUTH_DISABLED is only allowed on a loopback HOST, not "${host}"; set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE`);
  }
  if (!authDisabled && !jwt) {
    throw new ConfigError(
      isLoopback(host)
        ? "AUTH_DISABLED=false needs JWT settings: set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE"
        : `HOST "${host}" is not loopback: set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE (auth cannot be off on a public address)`,
    );
  }
  const databaseUrl = env.DATABASE_URL?.trim() || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("DATABASE_URL must be a postgres:// or postgresql:// URL");
  }
  const certFile = env.TLS_CERT_FILE?.trim();
  const keyFile = env.TLS_KEY_FILE?.trim();
  if (Boolean(certFile) !== Boolean(keyFile)) {
    throw new ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together");
  }
  const logLevel = env.LOG_LEVEL?.trim() || "info";
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${logLevel}"`);
  }
  const port = int(env, "PORT", 8080, 0, 65535);
  return {
    port,
    host,
    dataDir: path.resolve(env.DATA_DIR?.trim() || "./.data"),
    database: {
      url: databaseUrl,
      poolMax: int(env, "DB_POOL_MAX", 20, 1, 1000),
      migrateOnStart: bool(env, "MIGRATE_ON_START", true),
      idleInTransactionMs: idleInTransaction(env),
    },
    auth: { disabled: authDisabled, jwt: authDisabled ? undefined : jwt },
    cors: { allowedOrigins: corsOrigins(env) },
    tls: certFile && keyFile ? { certFile, keyFile } : undefined,
    logLevel,
    shutdownGraceMs: int(env, "SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    limits: {
      maxBodyBytes: int(env, "MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
      maxRequestMs: int(env, "MAX_REQUEST_MS", 30_000, 100, 3_600_000),
    },
    connections: connections(env),
    trustedProxies: trustedProxies(env),
    events: events(env),
    tracing: tracing(env),
    media: media(env),
    storage: storage(env, host, port, Boolean(certFile && keyFile)),
    migrationsDir: path.resolve(env.MIGRATIONS_DIR?.trim() || path.join(packageRoot, "migrations")),
  };
}
