import type { NodeId } from './types.js';

/**
 * How the leader replicates to one follower:
 *  - `probe`: the follower's log position is unknown; one append at a time, then wait for a reply
 *    (or the next heartbeat reply) before trying again;
 *  - `replicate`: the follower is known to match up to `match`; appends are pipelined optimistically,
 *    up to `maxInflight` messages in flight;
 *  - `snapshot`: the entries the follower needs were compacted; the caller is streaming it a
 *    snapshot, and appends wait until the transfer is reported or the follower acknowledges it.
 */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  readonly id: NodeId;
  /** Highest index known to be replicated on the follower. Invariant: match < next. */
  match = 0;
  /** Index of the next entry to send. */
  next: number;
  state: ProgressState = 'probe';
  /** In probe state: an append was sent and its reply has not come back. */
  probeSent = false;
  /** The leader's tick count when it last heard from this follower. */
  lastHeardTick = 0;
  /** The highest commit index sent to this follower, in an append or a heartbeat, in this term. */
  commitSent = 0;
  /** Last index of each append in flight, oldest first. Invariant: length <= maxInflight. */
  private readonly inflight: number[] = [];
  private readonly maxInflight: number;

  constructor(id: NodeId, next: number, maxInflight: number) {
    this.id = id;
    this.next = next;
    this.maxInflight = maxInflight;
  }

  /** Whether the leader should hold back further appends for now. */
  isPaused(): boolean {
    if (this.state === 'snapshot') return true;
    return this.state === 'probe' ? this.probeSent : this.inflight.length >= this.maxInflight;
  }

  inflightCount(): number {
    return this.inflight.length;
  }

  /** Back to probing, from `next` (default: just after match). */
  becomeProbe(next = this.match + 1): void {
    this.state = 'probe';
    this.probeSent = false;
    this.inflight.length = 0;
    this.next = Math.max(next, this.match + 1);
  }

  becomeSnapshot(): void {
    this.state = 'snapshot';
    this.probeSent = false;
    this.inflight.length = 0;
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.probeSent = false;
    this.inflight.length = 0;
    this.next = this.match + 1;
  }

  /** Records an append whose last entry is `lastIndex` (or which carried no entries). */
  sentAppend(lastIndex: number, entryCount: number): void {
    if (this.state === 'replicate') {
      if (entryCount > 0) {
        this.next = lastIndex + 1;
        this.inflight.push(lastIndex);
      }
    } else {
      this.probeSent = true;
    }
  }

  /** Forgets the oldest append in flight, as if it had been answered (see stepLeader). */
  freeOldest(): void {
    this.inflight.shift();
  }

  /** A successful reply: returns true if it moved `match` forward. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    // Free every append up to the acknowledged index.
    let k = 0;
    while (k < this.inflight.length && this.inflight[k]! <= index) k++;
    if (k > 0) this.inflight.splice(0, k);
    return updated;
  }

  /**
   * A rejection of an append whose previous index was `rejected`. Returns false if the rejection is
   * stale (answers an append we already moved past) and was ignored.
   */
  maybeDecrTo(rejected: number, nextHint: number): boolean {
    // While a snapshot is on its way, rejections answer appends sent before it: it supersedes them.
    if (this.state === 'snapshot') return false;
    if (this.state === 'replicate') {
      // Replies to pipelined appends are stale once they are at or below match.
      if (rejected <= this.match) return false;
      this.becomeProbe();
      this.next = Math.max(this.match + 1, Math.min(nextHint, rejected));
      return true;
    }
    // In probe state only the reply to the one append in flight (prev index next-1) counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(this.match + 1, Math.min(nextHint, rejected));
    this.probeSent = false;
    return true;
  }

  checkInvariants(): void {
    if (this.match >= this.next) {
      throw new Error(`progress ${this.id}: match ${this.match} must be < next ${this.next}`);
    }
    if (this.inflight.length > this.maxInflight) {
      throw new Error(`progress ${this.id}: ${this.inflight.length} in flight > limit ${this.maxInflight}`);
    }
  }
}
