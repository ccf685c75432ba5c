// Safety checks of the simulator, run after every event. Each check is incremental: it looks at what
// the event changed (new entries written, new commits, new applies, a new leader), never at every
// log from scratch, so it stays cheap enough to run tens of thousands of times per seed.
//
// The properties are those of the Raft paper, Figure 3 (§5.2, §5.3, §5.4):
//  - election safety: at most one leader per term (and, underneath it, one vote per node per term);
//  - leader append-only: a leader never overwrites or deletes entries of its own log;
//  - log matching: two entries with the same index and term hold the same data and the same
//    predecessor term, so the logs agree up to there (checked for every write and every append sent);
//  - leader completeness: a leader of term T holds every entry committed before T;
//  - state machine safety: no two nodes apply different entries at one index.
// Plus the caller's side of the persistence contract in types.ts, monotonic term, commit and
// applied index, and linearizable reads: a read index (thesis §6.4) is at least every index seen
// committed before the read was asked for.

import type { AppendRequest, Entry, HardState, Message, NodeId, ReadState, Role, SnapshotMeta } from '../../src/raft/types.js';
import { NONE } from '../../src/raft/types.js';
import type { NodeStorage } from './storage.js';

export type CheckName =
  | 'election-safety'
  | 'vote-once'
  | 'log-matching'
  | 'leader-append-only'
  | 'leader-completeness'
  | 'state-machine-safety'
  | 'committed-overwrite'
  | 'read-linearizability'
  | 'monotonic'
  | 'persistence-contract'
  | 'protocol'
  | 'invariant'
  | 'exception'
  | 'stale-leader'
  | 'liveness';

export interface ViolationWhere {
  readonly nodes?: readonly NodeId[];
  readonly index?: number;
  readonly term?: number;
}

/** A broken property. The message starts with the check's name and says which node(s), index, term. */
export class SafetyViolation extends Error {
  readonly check: CheckName;
  readonly nodes: readonly NodeId[];
  readonly index: number | undefined;
  readonly term: number | undefined;

  constructor(check: CheckName, detail: string, where: ViolationWhere = {}) {
    super(`${check}: ${detail}`);
    this.name = 'SafetyViolation';
    this.check = check;
    this.nodes = where.nodes ?? [];
    this.index = where.index;
    this.term = where.term;
  }
}

/** What the checker reads from a live node. `Raft` satisfies it; tests can pass a hand-made one. */
export interface NodeView {
  readonly id: NodeId;
  readonly term: number;
  readonly vote: NodeId;
  readonly role: Role;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly lastIndex: number;
  /** The log's start: entries up to its index are covered by the node's snapshot, not held. */
  readonly snapshot: SnapshotMeta;
  termAt(index: number): number | undefined;
  entryAt(index: number): Entry | undefined;
}

/** The first entry seen at one (index, term), with the term of its predecessor. */
interface LogRecord {
  readonly entry: Entry;
  readonly prevTerm: number;
  readonly node: NodeId;
}

interface CommitRecord {
  readonly entry: Entry;
  /** The term of the node that first saw this index committed, when it saw it. */
  readonly observedTerm: number;
  readonly node: NodeId;
}

interface NodeTrack {
  term: number;
  commit: number;
  applied: number;
  /** The term in which this node was last checked, as a new leader, for leader completeness. */
  leaderCheckedTerm: number;
}

export type SendPhase = 'before-persist' | 'after-persist';

export class SafetyChecker {
  private readonly peers: ReadonlySet<NodeId>;
  /** term -> the node seen as leader in that term. */
  private readonly leaderByTerm = new Map<number, NodeId>();
  /** index -> the records of every term seen at that index (rarely more than a few). */
  private readonly logRegistry: (LogRecord[] | undefined)[] = [];
  /** index -> the committed entry. Dense from 1 to committedMax: commits are observed in order. */
  private readonly committed: (CommitRecord | undefined)[] = [];
  private committedMaxIndex = 0;
  /** index -> the first entry applied there by any node. */
  private readonly applied: ({ entry: Entry; node: NodeId } | undefined)[] = [];
  private readonly tracks = new Map<NodeId, NodeTrack>();
  /** The live nodes; undefined while a node is down. */
  private readonly views = new Map<NodeId, NodeView | undefined>();
  private maxTermSeen = 0;
  private truncationCount = 0;
  /** Read requests by context: the asking node, and the highest index seen committed when it asked. */
  private readonly reads = new Map<number, { readonly node: NodeId; readonly minIndex: number }>();

