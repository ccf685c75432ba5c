// The Raft consensus core: a synchronous, deterministic state machine. Messages, ticks and proposals
// go in; a Ready batch (state to persist, messages to send, entries to apply) comes out, and the
// caller acknowledges it with advance(). Nothing here reads a clock, awaits, or does I/O; all
// randomness comes from the Rng in the config. See types.ts for the persistence contract.

import { LimitError, NotLeaderError } from '../errors.js';
import { RaftLog } from './log.js';
import { Progress } from './progress.js';
import {
  DEFAULT_MAX_APPEND_BYTES,
  DEFAULT_MAX_CLOCK_DRIFT,
  DEFAULT_MAX_INFLIGHT_MESSAGES,
  DEFAULT_MAX_PENDING_READ_REQUESTS,
  DEFAULT_MAX_UNCOMMITTED_BYTES,
  NONE,
  type AppendRequest,
  type AppendResponse,
  type Entry,
  type HardState,
  type HeartbeatRequest,
  type Message,
  type NodeId,
  type ReadState,
  type RaftConfig,
  type Ready,
  type Rng,
  type Role,
  type SnapshotMeta,
  type SnapshotRequest,
  type SoftState,
  type VoteRequest,
  type VoteResponse,
} from './types.js';

const EMPTY: Uint8Array = new Uint8Array(0);

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly vote: NodeId;
  readonly leader: NodeId;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly lastIndex: number;
  /** The log's start: entries up to this index were compacted or came in a snapshot. */
  readonly snapshotIndex: number;
  /** Ticks since this node last heard from a leader (for a leader: since its last quorum check). */
  readonly electionElapsedTicks: number;
  /** Leader only: whether a lease read would be served now. */
  readonly leaseValid: boolean;
  /** See Raft.hasQuorumContact. */
  readonly quorumContact: boolean;
  /** For a leader: each follower's match index. */
  readonly progress?: ReadonlyMap<NodeId, { match: number; next: number; state: string }>;
}

export class Raft {
  readonly id: NodeId;
  private readonly voters: readonly NodeId[];
  private readonly quorum: number;
  private readonly electionTimeoutTicks: number;
  private readonly heartbeatIntervalTicks: number;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;
  private readonly maxAppendBytes: number;
  private readonly maxInflightMessages: number;
  private readonly maxUncommittedBytes: number;
  private readonly rng: Rng;

  private _term = 0;
  private _vote: NodeId = NONE;
  private _role: Role = 'follower';
  private _leader: NodeId = NONE;
  private readonly log: RaftLog;

  /** Ticks since the last reset: for followers, since they heard from a leader. */
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  /** Drawn from [electionTimeoutTicks, 2 * electionTimeoutTicks) on every reset. */
  private randomizedElectionTimeout = 0;
  /**
   * A node that has just started cannot know whether a leader it used to follow is still live, so it
   * refuses votes for one election timeout as if it had heard from one (keeps leader leases safe
   * across restarts).
   */
  private startupQuiet = true;

  /** Votes received in the current (pre-)campaign. */
  private readonly votes = new Map<NodeId, boolean>();
  /** Leader only: replication state per follower. */
  private readonly progress = new Map<NodeId, Progress>();
  /** Leader only: bytes of entry data proposed in this term and not yet committed. */
  private uncommittedBytes = 0;
  /** Leader only: index of this term's no-op; entries after it count toward uncommittedBytes. */
  private leaderStartIndex = 0;

  /**
   * Leader only, ReadIndex (thesis §6.4): requests waiting for a heartbeat round to confirm
   * leadership, in round order. A request of round r is confirmed once a quorum acknowledged a
   * heartbeat carrying a round >= r, i.e. sent after the request noted its index.
   */
  private readQueue: { from: NodeId; context: number; index: number; round: number }[] = [];
  /** Leader only: the latest heartbeat round (each broadcast is one); heartbeats carry it. */
  private heartbeatRound = 0;
  /** Leader only: the highest round each follower acknowledged. */
  private readonly ackedRound = new Map<NodeId, number>();
  /** Leader only: the highest round a quorum acknowledged. */
  private confirmedRound = 0;
  /**
   * Leader only: every heartbeat broadcast is a round; the leader's tick count when each was sent,
   * oldest first. Rounds older than an election timeout are dropped (they can no longer extend the
   * lease), so this stays short.
   */
  private roundsSent: { round: number; tick: number }[] = [];
  /** Leader only: ticks since this node became leader (its own clock). */
  private leaderTicks = 0;
  /**
   * Leader only: the tick at which the latest quorum-confirmed heartbeat round was sent; the lease
   * runs from there for leaseTicks. -1: no lease yet.
   */
  private leaseFromTick = -1;
  private readonly leaseTicks: number;
  private readonly maxPendingReadRequests: number;
  private readonly deferCommitBroadcast: boolean;
  /** Leader only: requests that arrived before the leader committed an entry of its term. */
  private readsBeforeCommit: { from: NodeId; context: number }[] = [];
  private readStates: ReadState[] = [];

  private msgs: Message[] = [];
  private msgsAfterPersist: Message[] = [];
  private prevHardState: HardState;
  private prevSoftState: SoftState;
  private readyPending = false;
  /** The pending snapshot last handed out in a Ready (so it goes out once). */
  private snapshotInReady: SnapshotMeta | undefined;

  // For invariant checks: values that must never go backwards.
  private highestCommitSeen = 0;
  private highestTermSeen = 0;

