// Drives the pure Raft core with real time, a real disk and a real network. This is where the
// persistence contract of src/raft/types.ts is carried out: send what may go at once, write the
// batch durably, then send what had to wait, apply, and advance.

import { LimitError, NotLeaderError, RaftKvError } from '../errors.js';
import type { Raft } from '../raft/raft.js';
import type { Entry, HardState, Message, NodeId, Ready, SnapshotMeta, SnapshotRequest, SoftState } from '../raft/types.js';
import { IntKeyMap } from '../transport/int-key-map.js';
import type { Logger } from './logger.js';

/**
 * Limit: committed entries whose apply is written in the same batch as a Ready's log entries, and
 * deferred applies waiting for such a batch. Their apply is computed before that batch is written,
 * which delays the Ready's acknowledgements: a node catching up on a long backlog applies it in its
 * own writes instead, and acknowledges at once.
 */
export const MAX_COMBINED_APPLY_ENTRIES = 512;

/**
 * The longest the write of applies may wait for a Ready that syncs anyway (see RaftRuntime.deferred),
 * unless a read asks for them sooner. It bounds how much staler than its commit index a node's STALE
 * reads may be.
 */
export const DEFAULT_APPLY_DEFER_MS = 5;

/** Limit: the longest applyDeferMs accepted (a STALE read on an idle node may lag by that much). */
export const MAX_APPLY_DEFER_MS = 1000;

/**
 * The longest a leader holds back a new commit index from a follower that has no new entries to
 * receive, hoping to send it with the next append (see RaftConfig.deferCommitBroadcast). One
 * message fewer per write and follower while writes keep coming; a follower learns of the last
 * commit before a pause this much later.
 */
export const DEFAULT_COMMIT_DEFER_MS = 5;

/** Limit: the longest commitDeferMs accepted. */
export const MAX_COMMIT_DEFER_MS = 1000;

/** Limit: the fastest tick clock setClockRate accepts (a test hook; 10x real time is plenty). */
export const MAX_CLOCK_RATE = 10;

/**
 * `S`: what the store needs to install a staged snapshot; `W`: a state machine write (both opaque to
 * the runtime).
 */
export interface LogStore<S, W = never> {
  /**
   * One atomic, synced write of the hard state and entries (see the Ready contract); with
   * `snapshot`, the staged snapshot is installed in the same write and the log restarts after it;
   * with `state`, the apply of committed entries is written in the same batch (never with `snapshot`).
   */
  persist(batch: {
    readonly hardState?: HardState;
    readonly entries: readonly Entry[];
    readonly snapshot?: S;
    readonly state?: W;
  }): Promise<void>;
  /** Deletes log entries up to `upTo` (durably applied); resolves with how many were removed. */
  compactLog(upTo: SnapshotMeta): Promise<number>;
}

export interface Applier<R, W = never> {
  /**
   * Applies committed entries in order, durably with the applied index (and with any prepared
   * before); one result per entry.
   */
  apply(entries: readonly Entry[]): Promise<readonly R[]>;
  /**
   * Optional, with takeWrite: computes applies without writing them; their writes accumulate until
   * takeWrite hands them over, so that they go to disk in the same synced batch as a Ready's log
   * entries and hard state (one sync per Ready, not two; none for a Ready that only commits). Reads
   * see the applied state without them until that write is reported.
   */
  prepare?(entries: readonly Entry[]): Promise<readonly R[]>;
  /**
   * The write of every apply prepared since the last one, or undefined. The runtime calls written()
   * once the batch carrying it is durable, failed() if that failed.
   */
  takeWrite?():
    | { readonly write: W; readonly written: () => void; readonly failed: (err: unknown) => void }
    | undefined;
  /** Re-reads in-memory state from the store after a snapshot replaced it. */
  reload(): Promise<void>;
}

/** Where the leader's requests to stream a snapshot to a follower go (non-blocking). */
export interface SnapshotSender {
  send(m: SnapshotRequest): void;
}

/** When this node takes a snapshot of its own and compacts its log. */
export interface SnapshotPolicy {
  /** Take one after this many entries were applied since the last (0: not by count). */
  readonly snapshotEntries: number;
  /** ... or after this many bytes of entry data (0: not by size). */
  readonly snapshotBytes: number;
  /** Applied entries kept in the log behind a snapshot, so a follower that lags a little needs none. */
  readonly compactionMarginEntries: number;
}

/** What taking a snapshot did. */
export interface SnapshotTaken {
  /** The snapshot's position: the applied index when it was taken, and that entry's term. */
  readonly index: number;
  readonly term: number;
  /** The log's first index is logStartIndex + 1 afterwards. */
  readonly logStartIndex: number;
  readonly entriesCompacted: number;
  readonly durationMs: number;
}

export interface MessageSink {
  /** Non-blocking; may drop (Raft retransmits). */
  send(messages: readonly Message[]): void;
}

