// The snapshot stream: a state machine's whole state (applied position, session clock, sessions and
// KV data) as one self-checking byte stream, for sending to a follower or writing to a backup file.
// Pure code: it encodes from and decodes to memory, a chunk at a time; the caller does the I/O.
//
//   header   "RKVSNAP" (7 bytes), u8 format version (1)
//            cluster id (u32 length, UTF-8), u64 index, u64 term, u64 session clock ms
//   records  u8 kind (1 session, 2 data), key (u32 length, bytes), value (u32 length, bytes)
//   trailer  u8 0xFF, u64 record count, SHA-256 (32 bytes) of every byte before it
//
// Nothing may follow the trailer. Numbers are big-endian. Both sides stream: the encoder holds at most
// one chunk plus one record, the decoder one record plus the bytes not yet parsed, so a snapshot
// never has to fit in memory.

import { createHash, type Hash } from 'node:crypto';
import { SnapshotFormatError } from '../errors.js';
import { DecodeError, fromUtf8, utf8, Writer } from './bytes.js';

export const SNAPSHOT_MAGIC = utf8('RKVSNAP');
export const SNAPSHOT_FORMAT_VERSION = 1;
/** Limit: bytes of the cluster id in a header. */
export const MAX_SNAPSHOT_CLUSTER_ID_BYTES = 1024;

const KIND_SESSION = 1;
const KIND_DATA = 2;
const KIND_TRAILER = 0xff;
const DIGEST_BYTES = 32;

export interface SnapshotHeader {
  readonly clusterId: string;
  /** The applied index the snapshot holds the state at. */
  readonly index: number;
  /** The term of the entry at `index`. */
  readonly term: number;
  readonly sessionClockMs: number;
}

export interface SnapshotRecord {
  readonly kind: 'session' | 'data';
  /** A client id's UTF-8 bytes, or a user key. */
  readonly key: Uint8Array;
  /** Opaque to the storage layer (codecs in src/kv). */
  readonly value: Uint8Array;
}

export interface SnapshotLimits {
  /** Limit: bytes of one record's key. */
  readonly maxKeyBytes: number;
  /** Limit: bytes of one record's value. */
  readonly maxValueBytes: number;
}

/** What a complete, verified stream held. */
export interface SnapshotSummary {
  readonly header: SnapshotHeader;
  readonly records: number;
  /** Bytes of the whole stream, trailer included. */
  readonly bytes: number;
  /** The stream's SHA-256 (hex), as its trailer carries it. */
  readonly sha256: string;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/**
 * Encodes a snapshot, yielding chunks of exactly `chunkBytes` (the last one may be shorter). Records
 * are pulled from `records` only as chunks are consumed.
 */
export async function* encodeSnapshot(
  header: SnapshotHeader,
  records: AsyncIterable<SnapshotRecord>,
  chunkBytes: number,
): AsyncGenerator<Uint8Array, void, undefined> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`encodeSnapshot: chunkBytes must be >= 1, got ${chunkBytes}`);
  const hash = createHash('sha256');
  const full: Uint8Array[] = [];
  let chunk = new Uint8Array(chunkBytes);
  let fill = 0;
  // Copies bytes into chunks of chunkBytes; full ones wait in `full` until yielded.
  const put = (b: Uint8Array, hashed = true): void => {
    if (hashed) hash.update(b);
    let at = 0;
    while (at < b.length) {
      const n = Math.min(b.length - at, chunkBytes - fill);
      chunk.set(b.subarray(at, at + n), fill);
      fill += n;
      at += n;
      if (fill === chunkBytes) {
        full.push(chunk);
        chunk = new Uint8Array(chunkBytes);
        fill = 0;
      }
    }
  };

  put(SNAPSHOT_MAGIC);
  put(
    new Writer(64)
      .u8(SNAPSHOT_FORMAT_VERSION)
      .string(header.clusterId)
      .u64(header.index, 'snapshot index')
      .u64(header.term, 'snapshot term')
      .u64(header.sessionClockMs, 'session clock')
      .finish(),
  );
  yield* full.splice(0);

  let count = 0;
  for await (const r of records) {
    const kind = r.kind === 'session' ? KIND_SESSION : r.kind === 'data' ? KIND_DATA : undefined;
    if (kind === undefined) throw new RangeError(`encodeSnapshot: unknown record kind ${String(r.kind)}`);
    put(new Writer(5).u8(kind).u32(r.key.length).finish());
    put(r.key);
    put(new Writer(4).u32(r.value.length).finish());
    put(r.value);
    count++;
    yield* full.splice(0);
  }

  put(new Writer(9).u8(KIND_TRAILER).u64(count, 'record count').finish());
  put(new Uint8Array(hash.digest()), false);
  yield* full.splice(0);
  if (fill > 0) yield chunk.subarray(0, fill);
}

