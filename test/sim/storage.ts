// Simulated durable storage of one node. It holds only what was persisted: a crash is simply the
// loss of the Raft instance, and a restart reads back what is here. Each method is one atomic write.
// The storage trusts its caller; the checker validates every write before it is made.

import type { Entry, HardState, InitialState } from '../../src/raft/types.js';

const EMPTY_HARD_STATE: HardState = { term: 0, vote: 0, commit: 0 };

export class NodeStorage {
  private hard: HardState = EMPTY_HARD_STATE;
  /** The persisted log. Invariant: log[k].index === k + 1. */
  private readonly log: Entry[] = [];
  /** The persisted state machine: every applied entry, in order. Invariant: applied === length. */
  private readonly stateMachine: Entry[] = [];

  get hardState(): HardState {
    return this.hard;
  }

  get lastIndex(): number {
    return this.log.length;
  }

  /** The state machine's applied index, stored with the data it applies. */
  get applied(): number {
    return this.stateMachine.length;
  }

  /** 0 for index 0, undefined past the end. */
  termAt(index: number): number | undefined {
    if (index === 0) return 0;
    return this.log[index - 1]?.term;
  }

  entryAt(index: number): Entry | undefined {
    return index >= 1 ? this.log[index - 1] : undefined;
  }

  appliedAt(index: number): Entry | undefined {
    return index >= 1 ? this.stateMachine[index - 1] : undefined;
  }

  /**
   * One atomic, synced write of the hard state and new entries. Entries starting at index i replace
   * every persisted entry at index >= i.
   */
  persist(hardState: HardState | undefined, entries: readonly Entry[]): void {
    if (hardState !== undefined) this.hard = hardState;
    const first = entries[0];
    if (first === undefined) return;
    if (first.index < 1 || first.index > this.log.length + 1) {
      throw new Error(`storage: write at index ${first.index} would leave a gap after ${this.log.length}`);
    }
    this.log.length = first.index - 1;
    for (const e of entries) this.log.push(e);
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
    if (this.log.length <= this.hard.commit) return false;
    this.log.pop();
    return true;
  }

  /** What a restarting node reads back. Copies, so the node never aliases the storage's arrays. */
  initialState(): InitialState {
    return { hardState: this.hard, entries: this.log.slice(), applied: this.stateMachine.length };
  }
}
