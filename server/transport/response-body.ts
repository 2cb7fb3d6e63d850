import http2 from "node:http2";
import type { NodeResponse } from "./listener.js";

// Over HTTP/2, a body handed to Node in one write is queued whole in the
// stream, and if the client resets the stream (a deadline passed, a call
// cancelled) Node never gives back the session memory those unsent bytes were
// counted for: a few abandoned multi-megabyte responses used up the session's
// maxSessionMemory and every later call on the connection was refused with
// ENHANCE_YOUR_CALM (see connection-lifecycle.ts). Handed over in slices, each
// when the stream has room, at most one slice is queued at a time.
const SLICE = 64 * 1024;

/** Ends the response with `body`: over HTTP/2 in slices as the stream drains, over HTTP/1.1 in one write. */
export function endWith(res: NodeResponse, body: Uint8Array): void {
  if (!(res instanceof http2.Http2ServerResponse) || body.byteLength <= SLICE) {
    res.end(body);
    return;
  }
  let offset = 0;
  const next = () => {
    while (!res.stream.destroyed) {
      const slice = body.subarray(offset, offset + SLICE);
      offset += slice.byteLength;
      if (offset >= body.byteLength) {
        res.end(slice);
        return;
      }
      if (!res.write(slice)) {
        res.once("drain", next);
        return;
      }
    }
  };
  next();
}
