// Snapshots on real kvnode processes (Raft §7): a follower that was down while the others compacted
// their logs catches up through InstallSnapshot and serves the same data; a follower killed in the
// middle of an install keeps its old state and catches up when it returns; a corrupted or truncated
// snapshot stream is refused and changes nothing. One cluster for the file; tests run in order.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as pb from '../../src/server/kv-proto.js';
import { NodeStore } from '../../src/storage/node-store.js';
import { PeerTransport } from '../../src/transport/peer-transport.js';
import { reportAndCleanUp } from '../support/cluster-hooks.js';
import { ProcessCluster, retryUnavailable } from '../support/process-cluster.js';
import { waitFor } from '../support/wait.js';
import { makeTempDir, removeTempDir } from '../storage/temp-dir.js';

const CLUSTER_ID = 'raftkv';
const CALL_TIMEOUT_MS = 3_000;
const RETRY_TIMEOUT_MS = 20_000;
const CATCH_UP_TIMEOUT_MS = 60_000;
// Small thresholds and chunks, so a few hundred writes compact the log and a transfer takes many chunks.
const SNAPSHOT_ARGS = ['--snapshot-entries', '50', '--compaction-margin-entries', '5', '--snapshot-chunk-bytes', '1024'];

const b = (s: string): Buffer => Buffer.from(s);

let cluster: ProcessCluster;
let tempDirs: string[] = [];

beforeAll(async () => {
  cluster = await ProcessCluster.create({ size: 3, args: SNAPSHOT_ARGS });
  await cluster.start();
});

reportAndCleanUp(() => cluster);

afterAll(async () => {
  for (const d of tempDirs) await removeTempDir(d);
  tempDirs = [];
});

let seq = 0;
async function put(via: number, key: string, value: string | Buffer): Promise<pb.PutResponse> {
  const session = { client_id: 'snapshot-test', seq: ++seq };
  return retryUnavailable(
    () => cluster.client(via).put({ key: b(key), value: typeof value === 'string' ? b(value) : value, session }, { timeoutMs: CALL_TIMEOUT_MS }),
    RETRY_TIMEOUT_MS,
  );
}

function status(id: number): Promise<pb.StatusResponse> {
  return retryUnavailable(() => cluster.client(id).status({ timeoutMs: CALL_TIMEOUT_MS }), RETRY_TIMEOUT_MS);
}

const num = (v: unknown): number => Number(v ?? 0);