export interface RuntimeOptions<R, S, W = never> {
  readonly raft: Raft;
  readonly store: LogStore<S, W>;
  readonly stateMachine: Applier<R, W>;
  readonly transport: MessageSink;
  /** Leader: streams snapshots to followers that need one. */
  readonly snapshots: SnapshotSender;
  readonly snapshotPolicy: SnapshotPolicy;
  readonly tickMs: number;
  /**
   * How long the write of applies may wait for the next synced Ready (0: never wait); default
   * DEFAULT_APPLY_DEFER_MS, at most MAX_APPLY_DEFER_MS.
   */
  readonly applyDeferMs?: number;
  /**
   * With a core built with deferCommitBroadcast (and only then), how long a leader may hold back a
   * new commit index from a follower before it sends it alone; default DEFAULT_COMMIT_DEFER_MS, at
   * most MAX_COMMIT_DEFER_MS. 0 for a core that sends it at once.
   */
  readonly commitDeferMs?: number;
  /** Limit: proposals accepted and not yet applied (or failed). */
  readonly maxPendingProposals: number;
  /** Limit: reads waiting for a read index or for the applied index to catch up. */
  readonly maxPendingReads: number;
  /** Used to bound how many missed ticks are caught up at once. */
  readonly electionTimeoutTicks: number;
  readonly logger: Logger;
  /** Called when the node cannot go on safely (a failed disk write); the process should exit. */
  readonly onFatal: (err: unknown) => void;
  /** Called when the applied index (durable, what reads see) moved. */
  readonly onApplied?: (appliedIndex: number) => void;
  readonly onSoftState?: (s: SoftState) => void;
}

interface Waiter<R> {
  /** The term the proposal was appended in; -1 while it is queued. */
  term: number;
  readonly resolve: (v: { index: number; result: R }) => void;
  readonly reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

interface Queued<R> extends Waiter<R> {
  readonly data: Uint8Array;
}

interface ReadWaiter {
  readonly resolve: (index: number) => void;
  readonly reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

interface ApplyWaiter {
  readonly index: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

/** A proposal that lost its place in the log to a leader change; it was not applied. */
export class ProposalLostError extends RaftKvError {
  constructor(index: number) {
    super('UNAVAILABLE', `leadership changed before the write at index ${index} was committed; it was not applied, retry it`);
  }
}

/** A snapshot received in full and staged, waiting for the Ready that installs it. */
interface StagedSnapshot<S> {
  readonly meta: SnapshotMeta;
  readonly payload: S;
  readonly resolve: (outcome: 'installed') => void;
  readonly reject: (e: Error) => void;
}

export class RaftRuntime<R, S, W = never> {
  private readonly raft: Raft;
  private readonly opts: RuntimeOptions<R, S, W>;
  /** Callers of requestSnapshot waiting for the loop to take one. */
  private snapshotWaiters: { resolve: (t: SnapshotTaken) => void; reject: (e: Error) => void }[] = [];
  /** The size trigger fired: take a snapshot at the next turn of the loop. */
  private snapshotDue = false;
  private entriesSinceSnapshot = 0;
  private bytesSinceSnapshot = 0;
  private lastSnapshot: (SnapshotTaken & { readonly atMs: number }) | undefined;
  private staged: StagedSnapshot<S> | undefined;
  /** Proposals waiting to be handed to the core at the top of the next loop turn (batched). */
  private queued: Queued<R>[] = [];
  /**
   * Proposals in the log, by index, waiting to be applied. Not a Map: one entry in and one out per
   * write, for as long as the node runs (see IntKeyMap).
   */
  private readonly waiters = new IntKeyMap<Waiter<R>>();
  /** Reads waiting to be handed to the core as one ReadIndex request (one confirmation round). */
  private queuedReads: ReadWaiter[] = [];
  /** Reads handed to the core, by request context, with the leader and term they were asked of. */
  private readonly readBatches = new IntKeyMap<{ waiters: ReadWaiter[]; leader: number; term: number }>();
  private nextReadContext = 1;
  /** Waiting for the applied index to reach an index; kept sorted by index. */
  private applyWaiters: ApplyWaiter[] = [];
  private ticker: NodeJS.Timeout | undefined;
  /** While a batch is being applied: its last index; else 0. */
  private applyingTo = 0;
  /**
   * Applies prepared in Readys that only committed entries (no entries, no term or vote to sync),
   * whose write waits for the next Ready that syncs anyway, or for `applyDeferMs`, or for a read that
   * needs them, whichever comes first. Their writers were answered (the entries are committed on a
   * majority, and a crash only means this node applies them again); the applied index that reads
   * wait on stays below them until the write is durable (appliedCap). `hardState`: the newest
   * deferred commit-only hard state, written with them. Invariant: defined iff the state machine
   * holds prepared applies that no write carries yet; entries <= MAX_COMBINED_APPLY_ENTRIES.
   */
  private deferred:
    | { lastIndex: number; entries: number; hardState?: HardState; readonly timer: NodeJS.Timeout; readonly sinceMs: number }
    | undefined;
  /**
   * The applied index reads may rely on is at most this: the index before the first deferred apply,
   * until the write carrying it is durable; else infinite. Invariant: every apply up to
   * min(appliedCap, raft.appliedIndex) is durable.
   */
  private appliedCap = Number.POSITIVE_INFINITY;
  /** The deferred write should go now (its time ran out, or a read waits for it). */
  private flushWanted = false;
  /** The term and vote last made durable: a hard state that changes either must be synced. */
  private syncedTerm: number;
  private syncedVote: NodeId;
  private readonly applyDeferMs: number;
  private readonly commitDeferMs: number;
  /** Leader: sends the commit index to the followers that were not sent it (see commitDeferMs). */
  private commitTimer: NodeJS.Timeout | undefined;
  /**
   * The tick clock: virtual milliseconds that run at `clockRate` times the monotonic clock, piecewise
   * from the last anchor (start, or a rate change), so a change never jumps it. Invariant:
   * virtualNowMs() = virtualAtAnchorMs + (performance.now() - realAtAnchorMs) * clockRate.
   */
  private clockRate = 1;
  private realAtAnchorMs = 0;
  private virtualAtAnchorMs = 0;
  /** Ticks given to the core since start; Invariant: ticksDone <= floor(virtualNowMs() / tickMs). */
  private ticksDone = 0;
  private loopRunning = false;
  /** A kick() after the current batch of I/O callbacks, for new proposals and reads (gather()). */
  private gathering: NodeJS.Immediate | undefined;
  /** kick() was called while the loop ran; it may have missed the work, so it runs once more. */
  private kickedWhileRunning = false;
  private loopDone: Promise<void> = Promise.resolve();
  private stopped = false;
  /** The shutdown in progress or done (stop()). */
  private stopping: Promise<void> | undefined;