  constructor(peers: readonly NodeId[]) {
    this.peers = new Set(peers);
    for (const id of peers) this.tracks.set(id, { term: 0, commit: 0, applied: 0, leaderCheckedTerm: 0 });
  }

  get committedMax(): number {
    return this.committedMaxIndex;
  }

  get leadersElected(): number {
    return this.leaderByTerm.size;
  }

  get maxTerm(): number {
    return this.maxTermSeen;
  }

  /** Writes that replaced or removed persisted entries (a follower giving up a conflicting suffix). */
  get truncations(): number {
    return this.truncationCount;
  }

  /** The first entry any node applied at `index`. */
  appliedAt(index: number): Entry | undefined {
    return this.applied[index]?.entry;
  }

  committedAt(index: number): Entry | undefined {
    return this.committed[index]?.entry;
  }

  // ---- node lifecycle --------------------------------------------------------------------------

  /** A node (re)started from `storage`: it must resume from exactly what was persisted. */
  onStart(node: NodeId, view: NodeView, storage: NodeStorage): void {
    const hs = storage.hardState;
    const where = { nodes: [node] };
    if (view.term !== hs.term || view.vote !== hs.vote) {
      throw new SafetyViolation(
        view.term < hs.term ? 'monotonic' : 'persistence-contract',
        `node ${node} restarted at term ${view.term} vote ${view.vote}, persisted term ${hs.term} vote ${hs.vote}`,
        where,
      );
    }
    if (view.commitIndex < hs.commit) {
      throw new SafetyViolation('monotonic', `node ${node} restarted with commit ${view.commitIndex} < persisted commit ${hs.commit}`, where);
    }
    if (view.appliedIndex !== storage.applied) {
      throw new SafetyViolation('monotonic', `node ${node} restarted with applied ${view.appliedIndex}, state machine has ${storage.applied}`, where);
    }
    if (view.lastIndex !== storage.lastIndex) {
      throw new SafetyViolation('persistence-contract', `node ${node} restarted with last index ${view.lastIndex}, persisted log has ${storage.lastIndex}`, where);
    }
    const track = this.track(node);
    track.term = view.term;
    // Commits the node made (and persisted) in an event it crashed in were never observed: observe
    // them at the next event, from the last commit observed before the crash.
    track.commit = Math.min(track.commit, view.commitIndex);
    track.applied = view.appliedIndex;
    track.leaderCheckedTerm = 0;
    this.views.set(node, view);
  }

  onCrash(node: NodeId): void {
    this.views.set(node, undefined);
  }

  // ---- after every event -----------------------------------------------------------------------

