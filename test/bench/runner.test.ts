// runBench against a real 3-node raftkv cluster (in-process KvNodes on loopback): operations are
// counted exactly, reach the store, and every phase (preload, warm-up, window, abort) does what it
// says. No assertion on speed.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBench, type Progress } from '../../bench/kvbench/runner.js';
import type { TargetSpec } from '../../bench/kvbench/targets.js';
import { defaultWorkload, keyOf, parseMix } from '../../bench/kvbench/workload.js';
import { KvClient } from '../../src/client/index.js';
import { InProcessCluster } from '../support/in-process-cluster.js';

let cluster: InProcessCluster;
let client: KvClient;
let target: TargetSpec;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ size: 3 });
  await cluster.waitForLeader();
  client = new KvClient({ endpoints: cluster.endpoints });
  // The nodes run in this process: its CPU is the servers' (and the load generator's).
  target = { system: 'raftkv', endpoints: cluster.endpoints, serverPids: [process.pid], label: 'test' };
});

afterAll(async () => {
  client?.close();
  await cluster?.cleanup();
  expect(cluster?.fatalErrors ?? []).toEqual([]);
});

describe('runBench on raftkv', () => {
  it('runs exactly `ops` operations of the mix, and they reach the store', async () => {
    const prefix = 'rb-mix/';
    const w = defaultWorkload({ clients: 4, ops: 200, warmupMs: 0, keys: 50, keyPrefix: prefix, valueBytes: 100, mix: parseMix('put=50,get=50'), preload: false, seed: 77 });
    const r = await runBench(target, w);
    expect(r.ops).toBe(200);
    expect(r.errors).toEqual({});
    expect((r.byOp.put?.count ?? 0) + (r.byOp.get?.count ?? 0)).toBe(200);
    expect(r.byOp.put!.count).toBeGreaterThan(0);
    expect(r.byOp.get!.count).toBeGreaterThan(0);
    expect(r.byOp.cas).toBeUndefined();
    expect(r.latency.count).toBe(200);
    expect(r.latency.p50Us).toBeLessThanOrEqual(r.latency.p99Us);
    expect(r.latency.p99Us).toBeLessThanOrEqual(r.latency.maxUs);
    expect(r.consistencyServed).toBe('linearizable');
    expect(r.targetDescription).toMatch(/^raftkv leader 127\.0\.0\.1:\d+/);
    expect(r.serverCpuByPid?.[String(process.pid)]).toBeGreaterThanOrEqual(0);
    expect(r.serverCpuMs).toBeGreaterThanOrEqual(0);
    expect(r.clientCpuMs).toBeGreaterThanOrEqual(0);
    expect(r.getsFound).toBeLessThanOrEqual(r.byOp.get!.count);

    // The puts are in the store, with values of valueBytes; nothing outside the key space.
    const stored = [];
    for await (const kv of client.scan({ prefix })) stored.push(kv);
    expect(stored.length).toBeGreaterThan(0);
    expect(stored.length).toBeLessThanOrEqual(50);
    for (const kv of stored) {
      expect(kv.keyString).toMatch(/^rb-mix\/\d{10}$/);
      expect(kv.value.length).toBe(100);
    }
    const one = await client.get(stored[0]!.key);
    expect(one.value?.length).toBe(100);
  });

  it('preload puts every key; cas and stale gets run on the preloaded keys', async () => {
    const prefix = 'rb-cas/';
    const w = defaultWorkload({ clients: 4, ops: 120, warmupMs: 100, keys: 20, keyPrefix: prefix, valueBytes: 32, mix: parseMix('get=50,cas=50'), consistency: 'stale', preload: true, seed: 5 });
    const r = await runBench(target, w);
    expect(r.errors).toEqual({});
    expect(r.ops).toBe(120);
    expect((r.byOp.get?.count ?? 0) + (r.byOp.cas?.count ?? 0)).toBe(120);
    // Every key exists after preload, so every get finds its key.
    expect(r.getsFound).toBe(r.byOp.get!.count);
    expect(r.casSucceeded).toBeGreaterThan(0);
    expect(r.casSucceeded).toBeLessThanOrEqual(r.byOp.cas!.count);
    for (let i = 0; i < 20; i++) {
      const g = await client.get(keyOf(prefix, i));
      expect(g.found, keyOf(prefix, i)).toBe(true);
      expect(g.value?.length).toBe(32);
    }
  });

  it('a duration run reports progress, and an abort ends it with the abort reason', async () => {
    const progress: Progress[] = [];
    const ac = new AbortController();
    const w = defaultWorkload({ clients: 2, durationMs: 60_000, warmupMs: 0, keys: 10, keyPrefix: 'rb-abort/', seed: 1 });
    const run = runBench(target, w, {
      progressIntervalMs: 50,
      signal: ac.signal,
      onProgress: (p) => {
        progress.push(p);
        if (progress.length === 2) ac.abort(new Error('stop here'));
      },
    });
    await expect(run).rejects.toThrow('stop here');
    expect(progress.length).toBe(2);
    expect(progress[1]!.elapsedMs).toBeGreaterThan(progress[0]!.elapsedMs);
    expect(progress[1]!.ops).toBeGreaterThanOrEqual(progress[0]!.ops);
  });

  it('refuses an invalid workload before connecting', async () => {
    await expect(runBench(target, { ...defaultWorkload(), clients: 0 })).rejects.toThrow(/workload\.clients/);
  });
});
