// The records of recently used keys, in memory, so that a Get and the read an apply does before each
// write are answered without a LevelDB read (a thread-pool round trip each). Absent keys are cached
// too (as null): a put of a new key reads it first.
//
// Complete: when the whole data set was loaded and nothing was evicted since, a key that is not in
// the cache does not exist, and even a miss needs no LevelDB read (a configuration store's data
// usually fits; etcd keeps its key index in memory for the same reason). The first eviction ends it.
//
// Coherence: the state machine updates the cache after each apply's write is durable, and bumps
// `epoch` then. A read that missed and went to LevelDB inserts its answer only if the epoch did not
// move while it was reading: otherwise an apply may have written the key meanwhile, and the answer
// could be older than the cache's.

import { PlaceOrder } from './place-order.js';
import type { KvRecord } from './record.js';

/**
 * Bytes counted per entry on top of its key's characters and its value's bytes: the Map slot, the
 * key string's header, the entry object, the value string's header and padding, and the entry's
 * places in the eviction order. Measured on Node 20 at about 170 bytes of V8 heap (see the test
 * "counts at least the heap its entries take"); the rest is margin for the heap's own slack, so that
 * --cache-bytes bounds what the cache really holds.
 */
const ENTRY_OVERHEAD_BYTES = 256;

/**
 * Limit: entries one eviction may move to the back for having been used, before it evicts the next
 * one whatever its mark. Without it, the first eviction after every entry was used would move them
 * all at once.
 */
const MAX_SECOND_CHANCES = 32;

/**
 * A cached record, flattened. The value is kept as a one-byte string (latin1, one character per byte,
 * so any bytes round-trip): it lives on V8's heap, where a Uint8Array of more than 64 bytes would
 * cost a typed array, an ArrayBuffer and a separately allocated backing store, about twice the memory
 * for a value of 100 bytes.
 */
interface Cached {
  /** null: the key is known to be absent. */
  value: string | null;
  createIndex: number;
  modIndex: number;
  version: number;
  bytes: number;
  /** Hit or rewritten since the eviction scan last passed it (the clock's reference bit). */
  used: boolean;
}