  constructor(opts: RuntimeOptions<R, S, W>) {
    this.opts = opts;
    this.raft = opts.raft;
    // The trigger counts from the last snapshot, which may predate this process: the applied entries
    // in the log beyond the margin count (their bytes are not known here), so a node that restarts
    // often still compacts.
    this.entriesSinceSnapshot = Math.max(
      0,
      opts.raft.appliedIndex - opts.raft.snapshot.index - opts.snapshotPolicy.compactionMarginEntries,
    );
    const p = opts.snapshotPolicy;
    this.snapshotDue = p.snapshotEntries > 0 && this.entriesSinceSnapshot >= p.snapshotEntries;
    this.syncedTerm = opts.raft.term;
    this.syncedVote = opts.raft.vote;
    this.applyDeferMs = opts.applyDeferMs ?? DEFAULT_APPLY_DEFER_MS;
    if (!Number.isSafeInteger(this.applyDeferMs) || this.applyDeferMs < 0 || this.applyDeferMs > MAX_APPLY_DEFER_MS) {
      throw new RangeError(`RaftRuntime: applyDeferMs must be an integer in [0, ${MAX_APPLY_DEFER_MS}], got ${opts.applyDeferMs}`);
    }
    const defers = opts.raft.defersCommitBroadcast === true;
    this.commitDeferMs = opts.commitDeferMs ?? (defers ? DEFAULT_COMMIT_DEFER_MS : 0);
    if (!Number.isSafeInteger(this.commitDeferMs) || this.commitDeferMs < 0 || this.commitDeferMs > MAX_COMMIT_DEFER_MS) {
      throw new RangeError(`RaftRuntime: commitDeferMs must be an integer in [0, ${MAX_COMMIT_DEFER_MS}], got ${opts.commitDeferMs}`);
    }
    if ((this.commitDeferMs > 0) !== defers) {
      throw new RangeError(
        `RaftRuntime: commitDeferMs ${this.commitDeferMs} does not fit a core ${defers ? 'with' : 'without'} deferCommitBroadcast: it must be > 0 with it, 0 without`,
      );
    }
  }

  start(): void {
    this.realAtAnchorMs = performance.now();
    this.virtualAtAnchorMs = 0;
    this.ticksDone = 0;
    // The period stays tickMs whatever the clock rate: catchUpTicks gives a fast clock more ticks per call.
    this.ticker = setInterval(() => this.catchUpTicks(), this.opts.tickMs);
    this.kick();
  }

  /**
   * Test only (clock-rate drift for the nemesis): from now on this node's tick clock runs at `rate`
   * times real time: 1 is real time (the default), 1.05 is 5% fast, 0.5 half speed. The clock
   * continues from where it is, without a jump. Leader leases are safe only while the nodes' rates
   * differ by less than the configured max clock drift. Throws a RangeError unless 0 < rate <= MAX_CLOCK_RATE.
   */
  setClockRate(rate: number): void {
    if (!(rate > 0 && rate <= MAX_CLOCK_RATE)) {
      throw new RangeError(`setClockRate: rate must be > 0 and <= ${MAX_CLOCK_RATE}, got ${rate}`);
    }
    this.virtualAtAnchorMs = this.virtualNowMs();
    this.realAtAnchorMs = performance.now();
    this.clockRate = rate;
  }

  /** The tick clock's reading (see clockRate). */
  private virtualNowMs(): number {
    return this.virtualAtAnchorMs + (performance.now() - this.realAtAnchorMs) * this.clockRate;
  }

  /**
   * Gives the core every tick that is due by the monotonic clock. Timer callbacks are not replayed
   * after the event loop stalls (a long GC, SIGSTOP), so counting callbacks would slow this node's
   * clock down: a leader would then believe in a lease that has run out. Call it before trusting
   * the core's sense of time (before a lease read). A stall longer than a few election timeouts is
   * caught up only in part: enough for every lease and election timer to run out. Time here is the
   * tick clock's (setClockRate), which is the monotonic clock unless a test skews it.
   */
  catchUpTicks(): void {
    if (this.stopped || this.ticker === undefined) return;
    const due = Math.floor(this.virtualNowMs() / this.opts.tickMs);
    const maxBurst = 4 * this.opts.electionTimeoutTicks;
    if (due - this.ticksDone > maxBurst) this.ticksDone = due - maxBurst;
    if (due <= this.ticksDone) return;
    while (this.ticksDone < due) {
      this.raft.tick();
      this.ticksDone++;
    }
    this.maybeFailWithoutQuorum();
    this.kick();
  }