  /** Observes a live node after an event touched it. */
  afterEvent(node: NodeId, view: NodeView): void {
    const track = this.track(node);
    const term = view.term;
    if (term < track.term) {
      throw new SafetyViolation('monotonic', `node ${node} term went back from ${track.term} to ${term}`, { nodes: [node], term });
    }
    track.term = term;
    if (term > this.maxTermSeen) this.maxTermSeen = term;

    const commit = view.commitIndex;
    if (commit < track.commit) {
      throw new SafetyViolation('monotonic', `node ${node} commit index went back from ${track.commit} to ${commit}`, { nodes: [node], index: commit });
    }
    for (let i = track.commit + 1; i <= commit; i++) {
      if (i <= view.snapshot.index) {
        // Covered by a snapshot this node installed; onInstallSnapshot checked it against the commits.
        if (i > this.committedMaxIndex) {
          throw new SafetyViolation('state-machine-safety', `node ${node} has a snapshot covering index ${i}, which no node was seen to commit`, { nodes: [node], index: i });
        }
        continue;
      }
      const e = view.entryAt(i);
      if (e === undefined) {
        throw new SafetyViolation('invariant', `node ${node} has commit index ${commit} but no entry at ${i}`, { nodes: [node], index: i });
      }
      this.onCommitObserved(node, term, e);
    }
    track.commit = commit;

    const applied = view.appliedIndex;
    if (applied < track.applied) {
      throw new SafetyViolation('monotonic', `node ${node} applied index went back from ${track.applied} to ${applied}`, { nodes: [node], index: applied });
    }
    track.applied = applied;

    if (view.role === 'leader') {
      this.onLeader(node, term);
      if (track.leaderCheckedTerm !== term) {
        this.checkLeaderCompleteness(node, view);
        track.leaderCheckedTerm = term;
      }
    }
  }

  /** Election safety (§5.2): at most one leader per term. */
  onLeader(node: NodeId, term: number): void {
    const known = this.leaderByTerm.get(term);
    if (known === undefined) this.leaderByTerm.set(term, node);
    else if (known !== node) {
      throw new SafetyViolation('election-safety', `two leaders in term ${term}: nodes ${known} and ${node}`, { nodes: [known, node], term });
    }
  }

  // ---- reads -----------------------------------------------------------------------------------

  /** `node` is asked for a read index with `context` (unique per run). */
  onReadRequest(node: NodeId, context: number): void {
    this.reads.set(context, { node, minIndex: this.committedMaxIndex });
  }

  /**
   * A read index came back in `node`'s Ready. Linearizability: the read will see the state machine
   * at an applied index >= state.index, so state.index must cover every write committed before the
   * read began.
   */
  onReadState(node: NodeId, state: ReadState): void {
    const req = this.reads.get(state.context);
    if (req === undefined || req.node !== node) {
      throw new SafetyViolation('protocol', `node ${node} got a read state for context ${state.context} it never asked for`, { nodes: [node] });
    }
    if (state.index < req.minIndex) {
      throw new SafetyViolation(
        'read-linearizability',
        `node ${node} got read index ${state.index} for context ${state.context}, but index ${req.minIndex} was already committed when the read began`,
        { nodes: [node], index: state.index },
      );
    }
  }

  /**
   * A leader served a lease read at `index` without a round trip (thesis §6.4.1): the index must
   * cover every write committed anywhere so far, or the read is stale.
   */
  onLeaseRead(node: NodeId, index: number): void {
    if (index < this.committedMaxIndex) {
      throw new SafetyViolation(
        'read-linearizability',
        `node ${node} served a lease read at index ${index}, but index ${this.committedMaxIndex} was already committed (a newer leader exists)`,
        { nodes: [node], index },
      );
    }
  }

  // ---- the Ready cycle -------------------------------------------------------------------------

