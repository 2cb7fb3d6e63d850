// Object keys are built from server-issued UUIDs only, so no caller string can
// steer where an object lands (no traversal, no collisions across videos).

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function uuid(s: string): string {
  if (!UUID.test(s)) throw new Error(`not a server-issued id: ${JSON.stringify(s.slice(0, 40))}`);
  return s;
}

export const videoPrefix = (videoId: string) => `videos/${uuid(videoId)}/`;

/** The raw upload of one upload session. */
export const sourceKey = (videoId: string, uploadId: string) => `${videoPrefix(videoId)}source/${uuid(uploadId)}`;

export const KEY_PATTERN = /^videos\/[0-9a-f-]{36}\/source\/[0-9a-f-]{36}$/;