  /** Pending proposals (queued or in the log, not yet applied). */
  pendingCount(): number {
    return this.queued.length + this.waiters.size;
  }

  /** Reads waiting for a read index or for the applied index. */
  pendingReadCount(): number {
    let n = this.queuedReads.length + this.applyWaiters.length;
    for (const b of this.readBatches.values()) n += b.waiters.length;
    return n;
  }

  /**
   * How long the oldest apply whose write is deferred has waited (0: none waits): reads of this
   * node's state miss committed entries for up to that long.
   */
  get applyLagMs(): number {
    return this.deferred === undefined ? 0 : Math.ceil(performance.now() - this.deferred.sinceMs);
  }

  /** The applied index whose state is durable and visible to reads. */
  get appliedIndex(): number {
    return Math.min(this.raft.appliedIndex, this.appliedCap);
  }

  /**
   * An index at least that of any state a read started now or earlier may have seen: the applied
   * index, or the last index of the batch being applied (its write may already be visible). Read it
   * after reading the data, and report it as the index the read was served at.
   */
  get visibleIndexBound(): number {
    return Math.max(this.appliedIndex, this.applyingTo);
  }

  /**
   * A linearizable read index (ReadIndex): resolves with an index such that a read served once the
   * applied index reaches it reflects every write committed before this call. Concurrent calls share
   * one confirmation round.
   */
  readIndex(timeoutMs: number): Promise<number> {
    if (this.stopped) return Promise.reject(new RaftKvError('UNAVAILABLE', 'the node is shutting down'));
    if (this.pendingReadCount() >= this.opts.maxPendingReads) {
      return Promise.reject(
        new LimitError('TOO_MANY_REQUESTS', 'maxPendingReads', this.opts.maxPendingReads, 'too many reads in progress on this node'),
      );
    }
    return new Promise((resolve, reject) => {
      const w: ReadWaiter = { resolve, reject };
      w.timer = setTimeout(() => {
        this.forgetRead(w);
        reject(new RaftKvError('TIMEOUT', `leadership could not be confirmed for a read within ${timeoutMs} ms`));
      }, timeoutMs);
      this.queuedReads.push(w);
      this.gather();
    });
  }

  /** Resolves once the applied index reaches `index`. */
  waitApplied(index: number, timeoutMs: number): Promise<void> {
    if (this.appliedIndex >= index) return Promise.resolve();
    if (this.stopped) return Promise.reject(new RaftKvError('UNAVAILABLE', 'the node is shutting down'));
    if (this.pendingReadCount() >= this.opts.maxPendingReads) {
      return Promise.reject(
        new LimitError('TOO_MANY_REQUESTS', 'maxPendingReads', this.opts.maxPendingReads, 'too many reads in progress on this node'),
      );
    }
    return new Promise((resolve, reject) => {
      const w: ApplyWaiter = { index, resolve, reject };
      w.timer = setTimeout(() => {
        this.applyWaiters = this.applyWaiters.filter((x) => x !== w);
        reject(new RaftKvError('TIMEOUT', `this node did not apply index ${index} within ${timeoutMs} ms (applied ${this.appliedIndex})`));
      }, timeoutMs);
      let k = this.applyWaiters.length;
      while (k > 0 && this.applyWaiters[k - 1]!.index > index) k--;
      this.applyWaiters.splice(k, 0, w);
      // A read waits for applies whose write is deferred: it goes now, not when its time runs out.
      if (this.deferred !== undefined && index <= this.raft.appliedIndex) {
        this.flushWanted = true;
        this.kick();
      }
    });
  }

  private forgetRead(w: ReadWaiter): void {
    this.queuedReads = this.queuedReads.filter((x) => x !== w);
    for (const [ctx, batch] of this.readBatches) {
      const rest = batch.waiters.filter((x) => x !== w);
      if (rest.length === 0) this.readBatches.delete(ctx);
      else if (rest.length !== batch.waiters.length) this.readBatches.set(ctx, { ...batch, waiters: rest });
    }
  }

  /** Hands queued reads to the core as one ReadIndex request. */
  private flushReads(): void {
    if (this.queuedReads.length === 0) return;
    const batch = this.queuedReads;
    this.queuedReads = [];
    const ctx = this.nextReadContext++;
    try {
      this.raft.readIndex(ctx);
      this.readBatches.set(ctx, { waiters: batch, leader: this.raft.leader, term: this.raft.term });
    } catch (e) {
      for (const w of batch) this.settle(w, e as Error);
    }
  }

  /**
   * A leader change loses the core's pending read requests: fail those asked of another leader or
   * term now, rather than at their deadline (all of them without `unless`).
   */
  private failReads(err: Error, unless?: { leader: number; term: number }): void {
    for (const [ctx, batch] of this.readBatches) {
      if (unless && batch.leader === unless.leader && batch.term === unless.term) continue;
      for (const w of batch.waiters) this.settle(w, err);
      this.readBatches.delete(ctx);
    }
  }

