import type { Entry } from './types.js';

/**
 * The in-memory Raft log of one node, with the split between what is durable and what is not.
 *
 * Invariants (checked by `checkInvariants`):
 *  - entries are dense: entries[k].index === k + 1, and terms never decrease along the log;
 *  - applied <= committed <= lastIndex;
 *  - stableIndex <= lastIndex: entries up to stableIndex are durable on this node.
 */
export class RaftLog {
  private readonly entries: Entry[] = [];
  /** Highest index known committed. Never decreases. */
  committed = 0;
  /** Highest index the state machine has applied. Never decreases. */
  applied = 0;
  /** Entries with index <= stableIndex are durable; later ones still have to be persisted. */
  stableIndex = 0;

  constructor(entries: readonly Entry[] = [], committed = 0, applied = 0) {
    for (const e of entries) this.entries.push(e);
    this.committed = committed;
    this.applied = applied;
    this.stableIndex = this.lastIndex();
    this.checkInvariants();
  }

  lastIndex(): number {
    return this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length === 0 ? 0 : this.entries[this.entries.length - 1]!.term;
  }

  /** The term of the entry at `index`; 0 for index 0; undefined past the end. */
  term(index: number): number | undefined {
    if (index === 0) return 0;
    return this.entries[index - 1]?.term;
  }

  entry(index: number): Entry | undefined {
    return index >= 1 ? this.entries[index - 1] : undefined;
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
      if (e.index !== this.entries.length + 1) {
        throw new Error(`log: append of index ${e.index} after last index ${this.entries.length}`);
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
      const ours = this.term(e.index);
      if (ours === undefined) break;
      if (ours !== e.term) {
        if (e.index <= this.committed) {
          throw new Error(`log: conflict at committed index ${e.index} (committed ${this.committed})`);
        }
        this.entries.length = e.index - 1;
        this.stableIndex = Math.min(this.stableIndex, e.index - 1);
        break;
      }
      k++;
    }
    for (; k < entries.length; k++) this.append([entries[k]!]);
    return prevIndex + entries.length;
  }

  /** Entries in [lo, hi], at least one (if any exist) and at most `maxBytes` of data beyond the first. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i <= hi && i <= this.entries.length; i++) {
      const e = this.entries[i - 1]!;
      bytes += e.data.length;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** The first index of the run of entries with the same term as the entry at `index`. */
  firstIndexOfTermAt(index: number): number {
    const term = this.term(index);
    let i = index;
    while (i > 1 && this.term(i - 1) === term) i--;
    return i;
  }

  /** The last index holding an entry of `term`, or 0 if the log has none. Scans from the end. */
  lastIndexOfTerm(term: number): number {
    for (let i = this.entries.length; i >= 1; i--) {
      const t = this.entries[i - 1]!.term;
      if (t === term) return i;
      if (t < term) return 0;
    }
    return 0;
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
    return this.entries.slice(this.stableIndex);
  }

  /**
   * Marks entries up to `index` durable, if the entry there is still the one (of `term`) that was
   * handed out for persisting; a truncation since then makes this a no-op.
   */
  stableTo(index: number, term: number): void {
    if (this.term(index) === term && index > this.stableIndex) this.stableIndex = index;
  }

  /**
   * Committed entries not yet applied. Those past stableIndex are in the same Ready's `entries`, and
   * the caller persists them before it applies (see the contract on Ready).
   */
  entriesToApply(): Entry[] {
    return this.entries.slice(this.applied, this.committed);
  }

  appliedTo(index: number): void {
    if (index < this.applied || index > this.committed) {
      throw new Error(`log: applied ${index} out of range (applied ${this.applied}, committed ${this.committed})`);
    }
    this.applied = index;
  }

  checkInvariants(): void {
    const n = this.entries.length;
    if (!(this.applied <= this.committed && this.committed <= n)) {
      throw new Error(`log invariant: applied ${this.applied} <= committed ${this.committed} <= last ${n}`);
    }
    if (this.stableIndex > n) throw new Error(`log invariant: stable ${this.stableIndex} <= last ${n}`);
    // Checking the whole log is O(n); do the tail, which is where changes happen.
    for (let i = Math.max(1, n - 64); i <= n; i++) {
      const e = this.entries[i - 1]!;
      if (e.index !== i) throw new Error(`log invariant: entry at position ${i} has index ${e.index}`);
      if (i > 1 && this.entries[i - 2]!.term > e.term) {
        throw new Error(`log invariant: term decreases at index ${i}`);
      }
    }
  }
}
