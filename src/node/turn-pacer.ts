// Spreads work that arrives together over several turns of the event loop, a few callers per turn.
//
// Why: Node writes what a turn's callbacks sent to a socket once that turn's callbacks are done. When
// 64 reads are confirmed by one ReadIndex round, or arrive in one socket read, and are all served in
// one turn, their 64 answers leave in one write at the end, and the client has nothing to do until
// then; it then sends its 64 next requests together, and the node waits in turn. On a machine whose
// cores the node and its clients share, the two sides take turns instead of working at the same
// time. Served a few per turn, the first answers leave while the rest are being made (README, "Where
// the time goes").
//
// A caller who finds the turn's quota not yet used goes at once, so a node under light load adds no
// delay and no promise.

import { LimitError } from '../errors.js';
import { RingQueue } from '../transport/ring-queue.js';

/** Default of KvNodeConfig.readsPerTurn. */
export const DEFAULT_READS_PER_TURN = 8;

/** Limit: the largest readsPerTurn accepted. */
export const MAX_READS_PER_TURN = 65_536;

export class TurnPacer {
  /** Callers waiting for a later turn, oldest first. */
  private readonly waiting: RingQueue<() => void>;
  /** Callers let through since the last reset (the last turn that ran next()). */
  private passed = 0;
  /** A next() is scheduled with setImmediate. Invariant: true while passed > 0 or callers wait. */
  private scheduled = false;

  /**
   * `perTurn`: callers let through per turn (0: all of them, at once). `capacity`: callers that may
   * wait; one more is refused with a LimitError naming `limitName` and `capacity`.
   */
  constructor(
    private readonly perTurn: number,
    capacity: number,
    private readonly limitName: string,
  ) {
    if (!Number.isSafeInteger(perTurn) || perTurn < 0 || perTurn > MAX_READS_PER_TURN) {
      throw new RangeError(`readsPerTurn=${perTurn} must be an integer in [0, ${MAX_READS_PER_TURN}] (0: no pacing)`);
    }
    this.waiting = new RingQueue(capacity);
  }

  /** Callers waiting for a later turn. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /**
   * undefined: the caller may go on now; otherwise a promise that resolves on a later turn, in the
   * order of the calls. Throws a LimitError when `capacity` callers already wait.
   */
  turn(): Promise<void> | undefined {
    if (this.perTurn === 0) return undefined;
    if (this.waiting.length === 0 && this.passed < this.perTurn) {
      this.passed++;
      this.schedule();
      return undefined;
    }
    if (this.waiting.full) {
      throw new LimitError('TOO_MANY_REQUESTS', this.limitName, this.waiting.capacity, 'too many reads waiting for their turn on this node');
    }
    return new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.next);
  }

  /** A new turn: the quota starts again, and the oldest waiting callers take it. */
  private readonly next = (): void => {
    this.scheduled = false;
    this.passed = 0;
    while (this.passed < this.perTurn && this.waiting.length > 0) {
      this.passed++;
      (this.waiting.shift() as () => void)();
    }
    // Keeps the quota counted until the turn after these callers ran.
    if (this.passed > 0) this.schedule();
  };
}