  step(m: Message): void {
    if (this.stopped) return;
    this.raft.step(m);
    this.kick();
  }

  /** The last snapshot this node took, if any since it started. */
  get lastSnapshotTaken(): (SnapshotTaken & { readonly atMs: number }) | undefined {
    return this.lastSnapshot;
  }

  /**
   * Takes a snapshot now: the state machine's durable state at the applied index is the snapshot;
   * the log is compacted up to that index less the policy's margin. Runs inside the loop, so it never
   * overlaps a batch being persisted or applied.
   */
  requestSnapshot(): Promise<SnapshotTaken> {
    if (this.stopped) return Promise.reject(new RaftKvError('UNAVAILABLE', 'the node is shutting down'));
    return new Promise((resolve, reject) => {
      this.snapshotWaiters.push({ resolve, reject });
      this.kick();
    });
  }

  /**
   * Leader side: a snapshot transfer the core asked for (in `term`) ended; `installed` is what the
   * follower installed, undefined if the transfer failed.
   */
  reportSnapshot(to: NodeId, term: number, installed: SnapshotMeta | undefined): void {
    if (this.stopped || this.raft.term !== term) return;
    this.raft.reportSnapshot(to, installed);
    this.kick();
  }

  /**
   * Follower side: a snapshot from `from` (a leader of `term`) was received in full and staged as
   * `payload`. Steps it into the core; resolves 'installed' once a Ready installed it durably, or
   * 'not-needed' at once when the core did not take it (it was stale, or the log already holds its
   * last entry; the caller then drops the staged data). Rejects when the sender's term is stale, or
   * when the node stops first.
   */
  installSnapshot(from: NodeId, term: number, meta: SnapshotMeta, payload: S): Promise<'installed' | 'not-needed'> {
    if (this.stopped) return Promise.reject(new RaftKvError('UNAVAILABLE', 'the node is shutting down'));
    if (this.staged !== undefined) {
      return Promise.reject(new RaftKvError('UNAVAILABLE', `a snapshot at ${this.staged.meta.index} is still being installed`));
    }
    this.raft.step({ type: 'Snap', from, to: this.raft.id, term, snapshot: meta });
    this.kick();
    if (this.raft.term > term) {
      return Promise.reject(new RaftKvError('UNAVAILABLE', `snapshot from node ${from} refused: its term ${term} is behind this node's ${this.raft.term}`));
    }
    const pending = this.raft.pendingSnapshot;
    if (pending === undefined || pending.index !== meta.index || pending.term !== meta.term) return Promise.resolve('not-needed');
    return new Promise((resolve, reject) => {
      this.staged = { meta, payload, resolve, reject };
    });
  }

  /** Starts an election now. */
  campaign(): void {
    this.raft.campaign();
    this.kick();
  }

  /**
   * Proposes one command; resolves with its index and the state machine's result once the entry is
   * committed and its apply computed (the apply's write may still be in progress: reads wait for it).
   * Rejects with NotLeaderError, LimitError (pending proposals or uncommitted bytes), a timeout after
   * `timeoutMs`, or ProposalLostError when a leader change dropped it.
   */
  propose(data: Uint8Array, timeoutMs: number): Promise<{ index: number; result: R }> {
    if (this.stopped) return Promise.reject(new RaftKvError('UNAVAILABLE', 'the node is shutting down'));
    if (this.raft.role !== 'leader') return Promise.reject(new NotLeaderError(this.raft.leader));
    if (this.pendingCount() >= this.opts.maxPendingProposals) {
      return Promise.reject(
        new LimitError('TOO_MANY_REQUESTS', 'maxPendingProposals', this.opts.maxPendingProposals, 'too many writes in progress on this node'),
      );
    }
    return new Promise((resolve, reject) => {
      const q: Queued<R> = { data, term: -1, resolve, reject };
      q.timer = setTimeout(() => {
        this.forget(q);
        reject(new RaftKvError('TIMEOUT', `the write was not committed within ${timeoutMs} ms; it may still be applied later`));
      }, timeoutMs);
      this.queued.push(q);
      this.gather();
    });
  }

  /**
   * Stops ticking and waits for the batch in progress; writes the deferred applies, so a restart
   * need not apply them again; pending proposals fail.
   */
  stop(): Promise<void> {
    // Every caller waits for the same shutdown, deferred write included, before closing the store.
    this.stopping ??= (async () => {
      this.stopped = true;
      if (this.ticker) clearInterval(this.ticker);
      if (this.commitTimer) clearTimeout(this.commitTimer);
      if (this.gathering) clearImmediate(this.gathering);
      await this.loopDone;
      try {
        await this.flushDeferred();
      } catch (e) {
        this.opts.logger.warn('the deferred applies were not written at shutdown; they are applied again at the next start', {
          error: String((e as Error)?.message ?? e),
        });
      }
      this.failEverything(new RaftKvError('UNAVAILABLE', 'the node is shutting down'));
    })();
    return this.stopping;
  }

