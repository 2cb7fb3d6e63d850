import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";

// Client faults, built once so every handler reports them the same way.

export interface FieldViolation {
  field: string;
  description: string;
}

/** INVALID_ARGUMENT naming every bad field (google.rpc.BadRequest, AIP-193). */
export function invalidArgument(violations: FieldViolation[]): ConnectError {
  return badRequest(Code.InvalidArgument, violations);
}

/** OUT_OF_RANGE: a well-formed value past what exists (a cursor older than the retained history). */
export function outOfRange(violation: FieldViolation): ConnectError {
  return badRequest(Code.OutOfRange, [violation]);
}

function badRequest(code: Code, violations: FieldViolation[]): ConnectError {
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(summary, code, undefined, [
    {
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: violations.map((v) => ({ field: v.field, description: v.description })),
      }),
    },
  ]);
}

export function notFound(what: string): ConnectError {
  return new ConnectError(`${what} not found`, Code.NotFound);
}

export function aborted(message: string): ConnectError {
  return new ConnectError(message, Code.Aborted);
}

export function alreadyExists(message: string): ConnectError {
  return new ConnectError(message, Code.AlreadyExists);
}

export function failedPrecondition(message: string): ConnectError {
  return new ConnectError(message, Code.FailedPrecondition);
}
