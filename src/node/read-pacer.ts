// Spreads reads that are ready together over several turns of the event loop, a few per turn.
//
// Why: Node writes what a turn's callbacks sent to a socket once that turn's callbacks are done. When
// 64 reads are confirmed by one ReadIndex round, or arrive in one socket read, and are all served in
// one turn, their 64 answers leave in one write at the end, and the client has nothing to do until
// then; it then sends its 64 next requests together, and the node waits in turn. On a machine whose
// cores the node and its clients share, the two sides take turns instead of working at the same
// time. Served a few per turn, the first answers leave while the rest are being made (README, "Where
// the time goes").
//
// A turn here is the time between two runs of the pacer's setImmediate callback: at most perTurn
// reads go in it, those it lets go at its start and those that go at once after it. Node runs its
// own immediates (an HTTP/2 session's pending writes) before the script's, so the answers of one
// turn made at once leave in one write, apart from the next turn's (README). A read that finds the
// turn's quota unused and nobody waiting goes at once: a node under light load adds no delay.

import { LimitError, RaftKvError } from '../errors.js';
import { RingQueue } from '../transport/ring-queue.js';

/** Default of KvNodeConfig.readsPerTurn. */
export const DEFAULT_READS_PER_TURN = 8;

/** Limit: the largest readsPerTurn accepted. */
export const MAX_READS_PER_TURN = 65_536;

interface Waiting {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly deadlineMs: number;
}

export class ReadPacer {
  /** Reads waiting for a later turn, oldest first. */
  private readonly waiting: RingQueue<Waiting>;
  /** Reads let go in the current turn (since the last run of next()). */
  private passed = 0;
  /** A next() is scheduled with setImmediate. Invariant: true while passed > 0 or reads wait. */
  private scheduled = false;

  /**
   * `perTurn`: reads let go per turn (0: all of them, at once). `capacity`: reads that may wait; the
   * node admits no more reads than that in all (KvNodeConfig.maxPendingReads), so a full queue is a
   * caller's bug, refused with a LimitError naming maxPendingReads.
   */
  constructor(
    private readonly perTurn: number,
    capacity: number,
  ) {
    if (!Number.isSafeInteger(perTurn) || perTurn < 0 || perTurn > MAX_READS_PER_TURN) {
      throw new RangeError(`readsPerTurn=${perTurn} must be an integer in [0, ${MAX_READS_PER_TURN}] (0: no pacing)`);
    }
    this.waiting = new RingQueue(capacity);
  }

  /** Reads waiting for a later turn. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /**
   * undefined: the read may be served now. Otherwise a promise that resolves on a later turn, in
   * the order of the calls, or rejects with TIMEOUT when that turn comes at or after `deadlineMs`
   * (wall-clock ms: the read's caller has given up by then).
   */
  turn(deadlineMs: number): Promise<void> | undefined {
    if (this.perTurn === 0) return undefined;
    if (this.waiting.length === 0 && this.passed < this.perTurn) {
      this.passed++;
      this.schedule();
      return undefined;
    }
    if (this.waiting.full) {
      throw new LimitError('TOO_MANY_REQUESTS', 'maxPendingReads', this.waiting.capacity, 'too many reads in progress on this node');
    }
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject, deadlineMs });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.next);
  }

  /** A new turn: the quota starts again, and the oldest waiting reads take it. */
  private readonly next = (): void => {
    this.scheduled = false;
    this.passed = 0;
    const now = Date.now();
    while (this.passed < this.perTurn && this.waiting.length > 0) {
      const w = this.waiting.shift()!;
      if (now >= w.deadlineMs) {
        // Past its deadline: it takes no place in the turn.
        w.reject(new RaftKvError('TIMEOUT', 'the read reached its deadline while it waited for its turn to be served'));
        continue;
      }
      this.passed++;
      w.resolve();
    }
    // Keeps the quota counted until the next turn.
    if (this.passed > 0 || this.waiting.length > 0) this.schedule();
  };
}
