import type { Entry, SnapshotMeta } from './types.js';

const NO_SNAPSHOT: SnapshotMeta = { index: 0, term: 0 };

/**
 * The in-memory Raft log of one node, with the split between what is durable and what is not.
 *
 * The log starts after a snapshot point (`start`): entries up to start.index were compacted (or are
 * covered by a snapshot this node installed), and only start.term, the term of the entry there, is
 * still known. A brand-new log starts at {0, 0}.
 *
 * Invariants (checked by `checkInvariants`):
 *  - entries are dense: entries[k].index === start.index + k + 1, terms never decrease along the
 *    log, and none is below start.term;
 *  - applied <= committed <= lastIndex, and start.index <= committed;
 *  - start.index <= applied, except while a received snapshot waits to be installed
 *    (pendingSnapshot), when applied < start.index === pendingSnapshot.index;
 *  - start.index <= stableIndex <= lastIndex: entries up to stableIndex are durable on this node.
 */
export class RaftLog {
  private entries: Entry[] = [];
  /** The snapshot point the log continues from. */
  private start: SnapshotMeta;
  /** Highest index known committed. Never decreases. */
  committed = 0;
  /** Highest index the state machine has applied. Never decreases. */
  applied = 0;
  /** Entries with index <= stableIndex are durable; later ones still have to be persisted. */
  stableIndex = 0;
  /**
   * A snapshot received from a leader and restored into this log, which the caller has not yet
   * reported installed (it comes out in a Ready and goes back in with advance()).
   */
  pendingSnapshot: SnapshotMeta | undefined;

  constructor(start: SnapshotMeta = NO_SNAPSHOT, entries: readonly Entry[] = [], committed = 0, applied = 0) {
    this.start = { index: start.index, term: start.term };
    for (const e of entries) this.entries.push(e);
    this.committed = committed;
    this.applied = applied;
    this.stableIndex = this.lastIndex();
    this.checkInvariants();
  }

  /** The snapshot point: index and term of the last entry that is no longer in the log. */
  snapshot(): SnapshotMeta {
    return this.start;
  }

  /** The first index held as an entry (lastIndex + 1 when the log holds none). */
  firstIndex(): number {
    return this.start.index + 1;
  }

  lastIndex(): number {
    return this.start.index + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length === 0 ? this.start.term : this.entries[this.entries.length - 1]!.term;
  }

  /**
   * The term of the entry at `index`: the snapshot's term at its index (0 at index 0), undefined
   * past the end or before the snapshot point (compacted).
   */
  term(index: number): number | undefined {
    if (index === this.start.index) return this.start.term;
    if (index < this.start.index) return undefined;
    return this.entries[index - this.start.index - 1]?.term;
  }

  /** Whether the entry at `index` was compacted away (its term is no longer known). */
  isCompacted(index: number): boolean {
    return index < this.start.index;
  }

