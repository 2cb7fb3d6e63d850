// Elastic Common Schema names for the fields our log lines already carry, so
// Filebeat/Elasticsearch index them without an ingest pipeline. Each line
// keeps its own fields and gains the ECS ones (dotted keys, which
// Elasticsearch expands into objects). Three are moved rather than copied,
// because ECS makes their name an object and Elasticsearch cannot map one
// field as both a string and an object: `service` → `service.name`, and
// `error` (a string or {name, message, code, stack}) → `error.message`,
// `error.type`, `error.code`, `error.stack_trace`.

export const ECS_VERSION = "8.11.0";

type Line = Record<string | symbol, unknown>;

export function ecsFields(info: Line, service: { name: string; version: string }): Line {
  info["@timestamp"] = info.timestamp;
  info["log.level"] = info.level;
  info["ecs.version"] = ECS_VERSION;
  delete info.service;
  info["service.name"] = service.name;
  info["service.version"] = service.version;
  if (typeof info.trace_id === "string") info["trace.id"] = info.trace_id;
  if (typeof info.span_id === "string") info["span.id"] = info.span_id;
  if (typeof info.request_id === "string") info["http.request.id"] = info.request_id;
  if (typeof info.method === "string") info["http.request.method"] = info.method;
  if (typeof info.path === "string") info["url.path"] = info.path;
  // event.duration is in nanoseconds.
  if (typeof info.duration_ms === "number") info["event.duration"] = Math.round(info.duration_ms * 1e6);
  if (typeof info.channel === "string") info["event.dataset"] = `${service.name}.${info.channel}`;
  const error = info.error;
  if (error !== undefined) {
    delete info.error;
    if (error !== null && typeof error === "object") {
      const e = error as { name?: unknown; message?: unknown; code?: unknown; stack?: unknown };
      if (e.message !== undefined) info["error.message"] = String(e.message);
      if (e.name !== undefined) info["error.type"] = String(e.name);
      if (e.code !== undefined) info["error.code"] = String(e.code);
      if (e.stack !== undefined) info["error.stack_trace"] = String(e.stack);
    } else {
      info["error.message"] = String(error);
    }
  }
  return info;
}
