// The durable store of one raftkv node: ONE LevelDB holding the Raft hard state and log, and the
// state machine's data, sessions and applied position (key layout in keys.ts). Each write is one
// atomic synced batch:
//
//  - persist(): the Raft side of a Ready (hard state + new entries, truncating a replaced suffix), and
//    optionally the install of a snapshot staged with beginStaging();
//  - writeState(): the state machine side (data + sessions + the applied index that covers them), so
//    a restart never applies an entry twice or skips one;
//  - compactLog(): moves the log start forward once the state machine has applied past it.
//
// Snapshots (etcd v3 style): the state machine's data in LevelDB at its applied index IS the
// snapshot, so taking one costs nothing but compacting the log. A copy is read through ONE iterator
// (openSnapshot; LevelDB gives it an implicit snapshot, so writes go on meanwhile) and encoded as a
// checksummed stream (snapshot-format.ts). A received snapshot is written into a new generation of
// the state keyspace (beginStaging) and switched to in persist's one synced batch: a crash or an
// abort before the switch leaves the old state whole, and open() clears leftover generations.
//
// open() refuses, with a StoreError naming the directory and the problem, anything it cannot vouch
// for: another cluster's or node's store, an unknown format, a non-raftkv directory, a broken log.
// It never starts empty over existing data.
//
// A failed write leaves the store unusable (every later call throws): after an I/O error we cannot
// know what is durable, so the node must stop and reopen, which re-reads the truth from disk.

import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { Level } from 'level';
import { StoreError } from '../errors.js';
import type { Entry, HardState, InitialState, NodeId, SnapshotMeta } from '../raft/types.js';
import { asView, bytesEqual, DecodeError, fromUtf8, utf8 } from './bytes.js';
import {
  appliedKey,
  dataKey,
  decodeEntryValue,
  decodeHardState,
  decodeSnapshotMeta,
  decodeU32,
  decodeU64,
  encodeEntryValue,
  encodeHardState,
  encodeSnapshotMeta,
  encodeU32,
  encodeU64,
  FORMAT_VERSION,
  generationRange,
  keyspace,
  logKey,
  logKeyIndex,
  META_CLUSTER_ID,
  META_FORMAT_VERSION,
  META_HARD_STATE,
  META_LOG_START,
  META_NODE_ID,
  META_STATE_GENERATION,
  nextGeneration,
  parseStateKey,
  PREFIX_LOG,
  PREFIX_STATE,
  sessionClockKey,
  sessionKey,
  STATE_KIND_DATA,
  STATE_KIND_SESSION,
  stateKindRange,
} from './keys.js';
import { encodeSnapshot, SnapshotDecoder, type SnapshotHeader, type SnapshotLimits, type SnapshotRecord } from './snapshot-format.js';

type Db = Level<Uint8Array, Uint8Array>;

/**
 * classic-level's own batch: operations go to LevelDB as they are. The public batch() clones and
 * re-encodes every operation for hooks, events and encodings this store does not use (keys and
 * values are Uint8Array already, the 'view' encoding); profiled, that was the largest single CPU cost
 * of a write. Used when present and the database is open; the public batch() otherwise.
 */
type NativeBatch = (ops: BatchOp[], options: { readonly sync: boolean }) => Promise<void>;
const SYNC = { sync: true } as const;
type BatchOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };
type Range = { gt?: Uint8Array; gte?: Uint8Array; lt?: Uint8Array; lte?: Uint8Array };

export interface NodeStoreOptions {
  /** The cluster this node belongs to; a store of another cluster is refused. */
  readonly clusterId: string;
  /** This node's id (a positive integer); a store of another node is refused. */
  readonly nodeId: NodeId;
  /** Whether a missing or empty directory may be initialized as a new store. Default true. */
  readonly create?: boolean;
  /**
   * Told of a failed background clean-up (the old generation and compacted entries after a snapshot
   * install). Such a failure leaves only garbage, which the next open clears. Default: ignored.
   */
  readonly onBackgroundError?: (err: StoreError) => void;
}

/**
 * The Raft side of a Ready: its hard state and entries (a Ready without a snapshot can be passed as
 * is), plus, to install a snapshot, the staging that holds its data.
 */
export interface PersistBatch {
  readonly hardState?: HardState;
  readonly entries: readonly Entry[];
  /** A snapshot to install in the same atomic batch; `entries` then start at meta.index + 1. */
  readonly snapshot?: SnapshotInstall;
  /**
   * State machine changes written in the same atomic synced batch (one disk sync for a Ready's log
   * entries and the apply of its committed entries). Checked as writeState checks them, against the
   * batch's hard state. Not together with `snapshot`.
   */
  readonly state?: StateWrite;
}

export interface SnapshotInstall {
  /** Where the log continues from; equal to the header's index and term. */
  readonly meta: SnapshotMeta;
  /** The staging that holds every record of the snapshot (the current one of this store). */
  readonly staging: SnapshotStaging;
  /** The header of the received stream: its session clock becomes the store's. */
  readonly header: SnapshotHeader;
}

/**
 * A snapshot being received: its records go into a new generation of the state keyspace, invisible
 * to reads, until persist() installs it. A crash or abort() before that leaves the current state.
 */
