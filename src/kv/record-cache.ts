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
 * Bytes counted per entry on top of key and value: the map slot, the key string, the record object,
 * the value's typed-array view and its backing store (a rough upper figure for V8).
 */
const ENTRY_OVERHEAD_BYTES = 256;

/**
 * Limit: entries one eviction may move to the back for having been used, before it evicts the next
 * one whatever its mark. Without it, the first eviction after every entry was used would move them
 * all at once.
 */
const MAX_SECOND_CHANCES = 32;

interface Cached {
  record: KvRecord | null;
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
    return e.record;
  }

  /**
   * Caches a key's record (null: absent), evicting entries not used lately beyond the limit. A value
   * that is a view into a larger buffer (a record applied from a log entry, itself a view into a
   * whole peer message) is copied, so the cache never keeps more memory alive than it counts.
   */
  set(key: string, record: KvRecord | null): void {
    if (record !== null && record.value.byteLength !== record.value.buffer.byteLength) {
      record = { ...record, value: new Uint8Array(record.value) };
    }
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
    if (old !== undefined) {
      this.bytes += bytes - old.bytes;
      old.record = record;
      old.bytes = bytes;
      old.used = true;
    } else {
      const e: Cached = { record, bytes, used: false };
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
