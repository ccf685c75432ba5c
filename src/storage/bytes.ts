// A small hand-written binary codec: the building blocks of every value raftkv stores or replicates.
// Integers are JS numbers; 64-bit fields are 8-byte big-endian and must hold a safe integer, so a
// value never loses precision silently. Decoding never trusts its input: a short buffer, trailing
// bytes, an unsafe integer or invalid UTF-8 throws a DecodeError, which callers wrap with context.

/** Raised by Reader on malformed input. Always caught and rethrown with context (path, index). */
export class DecodeError extends Error {
  override readonly name = 'DecodeError';
}

const TWO_POW_32 = 2 ** 32;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Throws a DecodeError on invalid UTF-8 (no silent U+FFFD replacement). */
export function fromUtf8(b: Uint8Array): string {
  try {
    return utf8Decoder.decode(b);
  } catch {
    throw new DecodeError('invalid UTF-8');
  }
}

/** A plain Uint8Array view of the same memory (LevelDB hands out Buffers, whose slice() aliases). */
export function asView(b: Uint8Array): Uint8Array {
  return b.constructor === Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Lexicographic order of unsigned bytes, the order LevelDB keeps keys in. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The smallest byte string greater than every string that starts with `prefix`, or undefined when
 * there is none (the prefix is empty or all 0xff).
 */
export function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    const b = prefix[i] as number;
    if (b !== 0xff) {
      // A copy: on a Buffer (as gRPC decodes bytes) slice() is a view, and writing to it would
      // change the caller's prefix.
      const end = Uint8Array.prototype.slice.call(prefix, 0, i + 1);
      end[i] = b + 1;
      return end;
    }
  }
  return undefined;
}

