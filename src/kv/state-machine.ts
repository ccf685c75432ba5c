// The replicated KV state machine. It applies committed Raft entries in order; each apply() call is
// ONE atomic synced write of the data changes, the session table changes and the new applied index
// and term (NodeStore.writeState), so a restart never applies an entry twice or skips one. Split in
// two, prepare() computes applies (several calls may accumulate) and takeWrite() hands over their
// write, which the caller puts in the same batch as the log's own write (NodeStore.persist's
// `state`). Its data in the store at the applied index is also its snapshot (NodeStore.openSnapshot);
// after a snapshot is installed underneath it, reload() re-reads the session table.
//
// Everything apply() decides depends only on the entries and the state before them: the same log
// gives the same data, the same results and the same session table on every replica. That includes
// session expiry, which is judged by the commands' proposedAtMs, never by this node's clock. Hence
// `maxSessions` and `sessionTtlMs` must be the same on every node of a cluster.
//
// Sizes are not validated here (the API layer does it); malformed entries are rejected alike by
// every replica with an error result, and the applied index moves past them.

import { StoreError } from '../errors.js';
import type { Entry } from '../raft/types.js';
import { bytesEqual, compareBytes, DecodeError, fromUtf8, prefixEnd, utf8 } from '../storage/bytes.js';
import type { Change, NodeStore, StateWrite } from '../storage/node-store.js';
import {
  decodeCommand,
  decodeResult,
  encodeResult,
  type ApplyResult,
  type Command,
  type WriteResult,
} from './command.js';
import { RecordCache } from './record-cache.js';
import { decodeRecord, encodeRecord, type KvRecord } from './record.js';
import { decodeSession, encodeSession, SessionTable, type SessionMeta } from './session-table.js';

export const DEFAULT_MAX_SESSIONS = 10_000;
export const DEFAULT_SESSION_TTL_MS = 10 * 60 * 1000;
export const DEFAULT_RANGE_LIMIT = 1000;
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;

export interface KvStateMachineOptions {
  /** Limit: client sessions kept; the least recently used is evicted beyond it. Same on all nodes. */
  readonly maxSessions?: number;
  /** A session idle this long (by the session clock) expires. Same on all nodes. */
  readonly sessionTtlMs?: number;
  /** Limit: bytes of records kept in memory for reads and applies (0: none). Default 64 MiB. */
  readonly cacheBytes?: number;
}

/** Keys that start with `prefix`, or keys in [start, end) (no end: to the last key). */
export type KeyRange = { readonly prefix: Uint8Array } | { readonly start: Uint8Array; readonly end?: Uint8Array };

export interface RangeOptions {
  /** Limit: items returned. Default DEFAULT_RANGE_LIMIT. */
  readonly limit?: number;
  /**
   * Limit: bytes of keys + stored records (the value plus 24 bytes) returned; the page ends before an
   * item that would pass it, but at least one item is always returned.
   */
  readonly maxBytes?: number;
  /** Return keys without reading their records. */
  readonly keysOnly?: boolean;
  /** Pagination: the `nextToken` of the previous page; items start after this key. */
  readonly after?: Uint8Array;
}

export interface RangeItem {
  readonly key: Uint8Array;
  /** Absent when keysOnly. */
  readonly record?: KvRecord;
}

export interface RangeResult {
  readonly items: RangeItem[];
  /** More keys are in the range past the last item. */
  readonly more: boolean;
  /** When more: pass as `after` to read the next page (it is the last item's key). */
  readonly nextToken?: Uint8Array;
}

/** The write of the applies prepared so far (see KvStateMachine.takeWrite). */
export interface PreparedWrite {
  readonly write: StateWrite;
  /** The write is durable. */
  readonly written: () => void;
  /** The write failed; the state machine is unusable from now on. */
  readonly failed: (err: unknown) => void;
}

/** The command belongs to a client session (exactly-once): a client id and a sequence number >= 1. */
function isTracked(cmd: Command): cmd is Command & { readonly clientId: string; readonly seq: number } {
  return cmd.clientId !== undefined && cmd.clientId !== '' && cmd.seq !== undefined && cmd.seq > 0;
}

