// Reads served a few per turn (readsPerTurn), seen from a client of an in-process 3-node cluster
// that lets one read through per turn and has at most two reads in progress: reads of every
// consistency still return what was written, and reads beyond the limit are refused, naming it.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/index.js';
import type { Consistency } from '../../src/index.js';
import { InProcessCluster } from '../support/in-process-cluster.js';
import { waitFor } from '../support/wait.js';

const MAX_PENDING_READS = 2;

let cluster: InProcessCluster;
let atLeader: KvClient;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ size: 3, config: { readsPerTurn: 1, maxPendingReads: MAX_PENDING_READS } });
  const leader = await cluster.waitForLeader();
  // No retries: a refusal must reach the test as it is.
  atLeader = new KvClient({ endpoints: [cluster.addresses.get(leader)!], maxRetries: 0 });
});

afterAll(async () => {
  atLeader?.close();
  await cluster?.cleanup();
  expect(cluster?.fatalErrors ?? []).toEqual([]);
});

describe('reads paced one per turn', () => {
  it('serves reads of every consistency, several at once, with the value written', async () => {
    const w = await atLeader.put('pace/k', 'v1');
    // In this order: the LINEARIZABLE reads wait for the put's apply, so the STALE ones see it too.
    for (const consistency of ['linearizable', 'lease', 'stale'] as Consistency[]) {
      // As many at once as may wait for a read index, all of them then paced.
      const reads = await Promise.all(Array.from({ length: MAX_PENDING_READS }, () => atLeader.get('pace/k', { consistency })));
      for (const r of reads) {
        expect(r.valueString).toBe('v1');
        expect(r.header.index).toBeGreaterThanOrEqual(w.header.index);
      }
    }
  });

  it('refuses the STALE reads that find the waiting queue full, naming the limit, and serves the others', async () => {
    await atLeader.put('pace/many', 'v2');
    // A STALE read may miss a write whose apply is still being written: wait until it is visible.
    await waitFor(async () => (await atLeader.get('pace/many', { consistency: 'stale' })).valueString === 'v2', 5_000, 'the write visible to STALE reads');
    // Sent together, they reach the leader in a few socket reads: far more than 1 + 2 per turn.
    const outcomes = await Promise.allSettled(Array.from({ length: 200 }, () => atLeader.get('pace/many', { consistency: 'stale' })));
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    const served = outcomes.filter((o) => o.status === 'fulfilled');
    expect(refused.length).toBeGreaterThan(0);
    expect(served.length).toBeGreaterThanOrEqual(1 + MAX_PENDING_READS);
    for (const o of refused) {
      expect(o.reason).toBeInstanceOf(KvError);
      expect((o.reason as KvError).code).toBe('TOO_MANY_REQUESTS');
      expect((o.reason as Error).message).toContain(`limit maxPendingReads=${MAX_PENDING_READS}`);
    }
    for (const o of served) expect((o as PromiseFulfilledResult<{ valueString: string }>).value.valueString).toBe('v2');
  });
});
