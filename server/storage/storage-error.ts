import { Code, ConnectError } from "@connectrpc/connect";

const REFUSED_PARTS = new Set(["EntityTooSmall", "InvalidPart", "InvalidPartOrder", "NoSuchUpload"]);

// Storage faults as callers see them. After the SDK's bounded retries a
// failing store is UNAVAILABLE (retry later); nothing of the request — URLs,
// signatures, credentials — is put in the message.
export function storageError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  const err = e as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const status = err.$metadata?.httpStatusCode;
  if (err.name === "AbortError") {
    // Aborted by the call's signal: say why (its deadline passed, or the client left).
    const reason = (e as { cause?: unknown }).cause;
    return reason instanceof ConnectError ? reason : new ConnectError("the upload was cancelled", Code.Canceled);
  }
  if (status === 403 || err.name === "AccessDenied" || err.name === "InvalidAccessKeyId" || err.name === "SignatureDoesNotMatch") {
    return new ConnectError("object storage refused the service's credentials", Code.Internal);
  }
  if (err.name === "NoSuchBucket") return new ConnectError("the storage bucket does not exist", Code.FailedPrecondition);
  // S3 refusing the parts a client uploaded (a part under 5 MiB that is not
  // the last, parts that changed, an upload that is gone): retrying the same
  // call cannot help, uploading the right parts can.
  if (err.name && REFUSED_PARTS.has(err.name)) return new ConnectError(`object storage refused the uploaded parts (${err.name})`, Code.FailedPrecondition);
  return new ConnectError("object storage is unavailable; retry later", Code.Unavailable);
}
