// The simulator: a cluster of Raft cores driven by one event queue, one seeded PRNG, a simulated
// network and simulated disks. Nothing here reads a clock or Math.random: the seed decides every
// event, so a failing seed replays exactly.
//
// A run has two phases. In the fault phase the seed's fault mix is active (loss, duplication, delay,
// partitions, crashes, crashes in the middle of a Ready) and clients propose at random times. Then
// everything heals and the liveness phase requires, within a bounded time, a leader and a fresh
// proposal applied on every node. The checker runs after every event in both phases.

import { RaftKvError } from '../../src/errors.js';
import { Raft } from '../../src/raft/raft.js';
import type { Entry, Message, NodeId, Role, SnapshotMeta, SnapshotRequest } from '../../src/raft/types.js';
import { SafetyChecker, SafetyViolation, type CheckName } from './checker.js';
import { LeaderContactCheck } from './leader-contact.js';
import { EventQueue } from './event-queue.js';
import { Network } from './network.js';
import { chance, createRng, exponential, intBetween, pick, type SimRng } from './random.js';
import { TICK_PERIOD_UNITS, type SimConfig } from './sim-config.js';
import { NodeStorage } from './storage.js';
import type { Trace } from './trace.js';

/** The liveness bound: after healing, a fresh proposal must be applied everywhere within this many election timeouts. */
export const LIVENESS_BOUND_ELECTION_TIMEOUTS = 40;
/**
 * Extra allowance of the liveness bound per entry some node must still catch up on when the network
 * heals, in worst-case round trips. Catching up is slow when every message has its own random delay:
 * pipelined appends arrive out of order, the follower rejects those past a gap, and the leader falls
 * back to probing one append per round trip (about 2 ticks per entry, with one-entry appends).
 */
const LIVENESS_ROUND_TRIPS_PER_BACKLOG_ENTRY = 2;
/** A liveness proposal not yet applied everywhere after this many election timeouts is proposed again. */
const LIVENESS_REPROPOSE_ELECTION_TIMEOUTS = 3;
/** Limit: Ready batches handled after one input; a core that never runs dry is a bug. */
const MAX_READY_ROUNDS_PER_EVENT = 64;

type SimEvent =
  | { readonly kind: 'tick'; readonly node: NodeId; readonly incarnation: number }
  /** A leader sends the commit index it held back (SimConfig.commitDeferUnits). */
  | { readonly kind: 'commit-flush'; readonly node: NodeId; readonly incarnation: number }
  | { readonly kind: 'deliver'; readonly msg: Message }
  | { readonly kind: 'propose' }
  | { readonly kind: 'read' }
  | { readonly kind: 'campaign' }
  | { readonly kind: 'crash' }
  | { readonly kind: 'restart'; readonly node: NodeId; readonly incarnation: number }
  /** Starts a partition when the network is whole, heals it otherwise. */
  | { readonly kind: 'partition' }
  /** A leader elected moments ago is cut off or crashed (see FaultMix.leaderFaultProbability). */
  | { readonly kind: 'leader-fault'; readonly node: NodeId; readonly term: number }
  | { readonly kind: 'heal-isolation' }
  /** A compaction at a random moment on a random live node. */
  | { readonly kind: 'snapshot' }
  /** A snapshot transfer's outcome reaches the leader that asked for it. */
  | {
      readonly kind: 'snapshot-report';
      readonly leader: NodeId;
      readonly incarnation: number;
      readonly term: number;
      readonly follower: NodeId;
      readonly snapshot: SnapshotMeta;
    }
  /** The end of the fault phase. */
  | { readonly kind: 'heal-all' }
  | { readonly kind: 'liveness-probe' };

type CrashPoint = 'before-persist' | 'after-persist' | 'after-apply' | 'during-install';

interface SimNode {
  readonly id: NodeId;
  /** undefined while the node is down. */
  raft: Raft | undefined;
  readonly storage: NodeStorage;
  /** Time units between two ticks of this node's clock. */
  tickPeriodUnits: number;
  /** Bumped at each crash, so ticks and restarts scheduled for an earlier life are ignored. */
  incarnation: number;
  /**
   * A snapshot received in full and staged, not yet installed: what a real node holds in its staging
   * area. Lost in a crash; a Ready's `snapshot` installs it.
   */
  staged: { readonly meta: SnapshotMeta; readonly data: readonly Entry[] } | undefined;
  /** A commit-flush event is scheduled for this life of the node. */
  commitFlushScheduled: boolean;
  /** Role and term when last observed, to trace changes. */
  lastRole: Role;
  lastTerm: number;
}

interface LivenessProposal {
  readonly index: number;
  readonly term: number;
  readonly payload: string;
  readonly atUnits: number;
}

