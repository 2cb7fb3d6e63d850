import type { PubSub, Topic } from "@google-cloud/pubsub";
import type winston from "winston";
import type { CloudEvent } from "./cloudevents.js";

// Where the relay delivers: Google Cloud Pub/Sub, or — on the embedded
// defaults — the log, one JSON line per event. The relay treats both alike.

export interface EventPublisher {
  readonly name: string;
  /** OpenTelemetry messaging attributes of the relay's publish spans: the system and where events go. */
  readonly telemetry: { "messaging.system": string; "messaging.destination.name": string };
  /** Publishes in order; settles per event, so one failure does not hide another's success. */
  publish(events: CloudEvent[]): Promise<PromiseSettledResult<unknown>[]>;
  /** Undefined when ready to publish; otherwise why not. */
  unreadyReason(): Promise<string | undefined>;
  close(): Promise<void>;
}

export class LogPublisher implements EventPublisher {
  readonly name = "log";
  readonly telemetry = { "messaging.system": "log", "messaging.destination.name": "log" };
  constructor(private readonly logger: winston.Logger) {}

  async publish(events: CloudEvent[]) {
    return events.map((e) => {
      this.logger.info("event", { channel: "events", attributes: e.attributes, data: e.data.toString(e.attributes["content-type"] === "application/json" ? "utf8" : "base64") });
      return { status: "fulfilled", value: undefined } as const;
    });
  }

  async unreadyReason() {
    return undefined;
  }

  async close() {}
}

export interface PubSubOptions {
  projectId: string | undefined;
  topic: string;
  // Per publish RPC; a stalled bus fails the batch instead of holding it.
  timeoutMs?: number;
}

/** Messages per publish RPC (the client's batching); the relay sizes a video's share of a batch by it. */
export const PUBLISH_BATCH_MESSAGES = 500;

// How long a successful topic check vouches for readiness: a topic deleted
// later shows up within this time (or at once, by a publish that finds it gone).
const TOPIC_CHECK_TTL_MS = 30_000;
const NOT_FOUND = 5;

export class PubSubPublisher implements EventPublisher {
  readonly name = "pubsub";
  readonly telemetry: EventPublisher["telemetry"];
  private readonly client: PubSub;
  private readonly topic: Topic;
  private topicSeenAt: number | undefined;
  private recheck: Promise<unknown> | undefined;

  /** Loads the Pub/Sub client library first (it is not loaded when events go to the log). */
  static async create(options: PubSubOptions): Promise<PubSubPublisher> {
    const { PubSub } = await import("@google-cloud/pubsub");
    return new PubSubPublisher(options, new PubSub({ projectId: options.projectId }));
  }

  private constructor(options: PubSubOptions, client: PubSub) {
    this.client = client;
    this.telemetry = { "messaging.system": "gcp_pubsub", "messaging.destination.name": options.topic };
    this.topic = this.client.topic(options.topic, {
      messageOrdering: true,
      batching: { maxMessages: PUBLISH_BATCH_MESSAGES, maxMilliseconds: 5 },
      gaxOpts: { timeout: options.timeoutMs ?? 10_000, retry: null },
    });
  }

  async publish(events: CloudEvent[]) {
    const results = await Promise.allSettled(
      events.map((e) => this.topic.publishMessage({ data: e.data, attributes: e.attributes, orderingKey: e.orderingKey })),
    );
    // After a failure the client pauses the ordering key (so later events of
    // that video cannot overtake); the relay retries them, so resume it.
    results.forEach((r, i) => {
      if (r.status !== "rejected") return;
      this.topic.resumePublishing(events[i].orderingKey);
      if ((r.reason as { code?: number })?.code === NOT_FOUND) this.topicSeenAt = undefined;
    });
    return results;
  }

  // Topics are infrastructure: the service never creates one, it reports.
  // Until the topic has been seen, readiness waits on the check. After that
  // it answers at once and re-checks in the background when the last sighting
  // is stale: a deleted topic (or a publish that found it gone) makes the
  // service unready, while a bus that is merely unreachable does not — the
  // outbox rides that out, and writes must go on.
  async unreadyReason() {
    if (this.topicSeenAt === undefined) return this.checkTopic();
    if (Date.now() - this.topicSeenAt >= TOPIC_CHECK_TTL_MS) this.recheck ??= this.checkTopic().finally(() => (this.recheck = undefined));
    return undefined;
  }

  private async checkTopic(): Promise<string | undefined> {
    try {
      await this.topic.getMetadata({ timeout: 5_000, retry: null });
      this.topicSeenAt = Date.now();
      return undefined;
    } catch (e) {
      if ((e as { code?: number }).code === NOT_FOUND) {
        this.topicSeenAt = undefined;
        return `Pub/Sub topic ${this.topic.name} does not exist`;
      }
      return `Pub/Sub is unreachable: ${(e as Error).message.split("\n")[0]}`;
    }
  }

  async close() {
    await this.topic.flush().catch(() => {});
    await this.client.close();
  }
}
