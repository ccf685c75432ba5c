// The runtime's side of a deferred commit broadcast (RaftConfig.deferCommitBroadcast): a leader that
// holds a new commit index back from followers with no new entries sends it within commitDeferMs,
// alone if no append took it first. A real core leads two followers played by the transport, which
// grant every vote and acknowledge every append; ticks are a second long, so no heartbeat (every 5
// ticks) carries the commit during a test. Also here, on the same leader: proposals and reads that
// arrive in separate callbacks of one event-loop turn reach the core together (RaftRuntime.gather).

import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_COMMIT_DEFER_MS, MAX_COMMIT_DEFER_MS, RaftRuntime } from '../../src/node/raft-runtime.js';
import { Raft } from '../../src/raft/raft.js';
import { createRng } from '../../src/raft/rng.js';
import type { AppendRequest, Entry, Message } from '../../src/raft/types.js';
import { waitFor } from '../support/wait.js';

const silent = { info() {}, warn() {}, error() {}, debug() {} };

interface Sent {
  readonly m: Message;
  readonly atMs: number;
}

interface Leader {
  readonly runtime: RaftRuntime<undefined, never>;
  readonly raft: Raft;
  readonly sent: Sent[];
}

const running: RaftRuntime<undefined, never>[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop();
});

function newRaft(defer: boolean): Raft {
  return new Raft({
    id: 1,
    peers: [1, 2, 3],
    electionTimeoutTicks: 10,
    heartbeatIntervalTicks: 5,
    deferCommitBroadcast: defer,
    rng: createRng(11),
    initial: { hardState: { term: 0, vote: 0, commit: 0 }, entries: [], applied: 0 },
  });
}

/** Answers for followers 2 and 3, a moment later, as a network would. */
function reply(m: Message): Message | undefined {
  const base = { from: m.to, to: m.from, term: m.term };
  switch (m.type) {
    case 'PreVote':
      return { ...base, type: 'PreVoteResp', granted: true };
    case 'Vote':
      return { ...base, type: 'VoteResp', granted: true };
    case 'App':
      return m.noReply ? undefined : { ...base, type: 'AppResp', index: m.prevIndex + m.entries.length, reject: false };
    case 'Heartbeat':
      return { ...base, type: 'HeartbeatResp', context: m.context };
    default:
      return undefined;
  }
}

function leader(opts: { defer: boolean; commitDeferMs?: number }): Leader {
  const raft = newRaft(opts.defer);
  const sent: Sent[] = [];
  const l = { raft, sent } as unknown as { -readonly [K in keyof Leader]: Leader[K] };
  l.runtime = new RaftRuntime<undefined, never>({
    ...baseOptions(),
    raft,
    transport: {
      send(ms) {
        for (const m of ms) {
          sent.push({ m, atMs: performance.now() });
          const r = reply(m);
          if (r !== undefined) setImmediate(() => l.runtime.step(r));
        }
      },
    },
    ...(opts.commitDeferMs !== undefined ? { commitDeferMs: opts.commitDeferMs } : {}),
    onFatal: (e) => {
      throw e;
    },
  });
  running.push(l.runtime);
  l.runtime.start();
  return l;
}

/** Appends that told follower `to` of commit `index` or later. */
const toldOf = (l: Leader, to: number, index: number): Sent[] =>
  l.sent.filter((s) => s.m.type === 'App' && s.m.to === to && s.m.commit >= index);

async function elected(l: Leader): Promise<void> {
  l.runtime.campaign();
  await waitFor(() => l.raft.role === 'leader' && l.raft.commitIndex >= 1, 5_000, 'node 1 elected, its no-op committed');
  // Both followers acknowledged the no-op: appends to them are pipelined from here on.
  await waitFor(() => l.raft.status().progress?.get(2)?.match === 1 && l.raft.status().progress?.get(3)?.match === 1, 5_000, 'the no-op acknowledged');
  if (l.raft.defersCommitBroadcast) {
    // ... and are told it is committed once the deferral runs out.
    await waitFor(() => toldOf(l, 2, 1).length > 0 && toldOf(l, 3, 1).length > 0, 5_000, 'the followers told of commit 1');
  }
}