  /** A message leaves `node`, before or after this batch was persisted (Ready contract 1 and 3). */
  onSend(node: NodeId, m: Message, phase: SendPhase, storage: NodeStorage): void {
    if (m.from !== node || m.to === node || !this.peers.has(m.to)) {
      throw new SafetyViolation('protocol', `node ${node} sent ${m.type} from ${m.from} to ${m.to}`, { nodes: [node] });
    }
    const hs = storage.hardState;
    const where = { nodes: [node, m.to], term: m.term };
    if (phase === 'before-persist') {
      if (m.type !== 'App' && m.type !== 'Heartbeat' && m.type !== 'Snap') {
        throw new SafetyViolation('persistence-contract', `node ${node} sent ${m.type} before persisting its batch`, where);
      }
    }
    switch (m.type) {
      case 'App':
      case 'Heartbeat':
        // The leader's term was persisted before it asked for votes.
        if (m.term > hs.term) {
          throw new SafetyViolation('persistence-contract', `node ${node} sent ${m.type} at term ${m.term}, persisted term is ${hs.term}`, where);
        }
        if (m.type === 'App') this.checkAppend(node, m);
        break;
      case 'Vote':
        if (m.term !== hs.term || hs.vote !== node) {
          throw new SafetyViolation('persistence-contract', `node ${node} asked for votes at term ${m.term} with persisted term ${hs.term} vote ${hs.vote}`, where);
        }
        break;
      case 'VoteResp':
        if (m.granted && (m.term !== hs.term || hs.vote !== m.to)) {
          throw new SafetyViolation('persistence-contract', `node ${node} granted its vote to ${m.to} at term ${m.term} with persisted term ${hs.term} vote ${hs.vote}`, where);
        }
        if (m.term > hs.term) {
          throw new SafetyViolation('persistence-contract', `node ${node} sent VoteResp at term ${m.term}, persisted term is ${hs.term}`, where);
        }
        break;
      case 'AppResp':
        if (m.term > hs.term) {
          throw new SafetyViolation('persistence-contract', `node ${node} sent AppResp at term ${m.term}, persisted term is ${hs.term}`, where);
        }
        if (!m.reject && m.index > storage.lastIndex) {
          throw new SafetyViolation('persistence-contract', `node ${node} acknowledged index ${m.index} but persisted only up to ${storage.lastIndex}`, { ...where, index: m.index });
        }
        break;
      case 'HeartbeatResp':
        if (m.term > hs.term) {
          throw new SafetyViolation('persistence-contract', `node ${node} sent HeartbeatResp at term ${m.term}, persisted term is ${hs.term}`, where);
        }
        break;
      case 'ReadIndex':
      case 'ReadIndexResp':
        if (m.term > hs.term) {
          throw new SafetyViolation('persistence-contract', `node ${node} sent ${m.type} at term ${m.term}, persisted term is ${hs.term}`, where);
        }
        break;
      case 'Snap':
        if (m.term > hs.term) {
          throw new SafetyViolation('persistence-contract', `node ${node} asked for a snapshot transfer at term ${m.term}, persisted term is ${hs.term}`, where);
        }
        break;
      case 'PreVote':
      case 'PreVoteResp':
        // A pre-vote promises nothing durable; its term is the one a campaign would use.
        break;
    }
  }

  /**
   * A follower is about to install a snapshot received from a leader, with the batch's hard state and
   * entries, in one atomic write (Ready contract 2). The snapshot must be exactly the committed
   * entries up to its index; the entries must continue it.
   */
  onInstallSnapshot(
    node: NodeId,
    storage: NodeStorage,
    meta: SnapshotMeta,
    data: readonly Entry[],
    hs: HardState | undefined,
    entries: readonly Entry[],
    role: Role,
  ): void {
    const where = { nodes: [node], index: meta.index, term: meta.term };
    if (role === 'leader') throw new SafetyViolation('protocol', `leader ${node} installs a snapshot at ${meta.index}`, where);
    if (data.length !== meta.index || (data[meta.index - 1]?.term ?? 0) !== meta.term) {
      throw new SafetyViolation('protocol', `node ${node} installs a snapshot labelled ${meta.index}/${meta.term} holding ${data.length} entries`, where);
    }
    if (meta.index <= storage.hardState.commit || meta.index <= storage.applied) {
      throw new SafetyViolation('monotonic', `node ${node} installs a snapshot at ${meta.index}, at or below its persisted commit ${storage.hardState.commit} / applied ${storage.applied}`, where);
    }
    // The snapshot must hold what the node already applied, and the committed entries after that.
    for (let i = 1; i <= meta.index; i++) {
      const e = data[i - 1]!;
      const c = this.committed[i];
      if (c === undefined) {
        throw new SafetyViolation('state-machine-safety', `node ${node} installs a snapshot holding ${describe(e)}, which no node was seen to commit`, { ...where, index: i });
      }
      if (!sameEntry(c.entry, e)) {
        throw new SafetyViolation('state-machine-safety', `node ${node} installs a snapshot with ${describe(e)} where ${describe(c.entry)} was committed`, { ...where, index: i });
      }
      if (i <= storage.applied && !sameEntry(storage.appliedAt(i)!, e)) {
        throw new SafetyViolation('state-machine-safety', `node ${node} installs a snapshot with ${describe(e)} where it had applied ${describe(storage.appliedAt(i)!)}`, { ...where, index: i });
      }
      if (this.applied[i] === undefined) this.applied[i] = { entry: e, node };
    }
    if (hs !== undefined) {
      if (hs.term < storage.hardState.term) throw new SafetyViolation('monotonic', `node ${node} persisted term ${hs.term} after ${storage.hardState.term}`, where);
      if (hs.term === storage.hardState.term && storage.hardState.vote !== NONE && hs.vote !== storage.hardState.vote) {
        throw new SafetyViolation('vote-once', `node ${node} changed its vote in term ${hs.term} from ${storage.hardState.vote} to ${hs.vote}`, where);
      }
    }
    const commit = hs?.commit ?? storage.hardState.commit;
    const last = entries.length > 0 ? entries[entries.length - 1]!.index : meta.index;
    if (commit < meta.index || commit > last) {
      throw new SafetyViolation('persistence-contract', `node ${node} installs a snapshot at ${meta.index} with commit ${commit} (log ends at ${last})`, where);
    }
    if (entries.length > 0) this.checkChain(node, meta.index, meta.term, entries, 'persisted after a snapshot');
    if (storage.lastIndex > meta.index) this.truncationCount++;
  }

