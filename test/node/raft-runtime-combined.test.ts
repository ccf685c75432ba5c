// The runtime's combined write: a Ready's log entries, hard state and the apply of its committed
// entries go to the store in one persist call; the writer is answered once its apply is computed,
// while that write is in progress, but the applied index (which reads wait on) moves only once the
// write is durable; a write that fails stops the node.

import { afterEach, describe, expect, it } from 'vitest';
import { RaftRuntime } from '../../src/node/raft-runtime.js';
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

/** A one-node cluster: it elects itself, and commits an entry once it is durable. */
function fake(): Fake {
  const raft = new Raft({
    id: 1,
    peers: [1],
    electionTimeoutTicks: 10,
    heartbeatIntervalTicks: 2,
    rng: createRng(7),
    initial: { hardState: { term: 0, vote: 0, commit: 0 }, entries: [], applied: 0 },
  });
  const f = { raft, persists: [], written: [], failed: [], fatal: [] } as unknown as Fake;
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
        const applied = es[es.length - 1]!.index;
        return {
          results: es.map((e) => `applied ${e.index}`),
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
  await waitFor(() => f.raft.role === 'leader' && f.runtime.appliedIndex >= 1, 5_000, 'the no-op applied');
}

describe('RaftRuntime combined write', () => {
  it('answers the writer while the apply is written; the applied index moves only once it is durable', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    let release!: () => void;
    f.hold = new Promise<void>((r) => (release = r));
    const answered = await f.runtime.propose(new Uint8Array([1]), 5_000);
    expect(answered).toEqual({ index: 2, result: 'applied 2' });
    // The batch carrying entry 2's apply is still being written.
    const last = f.persists[f.persists.length - 1]!;
    expect(last.state).toEqual({ applied: 2 });
    expect(f.written).not.toContain(2);
    expect(f.runtime.appliedIndex).toBe(1);
    let caughtUp = false;
    const wait = f.runtime.waitApplied(2, 5_000).then(() => (caughtUp = true));
    await new Promise((r) => setImmediate(r));
    expect(caughtUp).toBe(false);
    release();
    await wait;
    expect(f.written).toContain(2);
    expect(f.runtime.appliedIndex).toBe(2);
  });

  it('a failed combined write reports failed() and stops the node', async () => {
    const f = fake();
    await leaderWithNoopApplied(f);
    f.failWith = new Error('disk on fire');
    await f.runtime.propose(new Uint8Array([1]), 5_000).catch(() => undefined);
    await waitFor(() => f.fatal.length > 0, 5_000, 'the node to stop');
    expect(f.failed).toHaveLength(1);
    expect(String(f.fatal[0])).toMatch(/disk on fire/);
    await expect(f.runtime.propose(new Uint8Array([2]), 1_000)).rejects.toThrow();
  });
});
