// The simulated network: every message gets its own random delay (so messages overtake each other),
// may be lost or duplicated, and is dropped when its directed link is blocked by a partition, both
// when it is sent and when it would arrive. A partition is just a set of blocked directed links.

import type { Message, NodeId } from '../../src/raft/types.js';
import { chance, intBetween, pick, shuffled, type SimRng } from './random.js';

export type PartitionKind = 'symmetric' | 'isolate' | 'one-way' | 'bridge';

export const PARTITION_KINDS: readonly PartitionKind[] = ['symmetric', 'isolate', 'one-way', 'bridge'];

export interface NetworkFaults {
  /** Probability that a sent message is lost. */
  readonly lossRate: number;
  /** Probability that a delivered message is delivered a second time (with its own delay). */
  readonly duplicateRate: number;
  /** Delay of one delivery, uniform in [minDelayUnits, maxDelayUnits] time units. */
  readonly minDelayUnits: number;
  readonly maxDelayUnits: number;
}

export interface NetworkStats {
  sent: number;
  lost: number;
  duplicated: number;
  /** Dropped because the link was blocked at send or at arrival time. */
  blocked: number;
}

/** Schedules one delivery of `msg` after `delayUnits`. */
export type DeliverFn = (msg: Message, delayUnits: number) => void;

export class Network {
  private readonly nodes: readonly NodeId[];
  private readonly rng: SimRng;
  private readonly deliver: DeliverFn;
  private faults: NetworkFaults;
  /** Blocked directed links, keyed by linkKey(from, to). Empty when the network is whole. */
  private readonly blocked = new Set<number>();
  readonly stats: NetworkStats = { sent: 0, lost: 0, duplicated: 0, blocked: 0 };

  constructor(nodes: readonly NodeId[], rng: SimRng, faults: NetworkFaults, deliver: DeliverFn) {
    this.nodes = nodes;
    this.rng = rng;
    this.faults = faults;
    this.deliver = deliver;
  }

  setFaults(faults: NetworkFaults): void {
    this.faults = faults;
  }

  get partitioned(): boolean {
    return this.blocked.size > 0;
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.size > 0 && this.blocked.has(linkKey(from, to));
  }

  send(msg: Message): void {
    this.stats.sent++;
    if (this.isBlocked(msg.from, msg.to)) {
      this.stats.blocked++;
      return;
    }
    if (chance(this.rng, this.faults.lossRate)) {
      this.stats.lost++;
      return;
    }
    this.deliver(msg, this.delay());
    if (chance(this.rng, this.faults.duplicateRate)) {
      this.stats.duplicated++;
      this.deliver(msg, this.delay());
    }
  }

  /** Called when a message arrives: false if a partition now blocks its link. */
  admit(msg: Message): boolean {
    if (this.isBlocked(msg.from, msg.to)) {
      this.stats.blocked++;
      return false;
    }
    return true;
  }

  heal(): void {
    this.blocked.clear();
  }

  /** Replaces any current partition by one that cuts `node` off from every other node. */
  isolate(node: NodeId): string {
    this.blocked.clear();
    const rest = this.nodes.filter((n) => n !== node);
    this.blockBetween([node], rest);
    this.blockBetween(rest, [node]);
    return `isolate ${node} (new leader)`;
  }

  /**
   * Replaces any current partition by a new one of `kind`, drawn at random. Returns a one-line
   * description for the trace. A kind that needs more nodes than there are falls back to isolate.
   */
  partition(kind: PartitionKind): string {
    this.blocked.clear();
    const nodes = shuffled(this.rng, this.nodes);
    switch (kind) {
      case 'symmetric': {
        const k = intBetween(this.rng, 1, nodes.length - 1);
        const a = nodes.slice(0, k);
        const b = nodes.slice(k);
        this.blockBetween(a, b);
        this.blockBetween(b, a);
        return `symmetric ${group(a)} | ${group(b)}`;
      }
      case 'isolate': {
        const [lone, ...rest] = nodes as [NodeId, ...NodeId[]];
        this.blockBetween([lone], rest);
        this.blockBetween(rest, [lone]);
        return `isolate ${lone}`;
      }
      case 'one-way': {
        // One node's links to a random non-empty set of others go dead in one direction only: either
        // it cannot be heard (a leader that keeps sending but never hears back, seen from the other
        // side) or it cannot hear (a node that keeps campaigning at peers it cannot hear from).
        const [node, ...rest] = nodes as [NodeId, ...NodeId[]];
        const others = rest.slice(0, intBetween(this.rng, 1, rest.length));
        const outgoing = pick(this.rng, [true, false]);
        if (outgoing) this.blockBetween([node], others);
        else this.blockBetween(others, [node]);
        return outgoing ? `one-way ${node} -x-> ${group(others)}` : `one-way ${group(others)} -x-> ${node}`;
      }
      case 'bridge': {
        if (nodes.length < 3) return this.partition('isolate');
        const [bridge, ...rest] = nodes as [NodeId, ...NodeId[]];
        const k = intBetween(this.rng, 1, rest.length - 1);
        const a = rest.slice(0, k);
        const b = rest.slice(k);
        this.blockBetween(a, b);
        this.blockBetween(b, a);
        return `bridge ${group(a)} <-${bridge}-> ${group(b)}`;
      }
    }
  }

  private blockBetween(from: readonly NodeId[], to: readonly NodeId[]): void {
    for (const f of from) for (const t of to) if (f !== t) this.blocked.add(linkKey(f, t));
  }

  private delay(): number {
    return intBetween(this.rng, this.faults.minDelayUnits, this.faults.maxDelayUnits);
  }
}

/** Node ids are small positive integers (the simulator uses 1..5). */
function linkKey(from: NodeId, to: NodeId): number {
  return from * 65536 + to;
}

function group(nodes: readonly NodeId[]): string {
  return `{${[...nodes].sort((x, y) => x - y).join(',')}}`;
}
