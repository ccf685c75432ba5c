// The durable store of one raftkv node: ONE LevelDB holding the Raft hard state and log, and the
// state machine's data, sessions and applied index (key layout in keys.ts). Two kinds of write, each
// one atomic synced batch:
//
//  - persist(): the Raft side of a Ready (hard state + new entries, truncating a replaced suffix);
//  - writeState(): the state machine side (data + sessions + the applied index that covers them), so
//    a restart never applies an entry twice or skips one.
//
// open() refuses, with a StoreError naming the directory and the problem, anything it cannot vouch
// for: another cluster's or node's store, an unknown format, a non-raftkv directory, a broken log.
// It never starts empty over existing data.
//
// A failed write leaves the store unusable (every later call throws): after an I/O error we cannot
// know what is durable, so the node must stop and reopen, which re-reads the truth from disk.

import { mkdir, readdir, stat } from 'node:fs/promises';
import { Level } from 'level';
import { StoreError } from '../errors.js';
import type { Entry, HardState, InitialState, NodeId } from '../raft/types.js';
import { asView, DecodeError, fromUtf8, utf8 } from './bytes.js';
import {
  dataKey,
  decodeEntryValue,
  decodeHardState,
  decodeU32,
  decodeU64,
  encodeEntryValue,
  encodeHardState,
  encodeU32,
  encodeU64,
  FORMAT_VERSION,
  keyspace,
  logKey,
  logKeyIndex,
  META_APPLIED,
  META_CLUSTER_ID,
  META_FORMAT_VERSION,
  META_HARD_STATE,
  META_NODE_ID,
  META_SESSION_CLOCK,
  PREFIX_DATA,
  PREFIX_LOG,
  PREFIX_SESSION,
  sessionKey,
} from './keys.js';

type Db = Level<Uint8Array, Uint8Array>;
type BatchOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

export interface NodeStoreOptions {
  /** The cluster this node belongs to; a store of another cluster is refused. */
  readonly clusterId: string;
  /** This node's id (a positive integer); a store of another node is refused. */
  readonly nodeId: NodeId;
  /** Whether a missing or empty directory may be initialized as a new store. Default true. */
  readonly create?: boolean;
}

/** The Raft side of a Ready: structurally a subset of `Ready`, so a Ready can be passed as is. */
export interface PersistBatch {
  readonly hardState?: HardState;
  readonly entries: readonly Entry[];
}

/** One key's change: a value to put, or undefined to delete. */
export type Change = readonly [key: Uint8Array, value: Uint8Array | undefined];

/** The state machine side of an apply: written in one atomic synced batch. */
export interface StateWrite {
  /** The applied index once this write is durable. Invariant: appliedIndex <= applied <= commit. */
  readonly applied: number;
  /** KV data changes, keyed by the user's key bytes (values are opaque to the store). */
  readonly data?: Iterable<Change>;
  /** Session table changes, keyed by the client id's UTF-8 bytes (values opaque to the store). */
  readonly sessions?: Iterable<Change>;
  /** The new session clock; never goes backwards. */
  readonly sessionClockMs?: number;
}

/** A walk over KV data keys (user key bytes, without the store's prefix), in byte order. */
export interface DataScan {
  readonly gte?: Uint8Array;
  readonly gt?: Uint8Array;
  /** Exclusive upper bound; omitted: to the end of the data keyspace. */
  readonly lt?: Uint8Array;
  /** Limit: at most this many keys are read. */
  readonly limit: number;
  /** false: keys only, values are not read (yielded as undefined). */
  readonly values: boolean;
}

const EMPTY_HARD_STATE: HardState = { term: 0, vote: 0, commit: 0 };

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return `${err.message}${cause}`;
  }
  return String(err);
}

export class NodeStore {
  /** The data directory, as given to open(); every error message names it. */
  readonly dir: string;
  readonly clusterId: string;
  readonly nodeId: NodeId;
  private readonly db: Db;

