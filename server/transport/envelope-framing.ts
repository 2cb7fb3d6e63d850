import { Code, ConnectError, createContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";

// Our own end-of-stream check of a client stream, independent of the
// envelope decoder in @connectrpc/connect (2.2.0 took a stream that ended
// right after a whole 5-byte envelope header as complete; patched in
// patches/, but a commit must not rest on one library's bookkeeping). The
// raw request body of an enveloped protocol — gRPC, gRPC-Web, Connect
// streaming — is followed envelope by envelope as it passes; a body that ends
// anywhere but where a message ends fails the call with INVALID_ARGUMENT. A
// body that ended cleanly is recorded in the call's context, and handlers
// that commit what a stream carried (UploadVideoContent) require that record.

/** Where a stream of envelopes stands after the bytes pushed so far. */
export function envelopeFraming() {
  const header = new Uint8Array(5);
  let headerSeen = 0;
  let messageLeft = 0;
  return {
    push(chunk: Uint8Array): void {
      for (let at = 0; at < chunk.length; ) {
        if (messageLeft > 0) {
          const n = Math.min(messageLeft, chunk.length - at);
          messageLeft -= n;
          at += n;
          continue;
        }
        header[headerSeen++] = chunk[at++]!;
        if (headerSeen === 5) {
          messageLeft = new DataView(header.buffer).getUint32(1);
          headerSeen = 0;
        }
      }
    },
    /** Undefined at a message boundary; otherwise where the stream was cut. */
    cut(): string | undefined {
      if (headerSeen > 0) return `the stream ended inside an envelope header (${headerSeen} of 5 bytes)`;
      if (messageLeft > 0) return `the stream ended ${messageLeft} bytes before the end of its last message`;
      return undefined;
    },
  };
}

/** Set on the call once its request stream was seen to end where a message ended. */
export const streamEndKey = createContextKey<{ clean: boolean } | undefined>(undefined, { description: "request stream ended cleanly" });

const ENVELOPED = /^application\/(grpc|grpc-web|connect\+)/i;

/**
 * The request body of a call with a streaming input, checked as it passes
 * (enveloped protocols only; anything else is passed on untouched and
 * records nothing).
 */
export function checkedRequestStream(body: AsyncIterable<Uint8Array>, contentType: string, values: ContextValues): AsyncIterable<Uint8Array> {
  if (!ENVELOPED.test(contentType)) return body;
  const end = trackStreamEnd(values);
  return (async function* () {
    const framing = envelopeFraming();
    for await (const chunk of body) {
      framing.push(chunk);
      yield chunk;
    }
    const cut = framing.cut();
    if (cut) throw new ConnectError(`protocol error: ${cut}`, Code.InvalidArgument);
    end.clean = true;
  })();
}

/**
 * The call's record of how its request stream ended, for a transport to set
 * `clean` on once it has seen the end (the REST content upload, which frames
 * the messages itself, sets it when the HTTP body has ended).
 */
export function trackStreamEnd(values: ContextValues): { clean: boolean } {
  const end = { clean: false };
  values.set(streamEndKey, end);
  return end;
}

/** True when the transport saw this call's request stream end where a message ended. */
export const streamEndedCleanly = (hc: HandlerContext) => hc.values.get(streamEndKey)?.clean === true;