  private failEverything(err: Error): void {
    if (this.deferred !== undefined) clearTimeout(this.deferred.timer);
    this.deferred = undefined;
    for (const w of this.snapshotWaiters) w.reject(err);
    this.snapshotWaiters = [];
    this.staged?.reject(err);
    this.staged = undefined;
    for (const q of this.queued) this.settle(q, err);
    for (const w of this.waiters.values()) this.settle(w, err);
    for (const w of this.queuedReads) this.settle(w, err);
    for (const w of this.applyWaiters) this.settle(w, err);
    this.failReads(err);
    this.queued = [];
    this.queuedReads = [];
    this.applyWaiters = [];
    this.waiters.clear();
  }

  /**
   * A leader that cannot reach a majority fails what waits on it now, not at each caller's deadline.
   * Writes already in the log may still be committed by a later leader, so their outcome is unknown.
   */
  private maybeFailWithoutQuorum(): void {
    if (this.raft.hasQuorumContact()) return;
    if (this.waiters.size === 0 && this.queued.length === 0 && this.readBatches.size === 0) return;
    const msg =
      'the cluster is read-only from here: this node cannot reach a majority; STALE reads still work';
    for (const q of this.queued) this.settle(q, new RaftKvError('NO_QUORUM', `${msg}; the write was not applied`));
    for (const w of this.waiters.values()) {
      this.settle(w, new RaftKvError('NO_QUORUM', `${msg}; the write may or may not be applied later, retry it with the same session`));
    }
    this.queued = [];
    this.waiters.clear();
    this.failReads(new RaftKvError('NO_QUORUM', msg));
  }

  private forget(q: Queued<R> | Waiter<R>): void {
    const i = this.queued.indexOf(q as Queued<R>);
    if (i >= 0) this.queued.splice(i, 1);
    for (const [index, w] of this.waiters) if (w === q) this.waiters.delete(index);
  }

  private settle(w: { reject: (e: Error) => void; timer?: NodeJS.Timeout }, err: Error): void {
    if (w.timer) clearTimeout(w.timer);
    w.reject(err);
  }

  /**
   * Runs the loop once every request that arrived with this one has been queued. Node drains the
   * microtask queue after each HTTP/2 stream's callback, so a kick() from a request handler would
   * run the loop before the next request of the same socket read is even parsed: at 64 clients the
   * leader handed the core proposals of about 24 entries and each read alone (one loop turn, one
   * Ready each). setImmediate runs after all the I/O callbacks of this turn of the event loop.
   */
  private gather(): void {
    this.gathering ??= setImmediate(() => {
      this.gathering = undefined;
      this.kick();
    });
  }

  private kick(): void {
    if (this.stopped) return;
    if (this.loopRunning) {
      // The loop may be past its last look for work: it runs again when it ends.
      this.kickedWhileRunning = true;
      return;
    }
    this.loopRunning = true;
    this.kickedWhileRunning = false;
    this.loopDone = this.loop().finally(() => {
      this.loopRunning = false;
      if (this.kickedWhileRunning) this.kick();
    });
  }

  /** Hands queued proposals to the core as one batch, so they share one disk write and one append. */
  private flushProposals(): void {
    if (this.queued.length === 0 || this.stopped) return;
    const batch = this.queued;
    this.queued = [];
    try {
      const { index, term } = this.raft.propose(batch.map((q) => q.data));
      batch.forEach((q, i) => {
        // The same object stays registered, so its timeout can find and forget it.
        q.term = term;
        this.waiters.set(index + i, q);
      });
    } catch (e) {
      for (const q of batch) this.settle(q, e as Error);
    }
  }

  private async loop(): Promise<void> {
    // Let the current macrotask's callers queue their proposals and messages first.
    await Promise.resolve();
    try {
      for (;;) {
        this.flushProposals();
        this.flushReads();
        // Not while a received snapshot waits to be installed: the applied index is behind the log's
        // start until the next Ready installs it.
        if ((this.snapshotDue || this.snapshotWaiters.length > 0) && this.raft.pendingSnapshot === undefined) {
          await this.takeSnapshot();
          continue;
        }
        if (!this.raft.hasReady()) {
          if (this.deferred !== undefined && this.flushWanted) {
            await this.flushDeferred();
            continue;
          }
          this.scheduleCommit();
          break;
        }
        await this.handle(this.raft.ready());
        // A loop that stays busy still sends a held-back commit within the bound.
        this.scheduleCommit();
      }
    } catch (e) {
      this.opts.logger.error('fatal', { error: String((e as Error)?.stack ?? e) });
      this.stopped = true;
      if (this.ticker) clearInterval(this.ticker);
      if (this.commitTimer) clearTimeout(this.commitTimer);
      this.failEverything(new RaftKvError('INTERNAL', `the node stopped after a fatal error: ${(e as Error)?.message ?? String(e)}`));
      this.opts.onFatal(e);
    }
  }

  /**
   * Leader with commitDeferMs: once a follower was not sent the current commit index, it gets it
   * within commitDeferMs, with an append of entries if one goes by then, else alone.
   */
  private scheduleCommit(): void {
    if (this.commitDeferMs === 0 || this.stopped) return;
    if (!this.raft.commitUnsent()) {
      if (this.commitTimer !== undefined) clearTimeout(this.commitTimer);
      this.commitTimer = undefined;
      return;
    }
    this.commitTimer ??= setTimeout(() => {
      this.commitTimer = undefined;
      if (this.stopped) return;
      this.raft.flushCommit();
      this.kick();
    }, this.commitDeferMs);
  }

