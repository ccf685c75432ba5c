// The runtime's combined write: a Ready's log entries, hard state and the apply of its committed
// entries go to the store in one persist call; the writer is answered once its apply is computed,
// while that write is in progress, but the applied index (which reads wait on) moves only once the
// write is durable; a write that fails stops the node. A Ready that only commits entries defers
// their apply's write to the next persist that syncs anyway, or until a read waits for it, or its
// time runs out, or the node stops.

import { afterEach, describe, expect, it } from 'vitest';
import { MAX_APPLY_DEFER_MS, RaftRuntime } from '../../src/node/raft-runtime.js';
import { Raft } from '../../src/raft/raft.js';
import { createRng } from '../../src/raft/rng.js';
import type { Entry } from '../../src/raft/types.js';
import { waitFor } from '../support/wait.js';

const silent = { info() {}, warn() {}, error() {}, debug() {} };

interface StateWrite {
  readonly applied: number;
}

interface Fake {
  runtime: RaftRuntime<string, never, StateWrite>;
  raft: Raft;
  /** persist calls, in order: what each carried. */
  persists: { entries: number; state?: StateWrite }[];
  /** Set to a promise to hold persist calls that carry a state write. */
  hold?: Promise<void>;
  /** Set to make persist calls that carry a state write fail. */
  failWith?: Error;
  written: number[];
  failed: unknown[];
  fatal: unknown[];
}

const running: RaftRuntime<string, never, StateWrite>[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop();
});

/**
 * A one-node cluster: it elects itself, and commits an entry once it is durable, so the commit comes
 * in a Ready of its own (which defers the apply's write).
 */
function fake(applyDeferMs = MAX_APPLY_DEFER_MS): Fake {
  const raft = new Raft({
    id: 1,
    peers: [1],
    electionTimeoutTicks: 10,
    heartbeatIntervalTicks: 2,
    rng: createRng(7),
    initial: { hardState: { term: 0, vote: 0, commit: 0 }, entries: [], applied: 0 },
  });
  const f = { raft, persists: [], written: [], failed: [], fatal: [] } as unknown as Fake;
  /** The last index prepared and not yet taken for a write (0: none). */
  let prepared = 0;
  f.runtime = new RaftRuntime<string, never, StateWrite>({
    raft,
    store: {
      async persist(b) {
        f.persists.push({ entries: b.entries.length, ...(b.state ? { state: b.state } : {}) });
        if (b.state !== undefined) {
          if (f.hold) await f.hold;
          if (f.failWith) throw f.failWith;
        }
      },
      compactLog: async () => 0,
    },
    stateMachine: {
      apply: async (es: readonly Entry[]) => es.map((e) => `applied ${e.index}`),
      async prepare(es: readonly Entry[]) {
        prepared = es[es.length - 1]!.index;
        return es.map((e) => `applied ${e.index}`);
      },
      takeWrite() {
        if (prepared === 0) return undefined;
        const applied = prepared;
        prepared = 0;
        return {
          write: { applied },
          written: () => f.written.push(applied),
          failed: (err: unknown) => f.failed.push(err),
        };
      },
      reload: async () => {},
    },
    transport: { send() {} },
    snapshots: { send() {} },
    snapshotPolicy: { snapshotEntries: 0, snapshotBytes: 0, compactionMarginEntries: 0 },
    tickMs: 10,
    applyDeferMs,
    maxPendingProposals: 10,
    maxPendingReads: 10,
    electionTimeoutTicks: 10,
    logger: silent as never,
    onFatal: (e) => f.fatal.push(e),
  });
  running.push(f.runtime);
  return f;
}

async function leaderWithNoopApplied(f: Fake): Promise<void> {
  f.runtime.campaign();
  await waitFor(() => f.raft.role === 'leader' && f.raft.appliedIndex >= 1, 5_000, 'the no-op applied');
  // A read waiting for it makes its deferred write go.
  await f.runtime.waitApplied(1, 5_000);
}

/** The persist calls that carried a state write, as the applied index each wrote. */
const stateWrites = (f: Fake): number[] => f.persists.flatMap((p) => (p.state ? [p.state.applied] : []));

