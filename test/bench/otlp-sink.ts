import http from "node:http";
import type { AddressInfo } from "node:net";

// A local OTLP/HTTP receiver for the tracing bench case: it answers every
// export at once and keeps only counts, so the collector costs the measured
// service nothing beyond the export itself. Server spans are counted by their
// name's bytes in the protobuf body (each span carries its name once).

export interface OtlpSink {
  url: string;
  stats(): { requests: number; bytes: number; spansNamed: number };
  close(): Promise<void>;
}

export async function otlpSink(spanName: string): Promise<OtlpSink> {
  const needle = Buffer.from(spanName);
  let requests = 0;
  let bytes = 0;
  let spansNamed = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      requests++;
      bytes += body.length;
      for (let i = body.indexOf(needle); i >= 0; i = body.indexOf(needle, i + needle.length)) spansNamed++;
      res.writeHead(200, { "content-type": "application/x-protobuf" });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats: () => ({ requests, bytes, spansNamed }),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