describe('RaftRuntime commit deferral', () => {
  it('sends a commit alone after commitDeferMs when no entries go meanwhile', async () => {
    const deferMs = 200;
    const l = leader({ defer: true, commitDeferMs: deferMs });
    await elected(l);
    const { index } = await l.runtime.propose(new Uint8Array([1]), 5_000);
    const committedAt = performance.now();
    // Committed and applied here; the followers hold the entry and were not told.
    expect(toldOf(l, 2, index)).toEqual([]);
    expect(toldOf(l, 3, index)).toEqual([]);
    await waitFor(() => toldOf(l, 2, index).length > 0 && toldOf(l, 3, index).length > 0, 5_000, `the followers told of commit ${index}`);
    for (const to of [2, 3]) {
      const [first, ...rest] = toldOf(l, to, index);
      expect(rest).toEqual([]);
      expect((first!.m as AppendRequest).entries).toEqual([]);
      // Not before the deferral ran out (a timer may fire a millisecond early against this clock).
      expect(first!.atMs - committedAt).toBeGreaterThanOrEqual(deferMs - 50);
    }
    expect(l.raft.commitUnsent()).toBe(false);
  });

  it('sends a commit held back with the next entries, and then no commit alone for it', async () => {
    const l = leader({ defer: true, commitDeferMs: 400 });
    await elected(l);
    const a = await l.runtime.propose(new Uint8Array([1]), 5_000);
    const b = await l.runtime.propose(new Uint8Array([2]), 5_000);
    for (const to of [2, 3]) {
      // The append of entry b told the follower that a was committed.
      const withB = l.sent.filter((s) => s.m.type === 'App' && s.m.to === to && s.m.entries.some((e) => e.index === b.index));
      expect(withB.map((s) => (s.m as AppendRequest).commit)).toEqual([a.index]);
    }
    // b's commit goes alone once its deferral runs out; a's never went alone.
    await waitFor(() => toldOf(l, 2, b.index).length > 0 && toldOf(l, 3, b.index).length > 0, 5_000, `the followers told of commit ${b.index}`);
    const alone = l.sent.filter((s) => s.m.type === 'App' && s.m.entries.length === 0 && s.m.commit === a.index);
    expect(alone).toEqual([]);
  });

  it('without deferral tells the followers of a commit before the writer is answered', async () => {
    const l = leader({ defer: false });
    await elected(l);
    const { index } = await l.runtime.propose(new Uint8Array([1]), 5_000);
    expect(toldOf(l, 2, index).length).toBe(1);
    expect(toldOf(l, 3, index).length).toBe(1);
  });

  it('defaults to DEFAULT_COMMIT_DEFER_MS with a core that defers, and refuses a value that does not fit the core', () => {
    const ok = new RaftRuntime<undefined, never>({ ...baseOptions(), raft: newRaft(true) });
    expect(ok).toBeDefined();
    expect(DEFAULT_COMMIT_DEFER_MS).toBeGreaterThan(0);
    expect(() => new RaftRuntime<undefined, never>({ ...baseOptions(), raft: newRaft(true), commitDeferMs: 0 })).toThrow(
      'commitDeferMs 0 does not fit a core with deferCommitBroadcast',
    );
    expect(() => new RaftRuntime<undefined, never>({ ...baseOptions(), raft: newRaft(false), commitDeferMs: 5 })).toThrow(
      'commitDeferMs 5 does not fit a core without deferCommitBroadcast',
    );
    expect(() => new RaftRuntime<undefined, never>({ ...baseOptions(), raft: newRaft(true), commitDeferMs: MAX_COMMIT_DEFER_MS + 1 })).toThrow(
      `commitDeferMs must be an integer in [0, ${MAX_COMMIT_DEFER_MS}]`,
    );
  });
});

describe('RaftRuntime gathering', () => {
  /** Calls `fn` from `n` callbacks of one turn of the event loop, as n requests read at once would. */
  function fromSeparateCallbacks<T>(n: number, fn: () => Promise<T>): Promise<T[]> {
    const started: Promise<T[]> = new Promise((resolve) => {
      const out: Promise<T>[] = [];
      for (let i = 0; i < n; i++) {
        setImmediate(() => {
          out.push(fn());
          if (out.length === n) resolve(Promise.all(out));
        });
      }
    });
    return started;
  }

  it('hands proposals that came in separate callbacks of one turn to the core as one batch', async () => {
    const l = leader({ defer: false });
    await elected(l);
    const propose = vi.spyOn(l.raft, 'propose');
    const results = await fromSeparateCallbacks(8, () => l.runtime.propose(new Uint8Array([7]), 5_000));
    expect(propose.mock.calls.map(([datas]) => datas.length)).toEqual([8]);
    const indexes = results.map((r) => r.index);
    expect(new Set(indexes).size).toBe(8);
    expect(Math.max(...indexes) - Math.min(...indexes)).toBe(7);
  });

  it('asks the core for one read index for reads that came in separate callbacks of one turn', async () => {
    const l = leader({ defer: false });
    await elected(l);
    const readIndex = vi.spyOn(l.raft, 'readIndex');
    const indexes = await fromSeparateCallbacks(8, () => l.runtime.readIndex(5_000));
    expect(readIndex).toHaveBeenCalledTimes(1);
    expect(new Set(indexes)).toEqual(new Set([l.raft.commitIndex]));
  });
});

function baseOptions() {
  return {
    store: { persist: async () => {}, compactLog: async () => 0 },
    stateMachine: { apply: async (es: readonly Entry[]) => es.map(() => undefined), reload: async () => {} },
    transport: { send() {} },
    snapshots: { send() {} },
    snapshotPolicy: { snapshotEntries: 0, snapshotBytes: 0, compactionMarginEntries: 0 },
    tickMs: 1000,
    maxPendingProposals: 10,
    maxPendingReads: 10,
    electionTimeoutTicks: 10,
    logger: silent as never,
    onFatal: () => {},
  };
}