export class RecordCache {
  /** Limit: bytes of cached entries (keys, values, overhead); 0 disables the cache. */
  readonly maxBytes: number;
  /** Bumped whenever cached state may have changed underneath a read in progress. */
  epoch = 0;
  /** Every key of the current state is cached (absent ones need not be): a miss means absent. */
  private completeFlag = false;
  /** Counts evictions and clears: a loader that sees it move must stop (see setIfAbsent). */
  evictions = 0;
  /**
   * The cached entries. A hit or a rewrite only marks its entry used and leaves the Map as it is; the
   * eviction order is kept apart, in `order` (see src/kv/place-order.ts for why).
   */
  private readonly entries = new Map<string, Cached>();
  /**
   * Entries as they were cached, oldest first. Eviction takes the oldest; a used entry gets one more
   * turn at the back instead, with its mark cleared (CLOCK, close to least recently used).
   */
  private readonly order = new PlaceOrder(this.entries);
  /** Invariant: the sum of `bytes` over entries; <= maxBytes after every call. */
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`RecordCache: maxBytes must be an integer >= 0, got ${maxBytes}`);
    this.maxBytes = maxBytes;
  }

  /** Whether a miss means the key is absent (see the file comment). */
  get complete(): boolean {
    return this.completeFlag;
  }

  /** Declares that every key of the current state has been set; ends at the next eviction or clear. */
  markComplete(): void {
    this.completeFlag = true;
  }

  /** Whether the key is cached (a record or null), without counting a hit or moving it. */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Whether `bytes` more bytes of entries fit without evicting anything. */
  fits(bytes: number): boolean {
    return this.bytes + bytes <= this.maxBytes;
  }

  get size(): number {
    return this.entries.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  /** The cached record (null: known absent), or undefined when the key is not cached. */
  get(key: string): KvRecord | null | undefined {
    const e = this.entries.get(key);
    if (e === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    e.used = true;
    if (e.value === null) return null;
    return { value: bytesOf(e.value), createIndex: e.createIndex, modIndex: e.modIndex, version: e.version };
  }

  /**
   * Caches a key's record (null: absent), evicting entries not used lately beyond the limit. The value
   * is copied: the cache never keeps the caller's buffer (for a record applied from a log entry, a view
   * into a whole peer message) alive, and never sees it change.
   */
  set(key: string, record: KvRecord | null): void {
    const bytes = RecordCache.entryBytes(key, record?.value.byteLength ?? 0);
    const old = this.entries.get(key);
    if (bytes > this.maxBytes) {
      if (old !== undefined) {
        this.entries.delete(key);
        this.bytes -= old.bytes;
      }
      this.completeFlag = false;
      this.evictions++;
      return;
    }
    const value = record === null ? null : stringOf(record.value);
    const createIndex = record?.createIndex ?? 0;
    const modIndex = record?.modIndex ?? 0;
    const version = record?.version ?? 0;
    if (old !== undefined) {
      this.bytes += bytes - old.bytes;
      old.value = value;
      old.createIndex = createIndex;
      old.modIndex = modIndex;
      old.version = version;
      old.bytes = bytes;
      old.used = true;
    } else {
      const e: Cached = { value, createIndex, modIndex, version, bytes, used: false };
      this.entries.set(key, e);
      this.order.push(key, e);
      this.bytes += bytes;
    }
    if (this.bytes <= this.maxBytes) return;
    this.completeFlag = false;
    this.evictions++;
    this.evict();
  }

  /**
   * Evicts the oldest entries until within the limit. A used one goes to the back once instead, up to
   * MAX_SECOND_CHANCES per call. Ends: each turn either evicts or spends a chance, and one entry alone
   * fits (set checked it).
   */
  private evict(): void {
    let chances = MAX_SECOND_CHANCES;
    while (this.bytes > this.maxBytes) {
      const k = this.order.oldest();
      if (k === undefined) throw new Error(`RecordCache: ${this.bytes} bytes counted with nothing to evict`);
      const e = this.order.oldestValue();
      this.order.shift();
      if (e.used && chances > 0) {
        chances--;
        e.used = false;
        this.order.push(k, e);
        continue;
      }
      this.entries.delete(k);
      this.bytes -= e.bytes;
    }
  }

  /** Forgets everything (the state was replaced); reads in progress will not insert their answers. */
  clear(): void {
    this.entries.clear();
    this.order.reset([]);
    this.bytes = 0;
    this.epoch++;
    this.evictions++;
    this.completeFlag = false;
  }

  /**
   * For a loader walking a LevelDB snapshot of the data while applies go on: caches the record only
   * if the key is not cached yet. A cached key holds what an apply wrote since, or what a read found
   * since, both at least as new as the loader's snapshot. Sound only while nothing was evicted since
   * the loader started (an evicted key could come back from the older snapshot): the loader checks
   * `evictions`.
   */
  setIfAbsent(key: string, record: KvRecord | null): void {
    if (!this.entries.has(key)) this.set(key, record);
  }

  /** The bytes an entry for this key and record counts. */
  static entryBytes(key: string, valueBytes: number): number {
    return key.length + valueBytes + ENTRY_OVERHEAD_BYTES;
  }
}

/** The bytes as a one-byte string, a character per byte. */
function stringOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

/**
 * The bytes of a string made by stringOf, in a new Uint8Array. A short one is a view into Node's
 * shared buffer pool, which costs no allocation of its own; it keeps an 8 KiB pool alive while it is
 * held, which a record returned by the cache is only for the operation that asked for it.
 */
function bytesOf(s: string): Uint8Array {
  const b = Buffer.from(s, 'latin1');
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}
