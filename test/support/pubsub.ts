import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromBinary, fromJsonString, type DescMessage, type Message } from "@bufbuild/protobuf";
import { PubSub, type Message as PubSubMessage, type Subscription, type Topic } from "@google-cloud/pubsub";
import {
  VideoCreatedSchema,
  VideoDeletedSchema,
  VideoUpdatedSchema,
  VideoUploadedSchema,
} from "../../gen/video/v1/events_pb.js";
import { teeOutput } from "./log-capture.js";

// The Pub/Sub side of the event tests: topics and subscriptions on the real
// emulator (`npm test` starts one and exports TEST_PUBSUB_EMULATOR_HOST), a
// consumer that records every delivery, the service as a child process
// publishing to a topic, and the event decoding a consumer would do.
//
// The SDK, even in emulator mode, asks the GCE metadata server (a non-loopback
// address) for the universe domain; METADATA_SERVER_DETECTION=none stops that,
// here and in every service process started below.
process.env.METADATA_SERVER_DETECTION ??= "none";

export const emulatorHost = process.env.TEST_PUBSUB_EMULATOR_HOST;
export const PROJECT_ID = "vms-test";

export function pubsubSkipReason(): string | false {
  return emulatorHost ? false : "TEST_PUBSUB_EMULATOR_HOST is not set: run `npm test`, which starts the Pub/Sub emulator";
}

export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A client talking to the emulator directly (never through a test proxy). */
export function emulatorClient(host = emulatorHost): PubSub {
  if (!host) throw new Error(pubsubSkipReason() as string);
  return new PubSub({ projectId: PROJECT_ID, apiEndpoint: host, emulatorMode: true });
}

export const uniqueName = (prefix: string) => `${prefix}-${randomBytes(5).toString("hex")}`;

/** A topic and an ordered subscription on it, deleted in teardown. */
export async function createTopic(t: Teardown, client: PubSub, name = uniqueName("events")): Promise<{ topic: Topic; subscription: Subscription; name: string }> {
  const [topic] = await client.createTopic(name);
  const [subscription] = await topic.createSubscription(`${name}-sub`, { enableMessageOrdering: true, ackDeadlineSeconds: 60 });
  t.teardown(async () => {
    await subscription.delete().catch(() => {});
    await topic.delete().catch(() => {});
  });
  return { topic, subscription, name };
}

// ---- consumer -----------------------------------------------------------------

/** A client, a fresh topic with its subscription, and a consumer reading it; all torn down with t. */
export async function subscribedTopic(t: Teardown): Promise<{ client: PubSub; topic: Topic; name: string; consumer: Consumer }> {
  const client = emulatorClient();
  t.teardown(() => client.close());
  const { topic, subscription, name } = await createTopic(t, client);
  return { client, topic, name, consumer: Consumer.start(t, subscription) };
}

export interface Delivery {
  /** ce-id */
  id: string;
  attributes: Record<string, string>;
  data: Buffer;
  orderingKey: string;
  messageId: string;
  /** When the emulator accepted the publish. */
  publishTime: Date;
  /** Date.now() when this process received it. */
  receivedAt: number;
}