export interface SimStats {
  /** Events handled. */
  steps: number;
  messagesDelivered: number;
  /** Arrived at a node that was down. */
  messagesToCrashed: number;
  crashes: number;
  crashesInReady: number;
  /** Log compactions, snapshot transfers asked for, snapshots installed, and transfers reported failed. */
  compactions: number;
  snapshotTransfers: number;
  snapshotsInstalled: number;
  snapshotTransfersFailed: number;
  /** Crashes of a follower with a snapshot staged, before it was written. */
  crashesDuringInstall: number;
  restarts: number;
  partitions: number;
  campaigns: number;
  proposalEvents: number;
  proposedEntries: number;
  notLeader: number;
  limited: number;
  readsRequested: number;
  readsNotLeader: number;
  /** Lease reads tried, and served (the lease held). */
  leaseReads: number;
  leaseReadsServed: number;
  readsAnswered: number;
  /** Ticks from healing to the first leader and to the liveness proposal applied everywhere. */
  livenessLeaderTicks: number | undefined;
  livenessTicks: number | undefined;
  /** The liveness bound of this run, and the entries the most lagging node lacked at healing. */
  livenessBoundTicks: number;
  livenessBacklogEntries: number;
}

/**
 * A deliberate storage bug, to show that the checker catches what it should: a node restarts having
 * lost its vote, or its last (acknowledged, uncommitted) entry.
 */
export type Sabotage = 'forget-vote' | 'lose-last-entry';
export const SABOTAGES: readonly Sabotage[] = ['forget-vote', 'lose-last-entry'];

export interface SimOptions {
  /**
   * Call checkInvariants() after every event on every live node (the default), not only on the node
   * the event touched: nodes share entry objects through messages, so one node could corrupt another.
   */
  readonly invariantsOnAllNodes?: boolean;
  /** Only for the checker's own tests. */
  readonly sabotage?: Sabotage;
}

export class Simulator {
  readonly config: SimConfig;
  readonly checker: SafetyChecker;
  private readonly leaderContact: LeaderContactCheck | undefined;
  readonly network: Network;
  readonly stats: SimStats = {
    steps: 0,
    messagesDelivered: 0,
    messagesToCrashed: 0,
    crashes: 0,
    crashesInReady: 0,
    compactions: 0,
    snapshotTransfers: 0,
    snapshotsInstalled: 0,
    snapshotTransfersFailed: 0,
    crashesDuringInstall: 0,
    restarts: 0,
    partitions: 0,
    campaigns: 0,
    proposalEvents: 0,
    proposedEntries: 0,
    notLeader: 0,
    limited: 0,
    readsRequested: 0,
    readsNotLeader: 0,
    leaseReads: 0,
    leaseReadsServed: 0,
    readsAnswered: 0,
    livenessLeaderTicks: undefined,
    livenessTicks: undefined,
    livenessBoundTicks: 0,
    livenessBacklogEntries: 0,
  };
  private readonly rng: SimRng;
  private readonly trace: Trace;
  private readonly options: SimOptions;
  private readonly nodes: SimNode[] = [];
  private readonly peers: readonly NodeId[];
  private readonly queue = new EventQueue<SimEvent>();
  private nowUnits = 0;
  private phase: 'fault' | 'liveness' = 'fault';
  private livenessStartUnits = 0;
  private livenessDeadlineUnits = Infinity;
  private readonly liveProposals: LivenessProposal[] = [];
  private done = false;
  private proposalCounter = 0;
  private readCounter = 0;
  private readonly encoder = new TextEncoder();
  private readonly decoder = new TextDecoder();
  /** The data a snapshot transfer carries, by its message (the network passes messages by reference). */
  private readonly snapshotData = new WeakMap<Message, readonly Entry[]>();

  constructor(config: SimConfig, rng: SimRng, trace: Trace, options: SimOptions = {}) {
    this.config = config;
    this.rng = rng;
    this.trace = trace;
    this.options = options;
    this.peers = Array.from({ length: config.clusterSize }, (_, k) => k + 1);
    this.checker = new SafetyChecker(this.peers);
    // Only meaningful with check-quorum on; a leader without it may legitimately stay forever.
    this.leaderContact = config.checkQuorum ? new LeaderContactCheck(this.peers, 2 * config.electionTimeoutTicks + 1) : undefined;
    this.network = new Network(this.peers, rng, config.mix.network, (msg, delayUnits) =>
      this.queue.push(this.nowUnits + delayUnits, { kind: 'deliver', msg }),
    );
  }

  get now(): number {
    return this.nowUnits;
  }

  get ticks(): number {
    return Math.floor(this.nowUnits / TICK_PERIOD_UNITS);
  }

  /** Runs the seed to the end. Throws SafetyViolation on the first broken property. */
  run(): void {
    this.start();
    while (!this.done) {
      const next = this.queue.pop();
      if (next === undefined) throw new SafetyViolation('liveness', 'the event queue ran dry');
      this.nowUnits = next.time;
      if (this.nowUnits > this.livenessDeadlineUnits) this.failLiveness();
      this.stats.steps++;
      this.handle(next.item);
    }
  }

