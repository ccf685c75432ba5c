// A node serves the KV calls of its clients through the unary fast path (src/server/unary-fast-path.ts),
// unless grpcjsKvCalls asks for grpc-js's own call handling; either way the client's calls, and
// their errors with the raftkv code, work. One-node in-process clusters on 127.0.0.1.

import { afterEach, describe, expect, it } from 'vitest';
import { KvClient, KvError } from '../../src/index.js';
import { InProcessCluster } from '../support/in-process-cluster.js';

const started: { cluster: InProcessCluster; client: KvClient }[] = [];
afterEach(async () => {
  for (const { cluster, client } of started.splice(0)) {
    client.close();
    await cluster.cleanup();
  }
});

describe('KV calls on a node', () => {
  it.each([
    { grpcjs: undefined, fast: true, what: 'go through the unary fast path by default' },
    { grpcjs: true, fast: false, what: "go through grpc-js's call handling with grpcjsKvCalls" },
  ])('$what', async ({ grpcjs, fast }) => {
    const cluster = await InProcessCluster.start({ size: 1, ...(grpcjs === undefined ? {} : { config: { grpcjsKvCalls: grpcjs } }) });
    const client = new KvClient({ endpoints: cluster.endpoints });
    started.push({ cluster, client });
    await client.put('k', 'v');
    expect(Buffer.from((await client.get('k')).kv!.value).toString()).toBe('v');
    const refused = await client.put('', 'v').then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(KvError);
    expect((refused as KvError).code).toBe('INVALID_ARGUMENT');
    const counters = cluster.node(1)!.fastPathCounters;
    if (fast) {
      // The put, the get, the refused put, and whatever the client asked first (its Status calls).
      expect(counters!.served).toBeGreaterThanOrEqual(3);
      expect(counters!.passedOn).toBe(0);
    } else {
      expect(counters).toBeUndefined();
    }
  }, 20_000);
});
