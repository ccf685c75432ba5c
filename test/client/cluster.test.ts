// The client library against a real 3-node cluster (in-process KvNodes on loopback): every call,
// its results and headers, paging, each consistency, session reads, typed errors from the server,
// the cluster calls, and finding the new leader after the leader stops.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, KvClient, TimeoutError, type KeyValue } from '../../src/index.js';
import { InProcessCluster } from '../support/in-process-cluster.js';

/** Small pages, so that ranges of a few keys already take several. */
const PAGE = 3;

let cluster: InProcessCluster;
let client: KvClient;
let leader = 0;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ size: 3, config: { limits: { maxKeyBytes: 64, maxValueBytes: 1024, maxRangePageSize: PAGE, maxClientIdBytes: 128 } } });
  leader = await cluster.waitForLeader();
  client = new KvClient({ endpoints: cluster.endpoints });
});

afterAll(async () => {
  client?.close();
  await cluster?.cleanup();
  expect(cluster?.fatalErrors ?? []).toEqual([]);
});

const keys = (kvs: readonly KeyValue[]): string[] => kvs.map((kv) => kv.keyString);

describe('writes and reads', () => {
  it('put, get, delete with their headers', async () => {
    const w = await client.put('crud/a', 'one');
    expect(w.header.index).toBeGreaterThan(0);
    // A write is answered by the leader (through a follower, if the client asked one).
    expect(w.header).toMatchObject({ consistency: null, stalenessMs: 0 });
    expect(w.header.nodeId).toBe(w.header.leaderId);
    expect(w.prevKv).toBeUndefined();

    const r = await client.get('crud/a');
    expect(r.found).toBe(true);
    expect(r.valueString).toBe('one');
    expect(r.kv).toMatchObject({ createIndex: w.header.index, modIndex: w.header.index, version: 1 });
    expect(r.header.consistency).toBe('linearizable');
    expect(r.header.index).toBeGreaterThanOrEqual(w.header.index);

    const w2 = await client.put('crud/a', new Uint8Array([0, 255, 1]), { prevKv: true });
    expect(w2.prevKv?.valueString).toBe('one');
    const r2 = await client.get(new TextEncoder().encode('crud/a'));
    expect([...r2.value!]).toEqual([0, 255, 1]);
    expect(r2.kv?.version).toBe(2);

    const d = await client.delete('crud/a', { prevKv: true });
    expect(d.deleted).toBe(true);
    expect([...d.prevKv!.value]).toEqual([0, 255, 1]);
    expect((await client.delete('crud/a')).deleted).toBe(false);
    const gone = await client.get('crud/a');
    expect(gone).toMatchObject({ found: false, kv: undefined, value: undefined, valueString: undefined });
  });

  it('ranges by prefix and by [start, end), page by page', async () => {
    for (const k of ['r/a', 'r/b', 'r/c', 'r/d', 'r/e', 'r/f', 'r/g', 's/x']) await client.put(k, `v-${k}`);

    const first = await client.range({ prefix: 'r/' });
    expect(keys(first.kvs)).toEqual(['r/a', 'r/b', 'r/c']);
    expect(first.more).toBe(true);
    const second = await client.range({ prefix: 'r/' }, { pageToken: first.nextPageToken! });
    expect(keys(second.kvs)).toEqual(['r/d', 'r/e', 'r/f']);

    const pages = [];
    for await (const page of client.rangePages({ prefix: 'r/' }, { limit: 2 })) pages.push(keys(page.kvs));
    expect(pages).toEqual([['r/a', 'r/b'], ['r/c', 'r/d'], ['r/e', 'r/f'], ['r/g']]);

    const all: KeyValue[] = [];
    for await (const kv of client.scan({ start: 'r/b', end: 'r/f' })) all.push(kv);
    expect(keys(all)).toEqual(['r/b', 'r/c', 'r/d', 'r/e']);
    expect(all[0]!.valueString).toBe('v-r/b');

    const keysOnly: KeyValue[] = [];
    for await (const kv of client.scan({ start: 'r/f' }, { keysOnly: true })) keysOnly.push(kv);
    expect(keys(keysOnly)).toEqual(['r/f', 'r/g', 's/x']);
    expect(keysOnly[0]).toMatchObject({ version: 0, modIndex: 0 });
    expect(keysOnly[0]!.value).toHaveLength(0);
  });

  it('compare-and-swap on value, mod index, and absence', async () => {
    const created = await client.compareAndSwap('cas/k', { expectAbsent: true }, '1');
    expect(created.succeeded).toBe(true);
    const again = await client.compareAndSwap('cas/k', { expectAbsent: true }, '1');
    expect(again.succeeded).toBe(false);
    expect(again.current?.valueString).toBe('1');

    const byValue = await client.compareAndSwap('cas/k', { expectedValue: '1' }, '2');
    expect(byValue.succeeded).toBe(true);
    const wrong = await client.compareAndSwap('cas/k', { expectedValue: '1' }, '3');
    expect(wrong.succeeded).toBe(false);
    expect(wrong.current?.valueString).toBe('2');

    const modIndex = wrong.current!.modIndex;
    expect((await client.compareAndSwap('cas/k', { expectedModIndex: modIndex + 1000 }, 'x')).succeeded).toBe(false);
    expect((await client.compareAndSwap('cas/k', { expectedModIndex: modIndex }, '3')).succeeded).toBe(true);
    expect((await client.get('cas/k')).valueString).toBe('3');
  });

  it('serves each consistency, and says which it used', async () => {
    const w = await client.put('c/k', 'v');
    const follower = cluster.ids.find((id) => id !== leader)!;
    const atFollower = new KvClient({ endpoints: [cluster.addresses.get(follower)!] });
    try {
      const stale = await atFollower.get('c/k', { consistency: 'stale', minIndex: w.header.index });
      expect(stale.header).toMatchObject({ consistency: 'stale', nodeId: follower });
      expect(stale.header.index).toBeGreaterThanOrEqual(w.header.index);
      expect(stale.valueString).toBe('v');
      const lin = await atFollower.get('c/k', { consistency: 'linearizable' });
      expect(lin.header.consistency).toBe('linearizable');
      expect(lin.valueString).toBe('v');
      const lease = await atFollower.get('c/k', { consistency: 'lease' });
      expect(['lease', 'linearizable']).toContain(lease.header.consistency);
      expect(lease.valueString).toBe('v');
    } finally {
      atFollower.close();
    }
  });

  it('with session: true, a STALE read on a follower sees the client\'s own writes', async () => {
    const follower = cluster.ids.find((id) => id !== leader)!;
    // The follower first: STALE reads go to the first endpoint.
    const endpoints = [cluster.addresses.get(follower)!, ...cluster.endpoints.filter((e) => e !== cluster.addresses.get(follower))];
    const s = new KvClient({ endpoints, session: true });
    try {
      for (let i = 0; i < 5; i++) {
        const w = await s.put('session/k', String(i));
        const r = await s.get('session/k', { consistency: 'stale' });
        expect(r.header.nodeId).toBe(follower);
        expect(r.header.index).toBeGreaterThanOrEqual(w.header.index);
        expect(r.valueString).toBe(String(i));
        expect(s.lastSeenIndex).toBeGreaterThanOrEqual(w.header.index);
      }
    } finally {
      s.close();
    }
  });

  it('throws typed errors from the server', async () => {
    const e = await client.put('k'.repeat(65), 'v').catch((err: unknown) => err);
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect(e).toMatchObject({ code: 'INVALID_ARGUMENT', attempts: 1 });
    expect((e as Error).message).toContain('maxKeyBytes');

    const t = await client.get('k', { consistency: 'stale', minIndex: 1_000_000, timeoutMs: 200 }).catch((err: unknown) => err);
    expect(t).toBeInstanceOf(TimeoutError);
  });
});