  // ---- setup -----------------------------------------------------------------------------------

  private start(): void {
    const c = this.config;
    for (const id of this.peers) {
      this.nodes.push({
        id,
        raft: undefined,
        storage: new NodeStorage(),
        // Each node's clock runs at its own rate within the seed's drift bound.
        tickPeriodUnits: TICK_PERIOD_UNITS * (1 + (2 * this.rng.float() - 1) * c.clockDrift),
        incarnation: 0,
        staged: undefined,
        commitFlushScheduled: false,
        lastRole: 'follower',
        lastTerm: 0,
      });
    }
    for (const node of this.nodes) this.startNode(node, false);
    this.scheduleAfter(this.meanInterval(c.proposalsPer100Ticks), { kind: 'propose' });
    if (c.readsPer100Ticks > 0) this.scheduleAfter(this.meanInterval(c.readsPer100Ticks), { kind: 'read' });
    const mix = c.mix;
    if (mix.crashesPer100Ticks > 0) this.scheduleAfter(this.meanInterval(mix.crashesPer100Ticks), { kind: 'crash' });
    if (mix.partitionsPer100Ticks > 0) this.scheduleAfter(this.meanInterval(mix.partitionsPer100Ticks), { kind: 'partition' });
    if (c.snapshot.randomPer100Ticks > 0) this.scheduleAfter(this.meanInterval(c.snapshot.randomPer100Ticks), { kind: 'snapshot' });
    if (mix.campaignsPer100Ticks > 0) this.scheduleAfter(this.meanInterval(mix.campaignsPer100Ticks), { kind: 'campaign' });
    this.queue.push(c.faultTicks * TICK_PERIOD_UNITS, { kind: 'heal-all' });
  }

  /** A random delay whose mean makes `per100Ticks` events per 100 ticks. */
  private meanInterval(per100Ticks: number): number {
    return exponential(this.rng, (100 * TICK_PERIOD_UNITS) / per100Ticks);
  }

  private scheduleAfter(delayUnits: number, ev: SimEvent): void {
    this.queue.push(this.nowUnits + delayUnits, ev);
  }

  // ---- events ----------------------------------------------------------------------------------

  private handle(ev: SimEvent): void {
    switch (ev.kind) {
      case 'tick':
        return this.onTick(ev.node, ev.incarnation);
      case 'deliver':
        return this.onDeliver(ev.msg);
      case 'propose':
        return this.onPropose();
      case 'read':
        return this.onRead();
      case 'campaign':
        return this.onCampaign();
      case 'crash':
        return this.onRandomCrash();
      case 'restart': {
        const node = this.node(ev.node);
        if (node.incarnation === ev.incarnation && node.raft === undefined) this.startNode(node, true);
        return;
      }
      case 'partition':
        return this.onPartition();
      case 'leader-fault':
        return this.onLeaderFault(ev.node, ev.term);
      case 'heal-isolation':
        return this.onHealIsolation();
      case 'snapshot':
        return this.onRandomSnapshot();
      case 'snapshot-report':
        return this.onSnapshotReport(ev);
      case 'heal-all':
        return this.onHealAll();
      case 'liveness-probe':
        return this.onLivenessProbe();
      case 'commit-flush':
        return this.onCommitFlush(ev.node, ev.incarnation);
    }
  }

  private onTick(id: NodeId, incarnation: number): void {
    const node = this.node(id);
    const raft = node.raft;
    if (raft === undefined || node.incarnation !== incarnation) return;
    this.leaderContact?.onTick(id);
    this.call(node, 'tick', () => raft.tick());
    if (raft.hasReady()) this.trace.add(this.nowUnits, id, 'tick');
    this.afterInput(node);
    if (node.raft === raft) this.scheduleAfter(node.tickPeriodUnits, { kind: 'tick', node: id, incarnation });
  }

  private onCommitFlush(id: NodeId, incarnation: number): void {
    const node = this.node(id);
    const raft = node.raft;
    if (raft === undefined || node.incarnation !== incarnation) return;
    node.commitFlushScheduled = false;
    this.call(node, 'flushCommit', () => raft.flushCommit());
    this.afterInput(node);
  }

  private onDeliver(msg: Message): void {
    const node = this.node(msg.to);
    if (!this.network.admit(msg)) {
      this.trace.add(this.nowUnits, msg.to, 'drop', msg, '(partitioned)');
      return;
    }
    const raft = node.raft;
    if (raft === undefined) {
      this.stats.messagesToCrashed++;
      this.trace.add(this.nowUnits, msg.to, 'drop', msg, '(node down)');
      return;
    }
    this.stats.messagesDelivered++;
    this.leaderContact?.onDelivered(msg);
    this.trace.add(this.nowUnits, msg.to, 'recv', msg);
    if (msg.type === 'Snap') {
      this.onSnapshotArrived(node, msg);
      return;
    }
    this.call(node, `step(${msg.type})`, () => raft.step(msg));
    this.afterInput(node);
  }