  /** The persisted hard state. Invariant: commit <= lastPersisted. */
  private hs: HardState;
  /** Index of the last persisted log entry (0: empty log). */
  private lastPersisted: number;
  /** Term of the last persisted log entry (0: empty log). */
  private lastPersistedTerm: number;
  /** The persisted applied index. Invariant: applied <= hs.commit. */
  private applied: number;
  private clockMs: number;
  /** The log as read at open, until initialState() hands it over. */
  private initial: InitialState | undefined;

  private persisting = false;
  private writingState = false;
  private closed = false;
  /** Set by a failed write; every later call throws it. */
  private failure: StoreError | undefined;

  private constructor(dir: string, opts: NodeStoreOptions, db: Db, loaded: Loaded) {
    this.dir = dir;
    this.clusterId = opts.clusterId;
    this.nodeId = opts.nodeId;
    this.db = db;
    this.hs = loaded.hardState;
    this.applied = loaded.applied;
    this.clockMs = loaded.sessionClockMs;
    const last = loaded.entries[loaded.entries.length - 1];
    this.lastPersisted = last?.index ?? 0;
    this.lastPersistedTerm = last?.term ?? 0;
    this.initial = { hardState: loaded.hardState, entries: loaded.entries, applied: loaded.applied };
  }

  /**
   * Opens (or, if allowed, creates) the store in `dir` and validates everything Raft relies on.
   * Throws StoreError: STORE_MISMATCH (not this cluster's/node's store, not raftkv, unknown format),
   * STORE_CORRUPT (fails validation), STORE_UNAVAILABLE (missing and create=false, locked, I/O).
   */
  static async open(dir: string, opts: NodeStoreOptions): Promise<NodeStore> {
    if (typeof opts.clusterId !== 'string' || opts.clusterId === '') {
      throw new RangeError('NodeStore.open: clusterId must be a non-empty string');
    }
    if (!Number.isSafeInteger(opts.nodeId) || opts.nodeId < 1) {
      throw new RangeError(`NodeStore.open: nodeId must be a positive integer, got ${opts.nodeId}`);
    }
    const create = opts.create ?? true;
    const kind = await inspectDir(dir);
    if (kind === 'missing' || kind === 'empty') {
      if (!create) {
        throw new StoreError(
          'STORE_UNAVAILABLE',
          `data directory ${dir} ${kind === 'missing' ? 'does not exist' : 'is empty'}, and creating a new store was not allowed`,
        );
      }
      if (kind === 'missing') await mkdir(dir, { recursive: true });
    }

    const db: Db = new Level<Uint8Array, Uint8Array>(dir, {
      keyEncoding: 'view',
      valueEncoding: 'view',
      createIfMissing: kind !== 'leveldb',
      errorIfExists: kind !== 'leveldb',
    });
    try {
      await db.open();
    } catch (err) {
      throw openError(dir, err);
    }
    try {
      const loaded = await loadOrInit(dir, db, opts, create);
      return new NodeStore(dir, opts, db, loaded);
    } catch (err) {
      await db.close().catch(() => undefined);
      if (err instanceof StoreError) throw err;
      throw new StoreError('STORE_UNAVAILABLE', `cannot read data directory ${dir}: ${describe(err)}`, { cause: err });
    }
  }

  // ---- inspection -----------------------------------------------------------------------------

  /** The persisted hard state. */
  get hardState(): HardState {
    return this.hs;
  }
  /** Index of the last persisted log entry; 0 when the log is empty. */
  get lastIndex(): number {
    return this.lastPersisted;
  }
  /** The state machine's persisted applied index. */
  get appliedIndex(): number {
    return this.applied;
  }
  /** The session clock: the highest proposedAtMs of any applied command (see src/kv). */
  get sessionClockMs(): number {
    return this.clockMs;
  }