  private async takeSnapshot(): Promise<void> {
    const t0 = performance.now();
    const waiters = this.snapshotWaiters;
    this.snapshotWaiters = [];
    this.snapshotDue = false;
    try {
      // The snapshot is the durable state at the applied index, and the log behind it goes.
      await this.flushDeferred();
      const index = this.raft.appliedIndex;
      const term = this.raft.termAt(index);
      if (term === undefined) throw new Error(`takeSnapshot: no term for the applied index ${index}`);
      const upTo = index - this.opts.snapshotPolicy.compactionMarginEntries;
      let entriesCompacted = 0;
      if (upTo > this.raft.snapshot.index) {
        entriesCompacted = await this.opts.store.compactLog({ index: upTo, term: this.raft.termAt(upTo)! });
        this.raft.compact(upTo);
      }
      this.entriesSinceSnapshot = 0;
      this.bytesSinceSnapshot = 0;
      const taken: SnapshotTaken = {
        index,
        term,
        logStartIndex: this.raft.snapshot.index,
        entriesCompacted,
        durationMs: performance.now() - t0,
      };
      this.lastSnapshot = { ...taken, atMs: Date.now() };
      this.opts.logger.info('snapshot', { ...taken, durationMs: Math.round(taken.durationMs) });
      for (const w of waiters) w.resolve(taken);
    } catch (e) {
      for (const w of waiters) w.reject(e as Error);
      throw e;
    }
  }

  /** Committed entries are applied (their write may be pending): snapshot trigger, and the proposals' promises. */
  private applied(entries: readonly Entry[], results: readonly R[]): void {
    const policy = this.opts.snapshotPolicy;
    this.entriesSinceSnapshot += entries.length;
    for (const e of entries) this.bytesSinceSnapshot += e.data.length;
    if (
      (policy.snapshotEntries > 0 && this.entriesSinceSnapshot >= policy.snapshotEntries) ||
      (policy.snapshotBytes > 0 && this.bytesSinceSnapshot >= policy.snapshotBytes)
    ) {
      this.snapshotDue = true;
    }
    entries.forEach((e, i) => {
      const w = this.waiters.get(e.index);
      if (!w) return;
      this.waiters.delete(e.index);
      if (w.timer) clearTimeout(w.timer);
      if (w.term === e.term) w.resolve({ index: e.index, result: results[i]! });
      else w.reject(new ProposalLostError(e.index));
    });
  }

  /**
   * Writes the deferred applies now, with their hard state, in one synced batch (nothing when there
   * are none), and lets the reads waiting for them go.
   */
  private async flushDeferred(): Promise<void> {
    if (this.deferred === undefined) return;
    await this.persistWithApplies(undefined, [], 0);
    this.applyingTo = 0;
    this.appliedMoved();
  }

  /**
   * One synced persist of a hard state, entries, and the write of every apply prepared so far (the
   * deferred ones and, up to `lastPrepared`, this Ready's). The deferred hard state goes with it
   * when the Ready has none of its own (a Ready's own is newer).
   */
  private async persistWithApplies(hardState: HardState | undefined, entries: readonly Entry[], lastPrepared: number): Promise<void> {
    const d = this.deferred;
    if (d !== undefined) clearTimeout(d.timer);
    this.deferred = undefined;
    this.flushWanted = false;
    const hs = hardState ?? d?.hardState;
    const pw = d !== undefined || lastPrepared > 0 ? this.opts.stateMachine.takeWrite?.() : undefined;
    if (pw === undefined && (d !== undefined || lastPrepared > 0)) {
      throw new Error('RaftRuntime: the state machine has no write for the applies it prepared');
    }
    if (pw !== undefined) this.applyingTo = Math.max(lastPrepared, d?.lastIndex ?? 0);
    try {
      await this.opts.store.persist({ ...(hs ? { hardState: hs } : {}), entries, ...(pw !== undefined ? { state: pw.write } : {}) });
    } catch (err) {
      pw?.failed(err);
      throw err;
    }
    // applyingTo stays until the caller advances the core (reads may see this write from now on).
    pw?.written();
    if (pw !== undefined) this.appliedCap = Number.POSITIVE_INFINITY;
    if (hs !== undefined) {
      this.syncedTerm = hs.term;
      this.syncedVote = hs.vote;
    }
  }

  /** Lets the reads waiting for the applied index go, up to where it is now. */
  private appliedMoved(): void {
    const applied = this.appliedIndex;
    let k = 0;
    while (k < this.applyWaiters.length && this.applyWaiters[k]!.index <= applied) {
      const w = this.applyWaiters[k]!;
      if (w.timer) clearTimeout(w.timer);
      w.resolve();
      k++;
    }
    if (k > 0) this.applyWaiters.splice(0, k);
    this.opts.onApplied?.(applied);
  }

  /** Holds the applies just prepared (entries up to lastIndex) back for a later synced batch. */
  private defer(first: number, lastIndex: number, count: number, hardState: HardState | undefined): void {
    const d = this.deferred;
    if (d !== undefined) {
      d.lastIndex = lastIndex;
      d.entries += count;
      if (hardState !== undefined) d.hardState = hardState;
      return;
    }
    const timer = setTimeout(() => {
      this.flushWanted = true;
      this.kick();
    }, this.applyDeferMs);
    this.deferred = { lastIndex, entries: count, ...(hardState ? { hardState } : {}), timer, sinceMs: performance.now() };
    this.appliedCap = Math.min(this.appliedCap, first - 1);
  }