describe('RaftRuntime combined write', () => {
  it('answers the writer before its apply is durable; the applied index moves only once it is', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    let release!: () => void;
    f.hold = new Promise<void>((r) => (release = r));
    const answered = await f.runtime.propose(new Uint8Array([1]), 5_000);
    expect(answered).toEqual({ index: 2, result: 'applied 2' });
    expect(f.runtime.appliedIndex).toBe(1);
    // A read needs entry 2: its apply's write goes now, and the read waits until it is durable.
    let caughtUp = false;
    const wait = f.runtime.waitApplied(2, 5_000).then(() => (caughtUp = true));
    await waitFor(() => stateWrites(f).includes(2), 5_000, 'the write of entry 2');
    expect(f.written).not.toContain(2);
    expect(f.runtime.appliedIndex).toBe(1);
    expect(caughtUp).toBe(false);
    release();
    await wait;
    expect(f.written).toContain(2);
    expect(f.runtime.appliedIndex).toBe(2);
  });

  it('defers the apply of a Ready that only commits to the next synced persist', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    const before = f.persists.length;
    expect(await f.runtime.propose(new Uint8Array([1]), 5_000)).toEqual({ index: 2, result: 'applied 2' });
    // Entry 2 went to disk alone; its apply waits (the Ready that committed it needs no sync).
    expect(f.persists.slice(before)).toEqual([{ entries: 1 }]);
    expect(f.runtime.appliedIndex).toBe(1);
    expect(f.runtime.visibleIndexBound).toBe(1);
    // Entry 3 needs a synced persist: the apply of entry 2 goes in the same one.
    expect(await f.runtime.propose(new Uint8Array([2]), 5_000)).toEqual({ index: 3, result: 'applied 3' });
    expect(f.persists.slice(before)).toEqual([{ entries: 1 }, { entries: 1, state: { applied: 2 } }]);
    expect(f.written).toContain(2);
    expect(f.runtime.appliedIndex).toBe(2);
  });

  it('writes a deferred apply once its time runs out', async () => {
    const f = fake(20);
    await leaderWithNoopApplied(f);
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    await waitFor(() => f.runtime.appliedIndex === 2, 5_000, 'the deferred write after 20 ms');
    expect(stateWrites(f)).toContain(2);
    expect(f.persists[f.persists.length - 1]).toEqual({ entries: 0, state: { applied: 2 } });
  });

  it('a failed combined write (an entry and a deferred apply) reports failed() and stops the node', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    f.failWith = new Error('disk on fire');
    // Entry 3's persist carries entry 2's deferred apply, and fails.
    await f.runtime.propose(new Uint8Array([2]), 2_000).catch(() => undefined);
    await waitFor(() => f.fatal.length > 0, 5_000, 'the node to stop');
    expect(f.persists[f.persists.length - 1]).toEqual({ entries: 1, state: { applied: 2 } });
    expect(f.failed).toHaveLength(1);
    expect(f.written).not.toContain(2);
  });

  it('does not defer an apply that a read already waits for', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    const before = f.persists.length;
    const answered = f.runtime.propose(new Uint8Array([1]), 5_000);
    // Well within the deferral's 1000 ms: the read must not wait for it.
    const read = f.runtime.waitApplied(2, 500);
    await answered;
    await read;
    expect(f.persists.slice(before)).toEqual([{ entries: 1 }, { entries: 0, state: { applied: 2 } }]);
  });

  it('a read of an index the core has not applied yet does not make the deferred write go', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    await expect(f.runtime.waitApplied(3, 100)).rejects.toThrow(/did not apply index 3/);
    expect(stateWrites(f)).not.toContain(2);
    await f.runtime.waitApplied(2, 5_000);
    expect(stateWrites(f)).toContain(2);
  });

  it('reports how long the oldest deferred apply has waited', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    expect(f.runtime.applyLagMs).toBe(0);
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    await waitFor(() => f.runtime.applyLagMs >= 2, 5_000, 'the lag to grow');
    await f.runtime.waitApplied(2, 5_000);
    expect(f.runtime.applyLagMs).toBe(0);
  });

  it('every stop() call waits for the deferred write', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    let release!: () => void;
    f.hold = new Promise<void>((r) => (release = r));
    let secondDone = false;
    const first = f.runtime.stop();
    const second = f.runtime.stop().then(() => (secondDone = true));
    await waitFor(() => stateWrites(f).includes(2), 5_000, 'the deferred write to start');
    expect(secondDone).toBe(false);
    release();
    await Promise.all([first, second]);
    expect(f.written).toContain(2);
  });

  it('with applyDeferMs 0 writes the apply of a Ready that only commits at once', async () => {
    const f = fake(0);
    await leaderWithNoopApplied(f);
    const before = f.persists.length;
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    expect(f.persists.slice(before)).toEqual([{ entries: 1 }, { entries: 0, state: { applied: 2 } }]);
  });

  it('refuses an applyDeferMs outside [0, MAX_APPLY_DEFER_MS]', () => {
    expect(() => fake(MAX_APPLY_DEFER_MS + 1)).toThrow(`applyDeferMs must be an integer in [0, ${MAX_APPLY_DEFER_MS}]`);
  });

  it('writes the deferred applies when it stops', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    await f.runtime.propose(new Uint8Array([1]), 5_000);
    expect(stateWrites(f)).not.toContain(2);
    await f.runtime.stop();
    expect(stateWrites(f)).toContain(2);
    expect(f.written).toContain(2);
  });

  it('a failed write of a deferred apply reports failed() and stops the node', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    f.failWith = new Error('disk on fire');
    await f.runtime.propose(new Uint8Array([1]), 5_000).catch(() => undefined);
    await f.runtime.waitApplied(2, 5_000).catch(() => undefined);
    await waitFor(() => f.fatal.length > 0, 5_000, 'the node to stop');
    expect(f.failed).toHaveLength(1);
    expect(String(f.fatal[0])).toMatch(/disk on fire/);
    await expect(f.runtime.propose(new Uint8Array([2]), 1_000)).rejects.toThrow();
  });
});