  /**
   * The whole snapshot reached the follower: stage it, then step the Snap message. If the core did
   * not take it (stale, or the log already holds its last entry), the staged data is dropped, as a
   * real node drops its staging area.
   */
  private onSnapshotArrived(node: SimNode, msg: SnapshotRequest): void {
    const raft = node.raft!;
    const meta = msg.snapshot;
    const data = this.snapshotData.get(msg);
    if (meta === undefined || data === undefined) throw new SafetyViolation('protocol', `a Snap message reached node ${node.id} without a snapshot`, { nodes: [node.id] });
    node.staged = { meta, data };
    this.call(node, 'step(Snap)', () => raft.step(msg));
    const pending = raft.pendingSnapshot;
    if (pending === undefined || pending.index !== meta.index || pending.term !== meta.term) node.staged = undefined;
    this.afterInput(node);
  }

  /**
   * The leader's side of InstallSnapshot: its durable state machine is copied at once (a real node
   * reads it through a LevelDB snapshot) and sent as one message that may be lost like any other.
   * The outcome reaches the leader after a worst-case round trip: installed if the follower's state
   * machine has reached the snapshot by then, failed otherwise.
   */
  private startSnapshotTransfer(node: SimNode, m: SnapshotRequest): void {
    const { meta, data } = node.storage.snapshot();
    const msg: SnapshotRequest = { ...m, snapshot: meta };
    this.snapshotData.set(msg, data);
    this.stats.snapshotTransfers++;
    this.trace.add(this.nowUnits, node.id, 'send', msg, `(${data.length} entries)`);
    this.network.send(msg);
    const reportUnits = 2 * this.config.mix.network.maxDelayUnits + intBetween(this.rng, 1, 3 * TICK_PERIOD_UNITS);
    this.scheduleAfter(reportUnits, {
      kind: 'snapshot-report',
      leader: node.id,
      incarnation: node.incarnation,
      term: m.term,
      follower: m.to,
      snapshot: meta,
    });
  }

  private onSnapshotReport(ev: Extract<SimEvent, { kind: 'snapshot-report' }>): void {
    const node = this.node(ev.leader);
    const raft = node.raft;
    if (raft === undefined || node.incarnation !== ev.incarnation || raft.term !== ev.term) return;
    const installed = this.node(ev.follower).storage.applied >= ev.snapshot.index;
    if (!installed) this.stats.snapshotTransfersFailed++;
    this.trace.add(this.nowUnits, node.id, 'snapshot', undefined, `transfer to n${ev.follower} of ${ev.snapshot.index}/${ev.snapshot.term}: ${installed ? 'installed' : 'failed'}`);
    this.call(node, 'reportSnapshot', () => raft.reportSnapshot(ev.follower, installed ? ev.snapshot : undefined));
    this.afterInput(node);
  }

  private onRandomSnapshot(): void {
    if (this.phase !== 'fault') return;
    this.scheduleAfter(this.meanInterval(this.config.snapshot.randomPer100Ticks), { kind: 'snapshot' });
    const live = this.liveNodes();
    if (live.length === 0) return;
    const node = pick(this.rng, live);
    const raft = node.raft!;
    const upTo = Math.min(raft.appliedIndex, node.storage.applied);
    if (upTo <= raft.snapshot.index) return;
    this.compact(node, intBetween(this.rng, raft.snapshot.index + 1, upTo));
    this.afterInput(node);
  }

  /** Takes a snapshot at the node's applied index: compacts its log (core and storage) up to `index`. */
  private compact(node: SimNode, index: number): void {
    const raft = node.raft!;
    this.checker.onCompact(node.id, node.storage, index);
    this.call(node, 'compact', () => raft.compact(index));
    node.storage.compact(index);
    this.stats.compactions++;
    this.trace.add(this.nowUnits, node.id, 'snapshot', undefined, `log compacted up to ${index}`);
  }

  /** The size trigger: enough applied entries past the margin in the log. */
  private maybeCompact(node: SimNode): void {
    const policy = this.config.snapshot;
    const raft = node.raft;
    if (policy.everyEntries === 0 || raft === undefined) return;
    const upTo = Math.min(raft.appliedIndex, node.storage.applied) - policy.marginEntries;
    if (upTo - raft.snapshot.index >= policy.everyEntries) this.compact(node, upTo);
  }

