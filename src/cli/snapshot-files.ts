// Snapshot files on the local disk, for kvctl's `snapshot save|status|restore` (and the cluster
// script's `restore`): verifying a snapshot stream as it is written to a file, verifying a file
// offline, and creating a node's data directory from one. The only module of src/cli/ that reaches
// into storage, and only through its public surface (test/client/layering.test.ts holds it to that):
// kvctl itself talks to nodes through the client library alone.
//
// A snapshot file is exactly the stream a node sends (src/storage/snapshot-format.ts): a header
// (cluster id of origin, index, term), the records, and a trailer with the record count and the
// SHA-256 of everything before it. A file is written as FILE.part and renamed to FILE only once that
// checksum verified and the bytes are on disk, so FILE is either absent or whole.

import { createReadStream } from 'node:fs';
import { open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RaftKvError } from '../errors.js';
import { NodeStore, SnapshotDecoder, type SnapshotHeader, type SnapshotLimits, type SnapshotSummary } from '../storage/index.js';

/**
 * Limits on the records of a snapshot read offline, where the limits of the node that wrote it are
 * not known: generous (a record is held in memory while it is decoded), so that any store a node
 * could hold passes. A node receiving a snapshot from its leader applies its own, tighter ones.
 */
export const OFFLINE_SNAPSHOT_LIMITS: SnapshotLimits = { maxKeyBytes: 1024 * 1024, maxValueBytes: 64 * 1024 * 1024 };
/** Bytes read from a snapshot file at a time. */
export const FILE_READ_CHUNK_BYTES = 256 * 1024;
/** The suffix of the file a snapshot is written to before it verified. */
export const PART_SUFFIX = '.part';

/**
 * A failure of a local snapshot file or data directory. `code`: SNAPSHOT_CORRUPT (the bytes fail
 * verification), FILE_ERROR (the file cannot be read or written), FILE_EXISTS, DATA_DIR_NOT_EMPTY,
 * or a STORE_* code of the store being created. The message names the file or directory.
 */
export class SnapshotFileError extends Error {
  readonly code: string;
  /** What is wrong, without the name of the file (e.g. "checksum mismatch: ..."). */
  readonly detail: string;
  constructor(code: string, message: string, options?: { cause?: unknown; detail?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.detail = options?.detail ?? message;
    this.name = new.target.name;
  }
}

/** What a verified snapshot holds. */
export interface SnapshotFileSummary extends SnapshotSummary {
  /** Records of KV data (keys). */
  readonly keys: number;
  /** Records of client sessions. */
  readonly sessions: number;
}

/** A SnapshotDecoder that also counts records by kind. */
export class SnapshotVerifier {
  private readonly decoder: SnapshotDecoder;
  private keys = 0;
  private sessions = 0;

  constructor(limits: SnapshotLimits = OFFLINE_SNAPSHOT_LIMITS) {
    this.decoder = new SnapshotDecoder(limits);
  }

  /** The header, once its bytes have been pushed. */
  get header(): SnapshotHeader | undefined {
    return this.decoder.header;
  }

  /** Bytes pushed so far. */
  get bytes(): number {
    return this.decoder.bytes;
  }

  /** Records seen so far. */
  get records(): number {
    return this.keys + this.sessions;
  }

  /** Throws SnapshotFormatError (code SNAPSHOT_CORRUPT) at the first byte that is wrong. */
  push(chunk: Uint8Array): void {
    for (const r of this.decoder.push(chunk)) {
      if (r.kind === 'data') this.keys++;
      else this.sessions++;
    }
  }

  /** The stream is over: throws unless it ended exactly after a valid trailer. */
  end(): SnapshotFileSummary {
    return { ...this.decoder.end(), keys: this.keys, sessions: this.sessions };
  }
}

/** The bytes of `file`, in chunks of FILE_READ_CHUNK_BYTES. */
export async function* fileChunks(file: string): AsyncGenerator<Uint8Array, void, undefined> {
  const stream = createReadStream(file, { highWaterMark: FILE_READ_CHUNK_BYTES });
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } finally {
    stream.destroy();
  }
}

/** Reads `file` through and verifies it: the header, every record, the record count and the checksum. */
export async function verifySnapshotFile(file: string): Promise<SnapshotFileSummary> {
  await checkReadable(file);
  const v = new SnapshotVerifier();
  try {
    for await (const chunk of fileChunks(file)) v.push(chunk);
    return v.end();
  } catch (err) {
    throw fileError(err, file, 'read');
  }
}

/**
 * A snapshot being written to FILE.part and verified as it goes; commit() moves it to FILE once it
 * verified, abort() removes FILE.part. Create with SnapshotFileWriter.create().
 */
export class SnapshotFileWriter {
  readonly file: string;
  readonly partFile: string;
  private readonly fh: FileHandle;
  private readonly verifier = new SnapshotVerifier();
  private state: 'open' | 'committed' | 'aborted' = 'open';

  private constructor(file: string, fh: FileHandle) {
    this.file = file;
    this.partFile = file + PART_SUFFIX;
    this.fh = fh;
  }

  /**
   * Opens FILE.part for writing (replacing a leftover of an interrupted run). Refuses an existing
   * FILE unless `force` (FILE is then replaced, atomically, only by commit()).
   */
  static async create(file: string, opts: { readonly force?: boolean } = {}): Promise<SnapshotFileWriter> {
    if (opts.force !== true && (await exists(file))) {
      throw new SnapshotFileError('FILE_EXISTS', `${file} exists; give --force to replace it`);
    }
    try {
      return new SnapshotFileWriter(file, await open(file + PART_SUFFIX, 'w'));
    } catch (err) {
      throw fileError(err, file + PART_SUFFIX, 'write');
    }
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.verifier.bytes;
  }

