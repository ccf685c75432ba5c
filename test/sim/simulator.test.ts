// Tests of the simulator itself: it is deterministic, its checker fails on broken properties (fed by
// hand, and end to end against a deliberately lying disk), and its parts behave as documented. The
// seed sweeps are in sim-seeds-a.test.ts and sim-seeds-b.test.ts.

import { describe, expect, it } from 'vitest';
import type { Entry, HardState, NodeId, Role } from '../../src/raft/types.js';
import { SafetyChecker, SafetyViolation, type CheckName, type NodeView } from './checker.js';
import { EventQueue } from './event-queue.js';
import { Network, type NetworkFaults } from './network.js';
import { createRng } from './random.js';
import { replayCommand, runSeed, type RunOptions } from './run.js';
import { runSimCli } from './sim-program.js';
import { NodeStorage } from './storage.js';

const encoder = new TextEncoder();

function entry(index: number, term: number, data: string): Entry {
  return { index, term, type: 'normal', data: encoder.encode(data) };
}

function hs(term: number, vote: NodeId, commit: number): HardState {
  return { term, vote, commit };
}

/** A hand-made node whose log is `log` (log[k] has index k + 1). */
function view(id: NodeId, role: Role, term: number, log: readonly Entry[], commitIndex: number): NodeView {
  return {
    id,
    term,
    vote: role === 'leader' ? id : 0,
    role,
    commitIndex,
    appliedIndex: 0,
    lastIndex: log.length,
    snapshot: { index: 0, term: 0 },
    termAt: (i) => (i === 0 ? 0 : log[i - 1]?.term),
    entryAt: (i) => log[i - 1],
  };
}

function violationOf(fn: () => void): SafetyViolation {
  try {
    fn();
  } catch (err) {
    if (err instanceof SafetyViolation) return err;
    throw err;
  }
  throw new Error('expected a SafetyViolation, nothing was thrown');
}

describe('SafetyChecker catches hand-made violations', () => {
  it('two leaders in one term (election safety, §5.2)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    checker.onLeader(1, 5);
    checker.onLeader(1, 5);
    checker.onLeader(2, 6);
    const v = violationOf(() => checker.onLeader(3, 5));
    expect(v.check).toBe('election-safety');
    expect(v.nodes).toEqual([1, 3]);
    expect(v.term).toBe(5);
    expect(v.message).toMatch(/two leaders in term 5/);
  });

  it('a node that changes its vote within a term', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const storage = new NodeStorage();
    checker.onPersist(1, storage, hs(2, 2, 0), [], 'follower');
    storage.persist(hs(2, 2, 0), []);
    expect(violationOf(() => checker.onPersist(1, storage, hs(2, 3, 0), [], 'follower')).check).toBe('vote-once');
  });

  it('two different entries with one index and term (log matching, §5.3)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    checker.onPersist(1, new NodeStorage(), hs(1, 1, 0), [entry(1, 1, 'a')], 'leader');
    const v = violationOf(() => checker.onPersist(2, new NodeStorage(), hs(1, 1, 0), [entry(1, 1, 'b')], 'follower'));
    expect(v.check).toBe('log-matching');
    expect(v.index).toBe(1);
    expect(v.nodes).toEqual([1, 2]);
  });

  it('equal entries after different predecessors (log matching, §5.3)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const a = new NodeStorage();
    a.persist(hs(2, 0, 0), [entry(1, 1, 'x')]);
    const b = new NodeStorage();
    b.persist(hs(2, 0, 0), [entry(1, 2, 'y')]);
    checker.onPersist(1, a, undefined, [entry(2, 2, 'z')], 'follower');
    expect(violationOf(() => checker.onPersist(2, b, undefined, [entry(2, 2, 'z')], 'follower')).check).toBe('log-matching');
  });

  it('a leader that overwrites its own entry (leader append-only)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const storage = new NodeStorage();
    storage.persist(hs(3, 1, 0), [entry(1, 3, 'a'), entry(2, 3, 'b')]);
    expect(violationOf(() => checker.onPersist(1, storage, undefined, [entry(2, 3, 'c')], 'leader')).check).toBe('leader-append-only');
  });

  it('a leader that lacks an entry committed in an earlier term (leader completeness, §5.4)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const log = [entry(1, 1, 'a')];
    checker.afterEvent(1, view(1, 'leader', 1, log, 1));
    const v = violationOf(() => checker.afterEvent(2, view(2, 'leader', 2, [], 0)));
    expect(v.check).toBe('leader-completeness');
    expect(v.nodes).toEqual([2, 1]);
    expect(v.index).toBe(1);
  });

  it('two nodes that apply different entries at one index (state machine safety, §5.4.3)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const a = new NodeStorage();
    a.persist(hs(1, 0, 1), [entry(1, 1, 'a')]);
    const b = new NodeStorage();
    b.persist(hs(2, 0, 1), [entry(1, 2, 'b')]);
    checker.onApply(1, a, [entry(1, 1, 'a')]);
    const v = violationOf(() => checker.onApply(2, b, [entry(1, 2, 'b')]));
    expect(v.check).toBe('state-machine-safety');
    expect(v.index).toBe(1);
  });

  it('an apply beyond the persisted commit (persistence contract)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const storage = new NodeStorage();
    storage.persist(hs(1, 0, 0), [entry(1, 1, 'a')]);
    expect(violationOf(() => checker.onApply(1, storage, [entry(1, 1, 'a')])).check).toBe('persistence-contract');
  });

  it('a vote granted before it was persisted (persistence contract)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const granted = { type: 'VoteResp', from: 2, to: 1, term: 4, granted: true } as const;
    expect(violationOf(() => checker.onSend(2, granted, 'after-persist', new NodeStorage())).check).toBe('persistence-contract');
    const early = new NodeStorage();
    early.persist(hs(4, 1, 0), []);
    expect(violationOf(() => checker.onSend(2, granted, 'before-persist', early)).check).toBe('persistence-contract');
  });

  it('a commit index that goes back (monotonic)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    const log = [entry(1, 1, 'a'), entry(2, 1, 'b')];
    checker.afterEvent(1, view(1, 'follower', 1, log, 2));
    expect(violationOf(() => checker.afterEvent(1, view(1, 'follower', 1, log, 1))).check).toBe('monotonic');
  });

  it('a read index below an index committed before the read began (linearizable reads, thesis §6.4)', () => {
    const checker = new SafetyChecker([1, 2, 3]);
    checker.afterEvent(1, view(1, 'leader', 1, [entry(1, 1, 'a'), entry(2, 1, 'b')], 2));
    checker.onReadRequest(2, 7);
    checker.onReadState(2, { context: 7, index: 2 });
    expect(violationOf(() => checker.onReadState(2, { context: 7, index: 1 })).check).toBe('read-linearizability');
  });
});

