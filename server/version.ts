import { readFileSync } from "node:fs";

/** The service's version, from package.json (logs, the trace resource). */
export const SERVICE_VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