  private async handle(r: Ready): Promise<void> {
    const appliedBefore = this.appliedIndex;
    if (r.messages.length > 0) {
      const toSend: Message[] = [];
      for (const m of r.messages) {
        if (m.type === 'Snap') this.opts.snapshots.send(m);
        else toSend.push(m);
      }
      if (toSend.length > 0) this.opts.transport.send(toSend);
    }
    let installed: StagedSnapshot<S> | undefined;
    /** Set when the committed entries' apply was prepared (written with the log, or deferred). */
    let appliedResults: readonly R[] | undefined;
    const committed = r.committedEntries;
    const sm = this.opts.stateMachine;
    const combined =
      committed.length > 0 &&
      sm.prepare !== undefined &&
      sm.takeWrite !== undefined &&
      committed.length <= MAX_COMBINED_APPLY_ENTRIES &&
      // Votes are not held back behind an apply.
      !r.messagesAfterPersist.some((m) => m.type === 'VoteResp' || m.type === 'PreVoteResp');
    if (r.snapshot) {
      const staged = this.staged;
      if (staged === undefined || staged.meta.index !== r.snapshot.index || staged.meta.term !== r.snapshot.term) {
        throw new Error(`a Ready installs snapshot ${r.snapshot.index}/${r.snapshot.term}, which was not staged`);
      }
      await this.flushDeferred();
      // From the switch on, reads see the snapshot's state: report at least its index.
      this.applyingTo = r.snapshot.index;
      await this.opts.store.persist({ ...(r.hardState ? { hardState: r.hardState } : {}), entries: r.entries, snapshot: staged.payload });
      if (r.hardState) {
        this.syncedTerm = r.hardState.term;
        this.syncedVote = r.hardState.vote;
      }
      await this.opts.stateMachine.reload();
      this.staged = undefined;
      installed = staged;
      this.entriesSinceSnapshot = 0;
      this.bytesSinceSnapshot = 0;
    } else if (combined) {
      const first = committed[0]!.index;
      const last = committed[committed.length - 1]!.index;
      const results = await sm.prepare!(committed);
      // The writers are answered now, before the apply is durable: their entries are committed
      // (durable on a majority), and the results are a function of the log alone, so a crash only
      // means this node applies them again, to the same results. Reads wait for the applied index,
      // which moves only once the write is durable.
      this.applied(committed, results);
      appliedResults = results;
      const syncFree =
        r.entries.length === 0 &&
        (r.hardState === undefined || (r.hardState.term === this.syncedTerm && r.hardState.vote === this.syncedVote));
      // A read already waiting for these entries would have to wait for the deferred write.
      const readWaits = this.applyWaiters.length > 0 && this.applyWaiters[0]!.index <= last;
      const withinLimit = committed.length + (this.deferred?.entries ?? 0) <= MAX_COMBINED_APPLY_ENTRIES;
      if (syncFree && withinLimit && !readWaits && !this.flushWanted && !this.stopped && this.applyDeferMs > 0) {
        // Nothing here needs a sync of its own (a commit index may be lost in a crash: it is learned
        // again): the apply's write waits for the next batch that syncs anyway.
        this.defer(first, last, committed.length, r.hardState);
      } else {
        // The apply goes to disk in the same synced batch as the log entries and hard state: its
        // committed entries are durable already or in this very batch, so the applied state never
        // gets ahead of the log.
        await this.persistWithApplies(r.hardState, r.entries, last);
      }
    } else if (r.hardState || r.entries.length > 0 || (committed.length > 0 && this.deferred !== undefined)) {
      // With what was deferred, if anything; committed entries are applied on their own below.
      await this.persistWithApplies(r.hardState, r.entries, 0);
    }
    if (r.messagesAfterPersist.length > 0) this.opts.transport.send(r.messagesAfterPersist);
    if (committed.length > 0 && appliedResults === undefined) {
      this.applyingTo = committed[committed.length - 1]!.index;
      this.applied(committed, await this.opts.stateMachine.apply(committed));
    }
    for (const rs of r.readStates) {
      const batch = this.readBatches.get(rs.context);
      if (!batch) continue;
      this.readBatches.delete(rs.context);
      for (const w of batch.waiters) {
        if (w.timer) clearTimeout(w.timer);
        w.resolve(rs.index);
      }
    }
    this.raft.advance(r);
    this.applyingTo = 0;
    installed?.resolve('installed');
    if (this.appliedIndex !== appliedBefore) this.appliedMoved();
    if (r.softState) {
      if (r.softState.role !== 'leader' && this.waiters.size > 0) {
        // Entries of ours still in the log may be committed by the next leader, or overwritten.
        const err = new RaftKvError('UNAVAILABLE', 'leadership changed before the write was committed; it may or may not be applied, retry it with the same session');
        for (const w of this.waiters.values()) this.settle(w, err);
        this.waiters.clear();
      }
      if (this.readBatches.size > 0) {
        this.failReads(new RaftKvError('UNAVAILABLE', 'the leader changed while a read was being confirmed; retry it'), {
          leader: r.softState.leader,
          term: this.raft.term,
        });
      }
      this.opts.onSoftState?.(r.softState);
    }
  }
}
