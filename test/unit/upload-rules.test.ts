import t from "tap";
import { MAX_PARTS, MAX_PRESIGNED_PARTS, MAX_UPLOAD_BYTES, partSizeFor, streamPartSize } from "../../server/uploads/rules.js";

// Part sizes within S3's limits (5 MiB to 5 GiB a part, the last smaller;
// at most 10,000 parts), for presigned multipart uploads (CreateUpload) and
// for streams of unknown length (UploadVideoContent).

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

t.test("a presigned upload has the configured part size until it would need more than 1,000 parts", async (t) => {
  t.equal(partSizeFor(200 * MiB, 64 * MiB), 64 * MiB);
  t.equal(partSizeFor(1000 * 64 * MiB, 64 * MiB), 64 * MiB, "exactly 1,000 parts");
  t.equal(partSizeFor(1000 * 64 * MiB + 1, 64 * MiB), 65 * MiB, "one byte more: the next whole MiB");
  t.equal(partSizeFor(10 * MiB, 1 * MiB), 5 * MiB, "never under S3's 5 MiB");
  for (const size of [1, 5 * MiB, 62.5 * GiB, 100 * GiB + 12345, 200 * GiB, MAX_UPLOAD_BYTES - 1, MAX_UPLOAD_BYTES]) {
    for (const configured of [5 * MiB, 8 * MiB, 64 * MiB, 5 * GiB]) {
      const part = partSizeFor(size, configured);
      const parts = Math.ceil(size / part);
      t.ok(part % MiB === 0 && part >= 5 * MiB && part <= 5 * GiB, `${size} B / ${configured / MiB} MiB configured: part ${part / MiB} MiB`);
      t.ok(parts <= MAX_PRESIGNED_PARTS, `${size} B / ${configured / MiB} MiB configured: ${parts} parts`);
    }
  }
  t.equal(partSizeFor(MAX_UPLOAD_BYTES, 64 * MiB), 263 * MiB, "256 GiB: 997 parts of 263 MiB");
});

/** The parts a stream of `size` bytes is cut into. */
function streamParts(size: number, configured: number): number[] {
  const parts: number[] = [];
  let sent = 0;
  while (sent < size) {
    const part = Math.min(streamPartSize(parts.length + 1, sent, configured), size - sent);
    parts.push(part);
    sent += part;
  }
  return parts;
}

t.test("a stream keeps the configured part size for its first 1,000 parts", async (t) => {
  t.same(new Set(streamParts(1 * GiB, 8 * MiB)), new Set([8 * MiB]), "1 GiB: 128 parts of 8 MiB");
  t.equal(streamParts(1 * GiB, 8 * MiB).length, 128);
  const parts = streamParts(1000 * 8 * MiB + 1, 8 * MiB);
  t.equal(parts.length, 1001, "7.8 GiB + 1 byte: the 1,001st part holds the byte");
});

t.test("a stream of the largest upload fits in 10,000 parts of 5 MiB to 5 GiB, and the part size grows only as needed", async (t) => {
  for (const configured of [5 * MiB, 8 * MiB, 64 * MiB, 1024 * MiB, 5 * GiB]) {
    const parts = streamParts(MAX_UPLOAD_BYTES, configured);
    const largest = Math.max(...parts);
    t.ok(parts.length <= MAX_PARTS, `${configured / MiB} MiB configured: ${parts.length} parts`);
    t.ok(parts.slice(0, -1).every((p) => p >= 5 * MiB && p % MiB === 0) && largest <= 5 * GiB, `${configured / MiB} MiB configured: parts of ${Math.min(...parts.slice(0, -1)) / MiB}–${largest / MiB} MiB`);
    t.ok(parts.slice(1000).every((p, i, rest) => i === 0 || p <= rest[i - 1]!), `${configured / MiB} MiB configured: after the first 1,000 parts the size only shrinks`);
  }
  const at8 = streamParts(MAX_UPLOAD_BYTES, 8 * MiB);
  t.ok(Math.max(...at8) <= 29 * MiB, `8 MiB configured: the largest part is ${Math.max(...at8) / MiB} MiB`);
  t.ok(streamParts(100 * GiB, 8 * MiB).length <= MAX_PARTS, "100 GiB (over 78 GiB, the old limit at 8 MiB) fits");
});
