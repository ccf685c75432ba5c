// The runtime's side of snapshots, with a fake store and state machine: installing a received
// snapshot (and what reads report meanwhile), refusing a stale one, taking a snapshot with the
// compaction margin, and counting a restarted node's log toward the next snapshot.

import { afterEach, describe, expect, it } from 'vitest';
import { RaftRuntime, type SnapshotPolicy } from '../../src/node/raft-runtime.js';
import { Raft } from '../../src/raft/raft.js';
import { createRng } from '../../src/raft/rng.js';
import type { Entry, SnapshotMeta } from '../../src/raft/types.js';
import { waitFor } from '../support/wait.js';

const silent = { info() {}, warn() {}, error() {}, debug() {} };

function raftWithLog(applied: number, commit: number, last: number): Raft {
  const entries: Entry[] = Array.from({ length: last }, (_, k) => ({ index: k + 1, term: 1, type: 'normal', data: new Uint8Array(1) }));
  return new Raft({
    id: 2,
    peers: [1, 2, 3],
    electionTimeoutTicks: 10,
    heartbeatIntervalTicks: 2,
    rng: createRng(1),
    initial: { hardState: { term: 1, vote: 0, commit }, entries, applied },
  });
}

interface Fake {
  runtime: RaftRuntime<undefined, string>;
  /** The index reads in the store would see. */
  storeIndex: number;
  compactions: SnapshotMeta[];
  installed: string[];
  boundDuringReload: number;
}

const running: RaftRuntime<undefined, string>[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop();
});

function fake(raft: Raft, policy: SnapshotPolicy): Fake {
  const f = { storeIndex: raft.appliedIndex, compactions: [], installed: [], boundDuringReload: -1 } as unknown as Fake;
  f.runtime = new RaftRuntime<undefined, string>({
    raft,
    store: {
      async persist(b) {
        if (b.snapshot !== undefined) {
          f.installed.push(b.snapshot);
          f.storeIndex = raft.pendingSnapshot!.index;
        }
      },
      async compactLog(upTo) {
        f.compactions.push(upTo);
        return upTo.index - raft.snapshot.index;
      },
    },
    stateMachine: {
      async apply(es) {
        f.storeIndex = es[es.length - 1]!.index;
        return es.map(() => undefined);
      },
      async reload() {
        await new Promise((r) => setImmediate(r));
        f.boundDuringReload = f.runtime.visibleIndexBound;
      },
    },
    transport: { send() {} },
    snapshots: { send() {} },
    snapshotPolicy: policy,
    tickMs: 10,
    maxPendingProposals: 10,
    maxPendingReads: 10,
    electionTimeoutTicks: 10,
    logger: silent as never,
    onFatal: (e) => {
      throw e;
    },
  });
  running.push(f.runtime);
  return f;
}

const noSnapshots: SnapshotPolicy = { snapshotEntries: 0, snapshotBytes: 0, compactionMarginEntries: 0 };

describe('RaftRuntime and snapshots', () => {
  it('installs a received snapshot with the next Ready; reads in between report at least its index', async () => {
    const f = fake(raftWithLog(0, 0, 0), noSnapshots);
    const outcome = await f.runtime.installSnapshot(1, 3, { index: 20, term: 3 }, 'staged-20');
    expect(outcome).toBe('installed');
    expect(f.installed).toEqual(['staged-20']);
    expect(f.runtime.appliedIndex).toBe(20);
    // While the state machine reloaded, the store already held the snapshot's state.
    expect(f.boundDuringReload).toBeGreaterThanOrEqual(f.storeIndex);
  });

  it('a snapshot the log already covers is not needed; one from an older term is refused', async () => {
    const f = fake(raftWithLog(5, 5, 5), noSnapshots);
    await expect(f.runtime.installSnapshot(1, 1, { index: 4, term: 1 }, 'stale')).resolves.toBe('not-needed');
    f.runtime.step({ type: 'Heartbeat', from: 1, to: 2, term: 3, commit: 5, context: 0 });
    await expect(f.runtime.installSnapshot(3, 2, { index: 9, term: 2 }, 'old-term')).rejects.toThrow(/term 2 is behind/);
    expect(f.installed).toEqual([]);
  });

  it('requestSnapshot compacts up to the applied index less the margin', async () => {
    const f = fake(raftWithLog(30, 30, 30), { snapshotEntries: 0, snapshotBytes: 0, compactionMarginEntries: 10 });
    const taken = await f.runtime.requestSnapshot();
    expect(taken).toMatchObject({ index: 30, term: 1, logStartIndex: 20, entriesCompacted: 20 });
    expect(f.compactions).toEqual([{ index: 20, term: 1 }]);
  });

  it('a restarted node counts the applied log past the margin toward its next snapshot', async () => {
    // 30 applied entries in the log, margin 5, a snapshot every 20 entries: one is due at once.
    const f = fake(raftWithLog(30, 30, 30), { snapshotEntries: 20, snapshotBytes: 0, compactionMarginEntries: 5 });
    f.runtime.start();
    await waitFor(() => f.compactions.length > 0, 5_000, 'the snapshot due at start');
    expect(f.compactions[0]).toEqual({ index: 25, term: 1 });
    // With fewer entries than that, none is taken.
    const g = fake(raftWithLog(20, 20, 20), { snapshotEntries: 20, snapshotBytes: 0, compactionMarginEntries: 5 });
    expect(await g.runtime.requestSnapshot()).toMatchObject({ logStartIndex: 15 });
    expect(g.compactions).toHaveLength(1); // only the one asked for
  });
});