type Step =
  | { readonly at: 'magic' }
  | { readonly at: 'clusterIdLength' }
  | { readonly at: 'clusterId'; readonly n: number }
  | { readonly at: 'headerNumbers'; readonly clusterId: string }
  | { readonly at: 'kind' }
  | { readonly at: 'keyLength'; readonly kind: SnapshotRecord['kind'] }
  | { readonly at: 'key'; readonly kind: SnapshotRecord['kind']; readonly n: number }
  | { readonly at: 'valueLength'; readonly kind: SnapshotRecord['kind']; readonly key: Uint8Array }
  | { readonly at: 'value'; readonly kind: SnapshotRecord['kind']; readonly key: Uint8Array; readonly n: number }
  | { readonly at: 'count' }
  | { readonly at: 'digest'; readonly count: Uint8Array; readonly countAt: number }
  | { readonly at: 'done' };

/** How many bytes each step reads. */
function stepBytes(s: Step): number {
  switch (s.at) {
    case 'magic':
      return SNAPSHOT_MAGIC.length + 1;
    case 'clusterIdLength':
    case 'keyLength':
    case 'valueLength':
      return 4;
    case 'clusterId':
    case 'key':
    case 'value':
      return s.n;
    case 'headerNumbers':
      return 24;
    case 'kind':
      return 1;
    case 'count':
      return 8;
    case 'digest':
      return DIGEST_BYTES;
    case 'done':
      return 0;
  }
}

/**
 * Decodes a snapshot stream incrementally: push() chunks as they arrive (records may straddle them)
 * and take the records completed so far; end() once the stream is over verifies the trailer. Any
 * problem throws a SnapshotFormatError, and every later call throws it again.
 */
export class SnapshotDecoder {
  private readonly limits: SnapshotLimits;
  private readonly hash: Hash = createHash('sha256');
  /** Bytes received but not parsed yet: `parts`, the first of which is consumed up to `partAt`. */
  private readonly parts: Uint8Array[] = [];
  private partAt = 0;
  private buffered = 0;
  /** Bytes parsed so far: the offset in the stream of the next step. */
  private parsed = 0;
  private step: Step = { at: 'magic' };
  private records = 0;
  private parsedHeader: SnapshotHeader | undefined;
  private digest: string | undefined;
  private failure: SnapshotFormatError | undefined;

