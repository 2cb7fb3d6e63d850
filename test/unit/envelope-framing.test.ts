import t from "tap";
import { createEnvelopeReadableStream, transformSplitEnvelope } from "@connectrpc/connect/protocol";
import { envelopeFraming } from "../../server/transport/envelope-framing.js";

// Where a stream of 5-byte-header envelopes may end: our own check
// (envelope-framing.ts), and @connectrpc/connect's decoder as patched in
// patches/@connectrpc+connect+2.2.0.patch.

const header = (length: number) => {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(length, 1);
  return b;
};
const message = (data: string) => Buffer.concat([header(Buffer.byteLength(data)), Buffer.from(data)]);

const CUTS: [string, Buffer][] = [
  ["a whole header announcing 4096 bytes, then nothing", Buffer.concat([message("abcd"), header(4096)])],
  ["a header and part of its message", Buffer.concat([message("abcd"), header(4096), Buffer.alloc(10)])],
  ["4 of a header's 5 bytes", Buffer.concat([message("abcd"), header(4096).subarray(0, 4)])],
];
const WHOLE: [string, Buffer][] = [
  ["two whole messages", Buffer.concat([message("abcd"), message("efgh")])],
  ["an empty message last", Buffer.concat([message("abcd"), header(0)])],
  ["nothing at all", Buffer.alloc(0)],
];

/** Every way to split bytes into two chunks (and the one-chunk case). */
function splits(b: Buffer): Buffer[][] {
  const out = [[b]];
  for (let i = 1; i < b.length; i++) out.push([b.subarray(0, i), b.subarray(i)]);
  return out;
}

t.test("envelopeFraming: a stream that ends inside an envelope, header or message, is cut, however it was chunked", async (t) => {
  for (const [what, bytes] of CUTS) {
    for (const chunks of splits(bytes)) {
      const f = envelopeFraming();
      for (const c of chunks) f.push(c);
      if (!f.cut()) t.fail(`${what}: not seen as cut when split at ${chunks[0]!.length}`);
    }
    t.pass(what);
  }
  for (const [what, bytes] of WHOLE) {
    for (const chunks of splits(bytes)) {
      const f = envelopeFraming();
      for (const c of chunks) f.push(c);
      if (f.cut()) t.fail(`${what}: seen as cut (${f.cut()}) when split at ${chunks[0]!.length}`);
    }
    t.pass(what);
  }
  const f = envelopeFraming();
  f.push(Buffer.concat([message("abcd"), header(4096)]));
  t.match(f.cut(), /4096 bytes before the end of its last message/, "the reason says how much is missing");
});

async function split(chunks: Buffer[]) {
  const source = (async function* () {
    yield* chunks;
  })();
  const out = [];
  for await (const env of transformSplitEnvelope(0xffffffff)(source)) out.push(env);
  return out;
}

t.test("the patched @connectrpc/connect decoder refuses a stream that ends after a whole envelope header", async (t) => {
  for (const [what, bytes] of CUTS) {
    for (const chunks of splits(bytes)) await t.rejects(split(chunks), /incomplete envelope/, `${what}, split at ${chunks[0]!.length}`);
  }
  for (const [what, bytes] of WHOLE) t.resolves(split([bytes]), what);
  // The WHATWG-stream variant shares the decoder.
  for (const [what, bytes] of CUTS) {
    const reader = createEnvelopeReadableStream(new Blob([new Uint8Array(bytes)]).stream()).getReader();
    const read = async () => {
      while (!(await reader.read()).done);
    };
    await t.rejects(read(), /incomplete envelope/, `ReadableStream: ${what}`);
  }
});
