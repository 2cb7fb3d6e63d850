import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createReadStream, type Dirent } from "node:fs";
import { link, mkdir, open, readFile, readdir, rename, rm, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { addAbortSignal, Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { KEY_PATTERN } from "./keys.js";
import type { MultipartUpload, ObjectInfo, ObjectStore, PresignedPut, StoredObject } from "./object-store.js";
import { signatureMatches, signedUrl } from "./signing.js";
import { storageError } from "./storage-error.js";

// The embedded object store: the local filesystem, with signed, expiring URLs
// that this service serves itself under /_objects/ (see fs-object-routes.ts).
//
// Layout under root:
//   objects/<key>                      the object (written by rename only)
//   objects/<key>.meta.json            sidecar: content type, size, SHA-256, inode
//   multipart/<uploadId>/manifest.json key, content type, initiated
//   multipart/<uploadId>/<partNumber>  one uploaded part
//
// Every write streams into a temp file (".tmp-<uuid>") in the destination
// directory, is fsynced and renamed into place, so readers see the old object
// or the new one, never a partial or mixed one; a failed or aborted write
// removes its temp file. Keys are checked against the shapes keys.ts issues
// and the resolved path must stay under root: nothing else is accepted.

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const MAX_PART_BYTES = 5 * GiB;
/** S3's minimum for every part but the last, enforced so flows that work here also work on S3. */
export const MIN_PART_BYTES = 5 * MiB;
export const MAX_PART_NUMBER = 10_000;
/** S3's longest presigned URL lifetime (7 days). */
export const MAX_EXPIRES_S = 7 * 24 * 3600;
const MAX_KEY_LENGTH = 1024;

const SIDECAR = ".meta.json";
const MANIFEST = "manifest.json";
const TMP_PREFIX = ".tmp-";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// No leading dot: excludes ".", "..", temp files and hidden names.
const SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;
const PART_FILE = /^[1-9][0-9]{0,4}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
// A header value a client can send verbatim: visible ASCII and spaces, no CR/LF.
const CONTENT_TYPE = /^[\x21-\x7e][\x20-\x7e]{0,254}$/;

/** A key the store accepts: the shape of KEY_PATTERN, or videos/<uuid>/<safe segments>. */
export function isValidObjectKey(key: unknown): key is string {
  if (typeof key !== "string" || key.length === 0 || key.length > MAX_KEY_LENGTH) return false;
  if (KEY_PATTERN.test(key)) return true;
  const segments = key.split("/");
  if (segments.length < 3 || segments[0] !== "videos" || !UUID.test(segments[1]!)) return false;
  return segments.slice(2).every((s) => SEGMENT.test(s) && !s.endsWith(SIDECAR));
}

/**
 * A refusal or failure with an S3-style error code, the HTTP status the
 * object routes answer with, and the Connect code ObjectStore callers see.
 * Messages never contain URLs or signatures.
 */
export class FsObjectError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly connectCode: Code = Code.InvalidArgument,
  ) {
    super(message);
    this.name = "FsObjectError";
  }
}

const invalidKey = () => new FsObjectError("InvalidObjectName", 400, "invalid object key");
const noSuchUpload = () => new FsObjectError("NoSuchUpload", 404, "the multipart upload does not exist", Code.NotFound);
const noSuchKey = () => new FsObjectError("NoSuchKey", 404, "the object does not exist", Code.NotFound);
export const objectExists = () => new FsObjectError("PreconditionFailed", 412, "an object is already stored here; this URL does not replace it", Code.FailedPrecondition);

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}
const isMissing = (e: unknown) => errno(e) === "ENOENT" || errno(e) === "ENOTDIR";

function toConnect(e: unknown): ConnectError {
  if (e instanceof FsObjectError) return new ConnectError(e.message, e.connectCode);
  return storageError(e);
}

interface Sidecar {
  contentType: string;
  sizeBytes: number;
  sha256: string;
  // Inode of the data file it describes: a sidecar left over from another
  // write (crash between the two renames) is recognised and ignored.
  ino: string;
}