  private onPropose(): void {
    if (this.phase !== 'fault') return;
    this.scheduleAfter(this.meanInterval(this.config.proposalsPer100Ticks), { kind: 'propose' });
    const live = this.liveNodes();
    if (live.length === 0) return;
    // Clients look for the leader; several nodes may believe they lead (a stale one in an old term).
    const leaders = live.filter((n) => n.raft!.role === 'leader');
    const node = leaders.length > 0 ? pick(this.rng, leaders) : pick(this.rng, live);
    const count = pick(this.rng, [1, 1, 1, 2, 3]);
    const payloads: Uint8Array[] = [];
    for (let k = 0; k < count; k++) payloads.push(this.encoder.encode(this.nextPayload()));
    this.stats.proposalEvents++;
    this.tryPropose(node, count === 1 ? payloads[0]! : payloads);
  }

  /** Proposes on `node`; returns where the first entry went, or undefined if refused. */
  private tryPropose(node: SimNode, data: Uint8Array | Uint8Array[]): { index: number; term: number } | undefined {
    const raft = node.raft!;
    const count = data instanceof Uint8Array ? 1 : data.length;
    let result: { index: number; term: number } | undefined;
    try {
      result = raft.propose(data);
    } catch (err) {
      if (err instanceof RaftKvError && (err.code === 'NOT_LEADER' || err.code === 'UNCOMMITTED_LIMIT')) {
        if (err.code === 'NOT_LEADER') this.stats.notLeader++;
        else this.stats.limited++;
        this.trace.add(this.nowUnits, node.id, 'propose', undefined, `${count} entr${count === 1 ? 'y' : 'ies'}: ${err.code}`);
        return undefined;
      }
      throw this.asViolation(node, 'propose', err);
    }
    this.stats.proposedEntries += count;
    this.trace.add(this.nowUnits, node.id, 'propose', undefined, `${count} entr${count === 1 ? 'y' : 'ies'} at ${result.index}/${result.term}`);
    this.afterInput(node);
    return result;
  }

  private nextPayload(): string {
    const base = `${this.config.seed}:${++this.proposalCounter}`;
    const len = intBetween(this.rng, base.length, Math.max(base.length, this.config.maxPayloadBytes));
    return base.padEnd(len, '.');
  }

  private onRead(): void {
    if (this.phase !== 'fault') return;
    this.scheduleAfter(this.meanInterval(this.config.readsPer100Ticks), { kind: 'read' });
    const live = this.liveNodes();
    if (live.length === 0) return;
    const leaders = live.filter((n) => n.raft!.role === 'leader');
    if (this.config.leaseTicks > 0 && leaders.length > 0 && chance(this.rng, 0.5)) {
      // A lease read: answered at once from the leader's state, if its lease holds. Asked of a node
      // that believes it leads (there may be two, one of them stale): only a leader can answer.
      const node = pick(this.rng, leaders);
      const index = node.raft!.leaseReadIndex();
      this.stats.leaseReads++;
      if (index === undefined) return;
      this.stats.leaseReadsServed++;
      this.trace.add(this.nowUnits, node.id, 'read', undefined, `lease read at index ${index}`);
      this.checker.onLeaseRead(node.id, index);
      return;
    }
    const node = pick(this.rng, live);
    const raft = node.raft!;
    const context = ++this.readCounter;
    this.stats.readsRequested++;
    this.checker.onReadRequest(node.id, context);
    try {
      raft.readIndex(context);
    } catch (err) {
      if (err instanceof RaftKvError && err.code === 'NOT_LEADER') {
        this.stats.readsNotLeader++;
        this.trace.add(this.nowUnits, node.id, 'read', undefined, `ctx=${context}: NOT_LEADER`);
        return;
      }
      throw this.asViolation(node, 'readIndex', err);
    }
    this.trace.add(this.nowUnits, node.id, 'read', undefined, `ctx=${context} asked`);
    this.afterInput(node);
  }

  private onCampaign(): void {
    if (this.phase !== 'fault') return;
    this.scheduleAfter(this.meanInterval(this.config.mix.campaignsPer100Ticks), { kind: 'campaign' });
    const live = this.liveNodes();
    if (live.length === 0) return;
    const node = pick(this.rng, live);
    const raft = node.raft!;
    this.stats.campaigns++;
    this.trace.add(this.nowUnits, node.id, 'campaign');
    this.call(node, 'campaign', () => raft.campaign());
    this.afterInput(node);
  }

  private onLeaderFault(id: NodeId, term: number): void {
    const node = this.node(id);
    if (this.phase !== 'fault' || node.raft?.role !== 'leader' || node.raft.term !== term) return;
    if (chance(this.rng, 0.25)) {
      this.crash(node, 'new leader');
      return;
    }
    this.stats.partitions++;
    this.trace.add(this.nowUnits, 0, 'partition', undefined, this.network.isolate(id));
    this.scheduleAfter(exponential(this.rng, Math.max(1, this.config.mix.meanLeaderIsolationTicks) * TICK_PERIOD_UNITS), { kind: 'heal-isolation' });
  }

  private onHealIsolation(): void {
    if (this.phase !== 'fault') return;
    this.network.heal();
    this.trace.add(this.nowUnits, 0, 'heal');
  }