  constructor(config: RaftConfig) {
    validateConfig(config);
    this.id = config.id;
    this.voters = [...config.peers];
    this.quorum = Math.floor(this.voters.length / 2) + 1;
    this.electionTimeoutTicks = config.electionTimeoutTicks;
    this.heartbeatIntervalTicks = config.heartbeatIntervalTicks;
    this.preVote = config.preVote ?? true;
    this.checkQuorum = config.checkQuorum ?? true;
    this.maxAppendBytes = config.maxAppendBytes ?? DEFAULT_MAX_APPEND_BYTES;
    this.maxInflightMessages = config.maxInflightMessages ?? DEFAULT_MAX_INFLIGHT_MESSAGES;
    this.maxUncommittedBytes = config.maxUncommittedBytes ?? DEFAULT_MAX_UNCOMMITTED_BYTES;
    this.maxPendingReadRequests = config.maxPendingReadRequests ?? DEFAULT_MAX_PENDING_READ_REQUESTS;
    this.deferCommitBroadcast = config.deferCommitBroadcast ?? false;
    this.leaseTicks = this.checkQuorum
      ? (config.leaseTicks ?? leaseDurationTicks(config.electionTimeoutTicks, DEFAULT_MAX_CLOCK_DRIFT))
      : 0;
    this.rng = config.rng;

    const init = config.initial;
    this.log = new RaftLog(init?.snapshot, init?.entries ?? [], init?.hardState.commit ?? 0, init?.applied ?? 0);
    this._term = init?.hardState.term ?? 0;
    this._vote = init?.hardState.vote ?? NONE;
    this.prevHardState = { term: this._term, vote: this._vote, commit: this.log.committed };
    this.prevSoftState = { leader: NONE, role: 'follower' };
    this.highestCommitSeen = this.log.committed;
    this.highestTermSeen = this._term;
    this.becomeFollower(this._term, NONE);
    // A brand-new node (term 0) never followed anyone, so it has nobody's lease to respect.
    this.startupQuiet = this._term > 0;
    this.checkInvariants();
  }

  // ---- inspection -----------------------------------------------------------------------------

  get term(): number {
    return this._term;
  }
  get vote(): NodeId {
    return this._vote;
  }
  get role(): Role {
    return this._role;
  }
  get leader(): NodeId {
    return this._leader;
  }
  get commitIndex(): number {
    return this.log.committed;
  }
  get appliedIndex(): number {
    return this.log.applied;
  }
  get lastIndex(): number {
    return this.log.lastIndex();
  }
  termAt(index: number): number | undefined {
    return this.log.term(index);
  }
  entryAt(index: number): Entry | undefined {
    return this.log.entry(index);
  }
  /** The log's start (see RaftLog): entries up to its index are no longer held. */
  get snapshot(): SnapshotMeta {
    return this.log.snapshot();
  }
  /**
   * A snapshot received from the leader (stepped as a Snap message) that the log was reset to and
   * that a Ready has yet to install; undefined when none. A caller that staged a snapshot's data
   * checks this right after stepping it: if it is not this snapshot, the core did not take it (it
   * was stale, or the log already held its entries) and the staged data can be dropped.
   */
  get pendingSnapshot(): SnapshotMeta | undefined {
    return this.log.pendingSnapshot;
  }

  status(): RaftStatus {
    const base = {
      id: this.id,
      role: this._role,
      term: this._term,
      vote: this._vote,
      leader: this._leader,
      commitIndex: this.log.committed,
      appliedIndex: this.log.applied,
      lastIndex: this.log.lastIndex(),
      snapshotIndex: this.log.snapshot().index,
      electionElapsedTicks: this.electionElapsed,
      leaseValid: this.leaseReadIndex() !== undefined,
      quorumContact: this.hasQuorumContact(),
    };
    if (this._role !== 'leader') return base;
    const progress = new Map<NodeId, { match: number; next: number; state: string }>();
    for (const [id, pr] of this.progress) progress.set(id, { match: pr.match, next: pr.next, state: pr.state });
    return { ...base, progress };
  }

  // ---- inputs ---------------------------------------------------------------------------------

  /** Advances logical time by one tick. */
  tick(): void {
    if (this._role === 'leader') this.tickLeader();
    else this.tickElection();
    this.checkInvariants();
  }

  /**
   * Starts an election now (as if the election timeout had fired), unless this node heard from a
   * live leader within the election timeout: its acknowledgement may be part of that leader's lease,
   * and campaigning would let a second leader serve while the first still holds it. Returns whether
   * a campaign started.
   */
  campaign(): boolean {
    if (this.inLease()) return false;
    this.hup();
    this.checkInvariants();
    return true;
  }