describe('the simulator against a deliberately lying disk', () => {
  const SAFETY_CHECKS: readonly CheckName[] = ['election-safety', 'vote-once', 'log-matching', 'leader-completeness', 'state-machine-safety', 'committed-overwrite'];

  /** Runs seeds with `options` until one violates one of the checker's own safety checks. */
  function firstSafetyViolation(options: RunOptions, maxSeeds: number): { seed: number; check: CheckName } | undefined {
    for (let seed = 1; seed <= maxSeeds; seed++) {
      const v = runSeed(seed, options).violation;
      if (v !== undefined && SAFETY_CHECKS.includes(v.check)) return { seed, check: v.check };
    }
    return undefined;
  }

  it('a node that forgets its vote on restart ends up with two leaders or diverging logs', () => {
    const found = firstSafetyViolation({ sabotage: 'forget-vote', profile: 'crashes' }, 400);
    expect(found, 'no seed in 1..400 caught the forgotten vote').toBeDefined();
  }, 60_000);

  it('a node that loses an acknowledged entry on restart loses a committed entry', () => {
    const found = firstSafetyViolation({ sabotage: 'lose-last-entry', profile: 'chaos' }, 400);
    expect(found, 'no seed in 1..400 caught the lost entry').toBeDefined();
  }, 60_000);
});

describe('runSeed', () => {
  it('gives the identical result for one seed twice (determinism)', () => {
    for (const seed of [7, 4242]) {
      const first = runSeed(seed);
      const second = runSeed(seed);
      expect(second).toEqual(first);
      expect(first.steps).toBeGreaterThan(1000);
    }
    expect(runSeed(8).traceHash).not.toBe(runSeed(7).traceHash);
  });

  it('reports the liveness phase of a passing seed', () => {
    const r = runSeed(3);
    expect(r.violation).toBeUndefined();
    expect(r.livenessTicks).toBeDefined();
    expect(r.livenessTicks!).toBeLessThanOrEqual(r.livenessBoundTicks);
    expect(r.committedIndex).toBeGreaterThan(0);
  });

  it('names the replay command', () => {
    expect(replayCommand(12)).toBe('npm run sim -- --seed 12');
  });
});

