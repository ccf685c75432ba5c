// A node gives the HTTP/2 sessions of its clients an IntKeyMap for their streams (see
// src/transport/http2-stream-map.ts), unless keepHttp2StreamMaps asks it not to; either way the
// client's calls work. One-node in-process clusters on 127.0.0.1.

import { afterEach, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/index.js';
import { InProcessCluster } from '../support/in-process-cluster.js';

const started: { cluster: InProcessCluster; client: KvClient }[] = [];
afterEach(async () => {
  for (const { cluster, client } of started.splice(0)) {
    client.close();
    await cluster.cleanup();
  }
});

async function oneNode(keepHttp2StreamMaps?: boolean): Promise<{ cluster: InProcessCluster; client: KvClient }> {
  const cluster = await InProcessCluster.start({ size: 1, ...(keepHttp2StreamMaps === undefined ? {} : { config: { keepHttp2StreamMaps } }) });
  const client = new KvClient({ endpoints: cluster.endpoints });
  started.push({ cluster, client });
  return { cluster, client };
}

describe('HTTP/2 stream maps on a node', () => {
  it.each([
    { keep: undefined, replaced: true, what: 'are replaced by default' },
    { keep: true, replaced: false, what: 'are left as they are with keepHttp2StreamMaps' },
  ])('$what, and puts and gets go through', async ({ keep, replaced }) => {
    const { cluster, client } = await oneNode(keep);
    await client.put('k', 'v');
    expect(Buffer.from((await client.get('k')).kv!.value).toString()).toBe('v');
    const c = cluster.node(1)!.listenerCounters!;
    expect(c.streamMapsReplaced > 0).toBe(replaced);
    expect(c.streamMapsKept).toBe(0);
  }, 20_000);
});