/** Map keys for byte strings: one char per byte. */
function byteKey(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** The stored session table's metadata (its size is bounded by maxSessions when it was written). */
async function readSessions(store: NodeStore): Promise<Array<[string, SessionMeta]>> {
  const loaded: Array<[string, SessionMeta]> = [];
  for await (const [id, value] of store.scanSessions()) {
    try {
      loaded.push([fromUtf8(id), decodeSession(value).meta]);
    } catch (err) {
      if (err instanceof DecodeError) {
        throw new StoreError('STORE_CORRUPT', `data directory ${store.dir}: session ${hex(id)} cannot be decoded (${err.message})`);
      }
      throw err;
    }
  }
  return loaded;
}

/** The writes of the applies prepared since the last write, not yet durable. Later applies see them first. */
class PendingBatch {
  /** null: deleted in this batch. */
  readonly data = new Map<string, { key: Uint8Array; record: KvRecord | null }>();
  /** undefined: session removed in this batch. */
  readonly sessions = new Map<string, Uint8Array | undefined>();

  *dataChanges(): Generator<Change> {
    for (const { key, record } of this.data.values()) yield [key, record === null ? undefined : encodeRecord(record)];
  }

  *sessionChanges(): Generator<Change> {
    for (const [id, value] of this.sessions) yield [utf8(id), value];
  }
}

export class KvStateMachine {
  private readonly store: NodeStore;
  private readonly sessions: SessionTable;
  /** The session clock: highest proposedAtMs applied. Persisted with each apply. */
  private clockMs: number;
  /**
   * Applies computed by prepare() and not yet taken for writing: their changes, and the index and
   * term they reach. Later prepares read through them; get() and range() do not (they serve the
   * durable state, which the node's applied index describes).
   */
  private pending: { readonly batch: PendingBatch; applied: number; appliedTerm: number } | undefined;
  /** A write was taken (takeWrite, or apply) and not yet reported written or failed; or a reload runs. */
  private applying = false;
  /** An apply() call is in progress, from its prepare to its write (see apply). */
  private inApply = false;
  /** Set when an apply failed midway; the in-memory session table may then be ahead of the disk. */
  private failure: unknown;
  /** Records of recently used keys as of the last completed apply (see record-cache.ts). */
  private readonly cache: RecordCache;
  /** The background load of the cache (startCacheLoad); a new load supersedes an older one. */
  private cacheLoad: Promise<void> = Promise.resolve();
  private cacheLoadGeneration = 0;

  private constructor(store: NodeStore, sessions: SessionTable, cacheBytes: number) {
    this.store = store;
    this.sessions = sessions;
    this.clockMs = store.sessionClockMs;
    this.cache = new RecordCache(cacheBytes);
  }

  /** Loads the session table from `store`. The store stays owned by the caller (who closes it). */
  static async open(store: NodeStore, options: KvStateMachineOptions = {}): Promise<KvStateMachine> {
    const table = new SessionTable(options.maxSessions ?? DEFAULT_MAX_SESSIONS, options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS);
    table.load(await readSessions(store));
    const sm = new KvStateMachine(store, table, options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    sm.startCacheLoad();
    return sm;
  }

  /**
   * Re-reads the session table and the session clock from the store, whose state was replaced (a
   * snapshot was installed). The table keeps its limits. Must not overlap apply().
   */
  async reload(): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    if (this.applying || this.inApply || this.pending !== undefined) throw new Error('KvStateMachine.reload called while an apply is prepared or being written');
    this.applying = true;
    this.cache.clear();
    try {
      const loaded = await readSessions(this.store);
      this.sessions.load(loaded);
      this.clockMs = this.store.sessionClockMs;
      this.startCacheLoad();
    } catch (err) {
      this.failure = err;
      throw err;
    } finally {
      this.applying = false;
    }
  }

  /** The index of the last applied entry (durable). */
  get appliedIndex(): number {
    return this.store.appliedIndex;
  }

  /** The index the prepared applies reach (the applied index when none is pending). */
  get preparedIndex(): number {
    return this.pending?.applied ?? this.store.appliedIndex;
  }

  /** The record cache's figures (for status and tests). */
  get cacheStats(): {
    readonly entries: number;
    readonly bytes: number;
    readonly maxBytes: number;
    readonly hits: number;
    readonly misses: number;
    readonly complete: boolean;
  } {
    const c = this.cache;
    return { entries: c.size, bytes: c.usedBytes, maxBytes: c.maxBytes, hits: c.hits, misses: c.misses, complete: c.complete };
  }

  /** Sessions in the table (for metrics and tests). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** The session of a client, if it has one (for inspection and tests). */
  session(clientId: string): SessionMeta | undefined {
    return this.sessions.get(clientId);
  }

  /**
   * Applies committed entries, which must follow the applied index densely (and any prepared ones),
   * in one atomic synced write that also carries the applies prepared before; returns one result per
   * entry, in order. Must not be called again before it resolves. Throws only on I/O failure or a
   * caller bug; the state machine is then unusable (reopen).
   */
  async apply(entries: readonly Entry[]): Promise<ApplyResult[]> {
    this.checkNoApplyInProgress();
    // Held for the whole call: its prepare may end without waiting, and a second call must not slip in
    // between it and the write.
    this.inApply = true;
    try {
      const results = await this.prepareEntries(entries);
      const prepared = this.takeWrite();
      if (prepared === undefined) return results;
      try {
        await this.store.writeState(prepared.write);
      } catch (err) {
        prepared.failed(err);
        throw err;
      }
      prepared.written();
      return results;
    } finally {
      this.inApply = false;
    }
  }

  /**
   * The first half of apply(): computes the results of `entries`, which follow the applied index and
   * the applies prepared before them densely, without writing anything. Their changes accumulate
   * until takeWrite(); until that write is durable, reads (get, range) see the state without them.
   * Must not overlap another prepare, nor a taken write that is not yet reported.
   */
  async prepare(entries: readonly Entry[]): Promise<ApplyResult[]> {
    this.checkNoApplyInProgress();
    return this.prepareEntries(entries);
  }

  private checkNoApplyInProgress(): void {
    if (this.applying || this.inApply) {
      throw new Error('KvStateMachine: apply or prepare called again before the previous call resolved (and its write was reported)');
    }
  }

  private async prepareEntries(entries: readonly Entry[]): Promise<ApplyResult[]> {
    if (this.failure !== undefined) throw this.failure;
    const first = entries[0];
    if (first === undefined) return [];
    let expected = this.preparedIndex + 1;
    for (const e of entries) {
      if (e.index !== expected) throw new Error(`KvStateMachine.apply: entry ${e.index} where ${expected} was expected`);
      expected++;
    }

    this.applying = true;
    const pending = this.pending ?? { batch: new PendingBatch(), applied: 0, appliedTerm: 0 };
    const results: ApplyResult[] = [];
    try {
      for (const e of entries) {
        // Most entries need no read from the store: then there is no promise to wait for.
        const r = this.applyEntry(e, pending.batch);
        results.push(r instanceof Promise ? await r : r);
      }
    } catch (err) {
      this.fail(err);
      throw err;
    }
    pending.applied = expected - 1;
    pending.appliedTerm = (entries[entries.length - 1] as Entry).term;
    this.pending = pending;
    this.applying = false;
    return results;
  }

  /**
   * The write of every apply prepared since the last write (undefined if none): the caller writes it
   * durably (NodeStore.writeState, or NodeStore.persist's `state`), then calls written(), or failed()
   * if the write failed. No prepare may start until then.
   */
  takeWrite(): PreparedWrite | undefined {
    if (this.failure !== undefined) throw this.failure;
    if (this.applying) throw new Error('KvStateMachine.takeWrite called while a write is being written');
    const pending = this.pending;
    if (pending === undefined) return undefined;
    this.pending = undefined;
    this.applying = true;
    const { batch } = pending;
    return {
      write: {
        applied: pending.applied,
        appliedTerm: pending.appliedTerm,
        data: batch.dataChanges(),
        sessions: batch.sessionChanges(),
        sessionClockMs: this.clockMs,
      },
      written: () => {
        // Durable: reads may see it now. Reads that missed meanwhile must not cache what they found.
        this.cache.epoch++;
        for (const [k, { record }] of batch.data) this.cache.set(k, record);
        this.applying = false;
      },
      failed: (err: unknown) => this.fail(err),
    };
  }

  /** An apply failed midway: the in-memory session table may be ahead of the disk; refuse from now on. */
  private fail(err: unknown): void {
    this.failure = err;
    this.pending = undefined;
    this.cache.clear();
    this.applying = false;
  }

  /**
   * Loads the data set into the cache in the background, while the node serves: if it fits whole and
   * nothing was evicted meanwhile, the cache is complete (a miss needs no read: see record-cache.ts);
   * if not, what was loaded stays as a warm start. A reload starts a new load and ends this one.
   */
  private startCacheLoad(): void {
    if (this.cache.maxBytes === 0) return;
    const generation = ++this.cacheLoadGeneration;
    this.cacheLoad = this.loadCache(generation).catch(() => {
      // The store closed or failed under the load: the cache just stays incomplete.
    });
  }

  /** Resolves when the background load of the cache (see startCacheLoad) has ended. For tests. */
  async cacheLoaded(): Promise<void> {
    await this.cacheLoad;
  }

  private async loadCache(generation: number): Promise<void> {
    const evictions = this.cache.evictions;
    const current = (): boolean => generation === this.cacheLoadGeneration && this.cache.evictions === evictions;
    for await (const [key, value] of this.store.scanData({ limit: Number.POSITIVE_INFINITY, values: true })) {
      if (!current()) return;
      const k = byteKey(key);
      if (this.cache.has(k)) continue;
      const record = this.decodeStored(key, value!);
      if (!this.cache.fits(RecordCache.entryBytes(k, record.value.byteLength))) return;
      this.cache.setIfAbsent(k, record);
    }
    if (current()) this.cache.markComplete();
  }

  /** The record of `key`, as of the last durable apply. */
  async get(key: Uint8Array): Promise<KvRecord | undefined> {
    const k = byteKey(key);
    const now = this.getNow(k);
    if (now !== undefined) return now ?? undefined;
    return this.getStored(key, k);
  }

  /**
   * The record of `key` as get() gives it when the cache can answer alone: null for an absent key;
   * undefined when the store must be read (getStored).
   */
  private getNow(k: string): KvRecord | null | undefined {
    const cached = this.cache.get(k);
    if (cached !== undefined) return cached;
    return this.cache.complete ? null : undefined;
  }

  /** `k` is byteKey(key). */
  private async getStored(key: Uint8Array, k: string): Promise<KvRecord | undefined> {
    const epoch = this.cache.epoch;
    const b = await this.store.getData(key);
    const record = b === undefined ? undefined : this.decodeStored(key, b);
    if (this.cache.epoch === epoch) this.cache.set(k, record ?? null);
    return record;
  }

  /**
   * Reads a range in key order, streaming from LevelDB: at most `limit` (+1 to learn `more`) keys
   * are read. With `after`, the page starts after that key.
   */
  async range(range: KeyRange, options: RangeOptions = {}): Promise<RangeResult> {
    const limit = options.limit ?? DEFAULT_RANGE_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`range: limit must be >= 1, got ${limit}`);
    const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    const keysOnly = options.keysOnly ?? false;

    let start: Uint8Array;
    let end: Uint8Array | undefined;
    if ('prefix' in range) {
      start = range.prefix;
      end = prefixEnd(range.prefix);
    } else {
      start = range.start;
      end = range.end;
    }
    const after = options.after !== undefined && compareBytes(options.after, start) >= 0 ? options.after : undefined;

    const items: RangeItem[] = [];
    let bytes = 0;
    let more = false;
    const scan = {
      ...(after !== undefined ? { gt: after } : { gte: start }),
      ...(end !== undefined ? { lt: end } : {}),
      limit: limit + 1,
      values: !keysOnly,
    };
    for await (const [key, value] of this.store.scanData(scan)) {
      const size = key.length + (value?.length ?? 0);
      if (items.length === limit || (items.length > 0 && bytes + size > maxBytes)) {
        more = true;
        break;
      }
      items.push(value === undefined ? { key } : { key, record: this.decodeStored(key, value) });
      bytes += size;
    }
    const last = items[items.length - 1];
    return more && last !== undefined ? { items, more, nextToken: last.key } : { items, more: false };
  }

  // ---- applying ---------------------------------------------------------------------------------

  /** An entry's result; a promise only when the store must be read for it. */
  private applyEntry(e: Entry, batch: PendingBatch): ApplyResult | Promise<ApplyResult> {
    if (e.type === 'noop') return { kind: 'noop', index: e.index };
    let cmd: Command;
    try {
      cmd = decodeCommand(e.data);
    } catch (err) {
      return { kind: 'error', index: e.index, code: 'MALFORMED_COMMAND', message: (err as Error).message };
    }

    if (cmd.proposedAtMs > this.clockMs) this.clockMs = cmd.proposedAtMs;
    for (const id of this.sessions.expire(this.clockMs)) batch.sessions.set(id, undefined);

    if (isTracked(cmd)) {
      const { clientId, seq } = cmd;
      const s = this.sessions.get(clientId);
      if (s !== undefined && seq < s.lastSeq) {
        return {
          kind: 'error',
          index: e.index,
          code: 'STALE_SEQUENCE',
          message: `client ${JSON.stringify(clientId)}: sequence ${seq} is below the last applied sequence ${s.lastSeq}`,
        };
      }
      if (s !== undefined && seq === s.lastSeq) return this.storedResult(clientId, batch).then((r) => ({ ...r, duplicate: true }));
    }

    const k = byteKey(cmd.key);
    const current = this.readNow(k, batch);
    if (current === undefined) {
      return this.getStored(cmd.key, k).then((stored) => this.executeTracked(cmd, k, e.index, batch, stored));
    }
    return this.executeTracked(cmd, k, e.index, batch, current ?? undefined);
  }

  /** Executes the command on the key's current record, and records the result in the client's session. */
  private executeTracked(cmd: Command, k: string, index: number, batch: PendingBatch, current: KvRecord | undefined): WriteResult {
    const result = this.execute(cmd, k, index, batch, current);
    if (isTracked(cmd)) {
      const meta: SessionMeta = { lastSeq: cmd.seq, lastIndex: index, lastSeenMs: this.clockMs };
      this.sessions.touch(cmd.clientId, meta);
      batch.sessions.set(cmd.clientId, encodeSession(meta, encodeResult(result)));
      for (const id of this.sessions.evictOverflow()) batch.sessions.set(id, undefined);
    }
    return result;
  }

  /** `k` is byteKey(cmd.key). */
  private execute(cmd: Command, k: string, index: number, batch: PendingBatch, current: KvRecord | undefined): WriteResult {
    const write = (value: Uint8Array): KvRecord => {
      const record: KvRecord =
        current === undefined
          ? { value, createIndex: index, modIndex: index, version: 1 }
          : { value, createIndex: current.createIndex, modIndex: index, version: current.version + 1 };
      batch.data.set(k, { key: cmd.key, record });
      return record;
    };
    switch (cmd.op) {
      case 'put':
        write(cmd.value);
        return current === undefined || cmd.prevKv !== true ? { kind: 'put', index } : { kind: 'put', index, prev: current };
      case 'delete':
        if (current === undefined) return { kind: 'delete', index, deleted: false };
        batch.data.set(k, { key: cmd.key, record: null });
        return cmd.prevKv === true ? { kind: 'delete', index, deleted: true, prev: current } : { kind: 'delete', index, deleted: true };
      case 'cas': {
        let holds: boolean;
        switch (cmd.compare.kind) {
          case 'value':
            holds = current !== undefined && bytesEqual(current.value, cmd.compare.value);
            break;
          case 'modIndex':
            holds = (current?.modIndex ?? 0) === cmd.compare.modIndex;
            break;
          case 'absent':
            holds = current === undefined;
            break;
        }
        if (holds) return { kind: 'cas', index, succeeded: true, current: write(cmd.value) };
        return current === undefined ? { kind: 'cas', index, succeeded: false } : { kind: 'cas', index, succeeded: false, current };
      }
    }
  }

  /**
   * A key's record as of the entries applied so far in this batch (null: absent), when the batch or
   * the cache can tell; undefined when the store must be read (getStored).
   */
  private readNow(k: string, batch: PendingBatch): KvRecord | null | undefined {
    const pending = batch.data.get(k);
    if (pending !== undefined) return pending.record;
    return this.getNow(k);
  }

  private async storedResult(clientId: string, batch: PendingBatch): Promise<WriteResult> {
    const value = batch.sessions.has(clientId) ? batch.sessions.get(clientId) : await this.store.getSession(utf8(clientId));
    if (value === undefined) {
      // The in-memory table says the session exists, so it must be pending or on disk.
      throw new Error(`KvStateMachine: session of client ${JSON.stringify(clientId)} is in the table but not stored`);
    }
    try {
      return decodeResult(decodeSession(value).result);
    } catch (err) {
      if (err instanceof DecodeError) {
        throw new StoreError('STORE_CORRUPT', `data directory ${this.store.dir}: session of client ${JSON.stringify(clientId)} cannot be decoded (${err.message})`);
      }
      throw err;
    }
  }

  private decodeStored(key: Uint8Array, b: Uint8Array): KvRecord {
    try {
      return decodeRecord(b);
    } catch (err) {
      if (err instanceof DecodeError) {
        throw new StoreError('STORE_CORRUPT', `data directory ${this.store.dir}: the record of key ${hex(key)} cannot be decoded (${err.message})`);
      }
      throw err;
    }
  }
}
