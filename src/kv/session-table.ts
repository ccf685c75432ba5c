// Client sessions for exactly-once writes (Raft thesis §6.3): per client, the last sequence number
// applied and its result. The table is replicated state: it changes only as entries are applied, and
// every decision below depends only on the log, so all replicas keep the same table.
//
// Time is the session clock: the highest `proposedAtMs` of any applied command. It never goes back,
// so sessions touched later have a later lastSeenMs, and least-recently-used order (the order of the
// index of their last command) is also the order in which they expire. Both eviction for size and
// expiry therefore only ever remove sessions from the front of that order.
//
// Stored value of a session key (see src/storage/keys.ts):
//   u64 lastSeq, u64 lastIndex, u64 lastSeenMs, encoded result of lastSeq (rest; see command.ts)

import { Reader, Writer } from '../storage/bytes.js';
import { PlaceOrder } from './place-order.js';

export interface SessionMeta {
  /** The highest sequence number applied for this client. */
  readonly lastSeq: number;
  /** Index of the entry that applied lastSeq: the session's position in LRU order. */
  readonly lastIndex: number;
  /** The session clock when lastSeq was applied. */
  readonly lastSeenMs: number;
}

export function encodeSession(meta: SessionMeta, result: Uint8Array): Uint8Array {
  return new Writer(24 + result.length)
    .u64(meta.lastSeq, 'lastSeq')
    .u64(meta.lastIndex, 'lastIndex')
    .u64(meta.lastSeenMs, 'lastSeenMs')
    .raw(result)
    .finish();
}

/** Throws DecodeError on malformed bytes. */
export function decodeSession(b: Uint8Array): { meta: SessionMeta; result: Uint8Array } {
  const r = new Reader(b);
  const meta = { lastSeq: r.u64('lastSeq'), lastIndex: r.u64('lastIndex'), lastSeenMs: r.u64('lastSeenMs') };
  return { meta, result: r.rest() };
}

const NONE: readonly string[] = Object.freeze([]);

/** The in-memory index of the session table: metadata only (results stay on disk). */
export class SessionTable {
  /** Limit: sessions kept; the least recently used is evicted beyond it. */
  readonly maxSessions: number;
  /** A session idle this long by the session clock expires. */
  readonly sessionTtlMs: number;
  /** Each client's latest touch, updated in place: the LRU order is kept apart, in `order`. */
  private readonly byClient = new Map<string, SessionMeta>();
  /**
   * Touches, oldest first; a client touched again moves to the back. Invariant: the current places
   * are the sessions in LRU order (lastIndex strictly increases and lastSeenMs never decreases
   * along it), one per session.
   */
  private readonly order = new PlaceOrder(this.byClient);
  /** The latest touch ever seen (kept after eviction), to assert that touches only move forward. */
  private newest: SessionMeta | undefined;

  constructor(maxSessions: number, sessionTtlMs: number) {
    if (!Number.isSafeInteger(maxSessions) || maxSessions < 1) throw new RangeError(`maxSessions must be >= 1, got ${maxSessions}`);
    if (!Number.isSafeInteger(sessionTtlMs) || sessionTtlMs < 1) throw new RangeError(`sessionTtlMs must be >= 1, got ${sessionTtlMs}`);
    this.maxSessions = maxSessions;
    this.sessionTtlMs = sessionTtlMs;
  }

  /** Rebuilds the LRU order from stored sessions (in any order). */
  load(sessions: Iterable<readonly [clientId: string, meta: SessionMeta]>): void {
    const sorted = [...sessions].sort((a, b) => a[1].lastIndex - b[1].lastIndex);
    this.byClient.clear();
    for (const [id, meta] of sorted) this.byClient.set(id, meta);
    this.order.reset(sorted);
    this.newest = sorted[sorted.length - 1]?.[1];
  }

  get size(): number {
    return this.byClient.size;
  }

  get(clientId: string): SessionMeta | undefined {
    return this.byClient.get(clientId);
  }

  /** Client ids in LRU order, least recently used first (for tests and inspection). */
  clientIds(): string[] {
    return this.order.currentKeys();
  }

  /** Records that `clientId` applied a command; it becomes the most recently used. */
  touch(clientId: string, meta: SessionMeta): void {
    const last = this.newest;
    if (last !== undefined && (meta.lastIndex <= last.lastIndex || meta.lastSeenMs < last.lastSeenMs)) {
      throw new Error(`session table: touch at index ${meta.lastIndex} / ${meta.lastSeenMs}ms goes back from ${last.lastIndex} / ${last.lastSeenMs}ms`);
    }
    this.byClient.set(clientId, meta);
    this.order.push(clientId, meta);
    this.newest = meta;
  }

  /** Removes the sessions idle for sessionTtlMs or longer at `clockMs`; returns their ids. */
  expire(clockMs: number): readonly string[] {
    let removed: string[] | undefined;
    for (let id = this.order.oldest(); id !== undefined; id = this.order.oldest()) {
      if (clockMs - this.order.oldestValue().lastSeenMs < this.sessionTtlMs) break;
      this.remove(id);
      (removed ??= []).push(id);
    }
    return removed ?? NONE;
  }

  /** Evicts least recently used sessions beyond maxSessions; returns their ids. */
  evictOverflow(): readonly string[] {
    let removed: string[] | undefined;
    while (this.byClient.size > this.maxSessions) {
      const id = this.order.oldest();
      if (id === undefined) throw new Error(`session table: ${this.byClient.size} sessions but no current touch`);
      this.remove(id);
      (removed ??= []).push(id);
    }
    return removed ?? NONE;
  }

  /** Removes the least recently used session, `id` (just returned by order.oldest()). */
  private remove(id: string): void {
    this.order.shift();
    this.byClient.delete(id);
  }
}