export interface SnapshotStaging {
  /** The generation of the state keyspace the records are written into. */
  readonly generation: number;
  /**
   * Writes records in one synced batch. Synced each: LevelDB's synced install batch would make earlier
   * writes durable only within the same write-ahead log file, and a snapshot of a few MB spans
   * several (a file is closed without a sync when the memtable is switched), so a power loss could
   * keep the install and lose staged records. Must not be called again before it resolved.
   */
  write(records: readonly SnapshotRecord[]): Promise<void>;
  /** Drops what was staged. Idempotent; a later beginStaging() also aborts this one. */
  abort(): Promise<void>;
}

/** A consistent copy of the state machine, read through one LevelDB iterator. */
export interface SnapshotReader {
  /** index = the applied index when the reader was opened, term = its entry's term. */
  readonly header: SnapshotHeader;
  /**
   * The snapshot stream in chunks of chunkBytes (the last may be shorter); records are read from
   * LevelDB only as chunks are consumed. May be called once. Finishing or abandoning the loop closes
   * the reader.
   */
  chunks(chunkBytes: number): AsyncGenerator<Uint8Array, void, undefined>;
  /** Ends the iterator (and its LevelDB snapshot). Idempotent. */
  close(): Promise<void>;
}

/** One key's change: a value to put, or undefined to delete. */
export type Change = readonly [key: Uint8Array, value: Uint8Array | undefined];

/** The state machine side of an apply: written in one atomic synced batch. */
export interface StateWrite {
  /** The applied index once this write is durable. Invariant: appliedIndex <= applied <= commit. */
  readonly applied: number;
  /** The term of the entry at `applied` (a snapshot records it). */
  readonly appliedTerm: number;
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
  /** Limit: at most this many keys are read (Infinity: all of them). */
  readonly limit: number;
  /** false: keys only, values are not read (yielded as undefined). */
  readonly values: boolean;
}

/** The store's side of a SnapshotStaging. */
interface Staging extends SnapshotStaging {
  state: 'open' | 'installing' | 'aborted' | 'installed';
  /** The write in flight, if any. */
  writing: Promise<void> | undefined;
}

const EMPTY_HARD_STATE: HardState = { term: 0, vote: 0, commit: 0 };
const ZERO: SnapshotMeta = { index: 0, term: 0 };

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

