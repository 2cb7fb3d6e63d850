import winston from "winston";
import { ecsFields } from "./logging/ecs-fields.js";
import { redact } from "./logging/redact.js";
import { packageVersion } from "./package-files.js";

// JSON lines on stdout, one object per event, for ELK: our fields plus their
// Elastic Common Schema names (logging/ecs-fields.ts), with secrets redacted
// from every string (logging/redact.ts) whatever a caller passed.
const ecs = winston.format((info) => ecsFields(info, { name: "video-management-service", version: packageVersion }) as winston.Logform.TransformableInfo);
const redacted = winston.format((info) => redact(info));

export function createLogger(level: string, silent = false): winston.Logger {
  return winston.createLogger({
    level,
    silent,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), ecs(), redacted(), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}