  /** A node compacts its log up to `index`: only entries its durable state machine has applied. */
  onCompact(node: NodeId, storage: NodeStorage, index: number): void {
    if (index > storage.applied) {
      throw new SafetyViolation('persistence-contract', `node ${node} compacts its log to ${index}, past its durable applied index ${storage.applied}`, { nodes: [node], index });
    }
  }

  /**
   * The batch's hard state and entries are about to be written, atomically (Ready contract 2).
   * `role` is the node's role when it produced the batch.
   */
  onPersist(node: NodeId, storage: NodeStorage, hs: HardState | undefined, entries: readonly Entry[], role: Role): void {
    const old = storage.hardState;
    if (hs !== undefined) {
      const where = { nodes: [node], term: hs.term };
      if (hs.term < old.term) {
        throw new SafetyViolation('monotonic', `node ${node} persisted term ${hs.term} after ${old.term}`, where);
      }
      if (hs.term === old.term && old.vote !== NONE && hs.vote !== old.vote) {
        throw new SafetyViolation('vote-once', `node ${node} changed its vote in term ${hs.term} from ${old.vote} to ${hs.vote}`, where);
      }
      if (hs.commit < old.commit) {
        throw new SafetyViolation('monotonic', `node ${node} persisted commit ${hs.commit} after ${old.commit}`, { ...where, index: hs.commit });
      }
    }
    const oldLast = storage.lastIndex;
    let newLast = oldLast;
    const first = entries[0];
    if (first !== undefined) {
      const last = entries[entries.length - 1]!;
      newLast = last.index;
      if (first.index < 1 || first.index > oldLast + 1) {
        throw new SafetyViolation('persistence-contract', `node ${node} writes entries from ${first.index} but its persisted log ends at ${oldLast}`, { nodes: [node], index: first.index });
      }
      // The first persisted entry this write changes or removes, if any.
      let diverge = 0;
      for (let i = first.index; i <= oldLast; i++) {
        const replaced = storage.entryAt(i)!;
        const replacement = i <= newLast ? entries[i - first.index]! : undefined;
        if (replacement === undefined || !sameEntry(replacement, replaced)) {
          diverge = i;
          break;
        }
      }
      if (diverge > 0) {
        this.truncationCount++;
        const where = { nodes: [node], index: diverge, term: storage.termAt(diverge)! };
        if (role === 'leader') {
          throw new SafetyViolation('leader-append-only', `leader ${node} overwrites its persisted entry ${diverge}/${where.term} (writes ${first.index}..${newLast}, had ${oldLast})`, where);
        }
        if (diverge <= old.commit) {
          throw new SafetyViolation('committed-overwrite', `node ${node} overwrites entry ${diverge}/${where.term} below its persisted commit ${old.commit}`, where);
        }
        const c = this.committed[diverge];
        if (c !== undefined && sameEntry(c.entry, storage.entryAt(diverge)!)) {
          throw new SafetyViolation('committed-overwrite', `node ${node} overwrites committed entry ${diverge}/${where.term} (first committed as seen by node ${c.node})`, where);
        }
      }
      this.checkChain(node, first.index - 1, storage.termAt(first.index - 1)!, entries, 'persisted');
    }
    const newCommit = hs?.commit ?? old.commit;
    if (newCommit > newLast) {
      throw new SafetyViolation('persistence-contract', `node ${node} persists commit ${newCommit} beyond its persisted log (last ${newLast})`, { nodes: [node], index: newCommit });
    }
  }

