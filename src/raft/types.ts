// Types shared by the Raft core and its callers. Everything here is plain data: the core never
// holds a reference to anything that does I/O.

/**
 * A snapshot's position: the state machine's state once every entry up to `index` is applied, and
 * the term of the entry at `index`. The log after a snapshot continues from index + 1.
 */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
}

/** A voting member's id. Ids are positive integers; 0 means "none". */
export type NodeId = number;
export const NONE: NodeId = 0;

export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader';

export type EntryType = 'normal' | 'noop';

/**
 * One log entry. Invariant: within a log, index is dense and increasing, and term never decreases
 * along the log.
 */
export interface Entry {
  readonly index: number;
  readonly term: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** What must be durable before votes or append acknowledgements leave the node. */
export interface HardState {
  readonly term: number;
  /** Whom this node voted for in `term`, or NONE. */
  readonly vote: NodeId;
  /** Highest index known committed. Invariant: commit <= last index of the persisted log. */
  readonly commit: number;
}

export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
}

/** A hint carried by a rejected append, so the leader can skip a whole term per round trip. */
export interface RejectHint {
  /**
   * The term of the follower's entry at the rejected previous index, or 0 when the follower's log is
   * shorter than that index.
   */
  readonly conflictTerm: number;
  /**
   * With conflictTerm > 0: the first index the follower holds of conflictTerm.
   * With conflictTerm = 0: the follower's last index + 1.
   */
  readonly conflictIndex: number;
}

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  /** The sender's term; for PreVote and a granted PreVoteResp, the term the campaign would use. */
  readonly term: number;
}

/** Asks for a (pre-)vote. */
export interface VoteRequest extends MessageBase {
  readonly type: 'PreVote' | 'Vote';
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
}

export interface VoteResponse extends MessageBase {
  readonly type: 'PreVoteResp' | 'VoteResp';
  readonly granted: boolean;
}

/** AppendEntries (§5.3). An append with no entries still carries the commit index. */
export interface AppendRequest extends MessageBase {
  readonly type: 'App';
  readonly prevIndex: number;
  readonly prevTerm: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
  /**
   * Set by a leader on an append with no entries that only carries a new commit index to a follower
   * it is replicating to (not probing): a success is not acknowledged. The acknowledgements of the
   * entries already report the follower's match, and heartbeats keep it counted as active; a rejection
   * is still answered, so a lost append is found as before. One message per write per follower less.
   * Never set on an append with entries (the codec refuses one, and a follower acknowledges it anyway).
   */
  readonly noReply?: true;
}

export interface AppendResponse extends MessageBase {
  readonly type: 'AppResp';
  /** On success: the last index known to match the leader. On reject: the rejected prevIndex. */
  readonly index: number;
  readonly reject: boolean;
  /** Present when reject is true. */
  readonly hint?: RejectHint;
}

/** Keeps followers from campaigning and tells them the commit index (capped at their match). */
export interface HeartbeatRequest extends MessageBase {
  readonly type: 'Heartbeat';
  readonly commit: number;
  /** The leader's latest ReadIndex round when it sent this (0: none); echoed in the response. */
  readonly context: number;
}

export interface HeartbeatResponse extends MessageBase {
  readonly type: 'HeartbeatResp';
  readonly context: number;
}

/** A follower asks the leader for a read index (thesis §6.4) on behalf of its own reader. */
export interface ReadIndexRequest extends MessageBase {
  readonly type: 'ReadIndex';
  /** The follower's id for the request, returned in the response. */
  readonly context: number;
}

export interface ReadIndexResponse extends MessageBase {
  readonly type: 'ReadIndexResp';
  readonly context: number;
  /** The commit index the leader noted, confirmed by a quorum; serve once applied up to it. */
  readonly index: number;
}

/**
 * InstallSnapshot (§7). In the leader's Ready it is a request to the caller: `snapshot` is absent,
 * and the caller streams its own state machine's snapshot (at its applied index) to `to`, then
 * reports the outcome with `reportSnapshot`. The follower's caller steps it, with `snapshot` set,
 * once the whole snapshot is received and staged; the follower answers with an AppResp.
 */
