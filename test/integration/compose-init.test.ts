import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { DeleteBucketCommand, HeadBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { PubSub } from "@google-cloud/pubsub";
import t from "tap";
import { parse } from "yaml";
import { pubsubSkipReason, uniqueName } from "../support/pubsub.js";
import { s3SkipReason } from "../support/s3.js";

// deploy/compose.yaml's one-shot init containers, run here as they are
// written (POSIX sh and curl, compose's $$ unescaped) against the emulators
// `npm test` starts, twice each: the topic, the ordered subscription and the
// bucket are created, and a second run (a `docker compose up` again) finds
// them there and succeeds.

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../..");
const compose = parse(readFileSync(path.join(root, "deploy/compose.yaml"), "utf8")) as {
  services: Record<string, { environment: Record<string, string>; command: string[]; entrypoint: string[] }>;
};
const curlMissing = async () => run("curl", ["--version"]).then(() => false, () => "curl is not installed (the init containers' image has it)");

async function runInit(service: string, env: Record<string, string>) {
  const s = compose.services[service];
  if (s.entrypoint.join(" ") !== "sh -c") throw new Error(`${service}: expected entrypoint sh -c, not ${s.entrypoint.join(" ")}`);
  const script = s.command[0].replaceAll("$$", "$");
  return run("sh", ["-c", script], { env: { PATH: process.env.PATH, ...s.environment, ...env }, timeout: 30_000 });
}

t.test("pubsub-init creates the topic and an ordered subscription, and succeeds again when they exist", { skip: pubsubSkipReason() || (await curlMissing()) }, async (t) => {
  const host = process.env.TEST_PUBSUB_EMULATOR_HOST!;
  const env = { EMULATOR: `http://${host}`, PROJECT: uniqueName("compose"), TOPIC: uniqueName("topic"), SUBSCRIPTION: uniqueName("sub") };
  const first = await runInit("pubsub-init", env);
  t.match(first.stdout, `topic projects/${env.PROJECT}/topics/${env.TOPIC} and subscription ${env.SUBSCRIPTION} are there`);
  await runInit("pubsub-init", env);
  t.pass("a second run succeeds (409: already there)");

  const client = new PubSub({ projectId: env.PROJECT, apiEndpoint: host, emulatorMode: true });
  t.teardown(() => client.close());
  const [exists] = await client.topic(env.TOPIC).exists();
  t.ok(exists, "the topic exists");
  const [meta] = await client.subscription(env.SUBSCRIPTION).getMetadata();
  t.equal(meta.topic, `projects/${env.PROJECT}/topics/${env.TOPIC}`, "the subscription is on it");
  t.equal(meta.enableMessageOrdering, true, "and delivers in ordering-key order");
  await client.subscription(env.SUBSCRIPTION).delete();
  await client.topic(env.TOPIC).delete();

  // A topic name Pub/Sub refuses ("goog" is reserved): the container fails, naming the PUT and its status.
  await t.rejects(runInit("pubsub-init", { ...env, TOPIC: "goog-reserved" }), /PUT topics\/goog-reserved: HTTP 400/, "a refused PUT fails the container, saying so");
});

t.test("s3-init creates the bucket, and succeeds again when it exists", { skip: s3SkipReason() || (await curlMissing()) }, async (t) => {
  const endpoint = process.env.TEST_S3_ENDPOINT!;
  const bucket = uniqueName("compose");
  const out = await runInit("s3-init", { S3: endpoint, BUCKET: bucket });
  t.match(out.stdout, `bucket ${bucket} is there`);
  await runInit("s3-init", { S3: endpoint, BUCKET: bucket });
  t.pass("a second run succeeds");
  const s3 = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true });
  t.teardown(() => s3.destroy());
  await s3.send(new HeadBucketCommand({ Bucket: bucket }));
  t.pass("the bucket exists");
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
});
