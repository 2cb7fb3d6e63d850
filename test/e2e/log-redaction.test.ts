import t from "tap";
import { captureLogs } from "../support/jwt.js";
import { findSecrets } from "../support/log-secrets.js";
import { startTestServer } from "../support/server.js";

// Paths that put caller-supplied text into log lines, driven with secrets in
// that text (issue 17): the x-request-id a caller sends (call lines) and the
// data of an event (the embedded log sink prints it). No line may carry them.

const jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsInJvbGVzIjpbImVkaXRvciJdfQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
const presigned = "https://b.s3.example/videos/x/original?X-Amz-Credential=AKIAEXAMPLE%2F20261203&X-Amz-Signature=3f2a9c0d1e4b5a6f7788990011223344556677889900aabbccddeeff00112233";
const fsUrl = "http://127.0.0.1:8080/objects/videos/x/original?X-Vms-Expires=1&X-Vms-Signature=abcdef0123456789abcdef0123456789abcdef01";
const dsn = "postgres://vms:hunter2-db-pass@db.internal:5432/vms";

t.test("secrets in a request id and in event data never reach a log line", async (t) => {
  const s = await startTestServer(t, { database: "pglite" });
  const logs = captureLogs(s.ctx.logger);
  const created = await s.clients.rest("POST", "/videos", {
    headers: { "x-request-id": jwt, authorization: `Bearer ${jwt}` },
    json: { title: `Authorization: Bearer ${jwt}`, description: `upload via ${presigned} or ${fsUrl}; db ${dsn}` },
  });
  t.equal(created.status, 200, created.text);
  const deadline = Date.now() + 15_000;
  while (!logs.records().some((l) => l.channel === "events") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));

  const records = logs.records();
  const call = records.find((l) => l.message === "call" && l.route === "POST /videos");
  const event = records.find((l) => l.channel === "events");
  t.ok(call, "the call was logged");
  t.ok(event, "the event was logged by the log sink");
  t.equal(call?.request_id, "[REDACTED]", "a JWT sent as the request id is redacted");
  t.match(JSON.stringify(event?.data), /X-Vms-Expires=1&X-Vms-Signature=\[REDACTED\]/, "the event's data is kept, minus its secrets");
  t.same(findSecrets(logs.lines.join("\n")), [], "no secret in any line");
  for (const secret of ["c2lnbmF0dXJlLWJ5dGVzLWhlcmU", "3f2a9c0d1e4b5a6f", "abcdef0123456789abcdef", "hunter2-db-pass"]) {
    t.notOk(logs.lines.some((l) => l.includes(secret)), `${secret.slice(0, 10)}… appears nowhere`);
  }
});