  /**
   * What was durable when the store was opened, for `RaftConfig.initial`. May be called once: the
   * store then drops its reference to the log, which the Raft core owns from there on.
   */
  initialState(): InitialState {
    const s = this.initial;
    if (s === undefined) throw new Error('NodeStore.initialState() may be called only once');
    this.initial = undefined;
    return s;
  }

  // ---- the Raft side ----------------------------------------------------------------------------

  /**
   * Makes a Ready's hard state and entries durable in ONE atomic synced batch. Entries whose first
   * index is i replace every persisted entry at index >= i. Resolves without writing when there is
   * nothing new. Must not be called again before the previous call resolved.
   */
  async persist(batch: PersistBatch): Promise<void> {
    this.checkUsable('persist');
    if (this.persisting) throw new Error('NodeStore.persist called again before the previous call resolved');

    const ops: BatchOp[] = [];
    let last = this.lastPersisted;
    let lastTerm = this.lastPersistedTerm;
    const hs = batch.hardState !== undefined && !hardStateEqual(batch.hardState, this.hs) ? batch.hardState : undefined;
    const termLimit = (hs ?? this.hs).term;

    const first = batch.entries[0];
    if (first !== undefined) {
      if (first.index < 1 || first.index > last + 1) {
        throw new Error(`NodeStore.persist: entries start at ${first.index}, which would leave a gap after ${last}`);
      }
      if (first.index <= this.hs.commit) {
        throw new Error(`NodeStore.persist: entries start at ${first.index}, which would replace committed entries (commit ${this.hs.commit})`);
      }
      if (first.index === last + 1 && first.term < lastTerm) {
        throw new Error(`NodeStore.persist: entry ${first.index} has term ${first.term}, below the term ${lastTerm} before it`);
      }
      let prev: Entry | undefined;
      for (const e of batch.entries) {
        if (prev !== undefined && (e.index !== prev.index + 1 || e.term < prev.term)) {
          throw new Error(`NodeStore.persist: entry ${e.index} (term ${e.term}) cannot follow ${prev.index} (term ${prev.term})`);
        }
        if (e.term < 1 || e.term > termLimit) {
          throw new Error(`NodeStore.persist: entry ${e.index} has term ${e.term}, outside [1, ${termLimit}]`);
        }
        ops.push({ type: 'put', key: logKey(e.index), value: encodeEntryValue(e) });
        prev = e;
      }
      const newLast = (prev as Entry).index;
      for (let i = newLast + 1; i <= last; i++) ops.push({ type: 'del', key: logKey(i) });
      last = newLast;
      lastTerm = (prev as Entry).term;
    }

    if (hs !== undefined) {
      if (hs.term < this.hs.term || hs.commit < this.hs.commit) {
        throw new Error(`NodeStore.persist: hard state goes backwards: ${JSON.stringify(hs)} after ${JSON.stringify(this.hs)}`);
      }
      ops.push({ type: 'put', key: META_HARD_STATE, value: encodeHardState(hs) });
    }
    const commit = (hs ?? this.hs).commit;
    if (commit > last) throw new Error(`NodeStore.persist: commit ${commit} is past the last log index ${last}`);
    if (ops.length === 0) return;

    this.persisting = true;
    try {
      await this.write(ops, 'persist');
    } finally {
      this.persisting = false;
    }
    if (hs !== undefined) this.hs = { term: hs.term, vote: hs.vote, commit: hs.commit };
    this.lastPersisted = last;
    this.lastPersistedTerm = lastTerm;
  }

  // ---- the state machine side -------------------------------------------------------------------