describe('the cluster', () => {
  it('status, clusterStatus and leader', async () => {
    leader = await cluster.waitForLeader();
    const l = await client.leader();
    expect(l).toMatchObject({ id: leader, address: cluster.addresses.get(leader) });

    const one = await client.status(cluster.addresses.get(leader)!);
    expect(one).toMatchObject({ nodeId: leader, role: 'leader', leaderId: leader, writable: true, clusterId: 'test' });
    expect(one.members.map((m) => m.id)).toEqual([1, 2, 3]);
    expect(one.appliedIndex).toBeGreaterThan(0);

    const rows = await client.clusterStatus();
    expect(rows.map((r) => r.status?.nodeId).sort()).toEqual([1, 2, 3]);
    expect(rows.filter((r) => r.status?.role === 'leader')).toHaveLength(1);
  });

  it('after the leader stops, writes and reads find the new leader', async () => {
    const old = await cluster.waitForLeader();
    await client.put('failover/k', 'before');
    await cluster.stop(old);
    // No wait for the election: the client retries until the new leader answers.
    await client.put('failover/k', 'after');
    expect((await client.get('failover/k')).valueString).toBe('after');
    const l = await client.leader();
    expect(l.id).not.toBe(old);
    expect(client.knownLeader?.id).toBe(l.id);

    const rows = await client.clusterStatus({ timeoutMs: 1_000 });
    const down = rows.find((r) => r.endpoint === cluster.addresses.get(old))!;
    expect(down.error?.code).toBe('UNAVAILABLE');
    expect(rows.filter((r) => r.status !== undefined)).toHaveLength(2);

    await cluster.startNode(old);
  });
});