interface Manifest {
  key: string;
  contentType: string;
  initiated: string;
}

export interface FsStoreOptions {
  /** Directory holding objects/ and multipart/, e.g. DATA_DIR/objects. */
  root: string;
  /** Base URL clients reach this service at, e.g. http://127.0.0.1:8080. */
  publicBaseUrl: string;
  /** HMAC key for signed URLs (at least 32 bytes); see FsStore.loadOrCreateSigningKey. */
  signingKey: Buffer;
  /** Minimum size of every part but the last on completion. Default 5 MiB, like S3. */
  minPartBytes?: number;
}

export interface SignedPutRequest {
  key: string;
  contentType: string;
  sizeBytes: number;
  checksumSha256: string | undefined;
  /** Refuse (412) rather than replace an object already at key. */
  createOnly: boolean;
}

export class FsStore implements ObjectStore {
  readonly kind = "filesystem";
  readonly root: string;
  private readonly objectsDir: string;
  private readonly multipartDir: string;
  private publicBaseUrl: string;
  private readonly signingKey: Buffer;
  private readonly minPartBytes: number;
  // Per-key queue around the commit (the two renames) and head, so that in
  // this process an object and its sidecar always change together.
  private readonly keyLocks = new Map<string, Promise<void>>();

  constructor(o: FsStoreOptions) {
    if (!Buffer.isBuffer(o.signingKey) || o.signingKey.length < 32) throw new Error("the object signing key must be at least 32 bytes");
    if (!/^https?:\/\/[^/?#]+(\/[^?#]*)?$/.test(o.publicBaseUrl)) throw new Error("publicBaseUrl must be an http(s) URL");
    this.root = path.resolve(o.root);
    this.objectsDir = path.join(this.root, "objects");
    this.multipartDir = path.join(this.root, "multipart");
    this.publicBaseUrl = o.publicBaseUrl.replace(/\/+$/, "");
    this.signingKey = Buffer.from(o.signingKey);
    this.minPartBytes = o.minPartBytes ?? MIN_PART_BYTES;
  }

  /**
   * Reads the signing key file, or creates it: 32 random bytes, mode 0600,
   * published with link() so concurrent starters agree on one key.
   */
  static async loadOrCreateSigningKey(file: string): Promise<Buffer> {
    const read = async () => {
      const key = await readFile(file);
      if (key.length !== 32) throw new Error(`${file}: an object signing key must be exactly 32 bytes`);
      return key;
    };
    try {
      return await read();
    } catch (e) {
      if (errno(e) !== "ENOENT") throw e;
    }
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}${TMP_PREFIX}${randomUUID()}`;
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(randomBytes(32));
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, file);
    } catch (e) {
      if (errno(e) !== "EEXIST") throw e;
    } finally {
      await unlink(tmp).catch(() => {});
    }
    await syncDir(path.dirname(file));
    return read();
  }

  /** The embedded default: DATA_DIR/objects with DATA_DIR/object-signing.key. */
  /** Once the port is known (PORT=0 binds a free one), signed URLs point at it. */
  listeningOn(port: number): void {
    this.publicBaseUrl = this.publicBaseUrl.replace(/:0(?=$|\/)/, `:${port}`);
  }

  static async open(dataDir: string, publicBaseUrl: string): Promise<FsStore> {
    const signingKey = await FsStore.loadOrCreateSigningKey(path.join(dataDir, "object-signing.key"));
    return new FsStore({ root: path.join(dataDir, "objects"), publicBaseUrl, signingKey });
  }

  // ---- ObjectStore ----

  async presignPut(key: string, o: { contentType: string; sizeBytes: number; checksumSha256?: string; expiresInS: number; createOnly?: boolean; baseUrl?: string }): Promise<PresignedPut> {
    return this.call(async () => {
      this.objectFile(key);
      checkContentType(o.contentType);
      if (!Number.isSafeInteger(o.sizeBytes) || o.sizeBytes < 0) throw new FsObjectError("InvalidArgument", 400, "invalid object size");
      const params = new Map<string, string>([
        ["X-Vms-Op", "put"],
        ["X-Vms-Expires", String(expiry(o.expiresInS))],
        ["X-Vms-Size", String(o.sizeBytes)],
        ["X-Vms-Content-Type", o.contentType],
      ]);
      if (o.checksumSha256 !== undefined) {
        const sha = o.checksumSha256.toLowerCase();
        if (!SHA256_HEX.test(sha)) throw new FsObjectError("InvalidArgument", 400, "invalid SHA-256 checksum");
        params.set("X-Vms-Sha256", sha);
      }
      if (o.createOnly) params.set("X-Vms-If-None-Match", "*");
      return { url: signedUrl(o.baseUrl ?? this.publicBaseUrl, this.signingKey, "PUT", key, params), headers: { "content-type": o.contentType } };
    });
  }

  async createMultipartUpload(key: string, contentType: string): Promise<string> {
    return this.call(async () => {
      this.objectFile(key);
      checkContentType(contentType);
      const uploadId = randomUUID();
      const dir = path.join(this.multipartDir, uploadId);
      await mkdir(this.multipartDir, { recursive: true });
      await mkdir(dir);
      const manifest: Manifest = { key, contentType, initiated: new Date().toISOString() };
      await writeSmallFileAtomically(path.join(dir, MANIFEST), JSON.stringify(manifest));
      return uploadId;
    });
  }

  async presignPart(key: string, uploadId: string, partNumber: number, expiresInS: number, sizeBytes: number, baseUrl?: string): Promise<string> {
    return this.call(async () => {
      this.objectFile(key);
      this.uploadDir(uploadId);
      checkPartNumber(partNumber);
      if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1 || sizeBytes > MAX_PART_BYTES) throw new FsObjectError("InvalidArgument", 400, "invalid part size");
      const params = new Map<string, string>([
        ["X-Vms-Op", "part"],
        ["X-Vms-Expires", String(expiry(expiresInS))],
        ["X-Vms-Upload", uploadId],
        ["X-Vms-Part", String(partNumber)],
        // The most the part may hold (the routes refuse more).
        ["X-Vms-Size", String(sizeBytes)],
      ]);
      return signedUrl(baseUrl ?? this.publicBaseUrl, this.signingKey, "PUT", key, params);
    });
  }

  /**
   * Concatenates every uploaded part, in part-number order, into the object
   * (atomically) and removes the upload. With expectedSizeBytes, refuses
   * (FAILED_PRECONDITION, upload left open) unless the parts add up to it.
   */
  async completeMultipartUpload(key: string, uploadId: string, expectedSizeBytes?: number): Promise<void> {
    return this.call(async () => {
      const file = this.objectFile(key);
      const dir = this.uploadDir(uploadId);
      const manifest = await this.readManifest(dir, key);
      const parts = await listParts(dir);
      const sizes: number[] = [];
      for (const n of parts) {
        try {
          sizes.push((await stat(path.join(dir, String(n)))).size);
        } catch (e) {
          if (isMissing(e)) throw noSuchUpload();
          throw e;
        }
      }
      const uploaded = sizes.reduce((a, b) => a + b, 0);
      if (expectedSizeBytes !== undefined && uploaded !== expectedSizeBytes) {
        throw new FsObjectError(
          "InvalidPart",
          400,
          `the uploaded parts hold ${uploaded} bytes, not the declared ${expectedSizeBytes}`,
          Code.FailedPrecondition,
        );
      }
      if (parts.length === 0) throw new FsObjectError("InvalidRequest", 400, "no parts have been uploaded", Code.FailedPrecondition);
      for (let i = 0; i < parts.length - 1; i++) {
        if (sizes[i]! < this.minPartBytes) {
          throw new FsObjectError("EntityTooSmall", 400, `part ${parts[i]} is smaller than the minimum part size`, Code.FailedPrecondition);
        }
      }
      const source = async function* () {
        for (const n of parts) yield* createReadStream(path.join(dir, String(n)), { highWaterMark: 1 * MiB }) as AsyncIterable<Buffer>;
      };
      let written;
      try {
        written = await writeTemp(path.dirname(file), source(), { limit: Number.MAX_SAFE_INTEGER, mkdir: true });
      } catch (e) {
        // A part vanished under us: the upload was aborted or completed concurrently.
        if (isMissing(e)) throw noSuchUpload();
        throw e;
      }
      await this.commit(key, written, manifest.contentType);
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    });
  }

  async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
    return this.call(async () => {
      this.objectFile(key);
      const dir = this.uploadDir(uploadId);
      try {
        await this.readManifest(dir, key);
      } catch (e) {
        // Like S3Store: an upload that does not exist (for this key) is already gone.
        if (e instanceof FsObjectError && e.code === "NoSuchUpload") return;
        throw e;
      }
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    });
  }

  async listMultipartUploads(prefix: string): Promise<MultipartUpload[]> {
    return this.call(async () => {
      checkPrefix(prefix);
      let ids: string[];
      try {
        ids = await readdir(this.multipartDir);
      } catch (e) {
        if (isMissing(e)) return [];
        throw e;
      }
      const out: MultipartUpload[] = [];
      for (const uploadId of ids) {
        if (!UUID.test(uploadId)) continue;
        let m: Manifest;
        try {
          m = JSON.parse(await readFile(path.join(this.multipartDir, uploadId, MANIFEST), "utf8")) as Manifest;
        } catch {
          continue; // being created, being removed, or unreadable: not a listable upload
        }
        if (typeof m.key === "string" && m.key.startsWith(prefix)) out.push({ key: m.key, uploadId, initiated: new Date(m.initiated) });
      }
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.initiated.getTime() - b.initiated.getTime()));
    });
  }

  async lastPartTime(key: string, uploadId: string): Promise<Date | undefined> {
    return this.call(async () => {
      this.objectFile(key);
      const dir = this.uploadDir(uploadId);
      let names: string[];
      try {
        await this.readManifest(dir, key);
        names = await readdir(dir);
      } catch (e) {
        if ((e instanceof FsObjectError && e.code === "NoSuchUpload") || isMissing(e)) return undefined;
        throw e;
      }
      let newest: Date | undefined;
      for (const name of names) {
        if (!/^\d+$/.test(name)) continue;
        const mtime = await stat(path.join(dir, name)).then((s) => s.mtime, () => undefined);
        if (mtime && (!newest || mtime > newest)) newest = mtime;
      }
      return newest;
    });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    return this.call(async () => {
      const file = this.objectFile(key);
      return this.withKeyLock(key, async () => {
        let st;
        try {
          st = await stat(file, { bigint: true });
        } catch (e) {
          if (isMissing(e)) return undefined;
          throw e;
        }
        if (!st.isFile()) return undefined;
        const meta = await readSidecar(file);
        const sizeBytes = Number(st.size);
        const current = meta !== undefined && meta.ino === st.ino.toString() && meta.sizeBytes === sizeBytes;
        return { sizeBytes, contentType: current ? meta.contentType : undefined, checksumSha256: current ? meta.sha256 : undefined };
      });
    });
  }

  async listObjects(prefix: string, startAfter: string | undefined, limit: number): Promise<StoredObject[]> {
    return this.call(async () => {
      checkPrefix(prefix);
      let entries: Dirent[];
      try {
        entries = await readdir(this.objectsDir, { recursive: true, withFileTypes: true });
      } catch (e) {
        if (isMissing(e)) return [];
        throw e;
      }
      const keys = entries
        .filter((e) => e.isFile() && !e.name.endsWith(SIDECAR) && !e.name.startsWith(TMP_PREFIX))
        .map((e) => path.relative(this.objectsDir, path.join(e.parentPath, e.name)).split(path.sep).join("/"))
        .filter((k) => k.startsWith(prefix) && (startAfter === undefined || k > startAfter) && isValidObjectKey(k))
        .sort()
        .slice(0, limit);
      const out: StoredObject[] = [];
      for (const key of keys) {
        const st = await stat(this.objectFile(key)).catch(() => undefined);
        if (st) out.push({ key, lastModified: st.mtime });
      }
      return out;
    });
  }

  async sha256(key: string): Promise<string> {
    return this.call(async () => {
      const file = this.objectFile(key);
      const hash = createHash("sha256");
      try {
        for await (const chunk of createReadStream(file, { highWaterMark: 1 * MiB })) hash.update(chunk as Buffer);
      } catch (e) {
        if (isMissing(e) || errno(e) === "EISDIR") throw noSuchKey();
        throw e;
      }
      return hash.digest("hex");
    });
  }

  async putStream(key: string, body: Readable, contentType: string, signal: AbortSignal): Promise<{ sizeBytes: number; checksumSha256: string }> {
    try {
      const file = this.objectFile(key);
      checkContentType(contentType);
      const written = await writeTemp(path.dirname(file), body, { limit: Number.MAX_SAFE_INTEGER, mkdir: true, signal });
      await this.commit(key, written, contentType);
      return { sizeBytes: written.sizeBytes, checksumSha256: written.sha256 };
    } catch (e) {
      if (!body.destroyed) body.destroy();
      throw toConnect(e);
    }
  }

  async delete(key: string): Promise<void> {
    return this.call(async () => {
      const file = this.objectFile(key);
      await this.withKeyLock(key, async () => {
        await unlinkIfPresent(file);
        await unlinkIfPresent(file + SIDECAR);
      });
    });
  }

  async put(key: string, body: Uint8Array, contentType: string): Promise<void> {
    await this.putStream(key, Readable.from([Buffer.from(body)]), contentType, new AbortController().signal);
  }

  async presignGet(key: string, expiresInS: number): Promise<string> {
    this.objectFile(key);
    const params = new Map<string, string>([
      ["X-Vms-Op", "get"],
      ["X-Vms-Expires", String(expiry(expiresInS))],
    ]);
    return signedUrl(this.publicBaseUrl, this.signingKey, "GET", key, params);
  }

  async mediaInput(key: string): Promise<string> {
    return this.objectFile(key);
  }

  // ---- used by the /_objects/ routes (errors are FsObjectError or I/O errors) ----

  /** Constant-time check of a presented signature over a PUT (or GET) of key with these X-Vms-* params. */
  signatureValid(key: string, params: ReadonlyMap<string, string>, presentedHex: string, method = "PUT"): boolean {
    return signatureMatches(this.signingKey, method, key, params, presentedHex);
  }

  /** The stored file and its content type, for a signed GET; undefined when absent. */
  async openForGet(key: string): Promise<{ file: string; sizeBytes: number; contentType: string } | undefined> {
    const info = await this.head(key);
    return info && { file: this.objectFile(key), sizeBytes: info.sizeBytes, contentType: info.contentType ?? "application/octet-stream" };
  }

  /** Receives the body of a signed object PUT: exactly sizeBytes, matching the checksum when signed. */
  async receiveObject(r: SignedPutRequest, body: AsyncIterable<Buffer>, onBytes?: (n: number) => void): Promise<{ sha256: string }> {
    const file = this.objectFile(r.key);
    const written = await writeTemp(path.dirname(file), body, {
      limit: r.sizeBytes,
      mkdir: true,
      onBytes,
      check: (w) => {
        if (w.sizeBytes !== r.sizeBytes) throw new FsObjectError("IncompleteBody", 400, "the body is shorter than the signed size");
        if (r.checksumSha256 !== undefined && w.sha256 !== r.checksumSha256) {
          throw new FsObjectError("BadDigest", 400, "the SHA-256 of the body does not match the signed checksum");
        }
      },
    });
    await this.commit(r.key, written, r.contentType, r.createOnly);
    return { sha256: written.sha256 };
  }

  /** Receives one part of a multipart upload, of at most maxBytes. */
  async receivePart(
    key: string,
    uploadId: string,
    partNumber: number,
    maxBytes: number,
    body: AsyncIterable<Buffer>,
    onBytes?: (n: number) => void,
  ): Promise<{ sha256: string }> {
    this.objectFile(key);
    const dir = this.uploadDir(uploadId);
    checkPartNumber(partNumber);
    await this.readManifest(dir, key);
    let written;
    try {
      // No mkdir: an aborted upload's directory must not come back.
      written = await writeTemp(dir, body, { limit: Math.min(maxBytes, MAX_PART_BYTES), mkdir: false, onBytes });
    } catch (e) {
      if (isMissing(e)) throw noSuchUpload();
      throw e;
    }
    try {
      await rename(written.tmp, path.join(dir, String(partNumber)));
    } catch (e) {
      await unlink(written.tmp).catch(() => {});
      if (isMissing(e)) throw noSuchUpload();
      throw e;
    }
    return { sha256: written.sha256 };
  }

  // ---- internals ----

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw toConnect(e);
    }
  }

  /** The object's path; refuses any key not of an issued shape or resolving outside objects/. */
  private objectFile(key: string): string {
    if (!isValidObjectKey(key)) throw invalidKey();
    const file = path.resolve(this.objectsDir, ...key.split("/"));
    if (!file.startsWith(this.objectsDir + path.sep)) throw invalidKey();
    return file;
  }

  private uploadDir(uploadId: string): string {
    if (typeof uploadId !== "string" || !UUID.test(uploadId)) throw new FsObjectError("InvalidArgument", 400, "invalid upload id");
    return path.join(this.multipartDir, uploadId);
  }

  private async readManifest(dir: string, key: string): Promise<Manifest> {
    let m: Manifest;
    try {
      m = JSON.parse(await readFile(path.join(dir, MANIFEST), "utf8")) as Manifest;
    } catch (e) {
      if (isMissing(e) || e instanceof SyntaxError) throw noSuchUpload();
      throw e;
    }
    if (m.key !== key) throw noSuchUpload();
    return m;
  }

  /**
   * Renames a fully written temp file into place with its sidecar. With
   * createOnly it is linked instead, which fails if an object is there
   * (atomically, across processes too): 412, nothing replaced.
   */
  private async commit(key: string, w: Written, contentType: string, createOnly = false): Promise<void> {
    const file = this.objectFile(key);
    try {
      await this.withKeyLock(key, async () => {
        const ino = (await stat(w.tmp, { bigint: true })).ino.toString();
        const meta: Sidecar = { contentType, sizeBytes: w.sizeBytes, sha256: w.sha256, ino };
        const metaTmp = await writeSmallTemp(path.dirname(file), JSON.stringify(meta));
        try {
          if (createOnly) {
            await link(w.tmp, file).catch((e: unknown) => {
              throw errno(e) === "EEXIST" ? objectExists() : e;
            });
            await unlink(w.tmp);
          } else await rename(w.tmp, file);
          await rename(metaTmp, file + SIDECAR);
        } catch (e) {
          await unlink(metaTmp).catch(() => {});
          throw e;
        }
      });
      await syncDir(path.dirname(file));
    } catch (e) {
      await unlink(w.tmp).catch(() => {});
      throw e;
    }
  }

  private async withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.keyLocks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const mine = previous.then(() => gate);
    this.keyLocks.set(key, mine);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.keyLocks.get(key) === mine) this.keyLocks.delete(key);
    }
  }
}

interface Written {
  tmp: string;
  sizeBytes: number;
  sha256: string;
}

/**
 * Streams source into a new temp file in dir while counting and hashing,
 * fails as soon as more than limit bytes arrive, runs check, fsyncs. On any
 * failure the temp file is removed. A Readable source is destroyed on failure
 * (and on abort); a plain async iterator is left to its owner.
 */
async function writeTemp(
  dir: string,
  source: Readable | AsyncIterable<Buffer>,
  o: { limit: number; mkdir: boolean; signal?: AbortSignal; onBytes?: (n: number) => void; check?: (w: Omit<Written, "tmp">) => void },
): Promise<Written> {
  if (o.mkdir) await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `${TMP_PREFIX}${randomUUID()}`);
  const fh = await open(tmp, "wx", 0o644);
  const hash = createHash("sha256");
  let sizeBytes = 0;
  try {
    // An abort destroys a stream source, which ends the loop with AbortError.
    if (o.signal && source instanceof Readable) addAbortSignal(o.signal, source);
    else o.signal?.throwIfAborted();
    for await (const c of source as AsyncIterable<Buffer | string>) {
      const chunk = typeof c === "string" ? Buffer.from(c) : c;
      sizeBytes += chunk.length;
      o.onBytes?.(chunk.length);
      if (sizeBytes > o.limit) throw new FsObjectError("EntityTooLarge", 400, "the body is larger than allowed");
      hash.update(chunk);
      for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
    }
    o.signal?.throwIfAborted();
    const written = { sizeBytes, sha256: hash.digest("hex") };
    o.check?.(written);
    await fh.sync();
    await fh.close();
    return { tmp, ...written };
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

async function writeSmallTemp(dir: string, content: string): Promise<string> {
  const tmp = path.join(dir, `${TMP_PREFIX}${randomUUID()}`);
  const fh = await open(tmp, "wx", 0o644);
  try {
    await fh.writeFile(content);
    await fh.sync();
    await fh.close();
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  }
  return tmp;
}

async function writeSmallFileAtomically(file: string, content: string): Promise<void> {
  const tmp = await writeSmallTemp(path.dirname(file), content);
  try {
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

async function readSidecar(file: string): Promise<Sidecar | undefined> {
  try {
    const m = JSON.parse(await readFile(file + SIDECAR, "utf8")) as Sidecar;
    return typeof m.contentType === "string" && typeof m.sha256 === "string" && SHA256_HEX.test(m.sha256) ? m : undefined;
  } catch {
    return undefined;
  }
}

async function listParts(dir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if (isMissing(e)) throw noSuchUpload();
    throw e;
  }
  return names
    .filter((n) => PART_FILE.test(n))
    .map(Number)
    .filter((n) => n <= MAX_PART_NUMBER)
    .sort((a, b) => a - b);
}

async function unlinkIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
}

/** Makes renames in dir durable; best effort where directories cannot be fsynced. */
async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // e.g. Windows (EPERM/EISDIR): the rename is still atomic, only not yet durable.
  }
}

function checkContentType(contentType: string): void {
  if (typeof contentType !== "string" || !CONTENT_TYPE.test(contentType)) throw new FsObjectError("InvalidArgument", 400, "invalid content type");
}

function checkPartNumber(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_PART_NUMBER) throw new FsObjectError("InvalidArgument", 400, "part numbers run from 1 to 10000");
}

/** Prefixes only filter stored keys, but are held to key characters all the same. */
function checkPrefix(prefix: string): void {
  if (typeof prefix !== "string" || prefix.length > MAX_KEY_LENGTH || !/^[A-Za-z0-9._\/-]*$/.test(prefix)) {
    throw new FsObjectError("InvalidArgument", 400, "invalid key prefix");
  }
  if (prefix.startsWith("/") || prefix.split("/").some((s) => s === "." || s === "..")) throw new FsObjectError("InvalidArgument", 400, "invalid key prefix");
}

function expiry(expiresInS: number): number {
  if (!Number.isInteger(expiresInS) || expiresInS < 1 || expiresInS > MAX_EXPIRES_S) {
    throw new FsObjectError("InvalidArgument", 400, "URL expiry must be between 1 second and 7 days");
  }
  return Math.floor(Date.now() / 1000) + expiresInS;
}
