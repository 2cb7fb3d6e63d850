import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

// `buf curl` from the npm-installed @bufbuild/buf: a third-party gRPC/Connect
// client that finds the schema through server reflection.

const buf = fileURLToPath(new URL("../../node_modules/.bin/buf", import.meta.url));

/** Runs `buf curl --http2-prior-knowledge ARGS`; never rejects. */
export function bufCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(buf, ["curl", "--http2-prior-knowledge", ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