  /**
   * Writes state machine changes and the applied index that covers them in ONE atomic synced batch.
   * Must not be called again before the previous call resolved.
   */
  async writeState(w: StateWrite): Promise<void> {
    this.checkUsable('writeState');
    if (this.writingState) throw new Error('NodeStore.writeState called again before the previous call resolved');
    if (!Number.isSafeInteger(w.applied) || w.applied < this.applied || w.applied > this.hs.commit) {
      throw new Error(
        `NodeStore.writeState: applied index ${w.applied} must be in [${this.applied}, ${this.hs.commit}] (applied, persisted commit)`,
      );
    }
    if (w.sessionClockMs !== undefined && !(Number.isSafeInteger(w.sessionClockMs) && w.sessionClockMs >= this.clockMs)) {
      throw new Error(`NodeStore.writeState: session clock ${w.sessionClockMs} goes back from ${this.clockMs}`);
    }
    const ops: BatchOp[] = [{ type: 'put', key: META_APPLIED, value: encodeU64(w.applied) }];
    for (const [k, v] of w.data ?? []) {
      const key = dataKey(k);
      ops.push(v === undefined ? { type: 'del', key } : { type: 'put', key, value: v });
    }
    for (const [k, v] of w.sessions ?? []) {
      const key = sessionKey(k);
      ops.push(v === undefined ? { type: 'del', key } : { type: 'put', key, value: v });
    }
    if (w.sessionClockMs !== undefined) ops.push({ type: 'put', key: META_SESSION_CLOCK, value: encodeU64(w.sessionClockMs) });

    this.writingState = true;
    try {
      await this.write(ops, 'writeState');
    } finally {
      this.writingState = false;
    }
    this.applied = w.applied;
    if (w.sessionClockMs !== undefined) this.clockMs = w.sessionClockMs;
  }