export interface SnapshotRequest extends MessageBase {
  readonly type: 'Snap';
  readonly snapshot?: SnapshotMeta;
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | HeartbeatRequest
  | HeartbeatResponse
  | ReadIndexRequest
  | ReadIndexResponse
  | SnapshotRequest;

export type MessageType = Message['type'];

/** A confirmed read: a reader with `context` may answer once the applied index reaches `index`. */
export interface ReadState {
  readonly context: number;
  readonly index: number;
}

/**
 * A batch of work for the caller. The persistence contract, in order:
 *
 *  1. `messages` may be sent at once, before or while the batch is persisted. They are the leader's
 *     appends and heartbeats: they depend only on state that was durable before this batch (the
 *     leader's term was persisted before it asked for votes), and the leader counts its own log toward
 *     a commit only once `advance` says it is durable.
 *  2. `hardState` (if present) and `entries` (if any) are written in ONE atomic, synced write.
 *     Writing `entries` whose first index is i replaces every persisted entry at index >= i.
 *  3. Only then may `messagesAfterPersist` be sent: votes, vote requests, and append/heartbeat
 *     acknowledgements all promise something about the durable state.
 *  4. `committedEntries` are applied in order; the state machine stores its applied index with the
 *     data it applies, atomically.
 *  5. `advance(ready)` tells the core all of the above is done.
 *
 * `ready()` may not be called again before `advance()`; `step`, `tick` and `propose` may.
 */
export interface Ready {
  readonly softState?: SoftState;
  /**
   * A snapshot from the leader to install (a follower only): the caller installs the data it staged
   * for it in the same atomic write as `hardState` and `entries`, dropping every persisted entry
   * (the log continues from snapshot.index + 1), before it sends `messagesAfterPersist`.
   */
  readonly snapshot?: SnapshotMeta;
  readonly hardState?: HardState;
  readonly entries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly messagesAfterPersist: readonly Message[];
  readonly committedEntries: readonly Entry[];
  /** ReadIndex requests of this node that were confirmed; they depend on nothing being persisted. */
  readonly readStates: readonly ReadState[];
}

/** A source of randomness; the core gets all of its randomness from here. */
export interface Rng {
  /** A uniformly distributed integer in [0, n). */
  int(n: number): number;
}

/** What a node had durably stored when it (re)starts. */
export interface InitialState {
  readonly hardState: HardState;
  /**
   * The log's start: entries up to snapshot.index were compacted, and the state machine's applied
   * index is at least snapshot.index. Absent: {0, 0}.
   */
  readonly snapshot?: SnapshotMeta;
  /** The persisted log after the snapshot point, dense, from snapshot.index + 1. */
  readonly entries: readonly Entry[];
  /** The state machine's applied index. Invariant: applied <= hardState.commit. */
  readonly applied: number;
}

export interface RaftConfig {
  readonly id: NodeId;
  /** Every voting member, this node included. */
  readonly peers: readonly NodeId[];
  /**
   * Minimum election timeout in ticks. A follower's actual timeout is drawn from
   * [electionTimeoutTicks, 2 * electionTimeoutTicks) each time it is reset.
   */
  readonly electionTimeoutTicks: number;
  /** How often a leader sends heartbeats, in ticks. Must be < electionTimeoutTicks. */
  readonly heartbeatIntervalTicks: number;
  /** Pre-vote (thesis §9.6). Default true. */
  readonly preVote?: boolean;
  /** Check-quorum and vote refusal while a leader is known to be live (thesis §6.2). Default true. */
  readonly checkQuorum?: boolean;
  /** Limit: bytes of entry data in one append message (at least one entry is always sent). */
  readonly maxAppendBytes?: number;
  /** Limit: append messages in flight to one follower before the leader waits for replies. */
  readonly maxInflightMessages?: number;
  /** Limit: bytes of proposed but uncommitted entry data a leader accepts. */
  readonly maxUncommittedBytes?: number;
  /** Limit: ReadIndex requests a leader holds unanswered; past it, new ones are dropped. */
  readonly maxPendingReadRequests?: number;
  /**
   * Leader lease length in ticks (thesis §6.4.1); 0 disables lease reads. Default:
   * leaseDurationTicks(electionTimeoutTicks, DEFAULT_MAX_CLOCK_DRIFT). Must be below
   * electionTimeoutTicks, and needs checkQuorum.
   */
  readonly leaseTicks?: number;
  /**
   * When a leader's commit index moves and a follower has no new entries to receive, leave out the
   * append that would carry only the new commit index: it rides on the follower's next append or
   * heartbeat, or goes when the caller calls flushCommit(), which it should do within a bound of its
   * choosing (commitUnsent() says when one is due). Followers then learn commits a little later while
   * writes pause, and need one message fewer per write while they do not. Default false: sent at once.
   */
  readonly deferCommitBroadcast?: boolean;
  readonly rng: Rng;
  /** Durable state to start from; omitted for a brand-new node. */
  readonly initial?: InitialState;
}

export const DEFAULT_MAX_APPEND_BYTES = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT_MESSAGES = 256;
export const DEFAULT_MAX_UNCOMMITTED_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_PENDING_READ_REQUESTS = 4096;
/** The assumed bound on clock-rate difference for leader leases: 10% fast or slow. */
export const DEFAULT_MAX_CLOCK_DRIFT = 0.1;