function isSafeIndex(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** A snapshot position is {0, 0}, or a positive index with a positive term. */
function checkMeta(m: SnapshotMeta, what: string): void {
  if (!isSafeIndex(m.index) || !isSafeIndex(m.term) || (m.index === 0) !== (m.term === 0)) {
    throw new Error(`${what}: ${JSON.stringify(m)} is not a valid snapshot position`);
  }
}

/** Every log key up to and including `index`. */
function logRangeThrough(index: number): Range {
  return { gte: keyspace(PREFIX_LOG).gte, lte: logKey(index) };
}

export class NodeStore {
  /** The data directory, as given to open(); every error message names it. */
  readonly dir: string;
  readonly clusterId: string;
  readonly nodeId: NodeId;
  private readonly db: Db;
  private readonly onBackgroundError: (err: StoreError) => void;

  /** The persisted hard state. Invariant: logStart.index <= applied <= commit <= lastPersisted. */
  private hs: HardState;
  /** Entries up to logStartMeta.index are compacted; the log continues from index + 1. */
  private logStartMeta: SnapshotMeta;
  /** Index of the last persisted log entry (logStart.index: no entry after the log start). */
  private lastPersisted: number;
  /** Term of the last persisted log entry (logStart.term when there is none). */
  private lastPersistedTerm: number;
  /** The current generation of the state keyspace: where reads and writeState go. */
  private gen: number;
  /** The persisted applied index, and the term of its entry. Invariant: applied <= hs.commit. */
  private applied: number;
  private appliedTermValue: number;
  private clockMs: number;
  /** The log as read at open, until initialState() hands it over. */
  private initial: InitialState | undefined;

  /** The log write in progress (persist or compactLog); they must not overlap. */
  private logOp: 'persist' | 'compactLog' | undefined;
  private writingState = false;
  /** A persist() that installs a snapshot is in progress. */
  private installing = false;
  /** The one snapshot being received, if any. */
  private staging: Staging | undefined;
  /** The clear of an aborted staging generation, which the next staging waits for. */
  private abortClear: Promise<void> | undefined;
  /** Clean-up running after an install; close() waits for it. */
  private readonly background = new Set<Promise<void>>();
  private closed = false;
  /** Set by a failed write; every later call throws it. */
  private failure: StoreError | undefined;

  private constructor(dir: string, opts: NodeStoreOptions, db: Db, loaded: Loaded) {
    this.dir = dir;
    this.clusterId = opts.clusterId;
    this.nodeId = opts.nodeId;
    this.onBackgroundError = opts.onBackgroundError ?? (() => undefined);
    this.db = db;
    this.hs = loaded.hardState;
    this.logStartMeta = loaded.logStart;
    this.gen = loaded.generation;
    this.applied = loaded.applied.index;
    this.appliedTermValue = loaded.applied.term;
    this.clockMs = loaded.sessionClockMs;
    const last = loaded.entries[loaded.entries.length - 1];
    this.lastPersisted = last?.index ?? loaded.logStart.index;
    this.lastPersistedTerm = last?.term ?? loaded.logStart.term;
    this.initial = { hardState: loaded.hardState, snapshot: loaded.logStart, entries: loaded.entries, applied: loaded.applied.index };
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

  /**
   * Creates a store in `dir` (which must be missing or empty) holding the snapshot that `chunks`
   * streams, e.g. a backup. Every record is staged as it is decoded, and the snapshot is installed
   * only once the trailer and checksum are verified, with hard state {term: header.term, vote: 0,
   * commit: header.index} and an empty log after it. The store belongs to opts.clusterId, whatever
   * the header's cluster id (a backup may seed a new cluster). On any error, what was created is
   * removed (`dir` is left missing or empty, as it was) and the error is rethrown: SnapshotFormatError
   * for a bad stream. Returns the snapshot's header.
   */
  static async restoreSnapshot(
    dir: string,
    opts: NodeStoreOptions,
    chunks: AsyncIterable<Uint8Array>,
    limits: SnapshotLimits,
  ): Promise<SnapshotHeader> {
    const kind = await inspectDir(dir);
    if (kind === 'leveldb') {
      throw new StoreError('STORE_MISMATCH', `data directory ${dir} is not empty; a snapshot can only be restored into a missing or empty directory`);
    }
    let store: NodeStore | undefined;
    try {
      store = await NodeStore.open(dir, { ...opts, create: true });
      const staging = await store.beginStaging();
      const decoder = new SnapshotDecoder(limits);
      for await (const chunk of chunks) {
        const records = decoder.push(chunk);
        if (records.length > 0) await staging.write(records);
      }
      const { header } = decoder.end();
      await store.persist({
        hardState: { term: header.term, vote: 0, commit: header.index },
        entries: [],
        snapshot: { meta: { index: header.index, term: header.term }, staging, header },
      });
      await store.close();
      return header;
    } catch (err) {
      await store?.close().catch(() => undefined);
      await removeCreated(dir, kind);
      throw err;
    }
  }

  // ---- inspection -----------------------------------------------------------------------------

  /** The persisted hard state. */
  get hardState(): HardState {
    return this.hs;
  }
  /** Index of the last persisted log entry; logStart.index when no entry follows the log start. */
  get lastIndex(): number {
    return this.lastPersisted;
  }
  /** Entries up to logStart.index are compacted (or were replaced by a snapshot); {0, 0} initially. */
  get logStart(): SnapshotMeta {
    return this.logStartMeta;
  }
  /** The state machine's persisted applied index. */
  get appliedIndex(): number {
    return this.applied;
  }
  /** The term of the entry at the applied index (0 when nothing was applied). */
  get appliedTerm(): number {
    return this.appliedTermValue;
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
   *
   * With `snapshot`, the same batch installs the staged snapshot: the staging generation becomes the
   * current one (applied = meta, the header's session clock), the log start becomes meta, and every
   * persisted entry after meta.index is dropped. Requires meta.index >= the persisted commit index and
   * a hard state whose commit is >= meta.index. The old generation and the entries up to meta.index
   * are cleared in the background afterwards.
   */
  async persist(batch: PersistBatch): Promise<void> {
    this.checkUsable('persist');
    if (this.logOp !== undefined) throw new Error(`NodeStore.persist called before the previous ${this.logOp} call resolved`);

    const ops: BatchOp[] = [];
    let last = this.lastPersisted;
    let lastTerm = this.lastPersistedTerm;
    const hs = batch.hardState !== undefined && !hardStateEqual(batch.hardState, this.hs) ? batch.hardState : undefined;
    const termLimit = (hs ?? this.hs).term;

    const snap = batch.snapshot;
    let staging: Staging | undefined;
    if (snap !== undefined) {
      staging = this.checkInstall(snap, termLimit);
      const { meta, header } = snap;
      ops.push(
        { type: 'put', key: appliedKey(staging.generation), value: encodeSnapshotMeta(meta) },
        { type: 'put', key: sessionClockKey(staging.generation), value: encodeU64(header.sessionClockMs) },
        { type: 'put', key: META_STATE_GENERATION, value: encodeU32(staging.generation) },
        { type: 'put', key: META_LOG_START, value: encodeSnapshotMeta(meta) },
      );
      // Deleted before the puts below, which may write some of the same keys again.
      for (let i = meta.index + 1; i <= last; i++) ops.push({ type: 'del', key: logKey(i) });
      last = meta.index;
      lastTerm = meta.term;
    }

    const first = batch.entries[0];
    if (first !== undefined) {
      if (snap !== undefined && first.index !== snap.meta.index + 1) {
        throw new Error(`NodeStore.persist: entries start at ${first.index}, but after a snapshot at ${snap.meta.index} they must start at ${snap.meta.index + 1}`);
      }
      if (first.index < 1 || first.index > last + 1) {
        throw new Error(`NodeStore.persist: entries start at ${first.index}, which would leave a gap after ${last}`);
      }
      if (snap === undefined && first.index <= this.hs.commit) {
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
    if (snap !== undefined && commit < snap.meta.index) {
      throw new Error(`NodeStore.persist: commit ${commit} is below the snapshot index ${snap.meta.index}`);
    }
    const state = batch.state;
    if (state !== undefined) {
      if (snap !== undefined) throw new Error('NodeStore.persist: a state write cannot come with a snapshot install');
      if (this.writingState) throw new Error('NodeStore.persist: a state write while writeState is in progress');
      this.stateOps(state, hs ?? this.hs, ops);
    }
    if (ops.length === 0) return;

    this.logOp = 'persist';
    this.installing = snap !== undefined;
    if (state !== undefined) this.writingState = true;
    if (staging !== undefined) staging.state = 'installing';
    try {
      await this.write(ops, 'persist');
    } catch (err) {
      // The store is unusable now (a failed write); a reopen clears the staged generation.
      if (staging !== undefined) staging.state = 'aborted';
      throw err;
    } finally {
      this.logOp = undefined;
      this.installing = false;
      if (state !== undefined) this.writingState = false;
    }
    if (hs !== undefined) this.hs = { term: hs.term, vote: hs.vote, commit: hs.commit };
    this.lastPersisted = last;
    this.lastPersistedTerm = lastTerm;
    if (state !== undefined) this.stateWritten(state);
    if (snap !== undefined && staging !== undefined) this.installed(snap, staging);
  }

  /**
   * Compacts the log up to `upTo` (the state machine's data at its applied index is the snapshot that
   * replaces those entries): one synced batch moves the log start, then the entries are deleted.
   * Requires logStart.index < upTo.index <= min(applied, last index), and upTo.term must be the term
   * of the stored entry at upTo.index (else it throws: a caller bug). Must not overlap persist().
   * Resolves with the number of entries removed from the log.
   */
  async compactLog(upTo: SnapshotMeta): Promise<number> {
    this.checkUsable('compactLog');
    if (this.logOp !== undefined) throw new Error(`NodeStore.compactLog called before the previous ${this.logOp} call resolved`);
    const start = this.logStartMeta;
    const limit = Math.min(this.applied, this.lastPersisted);
    if (!Number.isSafeInteger(upTo.index) || upTo.index <= start.index || upTo.index > limit) {
      throw new Error(
        `NodeStore.compactLog: index ${upTo.index} must be in [${start.index + 1}, ${limit}] (after the log start, up to min(applied, last index))`,
      );
    }
    this.logOp = 'compactLog';
    try {
      const stored = await this.entryTerm(upTo.index);
      if (stored !== upTo.term) {
        throw new Error(`NodeStore.compactLog: the entry at index ${upTo.index} has term ${stored}, not ${upTo.term}`);
      }
      await this.write([{ type: 'put', key: META_LOG_START, value: encodeSnapshotMeta(upTo) }], 'compactLog');
      this.logStartMeta = { index: upTo.index, term: upTo.term };
      // Also takes entries below the old start that an interrupted clear may have left.
      await this.clear(logRangeThrough(upTo.index), 'compactLog');
    } finally {
      this.logOp = undefined;
    }
    return upTo.index - start.index;
  }

  // ---- the state machine side -------------------------------------------------------------------

  /**
   * Writes state machine changes and the applied index that covers them in ONE atomic synced batch.
   * Must not be called again before the previous call resolved, nor while a snapshot is installed.
   */
  async writeState(w: StateWrite): Promise<void> {
    this.checkUsable('writeState');
    if (this.writingState) throw new Error('NodeStore.writeState called again before the previous call resolved');
    if (this.installing) throw new Error('NodeStore.writeState called while a snapshot is being installed');
    const ops = this.stateOps(w, this.hs);
    this.writingState = true;
    try {
      await this.write(ops, 'writeState');
    } finally {
      this.writingState = false;
    }
    this.stateWritten(w);
  }

  /** The batch operations of a state write, checked against the hard state it will be durable with. */
  private stateOps(w: StateWrite, hs: HardState, ops: BatchOp[] = []): BatchOp[] {
    if (!Number.isSafeInteger(w.applied) || w.applied < this.applied || w.applied > hs.commit) {
      throw new Error(
        `NodeStore.writeState: applied index ${w.applied} must be in [${this.applied}, ${hs.commit}] (applied, persisted commit)`,
      );
    }
    const termOk =
      Number.isSafeInteger(w.appliedTerm) &&
      w.appliedTerm <= hs.term &&
      (w.applied === this.applied ? w.appliedTerm === this.appliedTermValue : w.appliedTerm >= Math.max(1, this.appliedTermValue));
    if (!termOk) {
      throw new Error(
        `NodeStore.writeState: applied term ${w.appliedTerm} at index ${w.applied} cannot follow term ${this.appliedTermValue} at index ${this.applied} (current term ${hs.term})`,
      );
    }
    if (w.sessionClockMs !== undefined && !(Number.isSafeInteger(w.sessionClockMs) && w.sessionClockMs >= this.clockMs)) {
      throw new Error(`NodeStore.writeState: session clock ${w.sessionClockMs} goes back from ${this.clockMs}`);
    }
    const gen = this.gen;
    ops.push({ type: 'put', key: appliedKey(gen), value: encodeSnapshotMeta({ index: w.applied, term: w.appliedTerm }) });
    for (const [k, v] of w.data ?? []) {
      const key = dataKey(gen, k);
      ops.push(v === undefined ? { type: 'del', key } : { type: 'put', key, value: v });
    }
    for (const [k, v] of w.sessions ?? []) {
      const key = sessionKey(gen, k);
      ops.push(v === undefined ? { type: 'del', key } : { type: 'put', key, value: v });
    }
    if (w.sessionClockMs !== undefined) ops.push({ type: 'put', key: sessionClockKey(gen), value: encodeU64(w.sessionClockMs) });
    return ops;
  }

  private stateWritten(w: StateWrite): void {
    this.applied = w.applied;
    this.appliedTermValue = w.appliedTerm;
    if (w.sessionClockMs !== undefined) this.clockMs = w.sessionClockMs;
  }

  /** The stored value of a KV data key, or undefined. */
  async getData(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.checkUsable('getData');
    return this.getCurrent((gen) => dataKey(gen, key));
  }

  /**
   * Reads one key of the current generation. An install that switches generations meanwhile clears
   * the old one in the background, so a read begun there could find a key missing that both states
   * hold: read again in the generation current at the end.
   */
  private async getCurrent(keyOf: (gen: number) => Uint8Array): Promise<Uint8Array | undefined> {
    for (;;) {
      const gen = this.gen;
      let v: Uint8Array | undefined;
      try {
        v = await this.db.get(keyOf(gen));
      } catch (err) {
        throw this.readError(err);
      }
      if (gen === this.gen) return v === undefined ? undefined : asView(v);
    }
  }

  /**
   * Walks KV data in key order, reading from LevelDB as it goes (nothing is loaded up front). Keys
   * are yielded without the store's prefix. Breaking out of the loop closes the iterator.
   */
  async *scanData(scan: DataScan): AsyncGenerator<Change, void, undefined> {
    this.checkUsable('scanData');
    const unlimited = scan.limit === Number.POSITIVE_INFINITY;
    if (!unlimited && (!Number.isSafeInteger(scan.limit) || scan.limit < 1)) {
      throw new RangeError(`scanData: limit must be an integer >= 1 or Infinity, got ${scan.limit}`);
    }
    const gen = this.gen;
    const all = stateKindRange(gen, STATE_KIND_DATA);
    // LevelDB's binding reads the limit as a 32-bit integer: -1 is its "no limit".
    const opts: { gte?: Uint8Array; gt?: Uint8Array; lt: Uint8Array; limit: number; values: boolean } = {
      lt: scan.lt !== undefined ? dataKey(gen, scan.lt) : all.lt,
      limit: unlimited ? -1 : scan.limit,
      values: scan.values,
    };
    if (scan.gt !== undefined) opts.gt = dataKey(gen, scan.gt);
    else opts.gte = scan.gte !== undefined ? dataKey(gen, scan.gte) : all.gte;
    const skip = all.gte.length;
    try {
      for await (const [k, v] of this.db.iterator(opts)) {
        yield [asView(k).subarray(skip), v === undefined ? undefined : asView(v)];
      }
    } catch (err) {
      throw this.readError(err);
    }
  }

  /** Every stored session, as (client id UTF-8, value). The table is bounded by the state machine. */
  async *scanSessions(): AsyncGenerator<readonly [clientId: Uint8Array, value: Uint8Array], void, undefined> {
    this.checkUsable('scanSessions');
    const range = stateKindRange(this.gen, STATE_KIND_SESSION);
    const skip = range.gte.length;
    try {
      for await (const [k, v] of this.db.iterator(range)) {
        yield [asView(k).subarray(skip), asView(v)];
      }
    } catch (err) {
      throw this.readError(err);
    }
  }

  /** The stored value of one session, or undefined. */
  async getSession(clientIdUtf8: Uint8Array): Promise<Uint8Array | undefined> {
    this.checkUsable('getSession');
    return this.getCurrent((gen) => sessionKey(gen, clientIdUtf8));
  }

  // ---- snapshots --------------------------------------------------------------------------------

  /**
   * Opens a consistent copy of the state machine at its applied index: ONE iterator over the current
   * generation, whose implicit LevelDB snapshot keeps later writes (and installs) out of it. The
   * caller must consume chunks() or close() it.
   */
  /**
   * LevelDB's estimate of the disk space the state machine takes (compressed, so usually below the
   * size of a snapshot stream); 0 when it cannot tell. For progress reports only.
   */
  async approximateStateBytes(): Promise<number> {
    this.checkUsable('approximateStateBytes');
    const range = generationRange(this.gen);
    try {
      // classic-level has it; the `level` package's types cover the browser's too, which does not.
      const sized = this.db as unknown as { approximateSize?: (a: Uint8Array, b: Uint8Array) => Promise<number> };
      return (await sized.approximateSize?.(range.gte, range.lt)) ?? 0;
    } catch {
      return 0;
    }
  }

  async openSnapshot(): Promise<SnapshotReader> {
    this.checkUsable('openSnapshot');
    const gen = this.gen;
    const it = this.db.iterator(generationRange(gen));
    let header: SnapshotHeader;
    try {
      // The generation's keys in order: applied, session clock, then sessions, then data.
      const applied = await it.next();
      const clock = await it.next();
      if (applied === undefined || !bytesEqual(asView(applied[0]), appliedKey(gen))) throw this.corrupt(`the applied index of generation ${gen} is missing`);
      if (clock === undefined || !bytesEqual(asView(clock[0]), sessionClockKey(gen))) throw this.corrupt(`the session clock of generation ${gen} is missing`);
      const meta = this.decodeStored(`the applied index of generation ${gen}`, () => decodeSnapshotMeta(asView(applied[1])));
      const sessionClockMs = this.decodeStored(`the session clock of generation ${gen}`, () => decodeU64(asView(clock[1]), 'session clock'));
      header = { clusterId: this.clusterId, index: meta.index, term: meta.term, sessionClockMs };
    } catch (err) {
      await it.close().catch(() => undefined);
      throw err instanceof StoreError ? err : this.readError(err);
    }

    const records = async function* (store: NodeStore): AsyncGenerator<SnapshotRecord, void, undefined> {
      try {
        for (;;) {
          let next: [Uint8Array, Uint8Array] | undefined;
          try {
            next = await it.next();
          } catch (err) {
            throw store.readError(err);
          }
          if (next === undefined) return;
          const key = asView(next[0]);
          const { kind, rest } = store.decodeStored('a state key', () => parseStateKey(key));
          if (kind === STATE_KIND_SESSION) yield { kind: 'session', key: rest, value: asView(next[1]) };
          else if (kind === STATE_KIND_DATA) yield { kind: 'data', key: rest, value: asView(next[1]) };
          else throw store.corrupt(`generation ${gen} holds a key of unknown kind ${kind}`);
        }
      } finally {
        await it.close();
      }
    };
    let started = false;
    return {
      header,
      chunks: (chunkBytes: number) => {
        if (started) throw new Error('SnapshotReader.chunks may be called only once');
        started = true;
        return encodeSnapshot(header, records(this), chunkBytes);
      },
      close: () => it.close(),
    };
  }

  /**
   * Starts receiving a snapshot into generation current + 1, cleared of any leftovers first. At most
   * one staging exists at a time: a new one aborts the previous. Reads keep using the current
   * generation until persist() installs the staged one.
   */
  async beginStaging(): Promise<SnapshotStaging> {
    this.checkUsable('beginStaging');
    if (this.installing) throw new Error('NodeStore.beginStaging called while a snapshot is being installed');
    if (this.staging !== undefined) await this.abortStaging(this.staging);
    if (this.abortClear !== undefined) await this.abortClear;
    const generation = nextGeneration(this.gen);
    const staging: Staging = {
      generation,
      state: 'open',
      writing: undefined,
      write: (records) => this.writeStaged(staging, records),
      abort: () => this.abortStaging(staging),
    };
    this.staging = staging;
    await this.clear(generationRange(generation), 'beginStaging');
    return staging;
  }

  private async writeStaged(s: Staging, records: readonly SnapshotRecord[]): Promise<void> {
    this.checkUsable('staging.write');
    if (s.state !== 'open') {
      throw new Error(`NodeStore: the snapshot staging of generation ${s.generation} ${s.state === 'installing' ? 'is being installed' : `was ${s.state}`}`);
    }
    if (s.writing !== undefined) throw new Error('NodeStore: staging.write called again before the previous call resolved');
    const ops: BatchOp[] = [];
    for (const r of records) {
      if (r.kind === 'session') ops.push({ type: 'put', key: sessionKey(s.generation, r.key), value: r.value });
      else if (r.kind === 'data') ops.push({ type: 'put', key: dataKey(s.generation, r.key), value: r.value });
      else throw new Error(`NodeStore: staging.write got a record of unknown kind ${String((r as { kind: unknown }).kind)}`);
    }
    if (ops.length === 0) return;
    const done = this.write(ops, 'staging write');
    s.writing = done;
    try {
      await done;
    } finally {
      s.writing = undefined;
    }
  }

  private async abortStaging(s: Staging): Promise<void> {
    if (s.state === 'installing') throw new Error('NodeStore: a snapshot staging cannot be aborted while persist() installs it');
    if (s.state !== 'open') return;
    s.state = 'aborted';
    if (this.staging === s) this.staging = undefined;
    const cleared = (async () => {
      await s.writing?.catch(() => undefined);
      if (this.closed || this.failure !== undefined) return;
      await this.clear(generationRange(s.generation), 'staging abort');
    })();
    this.abortClear = cleared;
    try {
      await cleared;
    } finally {
      if (this.abortClear === cleared) this.abortClear = undefined;
    }
  }

  /** Checks an install request against the store's state; returns its staging. */
  private checkInstall(snap: SnapshotInstall, termLimit: number): Staging {
    const { meta, header } = snap;
    const staging = snap.staging as Staging;
    if (this.staging === undefined || staging !== this.staging || staging.state !== 'open') {
      throw new Error('NodeStore.persist: the snapshot staging is not this store\'s current one (aborted, superseded or installed)');
    }
    if (staging.writing !== undefined) throw new Error('NodeStore.persist: a staging write is still in progress');
    if (this.writingState) throw new Error('NodeStore.persist: cannot install a snapshot while writeState is in progress');
    checkMeta(meta, 'NodeStore.persist: the snapshot');
    if (header.index !== meta.index || header.term !== meta.term) {
      throw new Error(`NodeStore.persist: the snapshot header is at ${header.index}/${header.term}, not at ${meta.index}/${meta.term}`);
    }
    if (!isSafeIndex(header.sessionClockMs)) throw new Error(`NodeStore.persist: bad session clock ${header.sessionClockMs}`);
    if (meta.index < this.hs.commit) {
      throw new Error(`NodeStore.persist: the snapshot at ${meta.index} is behind the persisted commit index ${this.hs.commit}`);
    }
    if (meta.term > termLimit) throw new Error(`NodeStore.persist: the snapshot term ${meta.term} is beyond the current term ${termLimit}`);
    return staging;
  }

  /** After an install is durable: switch to its generation; clear the old one and the old log. */
  private installed(snap: SnapshotInstall, staging: Staging): void {
    const old = this.gen;
    this.gen = staging.generation;
    staging.state = 'installed';
    this.staging = undefined;
    this.logStartMeta = { index: snap.meta.index, term: snap.meta.term };
    this.applied = snap.meta.index;
    this.appliedTermValue = snap.meta.term;
    this.clockMs = snap.header.sessionClockMs;
    this.inBackground(generationRange(old), `clearing the replaced state generation ${old}`);
    this.inBackground(logRangeThrough(snap.meta.index), `clearing log entries up to the snapshot at ${snap.meta.index}`);
  }

  private inBackground(range: Range, what: string): void {
    const task = this.db.clear(range).catch((err: unknown) => {
      this.onBackgroundError(new StoreError('STORE_UNAVAILABLE', `${what} in data directory ${this.dir} failed: ${describe(err)}`, { cause: err }));
    });
    this.background.add(task);
    void task.finally(() => this.background.delete(task));
  }

  /** Closes the database, after the background clean-up. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.initial = undefined;
    if (this.staging !== undefined) {
      this.staging.state = 'aborted';
      this.staging = undefined;
    }
    await Promise.allSettled([...this.background, this.abortClear]);
    await this.db.close();
  }

  // ---- internals --------------------------------------------------------------------------------

  private checkUsable(op: string): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new Error(`NodeStore.${op}: the store for ${this.dir} is closed`);
  }

  private async write(ops: BatchOp[], op: string): Promise<void> {
    try {
      const native = (this.db as unknown as { _batch?: NativeBatch })._batch;
      if (typeof native === 'function' && this.db.status === 'open') await native.call(this.db, ops, SYNC);
      else await this.db.batch(ops, { sync: true });
    } catch (err) {
      throw this.fail(op, err);
    }
  }

  private async clear(range: Range, op: string): Promise<void> {
    try {
      await this.db.clear(range);
    } catch (err) {
      throw this.fail(op, err);
    }
  }

  /** A write failed: from now on the store is unusable. */
  private fail(op: string, err: unknown): StoreError {
    this.failure ??= new StoreError('STORE_UNAVAILABLE', `${op} to data directory ${this.dir} failed; the store must be reopened: ${describe(err)}`, {
      cause: err,
    });
    return this.failure;
  }

  private readError(err: unknown): StoreError {
    if (err instanceof StoreError) return err;
    return new StoreError('STORE_UNAVAILABLE', `read from data directory ${this.dir} failed: ${describe(err)}`, { cause: err });
  }

  private corrupt(what: string): StoreError {
    return new StoreError('STORE_CORRUPT', `data directory ${this.dir}: ${what}`);
  }

  private decodeStored<T>(what: string, decode: () => T): T {
    try {
      return decode();
    } catch (err) {
      if (err instanceof DecodeError) throw this.corrupt(`${what} cannot be decoded (${err.message})`);
      throw err;
    }
  }

  /** The term of the stored entry at `index` (which must be in the persisted log). */
  private async entryTerm(index: number): Promise<number> {
    let b: Uint8Array | undefined;
    try {
      b = await this.db.get(logKey(index));
    } catch (err) {
      throw this.readError(err);
    }
    if (b === undefined) throw this.corrupt(`log entry ${index} is missing`);
    return this.decodeStored(`log entry ${index}`, () => decodeEntryValue(index, asView(b)).term);
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

/** After a failed restore: leaves `dir` as it was before (missing, or empty). */
async function removeCreated(dir: string, kind: 'missing' | 'empty'): Promise<void> {
  if (kind === 'missing') {
    await rm(dir, { recursive: true, force: true });
    return;
  }
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    await rm(`${dir}/${name}`, { recursive: true, force: true });
  }
}

interface Loaded {
  readonly hardState: HardState;
  readonly logStart: SnapshotMeta;
  /** The log after logStart. */
  readonly entries: Entry[];
  readonly generation: number;
  readonly applied: SnapshotMeta;
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
    const generation = 0;
    await db.batch(
      [
        { type: 'put', key: META_FORMAT_VERSION, value: encodeU32(FORMAT_VERSION) },
        { type: 'put', key: META_CLUSTER_ID, value: utf8(opts.clusterId) },
        { type: 'put', key: META_NODE_ID, value: encodeU64(opts.nodeId) },
        { type: 'put', key: META_HARD_STATE, value: encodeHardState(EMPTY_HARD_STATE) },
        { type: 'put', key: META_STATE_GENERATION, value: encodeU32(generation) },
        { type: 'put', key: META_LOG_START, value: encodeSnapshotMeta(ZERO) },
        { type: 'put', key: appliedKey(generation), value: encodeSnapshotMeta(ZERO) },
        { type: 'put', key: sessionClockKey(generation), value: encodeU64(0) },
      ],
      { sync: true },
    );
    return { hardState: EMPTY_HARD_STATE, logStart: ZERO, entries: [], generation, applied: ZERO, sessionClockMs: 0 };
  }

  const corrupt = (what: string): StoreError => new StoreError('STORE_CORRUPT', `data directory ${dir}: ${what}`);
  const decodeKey = async <T>(key: Uint8Array, what: string, decode: (b: Uint8Array) => T): Promise<T> => {
    const b = await db.get(key);
    if (b === undefined) throw corrupt(`${what} is missing`);
    try {
      return decode(asView(b));
    } catch (err) {
      if (err instanceof DecodeError) throw corrupt(`${what} cannot be decoded (${err.message})`);
      throw err;
    }
  };

  const formatVersion = await decodeKey(META_FORMAT_VERSION, 'the format version', (b) => decodeU32(b, 'format version'));
  if (formatVersion !== FORMAT_VERSION) {
    throw new StoreError(
      'STORE_MISMATCH',
      `data directory ${dir} has store format version ${formatVersion}; this raftkv understands version ${FORMAT_VERSION}`,
    );
  }
  const clusterId = await decodeKey(META_CLUSTER_ID, 'the cluster id', fromUtf8);
  if (clusterId !== opts.clusterId) {
    throw new StoreError('STORE_MISMATCH', `data directory ${dir} belongs to cluster ${JSON.stringify(clusterId)}, not ${JSON.stringify(opts.clusterId)}`);
  }
  const nodeId = await decodeKey(META_NODE_ID, 'the node id', (b) => decodeU64(b, 'node id'));
  if (nodeId !== opts.nodeId) {
    throw new StoreError('STORE_MISMATCH', `data directory ${dir} belongs to node ${nodeId}, not node ${opts.nodeId}`);
  }
  const hardState = await decodeKey(META_HARD_STATE, 'the hard state', decodeHardState);
  const generation = await decodeKey(META_STATE_GENERATION, 'the state generation', (b) => decodeU32(b, 'state generation'));
  const logStart = await decodeKey(META_LOG_START, 'the log start', decodeSnapshotMeta);
  const applied = await decodeKey(appliedKey(generation), `the applied index (state generation ${generation})`, decodeSnapshotMeta);
  const sessionClockMs = await decodeKey(sessionClockKey(generation), `the session clock (state generation ${generation})`, (b) =>
    decodeU64(b, 'session clock'),
  );
  if ((logStart.index === 0) !== (logStart.term === 0) || logStart.term > hardState.term) {
    throw corrupt(`the log start ${logStart.index} (term ${logStart.term}) does not fit the current term ${hardState.term}`);
  }

  // Entries up to the log start are compacted; some may remain from an interrupted clear.
  const entries: Entry[] = [];
  const logDesc = `log in ${dir}`;
  let prevIndex = logStart.index;
  let prevTerm = logStart.term;
  for await (const [rawKey, rawValue] of db.iterator({ gt: logKey(logStart.index), lt: keyspace(PREFIX_LOG).lt })) {
    let e: Entry;
    try {
      const index = logKeyIndex(asView(rawKey));
      if (index !== prevIndex + 1) {
        throw new StoreError(
          'STORE_CORRUPT',
          prevIndex === logStart.index
            ? `${logDesc} starts at index ${index}, not ${logStart.index + 1}`
            : `${logDesc} has a gap: index ${index} follows ${prevIndex}`,
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
  if (applied.index > hardState.commit) {
    throw corrupt(`the applied index ${applied.index} is past the commit index ${hardState.commit}`);
  }
  if (applied.index < logStart.index) {
    throw corrupt(`the applied index ${applied.index} is before the log start ${logStart.index}`);
  }
  const termAtApplied = applied.index === logStart.index ? logStart.term : entries[applied.index - logStart.index - 1]?.term;
  if (applied.term !== termAtApplied) {
    throw corrupt(`the applied index ${applied.index} has term ${applied.term}, but the log has term ${termAtApplied} there`);
  }

  // Garbage a crash may leave: compacted entries not yet cleared, and any state generation but the
  // current one (a snapshot staged but never installed, or one replaced by an install).
  const current = generationRange(generation);
  await db.clear(logRangeThrough(logStart.index));
  await db.clear({ gte: keyspace(PREFIX_STATE).gte, lt: current.gte });
  await db.clear({ gte: current.lt, lt: keyspace(PREFIX_STATE).lt });
  return { hardState, logStart, entries, generation, applied, sessionClockMs };
}
