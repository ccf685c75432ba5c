// A follower's STALE read reports how stale its state is, not only how long ago it heard from the
// leader: the message that tells it of a commit comes after the commit (the leader held it back,
// commitDeferMs), and the apply may wait for a write of its own after that (applyDeferMs). Until the
// state holds that commit, it is as stale as the last leader message whose commit it does hold.
// In-process 3-node cluster: the held-back commit reaches the follower by the leader's 300 ms timer
// or by a heartbeat (every 500 ms), whichever comes first, and the apply's write waits up to 1,000 ms.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/index.js';
import { MAX_APPLY_DEFER_MS } from '../../src/node/raft-runtime.js';
import { InProcessCluster } from '../support/in-process-cluster.js';
import { waitFor } from '../support/wait.js';

let cluster: InProcessCluster;
let atLeader: KvClient;
let atFollower: KvClient;
let followerAddress: string;

beforeAll(async () => {
  cluster = await InProcessCluster.start({
    size: 3,
    config: { tickMs: 100, electionTimeoutTicks: 10, heartbeatIntervalTicks: 5, commitDeferMs: 300, applyDeferMs: MAX_APPLY_DEFER_MS },
  });
  const leader = await cluster.waitForLeader();
  const follower = cluster.ids.find((id) => id !== leader)!;
  followerAddress = cluster.addresses.get(follower)!;
  atLeader = new KvClient({ endpoints: [cluster.addresses.get(leader)!] });
  atFollower = new KvClient({ endpoints: [followerAddress] });
});

afterAll(async () => {
  atLeader?.close();
  atFollower?.close();
  await cluster?.cleanup();
  expect(cluster?.fatalErrors ?? []).toEqual([]);
});

/** Puts `key` and waits until the follower knows the put is committed (its apply may still wait). */
async function putAndLearn(key: string, value: string): Promise<{ index: number; ackAt: number }> {
  const w = await atLeader.put(key, value);
  const ackAt = Date.now();
  await waitFor(async () => (await atFollower.status(followerAddress)).commitIndex >= w.header.index, 5_000, `the follower told of commit ${w.header.index}`, 2);
  return { index: w.header.index, ackAt };
}

describe('STALE reads on a follower, after a held-back commit', () => {
  it('a read that misses an acknowledged write reports at least the time since that write was acknowledged', async () => {
    const { index, ackAt } = await putAndLearn('staleness/a', 'v1');
    const readStart = Date.now();
    const r = await atFollower.get('staleness/a', { consistency: 'stale' });
    if (r.header.index < index) {
      // The state misses a write acknowledged before ackAt: it is older than that.
      expect(r.header.stalenessMs).toBeGreaterThanOrEqual(readStart - ackAt - 1);
    } else {
      expect(r.valueString).toBe('v1');
    }
  });

  it('a read with max_staleness_ms serves a state no staler than that: with the write, or one that truly is that fresh', async () => {
    const { index, ackAt } = await putAndLearn('staleness/b', 'v2');
    const readStart = Date.now();
    let r;
    try {
      r = await atFollower.get('staleness/b', { consistency: 'stale', maxStalenessMs: 100 });
    } catch (e) {
      // Refusing is also within the bound's promise; serving a staler state is not.
      expect(e).toBeInstanceOf(KvError);
      expect((e as KvError).code).toBe('TOO_STALE');
      return;
    }
    expect(r.header.stalenessMs).toBeLessThanOrEqual(100);
    if (r.header.index < index) {
      // Without the write, the state is older than its acknowledgement: the bound must still hold.
      expect(r.header.stalenessMs).toBeGreaterThanOrEqual(readStart - ackAt - 1);
    } else {
      expect(r.valueString).toBe('v2');
    }
  });
});