describe('EventQueue', () => {
  it('pops in (time, insertion order) order', () => {
    const q = new EventQueue<string>();
    const rng = createRng(1);
    const pushed: { time: number; item: string }[] = [];
    for (let k = 0; k < 500; k++) {
      const time = rng.int(50);
      q.push(time, `e${k}`);
      pushed.push({ time, item: `e${k}` });
    }
    const expected = [...pushed].sort((a, b) => a.time - b.time); // Array.prototype.sort is stable
    const popped: { time: number; item: string }[] = [];
    for (let e = q.pop(); e !== undefined; e = q.pop()) popped.push(e);
    expect(popped).toEqual(expected);
  });

  it('refuses more than its limit of pending events', () => {
    const q = new EventQueue<number>(2);
    q.push(1, 1);
    q.push(1, 2);
    expect(() => q.push(1, 3)).toThrow(/maxPendingEvents=2/);
  });
});

describe('Network partitions', () => {
  const faults: NetworkFaults = { lossRate: 0, duplicateRate: 0, minDelayUnits: 1, maxDelayUnits: 1 };
  const nodes = [1, 2, 3, 4, 5];
  const links = (net: Network): string[] => {
    const blocked: string[] = [];
    for (const a of nodes) for (const b of nodes) if (a !== b && net.isBlocked(a, b)) blocked.push(`${a}>${b}`);
    return blocked;
  };

  it('isolate cuts one node off in both directions', () => {
    const net = new Network(nodes, createRng(3), faults, () => {});
    const lone = Number(/isolate (\d)/.exec(net.partition('isolate'))![1]);
    for (const other of nodes.filter((n) => n !== lone)) {
      expect(net.isBlocked(lone, other) && net.isBlocked(other, lone)).toBe(true);
    }
    expect(links(net)).toHaveLength(8);
  });

  it('one-way blocks a direction while the reverse still delivers', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const net = new Network(nodes, createRng(seed), faults, () => {});
      net.partition('one-way');
      const blocked = links(net);
      expect(blocked.length).toBeGreaterThan(0);
      for (const link of blocked) {
        const [a, b] = link.split('>').map(Number) as [number, number];
        expect(net.isBlocked(b, a)).toBe(false);
      }
    }
  });

  it('bridge leaves one node that sees both halves, which cannot see each other', () => {
    const net = new Network(nodes, createRng(5), faults, () => {});
    const m = /bridge \{([\d,]+)\} <-(\d)-> \{([\d,]+)\}/.exec(net.partition('bridge'))!;
    const a = m[1]!.split(',').map(Number);
    const bridge = Number(m[2]);
    const b = m[3]!.split(',').map(Number);
    for (const x of a) for (const y of b) expect(net.isBlocked(x, y) && net.isBlocked(y, x)).toBe(true);
    for (const x of [...a, ...b]) expect(net.isBlocked(x, bridge) || net.isBlocked(bridge, x)).toBe(false);
  });

  it('drops a message whose link became blocked while it was in flight', () => {
    const delivered: number[] = [];
    const net = new Network([1, 2], createRng(1), faults, (m) => delivered.push(m.to));
    const msg = { type: 'HeartbeatResp', from: 1, to: 2, term: 1, context: 0 } as const;
    net.send(msg);
    expect(delivered).toEqual([2]);
    net.partition('symmetric');
    expect(net.admit(msg)).toBe(false);
    net.heal();
    expect(net.admit(msg)).toBe(true);
  });
});

describe('the sim command line', () => {
  async function cli(...argv: string[]): Promise<{ code: number; out: string }> {
    const lines: string[] = [];
    let t = 0;
    const code = await runSimCli(argv, { out: (l) => lines.push(l), nowMs: () => (t += 1) });
    return { code, out: lines.join('\n') };
  }

  it('runs a range of seeds and prints a summary', async () => {
    const { code, out } = await cli('--seeds', '3', '--start', '10');
    expect(code).toBe(0);
    expect(out).toMatch(/running seeds 10\.\.12/);
    expect(out).toMatch(/summary: 3 seeds, 0 violations/);
  });

  it('replays one seed with its configuration and trace', async () => {
    const { code, out } = await cli('--seed', '10', '--tail', '5');
    expect(code).toBe(0);
    expect(out).toMatch(/^seed 10: [35] nodes, profile/m);
    expect(out).toMatch(/last 5 events:/);
    expect(out).toMatch(/seed 10: ok;/);
  });

  it('rejects bad arguments with exit code 2', async () => {
    expect((await cli('--seeds', 'many')).code).toBe(2);
    expect((await cli()).code).toBe(2);
    expect((await cli('--bogus')).code).toBe(2);
  });
});
