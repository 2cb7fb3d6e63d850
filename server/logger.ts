import winston from "winston";

// JSON lines on stdout, one object per event, for ELK. Callers pass fields,
// never request bodies or credentials.
export function createLogger(level: string, silent = false): winston.Logger {
  return winston.createLogger({
    level,
    silent,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json()),
    defaultMeta: { service: "video-management-service" },
    transports: [new winston.transports.Console()],
  });
}
