// KvClient.createSnapshot and saveSnapshot against the real Maintenance service (over scripted
// handlers, test/client/fake-maintenance.ts): the fields and errors of each call, the bytes of a
// streamed snapshot, flow control (a slow reader slows the node's read down), and a transfer that is
// cancelled, broken, stalled or refused.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, KvClient, KvError, TimeoutError } from '../../src/client/index.js';
import { LimitError, RaftKvError } from '../../src/errors.js';
import { MAX_SNAPSHOT_CHUNK_BYTES, snapshotChunkBytes } from '../../src/server/maintenance-service.js';
import { makeSnapshot, type SnapshotStream } from '../cli/snapshot-fixture.js';
import { waitFor } from '../support/wait.js';
import { FakeMaintenanceNode, scriptedSnapshot } from './fake-maintenance.js';
import { deadAddress } from './fake-server.js';

let snap: SnapshotStream;
const nodes: FakeMaintenanceNode[] = [];
const clients: KvClient[] = [];

beforeAll(async () => {
  snap = await makeSnapshot({ pairs: Array.from({ length: 200 }, (_, i) => [`key/${i}`, `value ${i}`] as const), sessions: [['client-a', 's']] });
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const n of nodes.splice(0)) await n.stop();
});

afterAll(() => undefined);

async function node(...args: Parameters<typeof FakeMaintenanceNode.start>): Promise<FakeMaintenanceNode> {
  const n = await FakeMaintenanceNode.start(...args);
  nodes.push(n);
  return n;
}

function client(endpoints: string[], timeoutMs = 2_000): KvClient {
  const c = new KvClient({ endpoints, timeoutMs });
  clients.push(c);
  return c;
}

async function drain(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('createSnapshot', () => {
  it('asks the one node named and returns what it did', async () => {
    const n = await node({
      nodeId: 3,
      createSnapshot: async () => ({ index: 1234, term: 5, logStartIndex: 234, entriesCompacted: 1000, durationMs: 12.4 }),
    });
    const other = await deadAddress();
    const r = await client([other, n.address]).createSnapshot({ endpoint: n.address });
    expect(r).toEqual({ endpoint: n.address, nodeId: 3, index: 1234, term: 5, logStartIndex: 234, entriesCompacted: 1000, durationMs: 12 });
  });

  it('with one endpoint, needs none named; with several, refuses to guess', async () => {
    const n = await node({ createSnapshot: async () => ({ index: 1, term: 1, logStartIndex: 0, entriesCompacted: 0, durationMs: 0 }) });
    expect((await client([n.address]).createSnapshot()).index).toBe(1);
    await expect(client([n.address, await deadAddress()]).createSnapshot()).rejects.toThrow(InvalidArgumentError);
    await expect(client([n.address, '127.0.0.1:1']).createSnapshot()).rejects.toThrow(/a snapshot is of one node: name it with the endpoint option \(this client has 2 endpoints\)/);
  });

  it('a failure comes back typed, with its code; an unreachable node is UNAVAILABLE, without a retry elsewhere', async () => {
    const n = await node({ createSnapshot: () => Promise.reject(new RaftKvError('STORE_UNAVAILABLE', 'disk on fire')) });
    await expect(client([n.address]).createSnapshot()).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: 'disk on fire', endpoint: n.address, nodeId: 7 });
    const dead = await deadAddress();
    await expect(client([dead], 500).createSnapshot()).rejects.toMatchObject({ code: 'UNAVAILABLE', endpoint: dead });
  });
});

