import { SpanKind, SpanStatusCode, trace, type Context } from "@opentelemetry/api";
import { SERVICE_NAME } from "./tracing.js";

// Client spans for object storage calls, one per operation with its retries
// inside, named and described as the OpenTelemetry AWS SDK instrumentation
// does (S3.PutObject; rpc.* and aws.s3.* attributes). Recorded after the call
// from its start time, as the database spans are, and only inside a traced
// call: the janitor's and the reconciler's background calls would otherwise
// each start a trace of their own.

const tracer = trace.getTracer(SERVICE_NAME);

export interface StorageCall {
  /** The SDK's command name, e.g. PutObjectCommand. */
  command: string;
  input: { Bucket?: unknown; Key?: unknown };
  /** Epoch milliseconds. */
  startTime: number;
  attempts: number;
  metadata?: { httpStatusCode?: number; requestId?: string };
  error?: unknown;
}

export function recordStorageSpan(parent: Context, call: StorageCall): void {
  if (!trace.getSpan(parent)?.isRecording()) return;
  const method = call.command.replace(/Command$/, "");
  const { Bucket, Key } = call.input;
  const span = tracer.startSpan(
    `S3.${method}`,
    {
      kind: SpanKind.CLIENT,
      startTime: call.startTime,
      attributes: {
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "rpc.method": method,
        // Keys are derived from ids (storage/keys.ts), never from what a caller wrote.
        ...(typeof Bucket === "string" ? { "aws.s3.bucket": Bucket } : {}),
        ...(typeof Key === "string" ? { "aws.s3.key": Key } : {}),
        "vms.storage.attempts": call.attempts,
        ...(call.metadata?.httpStatusCode ? { "http.response.status_code": call.metadata.httpStatusCode } : {}),
        ...(call.metadata?.requestId ? { "aws.request_id": call.metadata.requestId } : {}),
      },
    },
    parent,
  );
  if (call.error !== undefined) {
    // The error's name only (NoSuchKey, SlowDown, TimeoutError): its message can quote a URL.
    const name = (call.error as { name?: unknown })?.name;
    span.setStatus({ code: SpanStatusCode.ERROR, message: typeof name === "string" ? name : "storage call failed" });
    span.setAttribute("error.type", typeof name === "string" ? name : "Error");
  }
  span.end();
}