  private onRandomCrash(): void {
    if (this.phase !== 'fault') return;
    this.scheduleAfter(this.meanInterval(this.config.mix.crashesPer100Ticks), { kind: 'crash' });
    const live = this.liveNodes();
    if (live.length === 0) return;
    this.crash(pick(this.rng, live), 'between events');
  }

  private onPartition(): void {
    if (this.phase !== 'fault') return;
    const mix = this.config.mix;
    if (this.network.partitioned) {
      this.network.heal();
      this.trace.add(this.nowUnits, 0, 'heal');
      this.scheduleAfter(this.meanInterval(mix.partitionsPer100Ticks), { kind: 'partition' });
    } else {
      const description = this.network.partition(pick(this.rng, mix.partitionKinds));
      this.stats.partitions++;
      this.trace.add(this.nowUnits, 0, 'partition', undefined, description);
      this.scheduleAfter(exponential(this.rng, mix.meanPartitionTicks * TICK_PERIOD_UNITS), { kind: 'partition' });
    }
  }

  /** The end of the fault phase: no more faults, every node up, then a bounded wait for progress. */
  private onHealAll(): void {
    this.phase = 'liveness';
    this.network.heal();
    this.network.setFaults({ ...this.config.mix.network, lossRate: 0, duplicateRate: 0 });
    this.trace.add(this.nowUnits, 0, 'phase', undefined, 'healed: liveness phase starts');
    for (const node of this.nodes) if (node.raft === undefined) this.startNode(node, true);
    this.livenessStartUnits = this.nowUnits;
    this.stats.livenessBoundTicks = this.livenessBound();
    this.livenessDeadlineUnits = this.nowUnits + this.stats.livenessBoundTicks * TICK_PERIOD_UNITS;
    this.scheduleAfter(TICK_PERIOD_UNITS, { kind: 'liveness-probe' });
  }

  private onLivenessProbe(): void {
    const elapsedTicks = Math.floor((this.nowUnits - this.livenessStartUnits) / TICK_PERIOD_UNITS);
    if (this.livenessReached()) {
      this.stats.livenessTicks = elapsedTicks;
      this.trace.add(this.nowUnits, 0, 'liveness', undefined, `a fresh proposal is applied on every node after ${elapsedTicks} ticks`);
      this.done = true;
      return;
    }
    this.scheduleAfter(TICK_PERIOD_UNITS, { kind: 'liveness-probe' });
    const leader = this.currentLeader();
    if (leader === undefined) return;
    if (this.stats.livenessLeaderTicks === undefined) this.stats.livenessLeaderTicks = elapsedTicks;
    const last = this.liveProposals[this.liveProposals.length - 1];
    const reproposeUnits = LIVENESS_REPROPOSE_ELECTION_TIMEOUTS * this.config.electionTimeoutTicks * TICK_PERIOD_UNITS;
    if (last !== undefined && this.nowUnits - last.atUnits < reproposeUnits) return;
    const payload = `${this.config.seed}:live:${this.liveProposals.length + 1}`;
    const at = this.tryPropose(leader, this.encoder.encode(payload));
    if (at !== undefined) this.liveProposals.push({ ...at, payload, atUnits: this.nowUnits });
  }

  /**
   * The liveness bound in ticks: LIVENESS_BOUND_ELECTION_TIMEOUTS election timeouts, plus a catch-up
   * allowance for the entries the most lagging node lacks at the time of healing.
   */
  private livenessBound(): number {
    let maxLast = 0;
    let minApplied = Infinity;
    for (const n of this.nodes) {
      maxLast = Math.max(maxLast, n.raft?.lastIndex ?? n.storage.lastIndex);
      minApplied = Math.min(minApplied, n.storage.applied);
    }
    this.stats.livenessBacklogEntries = Math.max(0, maxLast - minApplied);
    const roundTripTicks = Math.ceil((2 * this.config.mix.network.maxDelayUnits) / TICK_PERIOD_UNITS) + 1;
    return (
      LIVENESS_BOUND_ELECTION_TIMEOUTS * this.config.electionTimeoutTicks +
      this.stats.livenessBacklogEntries * LIVENESS_ROUND_TRIPS_PER_BACKLOG_ENTRY * roundTripTicks
    );
  }

  private livenessReached(): boolean {
    for (const p of this.liveProposals) {
      const applied = this.checker.appliedAt(p.index);
      if (applied === undefined || applied.term !== p.term || this.decoder.decode(applied.data) !== p.payload) continue;
      if (this.nodes.every((n) => n.storage.applied >= p.index)) return true;
    }
    return false;
  }