function checkU64(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a non-negative safe integer, got ${n}`);
}

/** Typed arrays up to this many bytes live on V8's heap, where allocating them is cheap. */
const ON_HEAP_MAX_BYTES = 64;
/** Limit: the size of one slab of writers' room. */
const SLAB_BYTES = 64 * 1024;
/** Limit: the largest piece taken from a slab; a larger writer gets a buffer of its own. */
const SLAB_PIECE_MAX_BYTES = 8 * 1024;

/**
 * Room for many small byte strings, handed out as views of one 64 KiB ArrayBuffer until it is full;
 * then a new one. A slab is never written again once handed out, so a view stays valid, but it keeps
 * its whole slab alive: one Slab serves bytes with similar lifetimes.
 */
class Slab {
  private buf: ArrayBuffer | undefined;
  private at = 0;

  /** `n` bytes of fresh room, as a piece of the current slab when it is worth it. */
  piece(n: number): Uint8Array {
    if (n <= ON_HEAP_MAX_BYTES || n > SLAB_PIECE_MAX_BYTES) return new Uint8Array(n);
    if (this.buf === undefined || this.at + n > SLAB_BYTES) {
      this.buf = new ArrayBuffer(SLAB_BYTES);
      this.at = 0;
    }
    const piece = new Uint8Array(this.buf, this.at, n);
    this.at += (n + 7) & ~7;
    return piece;
  }
}

/** Bytes handed on at once and dropped (see Writer.transient). */
const transientSlab = new Slab();
/** Bytes kept in first-in, first-out order (see Writer.queued). */
const queuedSlab = new Slab();

/**
 * Writes big-endian fields into a buffer that grows when needed. Writing an out-of-range number is a
 * bug: it throws. Size it exactly where the caller can (the sum of the fields below): then it never
 * grows and finish() hands out its buffer without a copy. A Writer is single-use: any write, or a
 * second finish(), after finish() throws.
 */
export class Writer {
  private buf: Uint8Array;
  private at = 0;
  private finished = false;
  /** Where its room comes from, if from a slab; finish() then returns a view (see transient()). */
  private slab: Slab | undefined;

  constructor(initialBytes = 64) {
    this.buf = new Uint8Array(initialBytes);
  }

  /**
   * A Writer for bytes that are handed on at once and dropped (a LevelDB write's values): its room is
   * a piece of a slab shared by all such writers, and finish() returns a view of that piece, without
   * a copy. A typed array of more than 64 bytes has its memory outside V8's heap, and allocating one
   * costs microseconds (an allocator call, bookkeeping, and work for the GC to free it); a view costs
   * what a small object does. The view keeps its whole slab alive, so nothing kept for long may come
   * from here.
   */
  static transient(initialBytes: number): Writer {
    return Writer.inSlab(transientSlab, initialBytes);
  }

  /**
   * A Writer for bytes kept and then dropped in the order they were made, as the Raft log keeps a
   * leader's encoded commands until compaction: its room is a piece of a slab shared only by such
   * writers, so a slab is freed once the last of its pieces is dropped, and the only memory kept
   * beyond what is in use is the slab being filled. Bytes kept out of order would keep their slab
   * alive: use a plain Writer for those.
   */
  static queued(initialBytes: number): Writer {
    return Writer.inSlab(queuedSlab, initialBytes);
  }

  private static inSlab(slab: Slab, initialBytes: number): Writer {
    const w = new Writer(0);
    w.slab = slab;
    w.buf = slab.piece(initialBytes);
    return w;
  }

  private reserve(n: number): void {
    if (this.finished) throw new Error('Writer: write after finish() (a Writer is single-use)');
    const need = this.at + n;
    if (need <= this.buf.length) return;
    let size = Math.max(this.buf.length * 2, 1);
    while (size < need) size *= 2;
    const next = this.slab !== undefined ? this.slab.piece(size) : new Uint8Array(size);
    next.set(this.buf.subarray(0, this.at));
    this.buf = next;
  }

  /** Stores n (0 <= n < 2**32, already checked) big-endian at `at`; room is already reserved. */
  private put32(at: number, n: number): void {
    const b = this.buf;
    b[at] = n >>> 24;
    b[at + 1] = n >>> 16;
    b[at + 2] = n >>> 8;
    b[at + 3] = n;
  }

  u8(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > 0xff) throw new RangeError(`u8 out of range: ${n}`);
    this.reserve(1);
    this.buf[this.at++] = n;
    return this;
  }

  u32(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n >= TWO_POW_32) throw new RangeError(`u32 out of range: ${n}`);
    this.reserve(4);
    this.put32(this.at, n);
    this.at += 4;
    return this;
  }

  /** A non-negative safe integer as 8 bytes big-endian. */
  u64(n: number, what = 'u64'): this {
    checkU64(n, what);
    this.reserve(8);
    // Exact for a safe integer: hi < 2**21, and n >>> 0 is n mod 2**32.
    this.put32(this.at, Math.floor(n / TWO_POW_32));
    this.put32(this.at + 4, n >>> 0);
    this.at += 8;
    return this;
  }

  bool(b: boolean): this {
    return this.u8(b ? 1 : 0);
  }

  /** Raw bytes, no length: only for the last field of a value. */
  raw(b: Uint8Array): this {
    this.reserve(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
    return this;
  }

  /** A u32 length, then the bytes. */
  bytes(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }

  string(s: string): this {
    return this.bytes(utf8(s));
  }

  /**
   * The bytes written, safe to keep: the buffer itself when the writer filled it exactly (no copy;
   * the Writer cannot touch it again), else a copy trimmed to size. Ends the Writer.
   */
  finish(): Uint8Array {
    if (this.finished) throw new Error('Writer: finish() called twice (a Writer is single-use)');
    this.finished = true;
    if (this.at === this.buf.length) return this.buf;
    return this.slab !== undefined ? this.buf.subarray(0, this.at) : this.buf.slice(0, this.at);
  }
}

/** Reads what Writer wrote; every method throws DecodeError instead of reading past the end. */
export class Reader {
  private readonly buf: Uint8Array;
  private at = 0;

  constructor(buf: Uint8Array) {
    this.buf = asView(buf);
  }

  get remaining(): number {
    return this.buf.length - this.at;
  }

  /** The u32 big-endian at `at` (bounds already checked). */
  private get32(at: number): number {
    const b = this.buf;
    return (((b[at] as number) << 24) | ((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number)) >>> 0;
  }

  private need(n: number, what: string): void {
    if (this.remaining < n) {
      throw new DecodeError(`truncated: ${what} needs ${n} bytes at offset ${this.at}, ${this.remaining} left`);
    }
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.buf[this.at++] as number;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const n = this.get32(this.at);
    this.at += 4;
    return n;
  }

  /** 8 bytes big-endian; throws unless the value is a safe integer. */
  u64(what = 'u64'): number {
    this.need(8, what);
    const hi = this.get32(this.at);
    const lo = this.get32(this.at + 4);
    const n = hi * TWO_POW_32 + lo;
    if (!Number.isSafeInteger(n)) throw new DecodeError(`${what} is not a safe integer (high word ${hi})`);
    this.at += 8;
    return n;
  }

  bool(what = 'bool'): boolean {
    const b = this.u8(what);
    if (b > 1) throw new DecodeError(`${what} must be 0 or 1, got ${b}`);
    return b === 1;
  }

  /** A u32 length, then that many bytes (a view, not a copy). */
  bytes(what = 'bytes'): Uint8Array {
    const n = this.u32(`${what} length`);
    this.need(n, what);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }

  string(what = 'string'): string {
    return fromUtf8(this.bytes(what));
  }

  /** Everything left (a view). */
  rest(): Uint8Array {
    const b = this.buf.subarray(this.at);
    this.at = this.buf.length;
    return b;
  }

  /** Throws unless the whole input was consumed. */
  end(what = 'value'): void {
    if (this.remaining !== 0) throw new DecodeError(`${this.remaining} trailing bytes after ${what}`);
  }
}