/** Every key and value of a node as it stands (STALE: read locally), in key order. */
async function dump(id: number): Promise<string[]> {
  const out: string[] = [];
  let after: Buffer | undefined;
  for (;;) {
    const res = await cluster.client(id).range(
      { prefix: b(''), limit: 500, read: { consistency: 'STALE' }, ...(after ? { page_token: after } : {}) },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
    for (const kv of res.kvs) out.push(`${Buffer.from(kv.key).toString()}=${Buffer.from(kv.value).toString('hex').slice(0, 16)}@${kv.mod_index}`);
    if (!res.more) return out;
    after = Buffer.from(res.next_page_token);
  }
}

/** Waits until node `id` has applied everything the leader has committed, then compares their data. */
async function expectSameDataAsLeader(id: number, leader: number): Promise<void> {
  const target = num((await status(leader)).commit_index);
  await waitFor(async () => num((await status(id)).applied_index) >= target, CATCH_UP_TIMEOUT_MS, `node ${id} to apply index ${target}`, 50);
  await waitFor(async () => num((await status(leader)).applied_index) >= target, CATCH_UP_TIMEOUT_MS, `leader to apply ${target}`, 50);
  expect(await dump(id)).toEqual(await dump(leader));
}

describe('InstallSnapshot on real processes', () => {
  it('a follower that was down past the compaction point catches up through a snapshot and serves the same data', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;
    for (let i = 0; i < 20; i++) await put(leader, `early/${i}`, `v${i}`);
    const before = await status(follower);
    await cluster.stopNode(follower);

    for (let i = 0; i < 300; i++) await put(leader, `k/${String(i).padStart(4, '0')}`, `value-${i}-`.padEnd(200, 'x'));
    // Whichever node leads now (an election may have happened under load) must have compacted.
    await waitFor(
      async () => num((await status(await cluster.waitForLeader())).log_start_index) > num(before.last_index),
      20_000,
      'the leader to compact past the stopped follower',
      50,
    );

    await cluster.restart(follower);
    await waitFor(async () => num((await status(follower)).snapshots_installed) >= 1, CATCH_UP_TIMEOUT_MS, 'the follower to install a snapshot', 50);
    const after = await status(follower);
    expect(num(after.log_start_index)).toBeGreaterThan(num(before.last_index));
    expect(num((await status(leader)).snapshots_sent)).toBeGreaterThanOrEqual(1);
    await expectSameDataAsLeader(follower, await cluster.waitForLeader());

    // Replication goes on with ordinary appends after the snapshot.
    const res = await put(leader, 'after-snapshot', 'yes');
    const got = await cluster.client(follower).get(
      { key: b('after-snapshot'), read: { consistency: 'STALE', min_index: String(res.header!.index) } },
      { timeoutMs: CATCH_UP_TIMEOUT_MS },
    );
    expect(Buffer.from(got.kv!.value).toString()).toBe('yes');
  });

  it('a follower killed in the middle of a snapshot transfer keeps its old state intact, then catches up', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;
    await cluster.stopNode(follower);
    const store0 = await NodeStore.open(cluster.dataDir(follower), { clusterId: CLUSTER_ID, nodeId: follower, create: false });
    const oldApplied = store0.appliedIndex;
    await store0.close();

    // About 6 MiB of data: with 1 KiB chunks the transfer takes thousands of acknowledged chunks.
    const big = Buffer.alloc(8 * 1024, 7);
    let lastIndex = 0;
    for (let i = 0; i < 800; i++) lastIndex = num((await put(leader, `big/${String(i).padStart(4, '0')}`, big)).header!.index);
    await waitFor(async () => num((await status(leader)).log_start_index) > oldApplied, 20_000, 'the leader to compact', 50);

    const p = await cluster.restart(follower);
    await waitFor(() => p.stderr.includes('snapshot transfer incoming'), 20_000, 'the transfer to start', 5);
    await cluster.kill(follower);

    // The old state is there, whole, and none of the half-received snapshot. (Appends the leader had
    // queued for the follower before it compacted may have reached it first: the state can be a
    // little ahead of where it stopped, but it is a state of the log, short of the snapshot's.)
    const store = await NodeStore.open(cluster.dataDir(follower), { clusterId: CLUSTER_ID, nodeId: follower, create: false });
    try {
      expect(store.appliedIndex).toBeGreaterThanOrEqual(oldApplied);
      expect(store.appliedIndex).toBeLessThan(lastIndex);
      expect(await store.getData(b('big/0799'))).toBeUndefined();
      if (store.appliedIndex === oldApplied) expect(await store.getData(b('big/0000'))).toBeUndefined();
    } finally {
      await store.close();
    }

    await cluster.restart(follower);
    await waitFor(async () => num((await status(follower)).snapshots_installed) >= 1, CATCH_UP_TIMEOUT_MS, 'the restarted follower to install a snapshot', 50);
    await expectSameDataAsLeader(follower, leader);
  });

  it('a corrupted or truncated snapshot stream is refused, and the node keeps its data', async () => {
    const leader = await cluster.waitForLeader();
    const target = cluster.ids.find((id) => id !== leader)!;
    const posingAs = cluster.ids.find((id) => id !== target && id !== leader)!;
    // The target first applies everything committed, so that its data changes only if a snapshot lands.
    const committed = num((await status(leader)).commit_index);
    await waitFor(async () => num((await status(target)).applied_index) >= committed, CATCH_UP_TIMEOUT_MS, `node ${target} to apply index ${committed}`, 50);
    const beforeData = await dump(target);
    const beforeStatus = await status(target);

    // A well-formed snapshot of this cluster, made from a store of our own.
    const dir = await makeTempDir();
    tempDirs.push(dir);
    const src = await NodeStore.open(dir, { clusterId: CLUSTER_ID, nodeId: 9 });
    await src.persist({ hardState: { term: 1, vote: 0, commit: 1 }, entries: [{ index: 1, term: 1, type: 'noop', data: new Uint8Array(0) }] });
    await src.writeState({ applied: 1, appliedTerm: 1, data: [[b('intruder'), b('should never appear')]] });
    const reader = await src.openSnapshot();
    const chunks: Uint8Array[] = [];
    for await (const c of reader.chunks(16)) chunks.push(Uint8Array.from(c));
    await src.close();
    expect(chunks.length).toBeGreaterThan(2);

    const fake = new PeerTransport({ nodeId: posingAs, clusterId: CLUSTER_ID, peers: new Map([[target, cluster.addresses.get(target)!]]) });
    try {
      const term = num(beforeStatus.term);
      async function* gen(parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
        for (const p of parts) yield p;
      }
      const flipped = chunks.map((c, i) => (i === 1 ? c.map((x, j) => (j === 5 ? x ^ 0xff : x)) : c));
      await expect(fake.sendSnapshot(target, term, gen(flipped))).rejects.toThrow(/checksum|corrupt/i);
      await expect(fake.sendSnapshot(target, term, gen(chunks.slice(0, -1)))).rejects.toThrow(/truncated|ended/i);
    } finally {
      await fake.close();
    }

    expect(await dump(target)).toEqual(beforeData);
    const afterStatus = await status(target);
    expect(num(afterStatus.snapshots_installed)).toBe(num(beforeStatus.snapshots_installed));
    expect(num(afterStatus.snapshot_transfers_failed)).toBeGreaterThanOrEqual(num(beforeStatus.snapshot_transfers_failed) + 2);
    // The node keeps serving and replicating.
    await put(leader, 'after-bad-snapshots', 'still fine');
    await expectSameDataAsLeader(target, leader);
  });
});