describe('saveSnapshot', () => {
  it('streams the snapshot: index, term and size up front, then exactly the bytes of the stream', async () => {
    const { openSnapshot, probe } = scriptedSnapshot(snap.bytes, { index: snap.header.index, term: snap.header.term });
    const n = await node({ openSnapshot });
    const d = await client([n.address]).saveSnapshot({ chunkBytes: 1000 });
    expect({ endpoint: d.endpoint, index: d.index, term: d.term, approximateBytes: d.approximateBytes }).toEqual({
      endpoint: n.address,
      index: snap.header.index,
      term: snap.header.term,
      approximateBytes: snap.bytes.length,
    });
    expect((await drain(d)).equals(snap.bytes)).toBe(true);
    expect(probe.chunkBytes).toBe(1000);
    await waitFor(() => probe.closed > 0 && probe.finished, 5_000, 'the snapshot to be released');
  });

  it('chunk size: the default, and a size over the limit refused with INVALID_ARGUMENT naming it', async () => {
    const { openSnapshot, probe } = scriptedSnapshot(snap.bytes, { index: 9, term: 2 });
    const n = await node({ openSnapshot }, { maxChunkBytes: 64 * 1024 });
    await drain(await client([n.address]).saveSnapshot());
    expect(probe.chunkBytes).toBe(64 * 1024);
    const refused = client([n.address]).saveSnapshot({ chunkBytes: 64 * 1024 + 1 });
    await expect(refused).rejects.toThrow(InvalidArgumentError);
    await expect(refused).rejects.toThrow('chunk_bytes is 65537, over the limit (limit maxSnapshotChunkBytes=65536)');
    expect(snapshotChunkBytes(0, MAX_SNAPSHOT_CHUNK_BYTES)).toBe(256 * 1024);
    expect(() => snapshotChunkBytes(MAX_SNAPSHOT_CHUNK_BYTES + 1, MAX_SNAPSHOT_CHUNK_BYTES)).toThrow(LimitError);
  });

  it('flow control: while the reader waits, the node stops pulling chunks from its store', async () => {
    const big = Buffer.alloc(64 * 1024 * 1024, 7); // 4096 chunks of 16 KiB
    const { openSnapshot, probe } = scriptedSnapshot(big, { index: 1, term: 1 });
    const n = await node({ openSnapshot });
    const d = await client([n.address]).saveSnapshot({ chunkBytes: 16 * 1024 });
    // A slow reader: between two chunks it yields the event loop many times, so a node without flow
    // control would run far ahead. The lead (chunks pulled from the store and not yet read) must stay
    // within what the buffers hold: the client's stream buffer (16 messages), the HTTP/2 windows and
    // the node's MAX_UNFLUSHED_SNAPSHOT_CHUNKS, about 20 chunks here (1 MiB of them would be 64).
    const it = d[Symbol.asyncIterator]();
    let read = 0;
    let maxLead = 0;
    for (let k = 0; k < 300; k++) {
      const r = await it.next();
      expect(r.done).toBe(false);
      read++;
      for (let t = 0; t < 20; t++) await new Promise((resolve) => setImmediate(resolve));
      maxLead = Math.max(maxLead, probe.pulled - read);
    }
    expect(maxLead).toBeGreaterThan(0);
    expect(maxLead).toBeLessThan(64);
    await it.return?.();
    await waitFor(() => probe.closed > 0 && probe.finished, 5_000, 'the snapshot to be released after the reader left');
  });

  it('breaking out of the loop cancels the transfer and the node releases the snapshot', async () => {
    const { openSnapshot, probe } = scriptedSnapshot(snap.bytes, { index: 9, term: 2 });
    const n = await node({ openSnapshot });
    const d = await client([n.address]).saveSnapshot({ chunkBytes: 1024 });
    let seen = 0;
    for await (const _ of d) if (++seen === 2) break;
    await waitFor(() => probe.closed > 0 && probe.finished, 5_000, 'the snapshot to be released');
  });

  it('a store failing midway: the loop throws the node\'s error', async () => {
    const { openSnapshot, probe } = scriptedSnapshot(snap.bytes, { index: 9, term: 2, failAfter: { chunks: 3, error: new RaftKvError('STORE_UNAVAILABLE', 'read failed') } });
    const n = await node({ openSnapshot });
    const d = await client([n.address]).saveSnapshot({ chunkBytes: 1024 });
    const err = await drain(d).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KvError);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', message: 'read failed', endpoint: n.address });
    await waitFor(() => probe.closed > 0, 5_000, 'the snapshot to be released');
  });

  it('a node that stops sending: TimeoutError after idleTimeoutMs, and the node releases the snapshot', async () => {
    const { openSnapshot, probe } = scriptedSnapshot(snap.bytes, { index: 9, term: 2, hangAfter: 2 });
    const n = await node({ openSnapshot });
    const d = await client([n.address]).saveSnapshot({ chunkBytes: 1024, idleTimeoutMs: 300 });
    const err = await drain(d).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toMatch(/no snapshot data from 127\.0\.0\.1:\d+ for 300 ms/);
    await waitFor(() => probe.closed > 0 && probe.finished, 5_000, 'the snapshot to be released');
  });

  it('cancel() and close() end a transfer in progress', async () => {
    const a = scriptedSnapshot(snap.bytes, { index: 9, term: 2, hangAfter: 1 });
    const n = await node({ openSnapshot: a.openSnapshot });
    const c = client([n.address]);
    const d = await c.saveSnapshot({ chunkBytes: 1024 });
    const done = drain(d).then(() => undefined, (e: unknown) => e);
    d.cancel();
    expect(await done).toMatchObject({ code: 'CANCELLED' });

    const b = scriptedSnapshot(snap.bytes, { index: 9, term: 2, hangAfter: 1 });
    const m = await node({ openSnapshot: b.openSnapshot });
    const c2 = client([m.address]);
    const d2 = await c2.saveSnapshot({ chunkBytes: 1024 });
    const done2 = drain(d2).then(() => undefined, (e: unknown) => e);
    c2.close();
    expect(await done2).toMatchObject({ code: 'CLOSED' });
    await waitFor(() => a.probe.closed > 0 && b.probe.closed > 0, 5_000, 'both snapshots to be released');
  });

  it('a client that takes no data: the node gives up after its stall timeout and releases the snapshot', async () => {
    const big = Buffer.alloc(16 * 1024 * 1024, 1);
    const { openSnapshot, probe } = scriptedSnapshot(big, { index: 1, term: 1 });
    const n = await node({ openSnapshot }, { stallTimeoutMs: 200 });
    const d = await client([n.address]).saveSnapshot({ chunkBytes: 16 * 1024 });
    await waitFor(() => probe.closed > 0 && probe.finished, 5_000, 'the node to release the snapshot of a stalled client');
    expect(probe.pulled).toBeLessThan(64);
    d.cancel();
  });

  it('a node that cannot open its snapshot, or is unreachable: the call itself fails', async () => {
    const n = await node({ openSnapshot: () => Promise.reject(new RaftKvError('STORE_UNAVAILABLE', 'closed')) });
    await expect(client([n.address]).saveSnapshot()).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', endpoint: n.address });
    const dead = await deadAddress();
    await expect(client([dead], 500).saveSnapshot({ idleTimeoutMs: 500 })).rejects.toMatchObject({ code: 'UNAVAILABLE', endpoint: dead });
  });
});
