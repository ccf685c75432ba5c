// Simulated durable storage of one node. It holds only what was persisted: a crash is simply the
// loss of the Raft instance, and a restart reads back what is here. Each method is one atomic write.
// The storage trusts its caller; the checker validates every write before it is made.

import type { Entry, HardState, InitialState, SnapshotMeta } from '../../src/raft/types.js';

const EMPTY_HARD_STATE: HardState = { term: 0, vote: 0, commit: 0 };

export class NodeStorage {
  private hard: HardState = EMPTY_HARD_STATE;
  /** The log's start: entries up to it were compacted or replaced by an installed snapshot. */
  private start: SnapshotMeta = { index: 0, term: 0 };
  /** The persisted log after `start`. Invariant: log[k].index === start.index + k + 1. */
  private log: Entry[] = [];
  /**
   * The persisted state machine: every applied entry, in order (a snapshot of it is simply a prefix
   * of this list). Invariant: applied === length.
   */
  private stateMachine: Entry[] = [];

  get hardState(): HardState {
    return this.hard;
  }

  get logStart(): SnapshotMeta {
    return this.start;
  }

  get lastIndex(): number {
    return this.start.index + this.log.length;
  }

  /** The state machine's applied index, stored with the data it applies. */
  get applied(): number {
    return this.stateMachine.length;
  }

  /** The term at the log start for its index, undefined past the end or before the start. */
  termAt(index: number): number | undefined {
    if (index === this.start.index) return this.start.term;
    if (index < this.start.index) return undefined;
    return this.log[index - this.start.index - 1]?.term;
  }

  entryAt(index: number): Entry | undefined {
    return index > this.start.index ? this.log[index - this.start.index - 1] : undefined;
  }

  appliedAt(index: number): Entry | undefined {
    return index >= 1 ? this.stateMachine[index - 1] : undefined;
  }

  /** A copy of the state machine as a snapshot: its data and its position. */
  snapshot(): { meta: SnapshotMeta; data: Entry[] } {
    const last = this.stateMachine[this.stateMachine.length - 1];
    return { meta: { index: last?.index ?? 0, term: last?.term ?? 0 }, data: this.stateMachine.slice() };
  }

  /**
   * One atomic, synced write of the hard state and new entries. Entries starting at index i replace
   * every persisted entry at index >= i.
   */
  persist(hardState: HardState | undefined, entries: readonly Entry[]): void {
    if (hardState !== undefined) this.hard = hardState;
    const first = entries[0];
    if (first === undefined) return;
    if (first.index <= this.start.index || first.index > this.lastIndex + 1) {
      throw new Error(`storage: write at index ${first.index} outside (${this.start.index}, ${this.lastIndex + 1}]`);
    }
    this.log.length = first.index - this.start.index - 1;
    for (const e of entries) this.log.push(e);
  }

  /**
   * One atomic write that installs a snapshot received from a leader: the state machine becomes
   * `data`, the log restarts after `meta` with `entries`, and the hard state is written.
   */
  installSnapshot(meta: SnapshotMeta, data: readonly Entry[], hardState: HardState | undefined, entries: readonly Entry[]): void {
    if (data.length !== meta.index) throw new Error(`storage: snapshot at ${meta.index} holds ${data.length} entries`);
    const first = entries[0];
    if (first !== undefined && first.index !== meta.index + 1) {
      throw new Error(`storage: entries after a snapshot at ${meta.index} start at ${first.index}`);
    }
    this.stateMachine = data.slice();
    this.start = { index: meta.index, term: meta.term };
    this.log = entries.slice();
    if (hardState !== undefined) this.hard = hardState;
  }

  /** Drops the log up to `index`, which the state machine has applied (the snapshot covers it). */
  compact(index: number): void {
    if (index <= this.start.index) return;
    if (index > this.applied || index > this.lastIndex) {
      throw new Error(`storage: compact to ${index} past applied ${this.applied} or last ${this.lastIndex}`);
    }
    const term = this.termAt(index)!;
    this.log = this.log.slice(index - this.start.index);
    this.start = { index, term };
  }

  /** Applies entries (the next ones in order) and stores the new applied index, atomically. */
  apply(entries: readonly Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.stateMachine.length + 1) {
        throw new Error(`storage: apply of index ${e.index} after applied ${this.stateMachine.length}`);
      }
      this.stateMachine.push(e);
    }
  }

  // ---- a disk that lies, for the checker's own tests -------------------------------------------

  /** Loses the persisted vote, as if the hard state had not been synced. */
  forgetVote(): void {
    this.hard = { ...this.hard, vote: 0 };
  }

  /**
   * Loses the last persisted entry if it is above the persisted commit, as if a node acknowledged an
   * append before syncing it. Returns whether an entry was lost.
   */
  loseLastEntry(): boolean {
    if (this.lastIndex <= this.hard.commit || this.log.length === 0) return false;
    this.log.pop();
    return true;
  }

  /** What a restarting node reads back. Copies, so the node never aliases the storage's arrays. */
  initialState(): InitialState {
    return { hardState: this.hard, snapshot: this.start, entries: this.log.slice(), applied: this.stateMachine.length };
  }
}