  /** The live leader with the highest term, if any. */
  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes) {
      const r = n.raft;
      if (r !== undefined && r.role === 'leader' && (best === undefined || r.term > best.raft!.term)) best = n;
    }
    return best;
  }

  private failLiveness(): never {
    const states = this.nodes.map((n) => {
      const r = n.raft;
      if (r === undefined) return `n${n.id} down`;
      return `n${n.id} ${r.role} term=${r.term} leader=${r.leader} commit=${r.commitIndex} applied=${r.appliedIndex} last=${r.lastIndex}`;
    });
    throw new SafetyViolation(
      'liveness',
      `no fresh proposal applied on every node within ${this.stats.livenessBoundTicks} ticks after healing ` +
        `(${LIVENESS_BOUND_ELECTION_TIMEOUTS} election timeouts + catch-up of ${this.stats.livenessBacklogEntries} entries); ` +
        `${this.liveProposals.length} proposed; ${states.join('; ')}`,
    );
  }

  // ---- nodes -----------------------------------------------------------------------------------

  private node(id: NodeId): SimNode {
    const node = this.nodes[id - 1];
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  private liveNodes(): SimNode[] {
    return this.nodes.filter((n) => n.raft !== undefined);
  }

  /** Starts a node from its storage: a brand-new node the first time, a restart afterwards. */
  private startNode(node: SimNode, restart: boolean): void {
    const c = this.config;
    if (restart && this.options.sabotage === 'forget-vote') node.storage.forgetVote();
    if (restart && this.options.sabotage === 'lose-last-entry') node.storage.loseLastEntry();
    const initial = restart ? node.storage.initialState() : undefined;
    let raft: Raft;
    try {
      raft = new Raft({
        id: node.id,
        peers: this.peers,
        electionTimeoutTicks: c.electionTimeoutTicks,
        heartbeatIntervalTicks: c.heartbeatIntervalTicks,
        preVote: c.preVote,
        checkQuorum: c.checkQuorum,
        maxAppendBytes: c.maxAppendBytes,
        maxInflightMessages: c.maxInflightMessages,
        maxUncommittedBytes: c.maxUncommittedBytes,
        leaseTicks: c.leaseTicks,
        deferCommitBroadcast: c.commitDeferUnits > 0,
        rng: createRng(this.rng.next()),
        initial,
      });
    } catch (err) {
      throw this.asViolation(node, restart ? 'restart' : 'start', err);
    }
    node.raft = raft;
    node.commitFlushScheduled = false;
    node.lastRole = raft.role;
    node.lastTerm = raft.term;
    this.checker.onStart(node.id, raft, node.storage);
    if (restart) {
      this.stats.restarts++;
      const s = node.storage;
      this.trace.add(
        this.nowUnits,
        node.id,
        'restart',
        undefined,
        `from term=${s.hardState.term} vote=${s.hardState.vote} commit=${s.hardState.commit} last=${s.lastIndex} applied=${s.applied}`,
      );
    }
    // Clocks are not in phase: the first tick comes anywhere within one period.
    this.scheduleAfter(intBetween(this.rng, 1, Math.max(1, Math.floor(node.tickPeriodUnits))), { kind: 'tick', node: node.id, incarnation: node.incarnation });
    this.afterInput(node);
  }

  private crash(node: SimNode, why: string): void {
    node.raft = undefined;
    node.staged = undefined;
    node.incarnation++;
    this.checker.onCrash(node.id);
    this.leaderContact?.onCrash(node.id);
    this.stats.crashes++;
    this.trace.add(this.nowUnits, node.id, 'crash', undefined, why);
    const downtimeUnits = exponential(this.rng, Math.max(1, this.config.mix.meanDowntimeTicks) * TICK_PERIOD_UNITS);
    this.scheduleAfter(downtimeUnits, { kind: 'restart', node: node.id, incarnation: node.incarnation });
  }

  /** Crashes the node at one point of its Ready cycle, with the seed's probability. */
  private maybeCrashInReady(node: SimNode, point: CrashPoint): boolean {
    const p = point === 'during-install' ? this.config.snapshot.crashInInstallProbability : this.config.mix.crashInReadyProbability;
    if (this.phase !== 'fault' || !chance(this.rng, p)) return false;
    this.stats.crashesInReady++;
    if (point === 'during-install') this.stats.crashesDuringInstall++;
    this.crash(node, `in Ready, ${point}`);
    return true;
  }

  /** After an input to `node`: drain its Ready batches, then check everything. */
  private afterInput(node: SimNode): void {
    this.processReady(node);
    const raft = node.raft;
    if (raft === undefined) return;
    if (raft.role !== node.lastRole || raft.term !== node.lastTerm) {
      if (raft.role === 'leader' && this.phase === 'fault' && chance(this.rng, this.config.mix.leaderFaultProbability)) {
        this.scheduleAfter(intBetween(this.rng, 0, 2 * TICK_PERIOD_UNITS), { kind: 'leader-fault', node: node.id, term: raft.term });
      }
      this.trace.add(this.nowUnits, node.id, 'role', undefined, `${node.lastRole}@${node.lastTerm} -> ${raft.role}@${raft.term}`);
      node.lastRole = raft.role;
      node.lastTerm = raft.term;
    }
    this.checker.afterEvent(node.id, raft);
    this.leaderContact?.afterEvent(node.id, raft.role, raft.term);
    // What the runtime does after each turn of its loop: a commit held back goes within the bound.
    if (this.config.commitDeferUnits > 0 && !node.commitFlushScheduled && raft.commitUnsent()) {
      node.commitFlushScheduled = true;
      this.scheduleAfter(this.config.commitDeferUnits, { kind: 'commit-flush', node: node.id, incarnation: node.incarnation });
    }
    // After the checker has seen this event's commits: compaction hides the entries it checks.
    this.maybeCompact(node);
    if (this.options.invariantsOnAllNodes ?? true) {
      for (const n of this.nodes) if (n.raft !== undefined) this.checkInvariants(n, n.raft);
    } else {
      this.checkInvariants(node, raft);
    }
  }

  private checkInvariants(node: SimNode, raft: Raft): void {
    try {
      raft.checkInvariants();
    } catch (err) {
      throw new SafetyViolation('invariant', `node ${node.id}: ${errorMessage(err)}`, { nodes: [node.id] });
    }
  }

  /**
   * Handles Ready batches until the node has none, following the contract in types.ts to the letter:
   * send `messages`; persist hard state and entries in one write; send `messagesAfterPersist`; apply
   * `committedEntries` (with the applied index, atomically); advance. The node may crash between
   * these steps, losing whatever was not yet written.
   */
  private processReady(node: SimNode): void {
    const storage = node.storage;
    for (let rounds = 0; ; rounds++) {
      const raft = node.raft;
      if (raft === undefined || !raft.hasReady()) return;
      if (rounds >= MAX_READY_ROUNDS_PER_EVENT) {
        throw new SafetyViolation('protocol', `node ${node.id} still has a Ready after ${rounds} rounds (limit MAX_READY_ROUNDS_PER_EVENT)`, { nodes: [node.id] });
      }
      const r = this.call(node, 'ready', () => raft.ready());
      for (const rs of r.readStates) {
        this.checker.onReadState(node.id, rs);
        this.stats.readsAnswered++;
        this.trace.add(this.nowUnits, node.id, 'read', undefined, `ctx=${rs.context} answered: index ${rs.index}`);
      }
      for (const m of r.messages) {
        this.checker.onSend(node.id, m, 'before-persist', storage);
        if (m.type === 'Snap') this.startSnapshotTransfer(node, m);
        else this.network.send(m);
      }
      const writes = r.hardState !== undefined || r.entries.length > 0;
      if (r.snapshot !== undefined) {
        const staged = node.staged;
        if (staged === undefined || staged.meta.index !== r.snapshot.index || staged.meta.term !== r.snapshot.term) {
          throw new SafetyViolation('protocol', `node ${node.id}'s Ready installs snapshot ${r.snapshot.index}/${r.snapshot.term}, which was never staged`, { nodes: [node.id] });
        }
        if (this.maybeCrashInReady(node, 'during-install')) return;
        this.checker.onInstallSnapshot(node.id, storage, r.snapshot, staged.data, r.hardState, r.entries, raft.role);
        storage.installSnapshot(r.snapshot, staged.data, r.hardState, r.entries);
        node.staged = undefined;
        this.stats.snapshotsInstalled++;
        this.trace.add(this.nowUnits, node.id, 'snapshot', undefined, `installed ${r.snapshot.index}/${r.snapshot.term}`);
        if (this.maybeCrashInReady(node, 'after-persist')) return;
      } else if (writes) {
        if (this.maybeCrashInReady(node, 'before-persist')) return;
        this.checker.onPersist(node.id, storage, r.hardState, r.entries, raft.role);
        storage.persist(r.hardState, r.entries);
        if (this.maybeCrashInReady(node, 'after-persist')) return;
      }
      for (const m of r.messagesAfterPersist) {
        this.checker.onSend(node.id, m, 'after-persist', storage);
        this.network.send(m);
      }
      if (r.committedEntries.length > 0) {
        this.checker.onApply(node.id, storage, r.committedEntries);
        storage.apply(r.committedEntries);
        if (this.maybeCrashInReady(node, 'after-apply')) return;
      }
      this.call(node, 'advance', () => raft.advance(r));
    }
  }

  /** Runs one call into the core; anything it throws is a violation naming the node. */
  private call<T>(node: SimNode, what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw this.asViolation(node, what, err);
    }
  }

  private asViolation(node: SimNode, what: string, err: unknown): SafetyViolation {
    if (err instanceof SafetyViolation) return err;
    const message = errorMessage(err);
    const check: CheckName = /invariant/i.test(message) ? 'invariant' : 'exception';
    return new SafetyViolation(check, `node ${node.id} threw in ${what}: ${message}`, { nodes: [node.id] });
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