  constructor(limits: SnapshotLimits) {
    for (const [name, v] of Object.entries(limits)) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`SnapshotDecoder: ${name} must be a non-negative integer, got ${v}`);
    }
    this.limits = { maxKeyBytes: limits.maxKeyBytes, maxValueBytes: limits.maxValueBytes };
  }

  /** The header, once its bytes have been pushed. */
  get header(): SnapshotHeader | undefined {
    return this.parsedHeader;
  }

  /** Bytes pushed so far. */
  get bytes(): number {
    return this.parsed + this.buffered;
  }

  /** Feeds the next chunk of the stream; returns the records it completed, in order. */
  push(chunk: Uint8Array): SnapshotRecord[] {
    if (this.failure !== undefined) throw this.failure;
    try {
      if (this.step.at === 'done' && chunk.length > 0) throw this.fail(`${chunk.length} bytes after the trailer, which ends at byte ${this.parsed}`);
      if (chunk.length > 0) {
        this.parts.push(chunk);
        this.buffered += chunk.length;
      }
      return this.parse();
    } catch (err) {
      if (err instanceof SnapshotFormatError) this.failure = err;
      throw err;
    }
  }

  /** The stream is over: throws unless it ended exactly after a valid trailer. */
  end(): SnapshotSummary {
    if (this.failure !== undefined) throw this.failure;
    if (this.step.at !== 'done' || this.parsedHeader === undefined || this.digest === undefined) {
      this.failure = new SnapshotFormatError(
        `truncated snapshot: the stream ended before the trailer, at byte ${this.bytes}` +
          (this.parsedHeader === undefined ? ' (in the header)' : ` (after ${this.records} records)`),
      );
      throw this.failure;
    }
    return { header: this.parsedHeader, records: this.records, bytes: this.parsed, sha256: this.digest };
  }

  private fail(message: string): SnapshotFormatError {
    return new SnapshotFormatError(`snapshot: ${message}`);
  }

  private parse(): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    if (this.step.at === 'magic') this.checkMagicPrefix();
    for (;;) {
      const need = stepBytes(this.step);
      if (this.step.at === 'done') {
        if (this.buffered > 0) throw this.fail(`${this.buffered} bytes after the trailer, which ends at byte ${this.parsed}`);
        return out;
      }
      if (this.buffered < need) return out;
      const offset = this.parsed;
      const b = this.take(need, this.step.at !== 'digest');
      const record = this.advance(b, offset);
      if (record !== undefined) out.push(record);
    }
  }

  /** Fails early on a stream that does not start like a snapshot, even before 8 bytes arrived. */
  private checkMagicPrefix(): void {
    const n = Math.min(this.buffered, SNAPSHOT_MAGIC.length);
    let i = 0;
    for (const p of this.parts) {
      for (let j = p === this.parts[0] ? this.partAt : 0; j < p.length && i < n; j++, i++) {
        if (p[j] !== SNAPSHOT_MAGIC[i]) throw new SnapshotFormatError('not a raftkv snapshot (bad magic bytes at the start of the stream)');
      }
      if (i === n) return;
    }
  }

  /** Consumes n buffered bytes (a view when they lie in one chunk, else a copy). */
  private take(n: number, hashed: boolean): Uint8Array {
    let out: Uint8Array;
    const first = this.parts[0];
    if (n === 0) {
      out = new Uint8Array(0);
    } else if (first !== undefined && first.length - this.partAt >= n) {
      out = first.subarray(this.partAt, this.partAt + n);
      this.partAt += n;
      if (this.partAt === first.length) {
        this.parts.shift();
        this.partAt = 0;
      }
    } else {
      out = new Uint8Array(n);
      let filled = 0;
      while (filled < n) {
        const p = this.parts[0] as Uint8Array;
        const m = Math.min(n - filled, p.length - this.partAt);
        out.set(p.subarray(this.partAt, this.partAt + m), filled);
        filled += m;
        this.partAt += m;
        if (this.partAt === p.length) {
          this.parts.shift();
          this.partAt = 0;
        }
      }
    }
    this.buffered -= n;
    this.parsed += n;
    if (hashed) this.hash.update(out);
    return out;
  }

  /** Interprets the bytes of the current step and moves to the next; returns a completed record. */
  private advance(b: Uint8Array, offset: number): SnapshotRecord | undefined {
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const u64 = (at: number, what: string): number => {
      const hi = view.getUint32(at);
      const n = hi * 2 ** 32 + view.getUint32(at + 4);
      if (!Number.isSafeInteger(n)) throw this.fail(`${what} at byte ${offset + at} is not a safe integer (high word ${hi})`);
      return n;
    };
    const s = this.step;
    switch (s.at) {
      case 'magic': {
        const version = b[SNAPSHOT_MAGIC.length] as number;
        if (version !== SNAPSHOT_FORMAT_VERSION) {
          throw this.fail(`unknown format version ${version}; this raftkv reads version ${SNAPSHOT_FORMAT_VERSION}`);
        }
        this.step = { at: 'clusterIdLength' };
        return undefined;
      }
      case 'clusterIdLength': {
        const n = view.getUint32(0);
        if (n > MAX_SNAPSHOT_CLUSTER_ID_BYTES) {
          throw this.fail(`the cluster id of ${n} bytes is over the limit (MAX_SNAPSHOT_CLUSTER_ID_BYTES=${MAX_SNAPSHOT_CLUSTER_ID_BYTES})`);
        }
        this.step = { at: 'clusterId', n };
        return undefined;
      }
      case 'clusterId': {
        let clusterId: string;
        try {
          clusterId = fromUtf8(b);
        } catch (err) {
          if (err instanceof DecodeError) throw this.fail(`the cluster id at byte ${offset} is not valid UTF-8`);
          throw err;
        }
        this.step = { at: 'headerNumbers', clusterId };
        return undefined;
      }
      case 'headerNumbers': {
        const index = u64(0, 'the index');
        const term = u64(8, 'the term');
        // A position is {0, 0} (nothing applied) or a positive index with a positive term.
        if ((index === 0) !== (term === 0)) throw this.fail(`the header says index ${index} with term ${term}`);
        this.parsedHeader = { clusterId: s.clusterId, index, term, sessionClockMs: u64(16, 'the session clock') };
        this.step = { at: 'kind' };
        return undefined;
      }
      case 'kind': {
        const code = b[0] as number;
        if (code === KIND_TRAILER) this.step = { at: 'count' };
        else if (code === KIND_SESSION) this.step = { at: 'keyLength', kind: 'session' };
        else if (code === KIND_DATA) this.step = { at: 'keyLength', kind: 'data' };
        else throw this.fail(`record ${this.records} at byte ${offset} has unknown kind ${code}`);
        return undefined;
      }
      case 'keyLength': {
        const n = view.getUint32(0);
        if (n > this.limits.maxKeyBytes) {
          throw this.fail(`record ${this.records} at byte ${offset - 1} has a key of ${n} bytes, over the limit (maxKeyBytes=${this.limits.maxKeyBytes})`);
        }
        this.step = { at: 'key', kind: s.kind, n };
        return undefined;
      }
      case 'key':
        this.step = { at: 'valueLength', kind: s.kind, key: new Uint8Array(b) };
        return undefined;
      case 'valueLength': {
        const n = view.getUint32(0);
        if (n > this.limits.maxValueBytes) {
          throw this.fail(`record ${this.records} has a value of ${n} bytes, over the limit (maxValueBytes=${this.limits.maxValueBytes})`);
        }
        this.step = { at: 'value', kind: s.kind, key: s.key, n };
        return undefined;
      }
      case 'value':
        this.records++;
        this.step = { at: 'kind' };
        return { kind: s.kind, key: s.key, value: new Uint8Array(b) };
      case 'count':
        // Interpreted once the checksum vouches for it.
        this.step = { at: 'digest', count: new Uint8Array(b), countAt: offset };
        return undefined;
      case 'digest': {
        const expected = hex(b);
        const actual = this.hash.digest('hex');
        if (expected !== actual) {
          throw this.fail(`checksum mismatch: the trailer says sha256 ${expected.slice(0, 16)}..., the stream hashes to ${actual.slice(0, 16)}...`);
        }
        const countView = new DataView(s.count.buffer);
        const hi = countView.getUint32(0);
        const count = hi * 2 ** 32 + countView.getUint32(4);
        if (!Number.isSafeInteger(count)) throw this.fail(`the record count at byte ${s.countAt} is not a safe integer (high word ${hi})`);
        if (count !== this.records) throw this.fail(`record count mismatch: the trailer says ${count}, the stream held ${this.records}`);
        this.digest = expected;
        this.step = { at: 'done' };
        return undefined;
      }
      case 'done':
        return undefined;
    }
  }
}