  /** The stream's header, once its bytes arrived. */
  get header(): SnapshotHeader | undefined {
    return this.verifier.header;
  }

  /** Verifies, then appends, the next bytes. Throws SnapshotFileError SNAPSHOT_CORRUPT at the first bad byte. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error(`SnapshotFileWriter.write: the writer is ${this.state}`);
    try {
      this.verifier.push(chunk);
    } catch (err) {
      throw fileError(err, this.file, 'write');
    }
    try {
      await this.fh.write(chunk);
    } catch (err) {
      throw fileError(err, this.partFile, 'write');
    }
  }

  /**
   * The stream is over: checks its trailer (and, if given, that the header is at `expect`), makes
   * the bytes durable, and renames FILE.part to FILE. On failure FILE.part is removed and FILE left
   * as it was.
   */
  async commit(expect?: { readonly index: number; readonly term: number }): Promise<SnapshotFileSummary> {
    if (this.state !== 'open') throw new Error(`SnapshotFileWriter.commit: the writer is ${this.state}`);
    try {
      let summary: SnapshotFileSummary;
      try {
        summary = this.verifier.end();
      } catch (err) {
        throw fileError(err, this.file, 'write');
      }
      if (expect !== undefined && (summary.header.index !== expect.index || summary.header.term !== expect.term)) {
        const detail = `the stream's header says index ${summary.header.index}, term ${summary.header.term}; the node announced index ${expect.index}, term ${expect.term}`;
        throw new SnapshotFileError('SNAPSHOT_CORRUPT', `${this.file}: ${detail}`, { detail });
      }
      try {
        await this.fh.sync();
        await this.fh.close();
        await rename(this.partFile, this.file);
        await syncDir(dirname(this.file));
      } catch (err) {
        throw fileError(err, this.file, 'write');
      }
      this.state = 'committed';
      return summary;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Removes FILE.part; FILE is left as it was. Idempotent; does nothing after commit(). */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.fh.close().catch(() => undefined);
    await rm(this.partFile, { force: true });
  }
}

/**
 * Creates the data directory `dataDir` (missing or empty) of node `nodeId` of cluster `clusterId`
 * from the snapshot in `file`, verifying it as it is read (NodeStore.restoreSnapshot installs it only
 * once the checksum verified, and leaves nothing behind on failure). The store belongs to
 * `clusterId` whatever cluster the snapshot came from.
 */
export async function restoreSnapshotFile(
  file: string,
  dataDir: string,
  opts: { readonly clusterId: string; readonly nodeId: number },
): Promise<SnapshotFileSummary> {
  await checkReadable(file);
  await checkEmptyDir(dataDir);
  const v = new SnapshotVerifier();
  async function* counted(): AsyncGenerator<Uint8Array, void, undefined> {
    for await (const chunk of fileChunks(file)) {
      v.push(chunk);
      yield chunk;
    }
  }
  try {
    await NodeStore.restoreSnapshot(dataDir, { clusterId: opts.clusterId, nodeId: opts.nodeId }, counted(), OFFLINE_SNAPSHOT_LIMITS);
    return v.end();
  } catch (err) {
    if (err instanceof RaftKvError && err.code !== 'SNAPSHOT_CORRUPT') throw new SnapshotFileError(err.code, err.message, { cause: err });
    throw fileError(err, file, 'read');
  }
}

/** Refuses a `dir` that exists and is not an empty directory, naming what is in it. */
export async function checkEmptyDir(dir: string): Promise<void> {
  let names: string[];
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw new SnapshotFileError('DATA_DIR_NOT_EMPTY', `${dir} exists and is not a directory`);
    names = await readdir(dir);
  } catch (err) {
    if (err instanceof SnapshotFileError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fileError(err, dir, 'read');
  }
  if (names.length > 0) {
    const shown = names.slice(0, 3).join(', ') + (names.length > 3 ? ', ...' : '');
    throw new SnapshotFileError(
      'DATA_DIR_NOT_EMPTY',
      `${dir} is not empty (${shown}); a restore creates a new data directory: give a missing or empty one`,
    );
  }
}

// ---- helpers ------------------------------------------------------------------------------------

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fileError(err, file, 'read');
  }
}

/** Fails early, with the file named, when `file` cannot be read (rather than midway through a restore). */
async function checkReadable(file: string): Promise<void> {
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new SnapshotFileError('FILE_ERROR', `${file} is not a file`);
    await (await open(file, 'r')).close();
  } catch (err) {
    throw fileError(err, file, 'read');
  }
}

/** Makes a rename in `dir` durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EISDIR: 'is a directory',
  ENOSPC: 'no space left on the device',
  EROFS: 'read-only file system',
};

/** `err` as a SnapshotFileError naming `file`. */
function fileError(err: unknown, file: string, op: 'read' | 'write'): SnapshotFileError {
  if (err instanceof SnapshotFileError) return err;
  if (err instanceof RaftKvError && err.code === 'SNAPSHOT_CORRUPT') {
    // The decoder's messages start with "snapshot: "; the file name says that already.
    const detail = err.message.replace(/^snapshot: /, '');
    return new SnapshotFileError('SNAPSHOT_CORRUPT', `${file}: ${detail}`, { cause: err, detail });
  }
  const code = (err as NodeJS.ErrnoException)?.code;
  const detail = (code !== undefined ? ERRNO_TEXT[code] : undefined) ?? (err as Error)?.message ?? String(err);
  return new SnapshotFileError('FILE_ERROR', `cannot ${op} ${file}: ${detail}`, { cause: err, detail });
}