  entry(index: number): Entry | undefined {
    return index > this.start.index ? this.entries[index - this.start.index - 1] : undefined;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** §5.4.1: is a log ending at (lastIndex, lastTerm) at least as up-to-date as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Appends entries that continue the log exactly. */
  append(entries: readonly Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.lastIndex() + 1) {
        throw new Error(`log: append of index ${e.index} after last index ${this.lastIndex()}`);
      }
      this.entries.push(e);
    }
  }

  /**
   * The follower side of AppendEntries (§5.3), after the previous entry matched: skips entries we
   * already hold, truncates at the first conflict and appends the rest. Returns the index of the
   * last entry known to match the leader.
   */
  appendFromLeader(prevIndex: number, entries: readonly Entry[]): number {
    let k = 0;
    while (k < entries.length) {
      const e = entries[k]!;
      // At or before the snapshot point everything is committed, so it matches any leader.
      if (e.index <= this.start.index) {
        k++;
        continue;
      }
      const ours = this.term(e.index);
      if (ours === undefined) break;
      if (ours !== e.term) {
        if (e.index <= this.committed) {
          throw new Error(`log: conflict at committed index ${e.index} (committed ${this.committed})`);
        }
        this.entries.length = e.index - this.start.index - 1;
        this.stableIndex = Math.min(this.stableIndex, e.index - 1);
        break;
      }
      k++;
    }
    for (; k < entries.length; k++) this.append([entries[k]!]);
    return prevIndex + entries.length;
  }

  /**
   * Entries in [lo, hi], at least one (if any exist) and at most `maxBytes` of data beyond the first.
   * `lo` must not be compacted.
   */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo <= this.start.index) throw new Error(`log: slice from ${lo}, compacted up to ${this.start.index}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i <= hi && i <= this.lastIndex(); i++) {
      const e = this.entries[i - this.start.index - 1]!;
      bytes += e.data.length;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /**
   * The first index of the run of entries with the same term as the entry at `index`, not going
   * back past the snapshot point.
   */
  firstIndexOfTermAt(index: number): number {
    const term = this.term(index);
    let i = index;
    while (i > this.start.index + 1 && this.term(i - 1) === term) i--;
    return i;
  }

  /** The last index holding an entry of `term`, or 0 if the log (as far as it is known) has none. */
  lastIndexOfTerm(term: number): number {
    for (let i = this.lastIndex(); i > this.start.index; i--) {
      const t = this.entries[i - this.start.index - 1]!.term;
      if (t === term) return i;
      if (t < term) return 0;
    }
    return this.start.term === term ? this.start.index : 0;
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (index > this.lastIndex()) {
      throw new Error(`log: commit ${index} beyond last index ${this.lastIndex()}`);
    }
    this.committed = index;
  }

  /** Entries not yet durable: everything after stableIndex. */
  unstableEntries(): Entry[] {
    return this.entries.slice(this.stableIndex - this.start.index);
  }

  /**
   * Marks entries up to `index` durable, if the entry there is still the one (of `term`) that was
   * handed out for persisting; a truncation or a snapshot since then makes this a no-op.
   */
  stableTo(index: number, term: number): void {
    if (index > this.start.index && this.term(index) === term && index > this.stableIndex) this.stableIndex = index;
  }

  /**
   * Committed entries not yet applied. Those past stableIndex are in the same Ready's `entries`, and
   * the caller persists them before it applies (see the contract on Ready). None while a snapshot
   * waits to be installed: the entries before it are gone, and it comes first.
   */
  entriesToApply(): Entry[] {
    if (this.applied < this.start.index) return [];
    return this.entries.slice(this.applied - this.start.index, this.committed - this.start.index);
  }

  appliedTo(index: number): void {
    if (index < this.applied || index > this.committed) {
      throw new Error(`log: applied ${index} out of range (applied ${this.applied}, committed ${this.committed})`);
    }
    if (this.pendingSnapshot !== undefined && index >= this.pendingSnapshot.index) {
      throw new Error(`log: applied ${index} while the snapshot at ${this.pendingSnapshot.index} is not installed`);
    }
    this.applied = index;
  }

  /**
   * §7: replaces the whole log with a leader's snapshot that this log cannot continue into (its
   * entry at snapshot.index is missing or of another term). Everything up to it is committed; it
   * stays pending until the caller installs it (snapshotInstalled).
   */
  restore(s: SnapshotMeta): void {
    if (s.index <= this.committed) throw new Error(`log: restore of snapshot ${s.index} at or below commit ${this.committed}`);
    this.entries = [];
    this.start = { index: s.index, term: s.term };
    this.committed = s.index;
    // Nothing after the snapshot is held; the snapshot itself is durable once the caller installs it,
    // which it does in the same batch as any entries that follow it.
    this.stableIndex = s.index;
    this.pendingSnapshot = this.start;
  }

  /** The caller installed snapshot `s` (from a Ready): the state machine is now at s.index. */
  snapshotInstalled(s: SnapshotMeta): void {
    const pending = this.pendingSnapshot;
    if (pending === undefined) throw new Error(`log: snapshot ${s.index} installed, but none is pending`);
    // A later snapshot replaced this one before it was installed; that one is still pending.
    if (s.index < pending.index) return;
    if (s.index !== pending.index || s.term !== pending.term) {
      throw new Error(`log: installed snapshot ${s.index}/${s.term}, pending ${pending.index}/${pending.term}`);
    }
    this.applied = s.index;
    this.pendingSnapshot = undefined;
  }

  /**
   * Drops the entries up to `index`, which the state machine has durably applied (so a snapshot
   * covers them). The entry at `index` must be durable too.
   */
  compact(index: number): void {
    if (index <= this.start.index) return;
    if (index > this.applied || index > this.stableIndex) {
      throw new Error(`log: compact to ${index} beyond applied ${this.applied} or stable ${this.stableIndex}`);
    }
    const term = this.term(index)!;
    this.entries = this.entries.slice(index - this.start.index);
    this.start = { index, term };
  }

  checkInvariants(): void {
    const first = this.start.index;
    const last = this.lastIndex();
    if (!(this.applied <= this.committed && this.committed <= last && first <= this.committed)) {
      throw new Error(`log invariant: applied ${this.applied} <= committed ${this.committed} <= last ${last}, start ${first} <= committed`);
    }
    if (this.pendingSnapshot === undefined) {
      if (first > this.applied) throw new Error(`log invariant: start ${first} <= applied ${this.applied}`);
    } else if (this.pendingSnapshot.index !== first || this.applied >= first) {
      throw new Error(`log invariant: pending snapshot ${this.pendingSnapshot.index} is the start ${first}, above applied ${this.applied}`);
    }
    if (this.stableIndex > last || this.stableIndex < first) {
      throw new Error(`log invariant: start ${first} <= stable ${this.stableIndex} <= last ${last}`);
    }
    // Checking the whole log is O(n); do the tail, which is where changes happen.
    const n = this.entries.length;
    for (let k = Math.max(0, n - 64); k < n; k++) {
      const e = this.entries[k]!;
      if (e.index !== first + k + 1) throw new Error(`log invariant: entry at position ${k} has index ${e.index}, start ${first}`);
      const prevTerm = k === 0 ? this.start.term : this.entries[k - 1]!.term;
      if (prevTerm > e.term) throw new Error(`log invariant: term decreases at index ${e.index}`);
    }
  }
}
