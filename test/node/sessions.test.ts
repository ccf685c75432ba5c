// Session guarantees of STALE reads on real kvnode processes, with a follower made to lag by cutting the
// leader→follower link (one way) at run time:
//  - read-your-writes: a STALE read with min_index = a write's index, sent to a follower that lacks
//    that write, waits, and answers with the written value once the follower catches up;
//  - monotonic reads across endpoints: a session client (`session: true`) reading STALE from whichever
//    node it reaches never gets a state older than one it has seen or written, even when the node it
//    asks lags (a plain client asking that node does get the older state).

import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/index.js';
import { ProcessCluster, retryUnavailable } from '../support/process-cluster.js';
import { reportAndCleanUp } from '../support/cluster-hooks.js';

const CALL_TIMEOUT_MS = 2_000;
const WAIT_MS = 10_000;

const b = (s: string): Buffer => Buffer.from(s);
const str = (v: Uint8Array | undefined | null): string => Buffer.from(v ?? new Uint8Array(0)).toString();

let cluster: ProcessCluster;
const clients: KvClient[] = [];

beforeAll(async () => {
  cluster = await ProcessCluster.create({ size: 3, faultInjection: true });
  await cluster.start();
});

reportAndCleanUp(() => cluster);
// Registered after the cleanup hook, so it runs before it.
afterAll(() => {
  for (const c of clients.splice(0)) c.close();
});

afterEach(async () => {
  await cluster?.heal();
});

function client(endpoints: number[], opts: { session?: boolean; attemptTimeoutMs?: number } = {}): KvClient {
  const c = new KvClient({ endpoints: endpoints.map((id) => cluster.addresses.get(id)!), timeoutMs: WAIT_MS, ...opts });
  clients.push(c);
  return c;
}

/** Waits until `id` has applied `index` (a STALE read with min_index). */
async function applied(id: number, index: number | string): Promise<void> {
  await cluster.client(id).get({ key: b('-'), read: { consistency: 'STALE', min_index: String(index) } }, { timeoutMs: WAIT_MS });
}

describe('session guarantees of STALE reads', () => {
  it('a STALE read with min_index on a lagging follower waits, and answers with the write once the link heals', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;
    await cluster.partition([[leader, follower]]);

    const session = { client_id: 'sessions-test', seq: 1 };
    const w = await retryUnavailable(() => cluster.client(leader).put({ key: b('ryw'), value: b('written'), session }, { timeoutMs: CALL_TIMEOUT_MS }), WAIT_MS);
    const index = Number(w.header.index);
    // Committed by the leader whose link to the follower is cut (so the follower cannot have it).
    expect(Number(w.header.node_id)).toBe(leader);

    let settled = false;
    const t0 = performance.now();
    const read = cluster.client(follower)
      .get({ key: b('ryw'), read: { consistency: 'STALE', min_index: String(index) } }, { timeoutMs: WAIT_MS })
      .finally(() => (settled = true));
    // A Status call sent after the read, on the same connection, is answered while the read is not:
    // the read has reached the follower, which has not applied the write, and it waits.
    const during = await cluster.client(follower).status();
    expect(Number(during.applied_index)).toBeLessThan(index);
    expect(settled).toBe(false);
    // Without min_index the follower answers at once, from its older state.
    const old = await cluster.client(follower).get({ key: b('ryw'), read: { consistency: 'STALE' } }, { timeoutMs: CALL_TIMEOUT_MS });
    expect(old.found).toBe(false);
    expect(settled).toBe(false);

    await cluster.heal();
    const r = await read;
    const waitedMs = performance.now() - t0;
    expect({ found: r.found, value: str(r.kv?.value), node: Number(r.header.node_id), consistency: r.header.consistency }).toEqual({
      found: true,
      value: 'written',
      node: follower,
      consistency: 'STALE',
    });
    expect(Number(r.header.index)).toBeGreaterThanOrEqual(index);
    console.log(`the STALE read with min_index ${index} on lagging node ${follower} waited ${waitedMs.toFixed(0)} ms, and answered after the heal`);
  });

  it('monotonic reads across endpoints: a session client never reads a state older than one it saw, though the node it asks lags', async () => {
    const leader = await cluster.waitForLeader();
    const [a, b2] = cluster.ids.filter((id) => id !== leader) as [number, number];
    // STALE reads go to the client's current endpoint, a follower; one that lags makes the read wait
    // past attemptTimeoutMs, and the client tries the other endpoint.
    const kv = client([a, b2], { session: true, attemptTimeoutMs: 500 });
    const seen: Array<{ node: number; index: number; value: string | undefined }> = [];
    const read = async (): Promise<void> => {
      const floor = kv.lastSeenIndex;
      const r = await kv.get('mono', { consistency: 'stale' });
      expect(r.header.consistency).toBe('stale');
      // Never older than what this session had seen (its writes included).
      expect(r.header.index).toBeGreaterThanOrEqual(floor);
      seen.push({ node: r.header.nodeId, index: r.header.index, value: r.valueString });
    };

    // Round 1: node a lags. Whichever endpoint the client is on, the answer holds the session's write.
    await cluster.partition([[leader, a]]);
    const w1 = await kv.put('mono', 'v1');
    expect(w1.header.nodeId).toBe(leader);
    await read();
    expect(seen.at(-1)).toMatchObject({ node: b2, value: 'v1' });
    await read(); // again on b2, where the client now is
    expect(seen.at(-1)).toMatchObject({ node: b2, value: 'v1' });

    // Round 2: a catches up, and b2 lags. The client is on b2: its read waits there, then a answers.
    await cluster.heal();
    await applied(a, w1.header.index);
    await cluster.partition([[leader, b2]]);
    const w2 = await kv.put('mono', 'v2');
    expect(w2.header.nodeId).toBe(leader);
    await read();
    expect(seen.at(-1)).toMatchObject({ node: a, value: 'v2' });

    // What the session prevented: a plain client asking b2 gets the older state.
    const plain = client([b2]);
    const older = await plain.get('mono', { consistency: 'stale' });
    expect(older.valueString).toBe('v1');
    expect(older.header.index).toBeLessThan(w2.header.index);

    // After the heal, reads at either node go on from there.
    await cluster.heal();
    for (let i = 0; i < 5; i++) await read();

    expect(new Set(seen.map((s) => s.node))).toEqual(new Set([a, b2]));
    const indexes = seen.map((s) => s.index);
    expect(indexes).toEqual([...indexes].sort((x, y) => x - y));
    expect(seen.slice(2).every((s) => s.value === 'v2')).toBe(true);
    console.log(`session reads (node@index): ${seen.map((s) => `${s.node}@${s.index}`).join(' ')}`);
  });
});