  /**
   * Appends proposals to the leader's log. The i-th proposal gets index `index + i`, all in `term`;
   * each is committed once applied with that index and term (a different term there means it was lost
   * to a leader change). Throws NotLeaderError on a non-leader and LimitError (UNCOMMITTED_LIMIT)
   * when the uncommitted bytes would pass maxUncommittedBytes.
   */
  propose(data: Uint8Array | readonly Uint8Array[]): { index: number; term: number } {
    if (this._role !== 'leader') throw new NotLeaderError(this._leader);
    const items = data instanceof Uint8Array ? [data] : data;
    if (items.length === 0) throw new RangeError('propose: nothing to propose');
    let bytes = 0;
    for (const d of items) bytes += d.length;
    // A single proposal larger than the limit still goes through when nothing else is pending, so an
    // oversized entry cannot wedge the leader forever.
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.maxUncommittedBytes) {
      throw new LimitError(
        'UNCOMMITTED_LIMIT',
        'maxUncommittedBytes',
        this.maxUncommittedBytes,
        `proposal of ${bytes} bytes refused: ${this.uncommittedBytes} bytes already proposed and not yet committed`,
      );
    }
    const first = this.log.lastIndex() + 1;
    const entries: Entry[] = items.map((d, i) => ({ index: first + i, term: this._term, type: 'normal', data: d }));
    this.log.append(entries);
    this.uncommittedBytes += bytes;
    this.bcastAppend(false);
    this.checkInvariants();
    return { index: first, term: this._term };
  }

  /**
   * Asks for a linearizable read index (thesis §6.4). The answer comes back in a later Ready's
   * `readStates` with the same `context`: serve the read once the applied index reaches its index.
   * A leader answers after one heartbeat round confirms it still leads, and not before it has
   * committed an entry of its own term (etcd#7331). A follower asks the leader. Throws
   * NotLeaderError when no leader is known. Requests are lost on a leader change: the caller should
   * give up on them when the Ready's softState shows one, or time out.
   */
  readIndex(context: number): void {
    if (this._role === 'leader') this.onReadIndex(this.id, context);
    else if (this._leader !== NONE) {
      this.send({ type: 'ReadIndex', from: this.id, to: this._leader, term: this._term, context });
    } else throw new NotLeaderError(NONE);
    this.checkInvariants();
  }

  /**
   * A lease read (thesis §6.4.1): while the leader's lease holds, its commit index is a valid read
   * index without a round trip. Returns undefined when there is no valid lease (not leader, lease
   * lapsed or not yet confirmed, or no entry of this term committed yet): fall back to readIndex.
   *
   * The lease runs from the sending of the latest heartbeat round a quorum acknowledged, for
   * leaseTicks of this node's clock. It is safe because each follower that acknowledged that round
   * refuses votes for electionTimeoutTicks of its own clock after receiving it (inLease), so no
   * other leader can be elected before the lease ends, as long as clock rates differ by less than
   * the drift leaseTicks was computed for (leaseDurationTicks).
   */
  leaseReadIndex(): number | undefined {
    if (this._role !== 'leader' || this.log.term(this.log.committed) !== this._term) return undefined;
    if (this.quorum === 1) return this.log.committed;
    if (this.leaseTicks <= 0 || this.leaseFromTick < 0) return undefined;
    return this.leaderTicks < this.leaseFromTick + this.leaseTicks ? this.log.committed : undefined;
  }

  /**
   * Whether this node can currently reach a quorum, as far as it can tell: a leader that heard from a
   * majority (itself included) within the last election timeout, or a follower that heard from a
   * leader within it. Check-quorum deposes a leader that lacks it at an election-timeout boundary;
   * callers use it to fail writes and strong reads fast instead of at their deadline.
   */
  hasQuorumContact(): boolean {
    if (this._role === 'leader') {
      if (this.leaderTicks < this.electionTimeoutTicks) return true;
      let heard = 0;
      for (const pr of this.progress.values()) {
        if (pr.id === this.id || this.leaderTicks - pr.lastHeardTick <= this.electionTimeoutTicks) heard++;
      }
      return heard >= this.quorum;
    }
    return this._leader !== NONE && this.electionElapsed < this.electionTimeoutTicks;
  }

  /** Delivers one message addressed to this node. */
  step(m: Message): void {
    if (m.to !== this.id) throw new Error(`step: message for ${m.to} delivered to ${this.id}`);
    this.stepInner(m);
    this.checkInvariants();
  }

  /**
   * Drops log entries up to `index`: the caller's state machine has durably applied them, so its
   * snapshot covers them (a follower that needs them gets the snapshot instead). `index` must not
   * pass the applied index or the durable end of the log. Idempotent for indexes already compacted.
   */
  compact(index: number): void {
    if (!Number.isSafeInteger(index) || index < 0) throw new RangeError(`compact: bad index ${index}`);
    if (index > this.log.applied) throw new RangeError(`compact: index ${index} is past the applied index ${this.log.applied}`);
    this.log.compact(index);
    this.checkInvariants();
  }

  /**
   * Leader only: the outcome of a snapshot transfer that a Snap message asked for. `installed` is the
   * snapshot the follower reported installed, or undefined when the transfer failed. Either way the
   * leader goes back to probing the follower; after a failure it waits for the follower's next
   * heartbeat response before it tries again, so a dead follower does not cause a storm of transfers.
   */
  reportSnapshot(to: NodeId, installed: SnapshotMeta | undefined): void {
    const pr = this._role === 'leader' ? this.progress.get(to) : undefined;
    if (pr === undefined || pr.state !== 'snapshot') return;
    pr.becomeProbe(installed === undefined ? pr.match + 1 : installed.index + 1);
    // Success: wait for the follower's AppResp (it may already be on its way) rather than guess.
    pr.probeSent = true;
    this.checkInvariants();
  }

  // ---- output ---------------------------------------------------------------------------------

  hasReady(): boolean {
    if (this.readyPending) return false;
    return (
      this.msgs.length > 0 ||
      this.msgsAfterPersist.length > 0 ||
      this.log.stableIndex < this.log.lastIndex() ||
      (this.log.pendingSnapshot !== undefined && this.log.pendingSnapshot !== this.snapshotInReady) ||
      this.log.committed > this.log.applied ||
      this.readStates.length > 0 ||
      !sameHardState(this.currentHardState(), this.prevHardState) ||
      this.prevSoftState.leader !== this._leader ||
      this.prevSoftState.role !== this._role
    );
  }

  ready(): Ready {
    if (this.readyPending) throw new Error('ready: the previous Ready has not been advanced');
    this.readyPending = true;
    const hs = this.currentHardState();
    const ss: SoftState = { leader: this._leader, role: this._role };
    const r: {
      -readonly [K in keyof Ready]: Ready[K];
    } = {
      entries: this.log.unstableEntries(),
      messages: this.msgs,
      messagesAfterPersist: this.msgsAfterPersist,
      committedEntries: this.log.entriesToApply(),
      readStates: this.readStates,
    };
    if (!sameHardState(hs, this.prevHardState)) r.hardState = hs;
    const snap = this.log.pendingSnapshot;
    if (snap !== undefined && snap !== this.snapshotInReady) {
      r.snapshot = snap;
      this.snapshotInReady = snap;
    }
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) r.softState = ss;
    this.msgs = [];
    this.msgsAfterPersist = [];
    this.readStates = [];
    return r;
  }

  /** The caller has persisted, sent and applied everything in `r` (see the contract in types.ts). */
  advance(r: Ready): void {
    if (!this.readyPending) throw new Error('advance: no Ready is pending');
    this.readyPending = false;
    if (r.hardState) this.prevHardState = r.hardState;
    if (r.softState) this.prevSoftState = r.softState;
    if (r.snapshot) this.log.snapshotInstalled(r.snapshot);
    const lastApplied = r.committedEntries[r.committedEntries.length - 1];
    if (lastApplied) this.log.appliedTo(lastApplied.index);
    const lastNew = r.entries[r.entries.length - 1];
    if (lastNew) {
      this.log.stableTo(lastNew.index, lastNew.term);
      // The leader's own copy counts toward a commit only once it is durable.
      if (this._role === 'leader') {
        const self = this.progress.get(this.id)!;
        if (self.maybeUpdate(this.log.stableIndex) && this.maybeCommit()) this.bcastCommit();
      }
    }
    this.checkInvariants();
  }

  // ---- roles ----------------------------------------------------------------------------------

  private reset(term: number): void {
    if (term !== this._term) {
      this._term = term;
      this._vote = NONE;
    }
    this._leader = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.startupQuiet = false;
    this.randomizedElectionTimeout = this.electionTimeoutTicks + this.rng.int(this.electionTimeoutTicks);
    this.votes.clear();
    this.progress.clear();
    this.uncommittedBytes = 0;
    this.readQueue = [];
    this.readsBeforeCommit = [];
    this.ackedRound.clear();
    // No round of this term is in flight yet (acks of earlier rounds are ignored: ackedRound is empty).
    this.confirmedRound = this.heartbeatRound;
    this.roundsSent = [];
    this.leaderTicks = 0;
    // Stepping down (or anything else that resets) ends the lease at once.
    this.leaseFromTick = -1;
  }

  private becomeFollower(term: number, leader: NodeId): void {
    this.reset(term);
    this._role = 'follower';
    this._leader = leader;
  }

  /** Thesis §9.6: a pre-candidate asks whether it could win before it disrupts anyone's term. */
  private becomePreCandidate(): void {
    this._role = 'pre-candidate';
    this._leader = NONE;
    this.votes.clear();
    this.votes.set(this.id, true);
  }

  private becomeCandidate(): void {
    this.reset(this._term + 1);
    this._vote = this.id;
    this._role = 'candidate';
    this.votes.set(this.id, true);
  }

  private becomeLeader(): void {
    this.reset(this._term);
    this._role = 'leader';
    this._leader = this.id;
    const next = this.log.lastIndex() + 1;
    for (const id of this.voters) this.progress.set(id, new Progress(id, next, this.maxInflightMessages));
    // A new leader has just heard from a quorum (its votes); the lease still waits for a heartbeat round.
    const self = this.progress.get(this.id)!;
    self.becomeReplicate();
    self.maybeUpdate(this.log.stableIndex);
    // §5.4.2 / §8: a no-op of the new term lets the leader commit (and learn) everything before it.
    this.leaderStartIndex = next;
    this.log.append([{ index: next, term: this._term, type: 'noop', data: EMPTY }]);
    this.bcastAppend(true);
  }

  private hup(): void {
    if (this._role === 'leader') return;
    if (this.preVote) {
      this.becomePreCandidate();
      this.requestVotes('PreVote', this._term + 1);
    } else {
      this.becomeCandidate();
      this.requestVotes('Vote', this._term);
    }
  }

  private requestVotes(type: 'PreVote' | 'Vote', term: number): void {
    if (this.tallyVotes() === 'won') {
      this.onElectionWon(type);
      return;
    }
    for (const to of this.voters) {
      if (to === this.id) continue;
      const m: VoteRequest = {
        type,
        from: this.id,
        to,
        term,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
      };
      this.send(m);
    }
  }

  private onElectionWon(type: 'PreVote' | 'Vote'): void {
    if (type === 'PreVote') {
      this.becomeCandidate();
      this.requestVotes('Vote', this._term);
    } else {
      this.becomeLeader();
    }
  }

  private tallyVotes(): 'won' | 'lost' | 'pending' {
    let granted = 0;
    let rejected = 0;
    for (const v of this.votes.values()) {
      if (v) granted++;
      else rejected++;
    }
    if (granted >= this.quorum) return 'won';
    if (rejected > this.voters.length - this.quorum) return 'lost';
    return 'pending';
  }

  // ---- ticks ----------------------------------------------------------------------------------

  private tickElection(): void {
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeoutTicks) this.startupQuiet = false;
    if (this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup();
    }
  }

  private tickLeader(): void {
    this.leaderTicks++;
    while (this.roundsSent.length > 0 && this.roundsSent[0]!.tick < this.leaderTicks - this.electionTimeoutTicks) {
      this.roundsSent.shift();
    }
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        // Thesis §6.2: a leader that has not heard from a majority within an election timeout
        // steps down, so clients can find the real leader and a lease cannot outlive leadership.
        if (!this.hasQuorumContact()) {
          this.becomeFollower(this._term, NONE);
          return;
        }
      }
    }
    if (this.heartbeatElapsed >= this.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  // ---- messages -------------------------------------------------------------------------------

  /**
   * The persistence contract's sorting point: a leader's appends and heartbeats may leave before the
   * current batch is durable; everything else (votes, vote requests, acknowledgements) must wait.
   */
  private send(m: Message): void {
    if (m.type === 'App' || m.type === 'Heartbeat' || m.type === 'Snap') this.msgs.push(m);
    else this.msgsAfterPersist.push(m);
  }

  private inLease(): boolean {
    return (
      this.checkQuorum &&
      (this._leader !== NONE || this.startupQuiet) &&
      this.electionElapsed < this.electionTimeoutTicks
    );
  }

  private stepInner(m: Message): void {
    if (m.term > this._term) {
      if ((m.type === 'PreVote' || m.type === 'Vote') && this.inLease()) {
        // Thesis §4.2.3: we heard from a live leader within the minimum election timeout, so this
        // campaign is from a node that cannot see it; do not let it disrupt us.
        return;
      }
      if (m.type === 'PreVote') {
        // A pre-vote never changes our term.
      } else if (m.type === 'PreVoteResp' && m.granted) {
        // A granted pre-vote carries the term we would campaign at; the term moves when we do.
      } else if (m.type === 'App' || m.type === 'Heartbeat' || m.type === 'Snap') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this._term) {
      if ((this.checkQuorum || this.preVote) && (m.type === 'App' || m.type === 'Heartbeat' || m.type === 'Snap')) {
        // A leader of an old term, cut off from a majority that moved on: tell it our term, or it would
        // never learn (pre-vote keeps us from disrupting it, so nobody else will).
        this.send({ type: 'AppResp', from: this.id, to: m.from, term: this._term, index: 0, reject: false });
      } else if (m.type === 'PreVote') {
        this.send({ type: 'PreVoteResp', from: this.id, to: m.from, term: this._term, granted: false });
      }
      return;
    }

    if (m.type === 'PreVote' || m.type === 'Vote') {
      this.onVoteRequest(m);
      return;
    }
    switch (this._role) {
      case 'leader':
        this.stepLeader(m);
        break;
      case 'candidate':
      case 'pre-candidate':
        this.stepCandidate(m);
        break;
      case 'follower':
        this.stepFollower(m);
        break;
    }
  }

  /** §5.2, §5.4.1: grant at most one vote per term, and only to a log at least as up-to-date. */
  private onVoteRequest(m: VoteRequest): void {
    const canVote =
      this._vote === m.from ||
      (this._vote === NONE && this._leader === NONE) ||
      (m.type === 'PreVote' && m.term > this._term);
    const respType = m.type === 'PreVote' ? 'PreVoteResp' : 'VoteResp';
    if (canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm)) {
      // The response carries the requested term, so a pre-candidate can count it.
      this.send({ type: respType, from: this.id, to: m.from, term: m.term, granted: true });
      if (m.type === 'Vote') {
        this.electionElapsed = 0;
        this._vote = m.from;
      }
    } else {
      this.send({ type: respType, from: this.id, to: m.from, term: this._term, granted: false });
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'App':
        this.electionElapsed = 0;
        this._leader = m.from;
        this.onAppend(m);
        break;
      case 'Heartbeat':
        this.electionElapsed = 0;
        this._leader = m.from;
        this.onHeartbeat(m);
        break;
      case 'Snap':
        this.electionElapsed = 0;
        this._leader = m.from;
        this.onSnapshot(m);
        break;
      case 'ReadIndexResp':
        this.readStates.push({ context: m.context, index: m.index });
        break;
      case 'ReadIndex':
        // We are not the leader (any more): the asker times out and retries.
        break;
      default:
        // Responses addressed to an earlier role of ours: nothing to do.
        break;
    }
  }

  private stepCandidate(m: Message): void {
    const ownType = this._role === 'pre-candidate' ? 'PreVoteResp' : 'VoteResp';
    switch (m.type) {
      case 'App':
        this.becomeFollower(m.term, m.from);
        this.onAppend(m);
        break;
      case 'Heartbeat':
        this.becomeFollower(m.term, m.from);
        this.onHeartbeat(m);
        break;
      case 'Snap':
        this.becomeFollower(m.term, m.from);
        this.onSnapshot(m);
        break;
      case 'PreVoteResp':
      case 'VoteResp':
        if (m.type !== ownType) break;
        this.onVoteResponse(m);
        break;
      default:
        break;
    }
  }

  private onVoteResponse(m: VoteResponse): void {
    this.votes.set(m.from, m.granted);
    const result = this.tallyVotes();
    if (result === 'won') this.onElectionWon(m.type === 'PreVoteResp' ? 'PreVote' : 'Vote');
    else if (result === 'lost') this.becomeFollower(this._term, NONE);
  }

  /** §5.3: the consistency check, then append, then acknowledge (after persisting). */
  private onAppend(m: AppendRequest): void {
    const reply = (index: number, reject: boolean, hint?: AppendResponse['hint']): void => {
      // Only a commit-only append goes unanswered: entries are always acknowledged.
      if (!reject && m.noReply === true && m.entries.length === 0) return;
      const resp: AppendResponse = { type: 'AppResp', from: this.id, to: m.from, term: this._term, index, reject };
      this.send(hint ? { ...resp, hint } : resp);
    };
    if (m.prevIndex < this.log.committed) {
      // Everything up to our commit index already matches any leader's log.
      reply(this.log.committed, false);
      return;
    }
    if (this.log.matchTerm(m.prevIndex, m.prevTerm)) {
      const lastNew = this.log.appendFromLeader(m.prevIndex, m.entries);
      this.log.commitTo(Math.min(m.commit, lastNew));
      reply(lastNew, false);
      return;
    }
    const ourTerm = this.log.term(m.prevIndex);
    const hint =
      ourTerm === undefined
        ? { conflictTerm: 0, conflictIndex: this.log.lastIndex() + 1 }
        : {
            conflictTerm: ourTerm,
            conflictIndex: Math.max(this.log.firstIndexOfTermAt(m.prevIndex), this.log.committed + 1),
          };
    reply(m.prevIndex, true, hint);
  }

  /**
   * §7 InstallSnapshot, follower side; the caller has the snapshot's data staged. A snapshot at or
   * below our commit index tells us nothing; one whose last entry our log already holds only moves
   * the commit index (the staged data is not needed); otherwise the log is reset to the snapshot,
   * which the next Ready installs. The AppResp leaves once that is durable.
   */
  private onSnapshot(m: SnapshotRequest): void {
    const s = m.snapshot;
    if (s === undefined) throw new Error(`step: Snap from ${m.from} carries no snapshot`);
    const reply = (index: number): void => {
      this.send({ type: 'AppResp', from: this.id, to: m.from, term: this._term, index, reject: false });
    };
    if (s.index <= this.log.committed) {
      reply(this.log.committed);
      return;
    }
    if (this.log.matchTerm(s.index, s.term)) {
      this.log.commitTo(s.index);
      reply(s.index);
      return;
    }
    this.log.restore(s);
    reply(s.index);
  }

  private onHeartbeat(m: HeartbeatRequest): void {
    // The leader caps the commit index at our match index, so we hold every entry up to it.
    this.log.commitTo(m.commit);
    this.send({ type: 'HeartbeatResp', from: this.id, to: m.from, term: this._term, context: m.context });
  }

  private stepLeader(m: Message): void {
    if (m.type !== 'AppResp' && m.type !== 'HeartbeatResp' && m.type !== 'ReadIndex') return;
    const pr = this.progress.get(m.from);
    if (!pr || pr.id === this.id) return;
    pr.lastHeardTick = this.leaderTicks;
    if (m.type === 'ReadIndex') {
      this.onReadIndex(m.from, m.context);
      return;
    }
    if (m.type === 'HeartbeatResp') {
      if (m.context > (this.ackedRound.get(m.from) ?? 0)) {
        this.ackedRound.set(m.from, m.context);
        this.maybeConfirmRound();
      }
      pr.probeSent = false;
      // Lost appends must not stall a pipeline forever: let one more through per heartbeat.
      if (pr.state === 'replicate' && pr.isPaused()) pr.freeOldest();
      if (pr.match < this.log.lastIndex()) this.sendAppend(pr, true);
      return;
    }
    if (m.reject) {
      if (pr.maybeDecrTo(m.index, this.nextFromHint(m))) this.sendAppend(pr, true);
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) {
      if (wasPaused && !pr.isPaused()) this.sendAppends(pr);
      return;
    }
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot' && pr.match + 1 >= this.log.firstIndex()) pr.becomeReplicate();
    if (this.maybeCommit()) this.bcastCommit();
    else this.sendAppends(pr);
  }

  private onReadIndex(from: NodeId, context: number): void {
    if (this.readQueue.length + this.readsBeforeCommit.length >= this.maxPendingReadRequests) {
      // Limit reached: drop it; the asker times out (its node bounds its own waiting reads too).
      return;
    }
    // Until an entry of this term is committed, our commit index may lag what earlier leaders
    // committed, so it cannot serve as a read index.
    if (this.log.term(this.log.committed) !== this._term) {
      this.readsBeforeCommit.push({ from, context });
      return;
    }
    const index = this.log.committed;
    if (this.quorum === 1) {
      this.answerRead(from, context, index);
      return;
    }
    // The heartbeat round sent next confirms this read.
    this.readQueue.push({ from, context, index, round: this.heartbeatRound + 1 });
    this.maybeBcastReadRound();
  }

  /**
   * Starts a heartbeat round for the reads waiting on the next one, unless a round is in flight
   * (sent, not yet confirmed by a quorum): then the reads wait for it to be confirmed, and one new
   * round serves all that came meanwhile (maybeConfirmRound sends it). So concurrent reads share a
   * confirmation round, and a busy leader sends one round per round trip, not one per read. A round
   * lost on the way is replaced by the next periodic heartbeat, which confirms the waiting reads too.
   */
  private maybeBcastReadRound(): void {
    if (this.heartbeatRound > this.confirmedRound) return;
    this.bcastHeartbeat();
  }

  /**
   * A quorum has acknowledged heartbeat rounds up to `confirmed`: reads waiting on them are
   * answered, and the lease restarts from the moment the latest of them was sent.
   */
  private maybeConfirmRound(): void {
    const acked: number[] = [];
    for (const id of this.voters) if (id !== this.id) acked.push(this.ackedRound.get(id) ?? 0);
    acked.sort((a, b) => b - a);
    const confirmed = acked[this.quorum - 2]!; // the leader itself is the quorum's remaining member
    if (confirmed <= this.confirmedRound) return;
    this.confirmedRound = confirmed;
    while (this.roundsSent.length > 0 && this.roundsSent[0]!.round <= confirmed) {
      const sent = this.roundsSent.shift()!;
      if (sent.round === confirmed) this.leaseFromTick = sent.tick;
    }
    let k = 0;
    while (k < this.readQueue.length && this.readQueue[k]!.round <= confirmed) {
      const r = this.readQueue[k]!;
      this.answerRead(r.from, r.context, r.index);
      k++;
    }
    if (k > 0) this.readQueue.splice(0, k);
    // Reads that came while the confirmed round was in flight wait on the next one.
    if (this.readQueue.length > 0) this.maybeBcastReadRound();
  }

  private answerRead(from: NodeId, context: number, index: number): void {
    if (from === this.id) this.readStates.push({ context, index });
    else this.send({ type: 'ReadIndexResp', from: this.id, to: from, term: this._term, context, index });
  }

  /** Fast backtracking: skip the follower's whole conflicting term in one round trip. */
  private nextFromHint(m: AppendResponse): number {
    const hint = m.hint;
    if (!hint) return m.index;
    if (hint.conflictTerm === 0) return hint.conflictIndex;
    const ours = this.log.lastIndexOfTerm(hint.conflictTerm);
    return ours > 0 ? ours + 1 : hint.conflictIndex;
  }

  /**
   * §5.3, §5.4.2: commit the highest index stored on a majority, but only by counting replicas of
   * an entry from the leader's current term; earlier entries are committed indirectly with it.
   */
  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const pr of this.progress.values()) matches.push(pr.match);
    matches.sort((a, b) => b - a);
    const candidate = matches[this.quorum - 1]!;
    if (candidate <= this.log.committed || this.log.term(candidate) !== this._term) return false;
    for (let i = Math.max(this.log.committed + 1, this.leaderStartIndex + 1); i <= candidate; i++) {
      this.uncommittedBytes -= this.log.entry(i)!.data.length;
    }
    if (this.uncommittedBytes < 0) this.uncommittedBytes = 0;
    this.log.commitTo(candidate);
    if (this.readsBeforeCommit.length > 0) {
      // One heartbeat round confirms all of them (a single node needs none).
      const round = this.heartbeatRound + 1;
      for (const r of this.readsBeforeCommit) {
        if (this.quorum === 1) this.answerRead(r.from, r.context, candidate);
        else this.readQueue.push({ from: r.from, context: r.context, index: candidate, round });
      }
      this.readsBeforeCommit = [];
      if (this.quorum > 1) this.maybeBcastReadRound();
    }
    return true;
  }

  private bcastAppend(sendIfEmpty: boolean): void {
    for (const pr of this.progress.values()) {
      if (pr.id === this.id) continue;
      // An empty append here carries only the new commit index.
      if (sendIfEmpty) this.sendAppend(pr, true, true);
      this.sendAppends(pr);
    }
  }

  /**
   * The commit index moved: every follower hears of it in an append, of entries if it has new ones
   * to receive, else of the commit alone; with deferCommitBroadcast, not of the commit alone (see
   * flushCommit).
   */
  private bcastCommit(): void {
    if (!this.deferCommitBroadcast) {
      this.bcastAppend(true);
      return;
    }
    for (const pr of this.progress.values()) {
      if (pr.id !== this.id) this.sendAppends(pr);
    }
  }

  /** Whether this node was built with deferCommitBroadcast. */
  get defersCommitBroadcast(): boolean {
    return this.deferCommitBroadcast;
  }

  /**
   * Leader with deferCommitBroadcast: whether a follower that could take it has not been sent the
   * current commit index (flushCommit would send it an append). False on other nodes.
   */
  commitUnsent(): boolean {
    if (this._role !== 'leader') return false;
    for (const pr of this.progress.values()) {
      if (pr.id !== this.id && this.commitDue(pr)) return true;
    }
    return false;
  }

  /**
   * Leader: sends the current commit index to every follower that was not sent it and could take
   * it, in an append (of entries, if it has new ones to receive). A no-op elsewhere.
   */
  flushCommit(): void {
    if (this._role !== 'leader') return;
    for (const pr of this.progress.values()) {
      if (pr.id !== this.id && this.commitDue(pr)) this.sendAppend(pr, true, true);
    }
    this.checkInvariants();
  }

  /** A follower holds entries up to an index it was not told is committed, and can be sent an append. */
  private commitDue(pr: Progress): boolean {
    return pr.commitSent < Math.min(this.log.committed, pr.match) && !pr.isPaused();
  }

  /** Pipelining: keep sending while the follower's window has room and there is something to send. */
  private sendAppends(pr: Progress): void {
    while (this.sendAppend(pr, false)) {
      if (pr.state !== 'replicate') break;
    }
  }

  /**
   * Sends one append (batching up to maxAppendBytes) unless the follower is paused. With
   * sendIfEmpty, an append with no entries is sent to carry the commit index or to probe; with
   * commitOnly too (a commit moved), such an append to a follower in replicate state asks for no reply.
   */
  private sendAppend(pr: Progress, sendIfEmpty: boolean, commitOnly = false): boolean {
    if (pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    if (this.log.isCompacted(prevIndex)) {
      this.sendSnapshot(pr);
      return false;
    }
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) throw new Error(`sendAppend: no term for index ${prevIndex}`);
    const entries = this.log.slice(pr.next, this.log.lastIndex(), this.maxAppendBytes);
    if (entries.length === 0 && !sendIfEmpty) return false;
    const m: AppendRequest = {
      type: 'App',
      from: this.id,
      to: pr.id,
      term: this._term,
      prevIndex,
      prevTerm,
      entries,
      commit: this.log.committed,
      // A follower being replicated to acknowledges its entries; a commit alone needs no answer.
      ...(commitOnly && entries.length === 0 && pr.state === 'replicate' ? { noReply: true as const } : {}),
    };
    this.send(m);
    if (m.commit > pr.commitSent) pr.commitSent = m.commit;
    pr.sentAppend(prevIndex + entries.length, entries.length);
    return true;
  }

  /**
   * The follower needs entries that were compacted: ask the caller to stream it a snapshot. Appends to
   * it wait until reportSnapshot, or until it acknowledges a snapshot it installed.
   */
  private sendSnapshot(pr: Progress): void {
    pr.becomeSnapshot();
    this.send({ type: 'Snap', from: this.id, to: pr.id, term: this._term });
  }

  /** Sends one heartbeat round: it confirms leadership for reads and renews the lease. */
  private bcastHeartbeat(): void {
    const round = ++this.heartbeatRound;
    this.roundsSent.push({ round, tick: this.leaderTicks });
    for (const pr of this.progress.values()) {
      if (pr.id === this.id) continue;
      const commit = Math.min(pr.match, this.log.committed);
      this.send({ type: 'Heartbeat', from: this.id, to: pr.id, term: this._term, commit, context: this.heartbeatRound });
      if (commit > pr.commitSent) pr.commitSent = commit;
    }
  }

  private currentHardState(): HardState {
    return { term: this._term, vote: this._vote, commit: this.log.committed };
  }

  // ---- invariants -----------------------------------------------------------------------------

  /** Throws if an internal invariant is broken; cheap enough to run after every input. */
  checkInvariants(): void {
    this.log.checkInvariants();
    const fail = (what: string): never => {
      throw new Error(`raft ${this.id} invariant broken: ${what}`);
    };
    if (this.log.committed < this.highestCommitSeen) fail(`commit went back to ${this.log.committed} from ${this.highestCommitSeen}`);
    if (this._term < this.highestTermSeen) fail(`term went back to ${this._term} from ${this.highestTermSeen}`);
    this.highestCommitSeen = this.log.committed;
    this.highestTermSeen = this._term;
    if (this.prevHardState.commit > this.log.lastIndex()) fail(`persisted commit ${this.prevHardState.commit} beyond the log`);
    if ((this._role === 'leader' || this._role === 'candidate') && this._vote !== this.id) {
      fail(`${this._role} in term ${this._term} has vote ${this._vote}`);
    }
    if (this._role === 'leader') {
      if (this._leader !== this.id) fail(`leader with leader field ${this._leader}`);
      if (!this.log.isCompacted(this.leaderStartIndex) && this.log.term(this.leaderStartIndex) !== this._term) {
        fail(`leader lost its own no-op at ${this.leaderStartIndex}`);
      }
      for (const pr of this.progress.values()) {
        pr.checkInvariants();
        if (pr.commitSent > this.log.committed) fail(`commit ${pr.commitSent} sent to ${pr.id}, beyond the commit index`);
      }
      if (this.progress.get(this.id)!.match > this.log.stableIndex) fail('leader counts a non-durable entry of its own');
      for (let i = 1; i < this.readQueue.length; i++) {
        if (this.readQueue[i]!.round < this.readQueue[i - 1]!.round) fail('read queue out of round order');
      }
    } else if (this.progress.size > 0 || this.readQueue.length > 0) {
      fail(`${this._role} keeps replication progress`);
    }
  }
}