  /** The stored value of a KV data key, or undefined. */
  async getData(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.checkUsable('getData');
    try {
      const v = await this.db.get(dataKey(key));
      return v === undefined ? undefined : asView(v);
    } catch (err) {
      throw new StoreError('STORE_UNAVAILABLE', `read from data directory ${this.dir} failed: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * Walks KV data in key order, reading from LevelDB as it goes (nothing is loaded up front). Keys
   * are yielded without the store's prefix. Breaking out of the loop closes the iterator.
   */
  async *scanData(scan: DataScan): AsyncGenerator<Change, void, undefined> {
    this.checkUsable('scanData');
    if (!Number.isSafeInteger(scan.limit) || scan.limit < 1) throw new RangeError(`scanData: limit must be >= 1, got ${scan.limit}`);
    const opts: { gte?: Uint8Array; gt?: Uint8Array; lt: Uint8Array; limit: number; values: boolean } = {
      lt: scan.lt !== undefined ? dataKey(scan.lt) : keyspace(PREFIX_DATA).lt,
      limit: scan.limit,
      values: scan.values,
    };
    if (scan.gt !== undefined) opts.gt = dataKey(scan.gt);
    else opts.gte = scan.gte !== undefined ? dataKey(scan.gte) : keyspace(PREFIX_DATA).gte;
    try {
      for await (const [k, v] of this.db.iterator(opts)) {
        yield [asView(k).subarray(1), v === undefined ? undefined : asView(v)];
      }
    } catch (err) {
      throw new StoreError('STORE_UNAVAILABLE', `read from data directory ${this.dir} failed: ${describe(err)}`, { cause: err });
    }
  }

  /** Every stored session, as (client id UTF-8, value). The table is bounded by the state machine. */
  async *scanSessions(): AsyncGenerator<readonly [clientId: Uint8Array, value: Uint8Array], void, undefined> {
    this.checkUsable('scanSessions');
    try {
      for await (const [k, v] of this.db.iterator(keyspace(PREFIX_SESSION))) {
        yield [asView(k).subarray(1), asView(v)];
      }
    } catch (err) {
      throw new StoreError('STORE_UNAVAILABLE', `read from data directory ${this.dir} failed: ${describe(err)}`, { cause: err });
    }
  }

  /** The stored value of one session, or undefined. */
  async getSession(clientIdUtf8: Uint8Array): Promise<Uint8Array | undefined> {
    this.checkUsable('getSession');
    try {
      const v = await this.db.get(sessionKey(clientIdUtf8));
      return v === undefined ? undefined : asView(v);
    } catch (err) {
      throw new StoreError('STORE_UNAVAILABLE', `read from data directory ${this.dir} failed: ${describe(err)}`, { cause: err });
    }
  }

  /** Closes the database. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.initial = undefined;
    await this.db.close();
  }

  // ---- internals --------------------------------------------------------------------------------

  private checkUsable(op: string): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new Error(`NodeStore.${op}: the store for ${this.dir} is closed`);
  }

  private async write(ops: BatchOp[], op: string): Promise<void> {
    try {
      await this.db.batch(ops, { sync: true });
    } catch (err) {
      this.failure = new StoreError(
        'STORE_UNAVAILABLE',
        `${op} to data directory ${this.dir} failed; the store must be reopened: ${describe(err)}`,
        { cause: err },
      );
      throw this.failure;
    }
  }
}

// ---- opening ------------------------------------------------------------------------------------

type DirKind = 'missing' | 'empty' | 'leveldb';

/** What is at `dir`; refuses a file, or a non-empty directory that holds no LevelDB. */
async function inspectDir(dir: string): Promise<DirKind> {
  let names: string[];
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw new StoreError('STORE_MISMATCH', `data directory ${dir} is not a directory`);
    names = await readdir(dir);
  } catch (err) {
    if (err instanceof StoreError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw new StoreError('STORE_UNAVAILABLE', `cannot read data directory ${dir}: ${describe(err)}`, { cause: err });
  }
  if (names.length === 0) return 'empty';
  if (!names.includes('CURRENT')) {
    const shown = names.slice(0, 3).join(', ') + (names.length > 3 ? ', ...' : '');
    throw new StoreError(
      'STORE_MISMATCH',
      `data directory ${dir} is not empty (${shown}) and holds no LevelDB database; refusing to use it for a raftkv store`,
    );
  }
  return 'leveldb';
}

function openError(dir: string, err: unknown): StoreError {
  const cause = (err as { cause?: { code?: string } }).cause;
  if (cause?.code === 'LEVEL_LOCKED') {
    return new StoreError('STORE_UNAVAILABLE', `data directory ${dir} is locked by another process (is another node running on it?)`, { cause: err });
  }
  if (cause?.code === 'LEVEL_CORRUPTION') {
    return new StoreError('STORE_CORRUPT', `the LevelDB database in ${dir} is corrupt: ${describe(err)}`, { cause: err });
  }
  return new StoreError('STORE_UNAVAILABLE', `cannot open the LevelDB database in ${dir}: ${describe(err)}`, { cause: err });
}

interface Loaded {
  readonly hardState: HardState;
  readonly entries: Entry[];
  readonly applied: number;
  readonly sessionClockMs: number;
}

async function loadOrInit(dir: string, db: Db, opts: NodeStoreOptions, create: boolean): Promise<Loaded> {
  const version = await db.get(META_FORMAT_VERSION);
  if (version === undefined) {
    // A LevelDB without our format key: brand new, or a crash between creating it and the first batch
    // (both leave it without any key). Anything else is not ours.
    let hasKeys = false;
    for await (const _ of db.keys({ limit: 1 })) hasKeys = true;
    if (hasKeys) {
      throw new StoreError('STORE_MISMATCH', `data directory ${dir} holds a LevelDB database that is not a raftkv store (no format version)`);
    }
    if (!create) {
      throw new StoreError('STORE_UNAVAILABLE', `data directory ${dir} holds an empty database, and creating a new store was not allowed`);
    }
    await db.batch(
      [
        { type: 'put', key: META_FORMAT_VERSION, value: encodeU32(FORMAT_VERSION) },
        { type: 'put', key: META_CLUSTER_ID, value: utf8(opts.clusterId) },
        { type: 'put', key: META_NODE_ID, value: encodeU64(opts.nodeId) },
        { type: 'put', key: META_HARD_STATE, value: encodeHardState(EMPTY_HARD_STATE) },
        { type: 'put', key: META_APPLIED, value: encodeU64(0) },
        { type: 'put', key: META_SESSION_CLOCK, value: encodeU64(0) },
      ],
      { sync: true },
    );
    return { hardState: EMPTY_HARD_STATE, entries: [], applied: 0, sessionClockMs: 0 };
  }

  const corrupt = (what: string): StoreError => new StoreError('STORE_CORRUPT', `data directory ${dir}: ${what}`);
  const decodeMeta = async <T>(key: Uint8Array, what: string, decode: (b: Uint8Array) => T): Promise<T> => {
    const b = await db.get(key);
    if (b === undefined) throw corrupt(`${what} is missing`);
    try {
      return decode(asView(b));
    } catch (err) {
      if (err instanceof DecodeError) throw corrupt(`${what} cannot be decoded (${err.message})`);
      throw err;
    }
  };

  const formatVersion = await decodeMeta(META_FORMAT_VERSION, 'the format version', (b) => decodeU32(b, 'format version'));
  if (formatVersion !== FORMAT_VERSION) {
    throw new StoreError(
      'STORE_MISMATCH',
      `data directory ${dir} has store format version ${formatVersion}; this raftkv understands version ${FORMAT_VERSION}`,
    );
  }
  const clusterId = await decodeMeta(META_CLUSTER_ID, 'the cluster id', fromUtf8);
  if (clusterId !== opts.clusterId) {
    throw new StoreError('STORE_MISMATCH', `data directory ${dir} belongs to cluster ${JSON.stringify(clusterId)}, not ${JSON.stringify(opts.clusterId)}`);
  }
  const nodeId = await decodeMeta(META_NODE_ID, 'the node id', (b) => decodeU64(b, 'node id'));
  if (nodeId !== opts.nodeId) {
    throw new StoreError('STORE_MISMATCH', `data directory ${dir} belongs to node ${nodeId}, not node ${opts.nodeId}`);
  }
  const hardState = await decodeMeta(META_HARD_STATE, 'the hard state', decodeHardState);
  const applied = await decodeMeta(META_APPLIED, 'the applied index', (b) => decodeU64(b, 'applied index'));
  const sessionClockMs = await decodeMeta(META_SESSION_CLOCK, 'the session clock', (b) => decodeU64(b, 'session clock'));

  const entries: Entry[] = [];
  const logDesc = `log in ${dir}`;
  let prevIndex = 0;
  let prevTerm = 0;
  for await (const [rawKey, rawValue] of db.iterator(keyspace(PREFIX_LOG))) {
    let e: Entry;
    try {
      const index = logKeyIndex(asView(rawKey));
      if (index !== prevIndex + 1) {
        throw new StoreError(
          'STORE_CORRUPT',
          prevIndex === 0 ? `${logDesc} starts at index ${index}, not 1` : `${logDesc} has a gap: index ${index} follows ${prevIndex}`,
        );
      }
      e = decodeEntryValue(index, asView(rawValue));
    } catch (err) {
      if (err instanceof DecodeError) throw new StoreError('STORE_CORRUPT', `${logDesc} has an undecodable entry after index ${prevIndex} (${err.message})`);
      throw err;
    }
    if (e.term < 1 || e.term < prevTerm) {
      throw new StoreError('STORE_CORRUPT', `${logDesc} has term ${e.term} at index ${e.index} after term ${prevTerm}`);
    }
    if (e.term > hardState.term) {
      throw new StoreError('STORE_CORRUPT', `${logDesc} has term ${e.term} at index ${e.index}, beyond the stored current term ${hardState.term}`);
    }
    entries.push(e);
    prevIndex = e.index;
    prevTerm = e.term;
  }
  if (hardState.commit > prevIndex) {
    throw corrupt(`the commit index ${hardState.commit} is past the end of the log (last index ${prevIndex})`);
  }
  if (applied > hardState.commit) {
    throw corrupt(`the applied index ${applied} is past the commit index ${hardState.commit}`);
  }
  return { hardState, entries, applied, sessionClockMs };
}
