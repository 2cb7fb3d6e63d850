import { Writable } from "node:stream";
import t from "tap";
import winston from "winston";
import { createLogger } from "../../server/logger.js";
import { packageVersion as SERVICE_VERSION } from "../../server/package-files.js";

// The service's log lines as ELK receives them (issue 17): our fields plus
// their Elastic Common Schema names, and no secret in any line.

function capture(): { logger: winston.Logger; lines: () => Record<string, any>[]; raw: () => string } {
  let out = "";
  const logger = createLogger("debug");
  logger.clear().add(new winston.transports.Stream({ stream: new Writable({ write: (c, _e, cb) => ((out += c), cb()) }) }));
  return { logger, raw: () => out, lines: () => out.trim().split("\n").map((l) => JSON.parse(l)) };
}

t.test("a call line keeps its fields and adds the ECS ones", async (t) => {
  const { logger, lines } = capture();
  logger.info("call", { protocol: "grpc", procedure: "video.v1.VideoService/GetVideo", method: "POST", path: "/video.v1.VideoService/GetVideo", code: "ok", duration_ms: 1.5, request_id: "r-1", trace_id: "0af7651916cd43dd8448eb211c80319c", span_id: "b7ad6b7169203331" });
  const [l] = lines();
  t.match(l, { message: "call", level: "info", protocol: "grpc", code: "ok", duration_ms: 1.5, request_id: "r-1", trace_id: "0af7651916cd43dd8448eb211c80319c", span_id: "b7ad6b7169203331", method: "POST", path: "/video.v1.VideoService/GetVideo" }, "current fields kept");
  t.equal(l["@timestamp"], l.timestamp, "@timestamp");
  t.match(l["@timestamp"], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.equal(l["log.level"], "info");
  t.equal(l["service.name"], "video-management-service");
  t.equal(l["service.version"], SERVICE_VERSION);
  t.equal(l["trace.id"], "0af7651916cd43dd8448eb211c80319c");
  t.equal(l["span.id"], "b7ad6b7169203331");
  t.equal(l["http.request.id"], "r-1");
  t.equal(l["http.request.method"], "POST");
  t.equal(l["url.path"], "/video.v1.VideoService/GetVideo");
  t.equal(l["event.duration"], 1_500_000, "event.duration in nanoseconds");
  t.equal(l["ecs.version"], "8.11.0");
  t.equal(l.service, undefined, "`service` moved to service.name (ECS maps `service` as an object)");
});

t.test("errors move to error.* (ECS maps `error` as an object)", async (t) => {
  const { logger, lines } = capture();
  logger.warn("events not published; will retry", { error: "deadline exceeded" });
  const boom = new TypeError("boom");
  logger.error("call failed", { error: { name: boom.name, message: boom.message, code: "XX000", stack: boom.stack } });
  const [a, b] = lines();
  t.equal(a["error.message"], "deadline exceeded");
  t.equal(a.error, undefined);
  t.match(b, { "error.message": "boom", "error.type": "TypeError", "error.code": "XX000" });
  t.match(b["error.stack_trace"], /TypeError: boom/);
});

t.test("secrets are redacted anywhere in a line, the caller's objects untouched", async (t) => {
  const { logger, raw } = capture();
  const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
  const amz = "https://bucket.s3.example/videos/x/original?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261203&X-Amz-Signature=3f2a9c0d1e4b5a6f7788990011223344556677889900aabbccddeeff00112233&X-Amz-SignedHeaders=host";
  const fs = "http://127.0.0.1:8080/objects/videos/x/original?X-Vms-Expires=1764750000&X-Vms-Signature=abcdef0123456789abcdef0123456789";
  const dsn = "postgres://vms:hunter2-db-pass@db.internal:5432/vms";
  const attributes = { "ce-id": "1", note: `token ${jwt}` };
  logger.info(`Authorization: Bearer ${jwt}`, { authorization: "Basic dXNlcjpwYXNz", upload_url: amz, url: fs, error: `connect ECONNREFUSED ${dsn}`, attributes, list: [dsn] });
  const out = raw();
  for (const secret of [jwt, "c2lnbmF0dXJlLWJ5dGVz", "3f2a9c0d1e4b5a6f", "abcdef0123456789", "hunter2-db-pass", "dXNlcjpwYXNz", "AKIAEXAMPLE"]) {
    t.notOk(out.includes(secret), `${secret.slice(0, 12)}… is not in the line`);
  }
  t.match(out, /Bearer \[REDACTED\]/);
  t.match(out, /X-Amz-Signature=\[REDACTED\]/);
  t.match(out, /X-Vms-Signature=\[REDACTED\]/);
  t.match(out, /postgres:\/\/vms:\[REDACTED\]@db\.internal:5432\/vms/, "the URL stays readable without its password");
  t.match(out, /X-Vms-Expires=1764750000/, "the rest of a URL is kept");
  t.equal(attributes.note, `token ${jwt}`, "the caller's object is not changed");
});
