// The deferred apply write seen from a client (in-process 3-node cluster, the longest deferral): a
// STALE read that misses a committed write because its apply's write waits reports that lag as
// staleness, and a STALE read whose max_staleness_ms the lag would pass waits for that write.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/index.js';
import { MAX_APPLY_DEFER_MS } from '../../src/node/raft-runtime.js';
import { InProcessCluster } from '../support/in-process-cluster.js';
import { waitFor } from '../support/wait.js';

let cluster: InProcessCluster;
let atLeader: KvClient;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ size: 3, config: { applyDeferMs: MAX_APPLY_DEFER_MS } });
  const leader = await cluster.waitForLeader();
  // STALE reads go to the first endpoint: the leader.
  atLeader = new KvClient({ endpoints: [cluster.addresses.get(leader)!] });
});

afterAll(async () => {
  atLeader?.close();
  await cluster?.cleanup();
  expect(cluster?.fatalErrors ?? []).toEqual([]);
});

describe('deferred apply writes and STALE reads', () => {
  it('a STALE read that misses a deferred apply reports its lag; one bounded below the lag waits for it', async () => {
    const w = await atLeader.put('defer/k', 'v1');
    // Nothing else is written: the apply of the put waits (up to MAX_APPLY_DEFER_MS) for a sync.
    const missed = await atLeader.get('defer/k', { consistency: 'stale' });
    if (missed.header.index < w.header.index) expect(missed.header.stalenessMs).toBeGreaterThanOrEqual(1);
    // Unbounded STALE reads do not make the write go: wait until the lag is well past 20 ms.
    await waitFor(
      async () => {
        const r = await atLeader.get('defer/k', { consistency: 'stale' });
        return r.header.index < w.header.index && r.header.stalenessMs >= 50;
      },
      5_000,
      'a STALE read that reports a lag of 50 ms or more',
    );
    const bounded = await atLeader.get('defer/k', { consistency: 'stale', maxStalenessMs: 20 });
    expect(bounded.header.index).toBeGreaterThanOrEqual(w.header.index);
    expect(bounded.valueString).toBe('v1');
    expect(bounded.header.stalenessMs).toBeLessThanOrEqual(20);
  });

  it('a LINEARIZABLE read right after a write sees it without waiting for the deferral', async () => {
    const w = await atLeader.put('defer/lin', 'v2');
    // A deadline of half the deferral: had the read waited for the deferral, it would fail.
    const r = await atLeader.get('defer/lin', { timeoutMs: MAX_APPLY_DEFER_MS / 2 });
    expect(r.valueString).toBe('v2');
    expect(r.header.index).toBeGreaterThanOrEqual(w.header.index);
  });
});
