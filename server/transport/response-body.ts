import type http from "node:http";
import http2 from "node:http2";
import type { NodeRequest, NodeResponse } from "./listener.js";

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

// A server stream's headers go out with its first message: connect-es waits
// for that message before it hands over the response (so an error can still
// be a trailers-only answer), and connect-node's writer sends the headers with
// it. A stream with nothing to say yet (WatchEvents with no new event) then
// sends nothing at all, and a proxy waiting for the response's headers times
// the call out: nginx grpc_pass answers 504 at grpc_read_timeout, and the
// PINGs that keep an answered stream open (connection-lifecycle.ts) do not
// count before the headers. So a stream quiet for this long is sent its
// headers by themselves. Every streaming protocol served here (gRPC, gRPC-Web,
// Connect) answers with status 200 and the request's content type; headers
// the handler sets after that are not sent.
const QUIET_HEADERS_MS = 1000;

/** Starts the wait for a server stream's first message; call the result once the router's response is in hand. */
export function headersIfQuiet(req: NodeRequest, res: NodeResponse): () => void {
  const timer = setTimeout(() => {
    const gone = res instanceof http2.Http2ServerResponse ? res.stream.destroyed : (res as http.ServerResponse).destroyed;
    if (res.headersSent || res.writableEnded || gone) return;
    const contentType = req.headers["content-type"];
    (res as http.ServerResponse).writeHead(200, contentType ? { "content-type": contentType } : {});
    if (!(res instanceof http2.Http2ServerResponse)) res.flushHeaders();
    // connect-node's writer sends the headers itself with the first message.
    res.writeHead = (() => res) as typeof res.writeHead;
  }, QUIET_HEADERS_MS);
  return () => clearTimeout(timer);
}