/** Records every delivery of a subscription, in arrival order, and acks it. */
export class Consumer {
  readonly deliveries: Delivery[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(private readonly subscription: Subscription) {
    subscription.on("message", (m: PubSubMessage) => {
      this.deliveries.push({
        id: m.attributes["ce-id"] ?? "",
        attributes: { ...m.attributes },
        data: Buffer.from(m.data),
        orderingKey: m.orderingKey ?? "",
        messageId: m.id,
        publishTime: new Date(m.publishTime.getTime()),
        receivedAt: Date.now(),
      });
      m.ack();
      for (const w of this.waiters) w();
    });
    subscription.on("error", (e) => {
      process.stderr.write(`pubsub consumer error: ${(e as Error).message}\n`);
    });
  }

  static start(t: Teardown, subscription: Subscription): Consumer {
    const c = new Consumer(subscription);
    t.teardown(() => subscription.close().catch(() => {}));
    return c;
  }

  /** First delivery of each ce-id, in arrival order (consumer-side de-duplication). */
  unique(): Delivery[] {
    const seen = new Set<string>();
    return this.deliveries.filter((d) => (seen.has(d.id) ? false : (seen.add(d.id), true)));
  }

  /** Deliveries of one ce-id. */
  of(id: string): Delivery[] {
    return this.deliveries.filter((d) => d.id === id);
  }

  /** Resolves once pred() holds; rejects after ms with `what` in the message. */
  async until(pred: () => boolean, ms: number, what: string): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!pred()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${ms} ms waiting for ${what} (${this.deliveries.length} deliveries so far)`));
      }, ms);
      this.waiters.add(check);
    });
  }

  /** Waits until every ce-id in ids has arrived at least once. */
  untilAll(ids: Iterable<string>, ms: number, what = "events"): Promise<void> {
    const want = new Set(ids);
    return this.until(() => {
      const got = new Set(this.deliveries.map((d) => d.id));
      for (const id of want) if (!got.has(id)) return false;
      return true;
    }, ms, `${want.size} ${what}`);
  }
}

// ---- decoding, as a consumer would --------------------------------------------

const SCHEMAS: Record<string, DescMessage> = Object.fromEntries(
  [VideoCreatedSchema, VideoUpdatedSchema, VideoUploadedSchema, VideoDeletedSchema].map((s) => [s.typeName, s]),
);

/** The event message from a delivery, with the generated types, by ce-type and content-type. */
export function decodeEvent(d: Pick<Delivery, "attributes" | "data">): Message {
  const schema = SCHEMAS[d.attributes["ce-type"]];
  if (!schema) throw new Error(`unknown ce-type ${d.attributes["ce-type"]}`);
  switch (d.attributes["content-type"]) {
    case "application/json":
      return fromJsonString(schema, d.data.toString("utf8"));
    case "application/protobuf":
      return fromBinary(schema, d.data);
    default:
      throw new Error(`unexpected content-type ${d.attributes["content-type"]}`);
  }
}

// ---- the service as a child process -------------------------------------------

export const repoRoot = path.resolve(import.meta.dirname, "../..");

export interface ServiceProcess {
  child: ChildProcess;
  port: number;
  baseUrl: string;
  /** Parsed JSON log lines so far. */
  logs(): Record<string, any>[];
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** REST call; resolves with status and parsed JSON body (undefined if not JSON). */
  rest(method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string }>;
  /** The value of a Prometheus sample, e.g. metric('events_parked_total', { type: "…" }); 0 when absent. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

export interface ServiceOptions {
  databaseUrl: string;
  topic: string;
  /** Where the service reaches Pub/Sub (a proxy); default the emulator. */
  pubsubHost?: string;
  format?: "json" | "protobuf";
  env?: Record<string, string>;
  name?: string;
  /**
   * Discard stdout instead of parsing it, and wait for /health instead of the
   * "serving" line (a free port is chosen). For load: log lines written to a
   * pipe that is read slowly block the service (pipes are synchronous on Linux).
   */
  quiet?: boolean;
}

/**
 * Starts `server/main.ts` as its own process (node --import tsx, no wrapper
 * process, so signals reach the service itself) and waits for its "serving"
 * log line. SIGKILLed in teardown if still running.
 */
export async function startService(t: Teardown, o: ServiceOptions): Promise<ServiceProcess> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "vms-events-"));
  const fixedPort = o.quiet ? await freePort() : undefined;
  const env: Record<string, string | undefined> = {
    ...process.env,
    PORT: String(fixedPort ?? 0),
    HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    DATABASE_URL: o.databaseUrl,
    DB_POOL_MAX: "5",
    PUBSUB_TOPIC: o.topic,
    PUBSUB_PROJECT_ID: PROJECT_ID,
    PUBSUB_EMULATOR_HOST: o.pubsubHost ?? emulatorHost,
    EVENTS_FORMAT: o.format ?? "json",
    METADATA_SERVER_DETECTION: "none",
    LOG_LEVEL: "info",
    // No media jobs on the stand-in bytes these tests upload: their events are counted.
    THUMBNAIL_CONCURRENCY: "0",
    ...o.env,
  };
  const child = spawn(process.execPath, ["--import", "tsx", "server/main.ts"], { cwd: repoRoot, env, stdio: ["ignore", o.quiet ? "ignore" : "pipe", "pipe"] });
  teeOutput(child.stdout, child.pid);
  teeOutput(child.stderr, child.pid);
  const lines: Record<string, any>[] = [];
  let partial = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (s: string) => {
    partial += s;
    const parts = partial.split("\n");
    partial = parts.pop()!;
    for (const l of parts) {
      if (!l.trim()) continue;
      try {
        lines.push(JSON.parse(l));
      } catch {
        lines.push({ message: "(not JSON)", text: l });
      }
    }
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  const deadline = Date.now() + 60_000;
  let port: number | undefined;
  const healthy = async () => {
    try {
      return (await fetch(`http://127.0.0.1:${fixedPort}/health`)).status === 200;
    } catch {
      return false;
    }
  };
  while (port === undefined) {
    const serving = fixedPort === undefined ? lines.find((l) => l.message === "serving") : (await healthy()) && { port: fixedPort };
    if (serving) port = serving.port;
    else if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${o.name ?? "service"} exited before serving (${child.exitCode ?? child.signalCode}): ${stderr.slice(-2000)}`);
    } else if (Date.now() > deadline) {
      throw new Error(`${o.name ?? "service"} did not start serving within 60 s: ${stderr.slice(-2000)}`);
    } else await sleep(25);
  }
  const baseUrl = `http://127.0.0.1:${port}`;

  return {
    child,
    port,
    baseUrl,
    logs: () => lines,
    stderr: () => stderr,
    exited,
    async rest(method, p, body) {
      const res = await fetch(baseUrl + p, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let json: any;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, json, text };
    },
    async metric(name, labels = {}) {
      const text = await (await fetch(baseUrl + "/metrics")).text();
      return metricValue(text, name, labels);
    },
  };
}