/**
 * The longest safe lease, in the leader's ticks, when clock rates may differ by up to `maxClockDrift`
 * (0.1: any node's clock may run up to 10% fast or slow). A follower that receives the confirming
 * heartbeat refuses votes for electionTimeoutTicks (E) of its ticks: at least E - 1 of its tick
 * periods, since its first tick may come at once. A heartbeat sent at the leader's tick s leaves no
 * earlier than that tick, and the lease holds until tick s + L: L of the leader's periods. With
 * periods within (1 +- drift) of nominal, L * (1 + drift) <= (E - 1) * (1 - drift).
 */
export function leaseDurationTicks(electionTimeoutTicks: number, maxClockDrift: number): number {
  if (!(maxClockDrift >= 0 && maxClockDrift < 1)) throw new RangeError(`maxClockDrift must be in [0, 1), got ${maxClockDrift}`);
  return Math.max(0, Math.floor(((electionTimeoutTicks - 1) * (1 - maxClockDrift)) / (1 + maxClockDrift)));
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function validateConfig(c: RaftConfig): void {
  const bad = (what: string): never => {
    throw new RangeError(`raft config: ${what}`);
  };
  if (!Number.isSafeInteger(c.id) || c.id <= 0) bad(`id must be a positive integer, got ${c.id}`);
  if (!c.peers.includes(c.id)) bad(`peers must include this node's id ${c.id}`);
  if (new Set(c.peers).size !== c.peers.length) bad('peers contain a duplicate id');
  for (const p of c.peers) if (!Number.isSafeInteger(p) || p <= 0) bad(`peer id must be a positive integer, got ${p}`);
  if (!Number.isInteger(c.electionTimeoutTicks) || c.electionTimeoutTicks < 2) bad('electionTimeoutTicks must be an integer >= 2');
  if (!Number.isInteger(c.heartbeatIntervalTicks) || c.heartbeatIntervalTicks < 1 || c.heartbeatIntervalTicks >= c.electionTimeoutTicks) {
    bad('heartbeatIntervalTicks must be an integer in [1, electionTimeoutTicks)');
  }
  for (const [name, v] of [
    ['maxAppendBytes', c.maxAppendBytes],
    ['maxInflightMessages', c.maxInflightMessages],
    ['maxUncommittedBytes', c.maxUncommittedBytes],
    ['maxPendingReadRequests', c.maxPendingReadRequests],
  ] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) bad(`${name} must be a positive integer, got ${v}`);
  }
  if (c.leaseTicks !== undefined) {
    if (!Number.isInteger(c.leaseTicks) || c.leaseTicks < 0 || c.leaseTicks >= c.electionTimeoutTicks) {
      bad('leaseTicks must be an integer in [0, electionTimeoutTicks)');
    }
    if (c.leaseTicks > 0 && c.checkQuorum === false) bad('leaseTicks needs checkQuorum (leases rely on it)');
  }
  const init = c.initial;
  if (init) {
    const snap = init.snapshot ?? { index: 0, term: 0 };
    init.entries.forEach((e, k) => {
      if (e.index !== snap.index + k + 1) bad(`initial log is not dense at position ${k + 1} (index ${e.index}, start ${snap.index})`);
    });
    const last = snap.index + init.entries.length;
    const lastTerm = init.entries[init.entries.length - 1]?.term ?? snap.term;
    if (lastTerm > init.hardState.term) bad(`initial term ${init.hardState.term} is below the log's last term ${lastTerm}`);
    if (init.hardState.commit > last) bad(`initial commit ${init.hardState.commit} beyond last index ${last}`);
    if (init.applied > init.hardState.commit) bad(`initial applied ${init.applied} beyond commit ${init.hardState.commit}`);
    if (init.applied < snap.index) bad(`initial applied ${init.applied} is below the snapshot index ${snap.index}`);
  }
}