  /** The batch's committed entries are about to be applied (Ready contract 4), after persisting. */
  onApply(node: NodeId, storage: NodeStorage, entries: readonly Entry[]): void {
    let expected = storage.applied + 1;
    for (const e of entries) {
      const where = { nodes: [node], index: e.index, term: e.term };
      if (e.index !== expected) {
        throw new SafetyViolation('persistence-contract', `node ${node} applies index ${e.index}, expected ${expected}`, where);
      }
      if (e.index > storage.hardState.commit) {
        throw new SafetyViolation('persistence-contract', `node ${node} applies index ${e.index} beyond its persisted commit ${storage.hardState.commit}`, where);
      }
      const stored = storage.entryAt(e.index);
      if (stored === undefined || !sameEntry(stored, e)) {
        throw new SafetyViolation('persistence-contract', `node ${node} applies ${describe(e)}, its persisted log has ${stored ? describe(stored) : 'nothing'} there`, where);
      }
      const first = this.applied[e.index];
      if (first === undefined) {
        this.applied[e.index] = { entry: e, node };
      } else if (!sameEntry(first.entry, e)) {
        throw new SafetyViolation(
          'state-machine-safety',
          `node ${node} applies ${describe(e)} at index ${e.index}, node ${first.node} applied ${describe(first.entry)}`,
          { ...where, nodes: [first.node, node] },
        );
      }
      const c = this.committed[e.index];
      if (c !== undefined && !sameEntry(c.entry, e)) {
        throw new SafetyViolation(
          'state-machine-safety',
          `node ${node} applies ${describe(e)} at index ${e.index}, but ${describe(c.entry)} was committed there (seen by node ${c.node})`,
          { ...where, nodes: [c.node, node] },
        );
      }
      expected++;
    }
  }

  // ---- internals -------------------------------------------------------------------------------

  private track(node: NodeId): NodeTrack {
    const t = this.tracks.get(node);
    if (t === undefined) throw new SafetyViolation('protocol', `unknown node ${node}`, { nodes: [node] });
    return t;
  }

  /** Log matching over the entries an append carries, chained from its (prevIndex, prevTerm). */
  private checkAppend(node: NodeId, m: AppendRequest): void {
    if (m.noReply === true && m.entries.length > 0) {
      throw new SafetyViolation('persistence-contract', `node ${node} sent App to ${m.to} with ${m.entries.length} entries and noReply: they would never be acknowledged`, { nodes: [node] });
    }
    if (m.entries.length > 0) this.checkChain(node, m.prevIndex, m.prevTerm, m.entries, `App to ${m.to}`);
  }