/** Sum of the samples of `name` whose labels include `labels`, from Prometheus text. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[4]);
  }
  return sum;
}

export function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls probe until it returns a value other than undefined/false; throws after ms. */
export async function poll<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, ms: number, what: string, every = 50): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

// ---- an emulator of our own (the benchmark; tests use the one npm test starts) ---

export interface Emulator {
  host: string;
  stop(): Promise<void>;
}

/**
 * Starts `gcloud beta emulators pubsub start` on a free loopback port in its
 * own process group (gcloud runs the Java server as a child; the group is
 * killed as a whole) and waits for "Server started".
 */
export async function startEmulator(timeoutMs = 60_000): Promise<Emulator> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "vms-pubsub-"));
  mkdirSync(path.join(dir, "data"));
  const child = spawn(
    "gcloud",
    ["beta", "emulators", "pubsub", "start", `--host-port=127.0.0.1:${port}`, `--project=${PROJECT_ID}`, `--data-dir=${path.join(dir, "data")}`],
    {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        CLOUDSDK_CORE_DISABLE_PROMPTS: "1",
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: "1",
        CLOUDSDK_CORE_DISABLE_USAGE_REPORTING: "true",
        CLOUDSDK_CONFIG: path.join(dir, "config"),
      },
    },
  );
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", (e) => (out += `\n${e.message}`));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {}
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
      }, 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + timeoutMs;
  while (!/Server started, listening on/.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the Pub/Sub emulator did not start (is google-cloud-cli-pubsub-emulator installed?): ${out.trim().split("\n").slice(-3).join(" | ")}`);
    }
    await sleep(100);
  }
  return { host: `127.0.0.1:${port}`, stop };
}
