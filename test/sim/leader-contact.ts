// Stale leadership (thesis §6.2, check-quorum): with check-quorum on, a leader that has not heard
// from a majority (itself included) for two election timeouts of its own clock must have stepped
// down. Two, because the core checks once per election timeout, counting whom it heard from since
// the previous check; a follower last heard just after one check is counted at the next and missed
// only at the one after. Safety checks alone cannot see a leader that never steps down (terms keep
// elections safe); this is what catches it, and later leader leases depend on it.

import type { Message, NodeId, Role } from '../../src/raft/types.js';
import { SafetyViolation } from './checker.js';

interface Leadership {
  readonly term: number;
  /** The leader's own tick count when it was last heard from, per follower. */
  readonly lastHeard: Map<NodeId, number>;
}

export class LeaderContactCheck {
  private readonly ticks = new Map<NodeId, number>();
  private readonly leading = new Map<NodeId, Leadership>();
  private readonly quorum: number;

  constructor(
    private readonly peers: readonly NodeId[],
    /** Ticks a majority may stay silent before the leader must have stepped down. */
    private readonly boundTicks: number,
  ) {
    this.quorum = Math.floor(peers.length / 2) + 1;
  }

  onTick(node: NodeId): void {
    this.ticks.set(node, (this.ticks.get(node) ?? 0) + 1);
  }

  /** A message reached `m.to`; if `m.to` leads, it heard from `m.from`. */
  onDelivered(m: Message): void {
    const l = this.leading.get(m.to);
    if (l !== undefined) l.lastHeard.set(m.from, this.ticks.get(m.to) ?? 0);
  }

  onCrash(node: NodeId): void {
    this.leading.delete(node);
  }

  afterEvent(node: NodeId, role: Role, term: number): void {
    if (role !== 'leader') {
      this.leading.delete(node);
      return;
    }
    const now = this.ticks.get(node) ?? 0;
    let l = this.leading.get(node);
    if (l === undefined || l.term !== term) {
      // A new leader just heard from a majority (its votes): start every follower's clock now.
      l = { term, lastHeard: new Map(this.peers.map((p) => [p, now])) };
      this.leading.set(node, l);
    }
    let heard = 1;
    for (const p of this.peers) if (p !== node && now - (l.lastHeard.get(p) ?? now) <= this.boundTicks) heard++;
    if (heard < this.quorum) {
      throw new SafetyViolation(
        'stale-leader',
        `node ${node} still leads term ${term} after more than ${this.boundTicks} ticks without hearing from a majority`,
        { nodes: [node], term },
      );
    }
  }
}
