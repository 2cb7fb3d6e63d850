import { mkdirSync, rmSync } from "node:fs";
import { CAPTURE_DIR } from "./log-capture.js";

// tap's `before` (package.json): each run's log scan sees that run's lines only.
rmSync(CAPTURE_DIR, { recursive: true, force: true });
mkdirSync(CAPTURE_DIR, { recursive: true });
