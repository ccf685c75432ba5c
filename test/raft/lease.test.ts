// Leader leases (thesis §6.4.1) and quorum contact: a leader serves reads from its own state while a
// heartbeat round sent less than a lease ago was acknowledged by a majority, and the lease always
// ends before any other node could be elected.

import { describe, expect, it } from 'vitest';
import { leaseDurationTicks } from '../../src/raft/index.js';
import { Harness, bytes, isolate } from './harness.js';

describe('leaseDurationTicks', () => {
  it('shrinks the lease below the election timeout by the drift bound and one tick of quantization', () => {
    // L * (1 + d) <= (E - 1) * (1 - d)
    expect(leaseDurationTicks(10, 0)).toBe(9);
    expect(leaseDurationTicks(10, 0.1)).toBe(7);
    expect(leaseDurationTicks(10, 0.5)).toBe(3);
    expect(() => leaseDurationTicks(10, 1)).toThrow(RangeError);
  });
});

describe('leader lease', () => {
  it('holds only after a heartbeat round is acknowledged by a majority and an entry of the term is committed', () => {
    const h = new Harness([1, 2, 3], {}, { leaseTicks: 7 });
    h.elect(1, (m) => m.type !== 'HeartbeatResp');
    expect(h.node(1).role).toBe('leader');
    expect(h.node(1).leaseReadIndex()).toBeUndefined();
    h.tick(2, [1]);
    expect(h.node(1).leaseReadIndex()).toBe(1);
  });

  it('lapses leaseTicks after the last confirmed round was sent, when the leader is cut off', () => {
    const h = new Harness([1, 2, 3], {}, { leaseTicks: 7, heartbeatIntervalTicks: 1 });
    h.elect(1);
    h.tick(1, [1]);
    expect(h.node(1).leaseReadIndex()).toBe(1);
    let valid = 0;
    while (h.node(1).leaseReadIndex() !== undefined && valid < 50) {
      h.tick(1, [1], isolate(1));
      valid++;
    }
    // The confirmed round was sent at the last connected tick; the lease covers 7 ticks from it.
    expect(valid).toBe(7);
    expect(h.node(1).role).toBe('leader');
  });

  it('always lapses before another node is elected (perfect clocks)', () => {
    const h = new Harness([1, 2, 3, 4, 5], {}, { leaseTicks: 9 });
    h.elect(1);
    h.node(1).propose(bytes('x'));
    h.tick(3);
    expect(h.node(1).leaseReadIndex()).toBeDefined();
    let newLeader = false;
    for (let t = 0; t < 200 && !newLeader; t++) {
      h.tick(1, [1, 2, 3, 4, 5], isolate(1));
      for (const id of [2, 3, 4, 5]) {
        if (h.node(id).role === 'leader') {
          newLeader = true;
          expect(h.node(1).leaseReadIndex()).toBeUndefined();
        }
      }
    }
    expect(newLeader).toBe(true);
  });

  it('is dropped on step-down', () => {
    const h = new Harness([1, 2, 3], {}, { leaseTicks: 7 });
    h.elect(1);
    h.tick(2);
    expect(h.node(1).leaseReadIndex()).toBeDefined();
    h.node(1).step({ type: 'App', from: 2, to: 1, term: 5, prevIndex: 0, prevTerm: 0, entries: [], commit: 0 });
    expect(h.node(1).role).toBe('follower');
    expect(h.node(1).leaseReadIndex()).toBeUndefined();
  });

  it('is off without check-quorum, and refused as a configuration', () => {
    const h = new Harness([1, 2, 3], {}, { checkQuorum: false });
    h.elect(1);
    h.tick(3);
    expect(h.node(1).leaseReadIndex()).toBeUndefined();
    expect(() => new Harness([1, 2, 3], {}, { checkQuorum: false, leaseTicks: 5 })).toThrow(/leaseTicks needs checkQuorum/);
  });
});

describe('campaign() and the lease', () => {
  it('a node that heard from a live leader within the election timeout does not campaign', () => {
    // Its acknowledgements may be part of that leader's lease: a campaign now could elect a second
    // leader while the first still serves lease reads.
    const h = new Harness([1, 2, 3], {}, { leaseTicks: 7 });
    h.elect(1);
    h.tick(2);
    expect(h.node(2).campaign()).toBe(false);
    expect(h.node(2).role).toBe('follower');
    for (let t = 0; t < 10; t++) h.node(2).tick();
    expect(h.node(2).campaign()).toBe(true);
  });
});

describe('quorum contact', () => {
  it('a leader cut off from the majority loses quorum contact within one election timeout', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.tick(3);
    expect(h.node(1).hasQuorumContact()).toBe(true);
    let ticks = 0;
    while (h.node(1).hasQuorumContact() && ticks < 50) {
      h.tick(1, [1], isolate(1));
      ticks++;
    }
    expect(ticks).toBeLessThanOrEqual(10);
  });

  it('a follower without a leader for an election timeout has no quorum contact', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.tick(1);
    expect(h.node(2).hasQuorumContact()).toBe(true);
    for (let t = 0; t < 10; t++) h.node(2).tick();
    expect(h.node(2).hasQuorumContact()).toBe(false);
  });
});

describe('clock drift and the lease', () => {
  /**
   * Cuts the leader off right after a confirmed heartbeat round, then runs the followers' clocks
   * `followerRate` times as fast as the leader's. Returns whether the old leader still held its lease
   * when a new leader had committed an entry: a stale lease read.
   */
  function staleLeaseRead(followerRate: number, leaseTicks: number): boolean {
    const h = new Harness([1, 2, 3], {}, { leaseTicks, heartbeatIntervalTicks: 1 });
    h.elect(1);
    h.tick(1, [1]);
    expect(h.node(1).leaseReadIndex()).toBe(1);
    const oldCommit = h.node(1).commitIndex;
    let followerTicks = 0;
    for (let leaderTick = 0; leaderTick < 100; leaderTick++) {
      h.tick(1, [1], isolate(1));
      while (followerTicks < (leaderTick + 1) * followerRate) {
        h.tick(1, [2, 3], isolate(1));
        followerTicks++;
      }
      const newLeader = [2, 3].find((id) => h.node(id).role === 'leader' && h.node(id).commitIndex > oldCommit);
      if (newLeader !== undefined) return h.node(1).leaseReadIndex() !== undefined;
    }
    throw new Error('no new leader was elected');
  }

  it('within the drift bound the lease lapses before a new leader commits', () => {
    // Lease for a 10% drift bound; the worst case within it: the leader 10% slow, followers 10% fast.
    expect(staleLeaseRead(1.1 / 0.9, leaseDurationTicks(10, 0.1))).toBe(false);
  });

  it('beyond the bound a stale leader still holds its lease: drift is what can break LEASE reads', () => {
    // The same lease, with followers' clocks twice as fast: the documented failure mode.
    expect(staleLeaseRead(2, leaseDurationTicks(10, 0.1))).toBe(true);
  });
});