  /**
   * Registers a run of entries that follows (prevIndex, prevTerm) in some node's log, and checks it
   * against every entry seen before at the same index and term. By induction on the index this gives
   * the whole Log Matching property: equal (index, term) means equal entry and equal predecessor term.
   */
  private checkChain(node: NodeId, prevIndex: number, prevTerm: number, entries: readonly Entry[], what: string): void {
    let index = prevIndex;
    let term = prevTerm;
    for (const e of entries) {
      if (e.index !== index + 1 || e.term < term) {
        throw new SafetyViolation(
          'log-matching',
          `node ${node} ${what}: ${describe(e)} follows ${index}/${term} (log must be dense with non-decreasing terms)`,
          { nodes: [node], index: e.index, term: e.term },
        );
      }
      this.register(node, e, term);
      index = e.index;
      term = e.term;
    }
  }

  private register(node: NodeId, e: Entry, prevTerm: number): void {
    let records = this.logRegistry[e.index];
    if (records === undefined) {
      records = [];
      this.logRegistry[e.index] = records;
    }
    for (const r of records) {
      if (r.entry.term !== e.term) continue;
      if (!sameEntry(r.entry, e) || r.prevTerm !== prevTerm) {
        throw new SafetyViolation(
          'log-matching',
          `node ${node} has ${describe(e)} after term ${prevTerm}; node ${r.node} had ${describe(r.entry)} after term ${r.prevTerm}`,
          { nodes: [r.node, node], index: e.index, term: e.term },
        );
      }
      return;
    }
    records.push({ entry: e, prevTerm, node });
  }

  private onCommitObserved(node: NodeId, term: number, e: Entry): void {
    const known = this.committed[e.index];
    if (known !== undefined) {
      if (!sameEntry(known.entry, e)) {
        throw new SafetyViolation(
          'state-machine-safety',
          `node ${node} commits ${describe(e)} at index ${e.index}, node ${known.node} committed ${describe(known.entry)}`,
          { nodes: [known.node, node], index: e.index, term: e.term },
        );
      }
      return;
    }
    if (e.index !== this.committedMaxIndex + 1) {
      throw new SafetyViolation('protocol', `checker: commit of ${e.index} observed after ${this.committedMaxIndex}`, { nodes: [node], index: e.index });
    }
    this.committed[e.index] = { entry: e, observedTerm: term, node };
    this.committedMaxIndex = e.index;
    // A leader elected after this commit must already hold the entry.
    for (const [id, v] of this.views) {
      if (v !== undefined && v.role === 'leader' && v.term > term && e.index >= v.snapshot.index && v.termAt(e.index) !== e.term) {
        throw new SafetyViolation(
          'leader-completeness',
          `leader ${id} of term ${v.term} lacks ${describe(e)}, committed as seen by node ${node} at term ${term}`,
          { nodes: [id, node], index: e.index, term: v.term },
        );
      }
    }
  }

  /** §5.4: a new leader of term T holds every entry whose commit was seen at a term < T. */
  private checkLeaderCompleteness(node: NodeId, view: NodeView): void {
    // Below its snapshot point a leader holds the committed entries in its state machine, which
    // onApply and onInstallSnapshot checked.
    for (let i = Math.max(1, view.snapshot.index); i <= this.committedMaxIndex; i++) {
      const c = this.committed[i]!;
      if (c.observedTerm >= view.term) continue;
      const t = view.termAt(i);
      if (t !== c.entry.term) {
        throw new SafetyViolation(
          'leader-completeness',
          `leader ${node} of term ${view.term} has ${t === undefined ? 'no entry' : `term ${t}`} at index ${i}, ` +
            `where ${describe(c.entry)} was committed (seen by node ${c.node} at term ${c.observedTerm})`,
          { nodes: [node, c.node], index: i, term: view.term },
        );
      }
    }
  }
}

function sameEntry(a: Entry, b: Entry): boolean {
  if (a === b) return true;
  return a.index === b.index && a.term === b.term && a.type === b.type && bytesEqual(a.data, b.data);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const decoder = new TextDecoder();

/** index/term:type "data", for messages. */
export function describe(e: Entry): string {
  const data = e.type === 'noop' ? 'noop' : JSON.stringify(decoder.decode(e.data.subarray(0, 24)));
  return `${e.index}/${e.term}:${data}`;
}
