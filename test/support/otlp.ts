import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Asserts } from "./server.js";

// A small OTLP/HTTP receiver standing in for a collector, for tests and the
// bench: it keeps every export request and decodes http/json bodies into spans.

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: { stringValue?: string; intValue?: string } }[];
  status?: { code?: number; message?: string };
  links?: { traceId: string; spanId: string }[];
}

export async function collector(t: Asserts) {
  const spans: OtlpSpan[] = [];
  const requests: { path: string; contentType: string; bytes: number; body: string }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const contentType = String(req.headers["content-type"] ?? "");
      requests.push({ path: req.url ?? "", contentType, bytes: body.length, body: body.toString("latin1") });
      if (contentType.startsWith("application/json")) {
        const doc = JSON.parse(body.toString("utf8")) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      res.writeHead(200, { "content-type": contentType || "application/json" });
      res.end(contentType.startsWith("application/json") ? "{}" : "");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, requests };
}

export const attr = (s: OtlpSpan, key: string) => {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? v?.intValue;
};
