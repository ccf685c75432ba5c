import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../src/raft/types.js';
import { encodeBatch } from '../../src/transport/codec.js';
import { PeerTransport } from '../../src/transport/peer-transport.js';
import { waitFor } from '../support/wait.js';
import { append, Harness, heartbeat, peerMetadata } from './harness.js';

const h = new Harness();
afterEach(() => h.stopAll());

function commits(ms: readonly Message[]): number[] {
  return ms.map((m) => (m.type === 'Heartbeat' ? m.commit : m.type === 'App' ? m.entries[0]!.index : -1));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('PeerTransport', () => {
  it('exchanges messages between three nodes, in order per sender', async () => {
    const nodes = await h.cluster([1, 2, 3]);
    for (const [id, n] of nodes) {
      const out: Message[] = [];
      for (const to of [1, 2, 3]) if (to !== id) for (let i = 1; i <= 50; i++) out.push(heartbeat(id, to, id * 1000 + i));
      n.transport.send(out);
    }
    await waitFor(() => [...nodes.values()].every((n) => n.received.length === 100), 5000, 'all messages');
    for (const [id, n] of nodes) {
      for (const from of [1, 2, 3]) {
        if (from === id) continue;
        const got = n.received.filter((m) => m.from === from);
        expect(got.every((m) => m.to === id)).toBe(true);
        expect(commits(got)).toEqual(range(from * 1000 + 1, from * 1000 + 50));
      }
      const stats = n.transport.stats();
      for (const [peer, s] of stats.peers) {
        expect(s.sentMessages, `${id} -> ${peer}`).toBe(50);
        expect(s.receivedMessages, `${peer} -> ${id}`).toBe(50);
        expect(s.connected).toBe(true);
        expect(s.connectAttempts).toBe(1); // one long-lived stream, not a call per message
        expect(s.inboundConnected).toBe(true);
        expect(Object.values(s.dropped).every((c) => c === 0)).toBe(true);
      }
    }
  });

  it('carries every message type, entry data included', async () => {
    const nodes = await h.cluster([1, 2]);
    const msgs: Message[] = [
      { type: 'PreVote', from: 1, to: 2, term: 5, lastLogIndex: 9, lastLogTerm: 4 },
      { type: 'VoteResp', from: 1, to: 2, term: 5, granted: true },
      append(1, 2, 10, 3000),
      { type: 'AppResp', from: 1, to: 2, term: 5, index: 7, reject: true, hint: { conflictTerm: 2, conflictIndex: 3 } },
      { type: 'HeartbeatResp', from: 1, to: 2, term: 5, context: 8 },
      { type: 'ReadIndex', from: 1, to: 2, term: 5, context: 12 },
      { type: 'ReadIndexResp', from: 1, to: 2, term: 5, context: 12, index: Number.MAX_SAFE_INTEGER },
    ];
    nodes.get(1)!.transport.send(msgs);
    const received = nodes.get(2)!.received;
    await waitFor(() => received.length === msgs.length);
    const plain = (ms: readonly Message[]): unknown =>
      ms.map((m) => (m.type === 'App' ? { ...m, entries: m.entries.map((e) => ({ ...e, data: Array.from(e.data) })) } : m));
    expect(plain(received)).toEqual(plain(msgs));
  });

  it('batches many messages into few frames, within maxMessageBytes', async () => {
    const nodes = await h.cluster([1, 2], { maxMessageBytes: 1024 });
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    a.transport.send([heartbeat(1, 2, 0)]);
    await waitFor(() => b.received.length === 1, 5000, 'the first message');

    // One send() of 1000 small messages: each frame holds as many as fit in 1 KiB.
    a.transport.send(range(1, 1000).map((i) => heartbeat(1, 2, i)));
    await waitFor(() => b.received.length === 1001, 5000, 'the small messages');
    const frames = b.transport.stats().peers.get(1)!.receivedFrames - 1;
    // A heartbeat with commit <= 1000 encodes in at most 7 bytes, so a 1 KiB frame holds > 140.
    expect(frames).toBeGreaterThanOrEqual(7);
    expect(frames).toBeLessThanOrEqual(8);

    // Appends of ~300 bytes: three per frame.
    a.transport.send(range(1, 30).map((i) => append(1, 2, i, 300)));
    await waitFor(() => b.received.length === 1031, 5000, 'the appends');
    expect(commits(b.received.slice(1))).toEqual([...range(1, 1000), ...range(1, 30)]);
    expect(b.transport.stats().peers.get(1)!.receivedFrames - 1 - frames).toBe(10);
    expect(a.transport.stats().peers.get(2)!.sentFrames).toBe(1 + frames + 10);
  });

  it('writes the sends of one synchronous run as one frame, before the event loop polls again', async () => {
    const nodes = await h.cluster([1, 2]);
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    a.transport.send([heartbeat(1, 2, 0)]);
    await waitFor(() => b.received.length === 1 && a.transport.stats().peers.get(2)!.sentFrames === 1, 5000, 'the first frame');

    // From the check phase, where the runtime's loop runs after a batch of requests: a flush
    // left to setImmediate would wait a whole turn of the event loop.
    const queuedAfter = await new Promise<number>((resolve) => {
      setImmediate(() => {
        a.transport.send([heartbeat(1, 2, 1)]);
        a.transport.send([heartbeat(1, 2, 2), heartbeat(1, 2, 3)]);
        process.nextTick(() => resolve(a.transport.stats().peers.get(2)!.queuedMessages));
      });
    });
    expect(queuedAfter).toBe(0);
    // The frame's count moves in its write callback, which may come after the peer has read it.
    await waitFor(() => b.received.length === 4 && a.transport.stats().peers.get(2)!.sentMessages === 4, 5000, 'the three heartbeats');
    expect(commits(b.received)).toEqual([0, 1, 2, 3]);
    expect(a.transport.stats().peers.get(2)!.sentFrames).toBe(2);
  });

  it('keeps messages for a peer that is down and delivers them once it is up, after retries', async () => {
    const port = await h.freePort();
    const peers = new Map([
      [1, '127.0.0.1:0'], // never dialled: node 2 never sends
      [2, `127.0.0.1:${port}`],
    ]);
    const a = h.node({ nodeId: 1, peers, reconnectBackoffMinMs: 5, reconnectBackoffMaxMs: 40 });
    a.transport.send(range(1, 20).map((i) => heartbeat(1, 2, i)));
    await waitFor(() => a.transport.stats().peers.get(2)!.connectAttempts >= 3, 5000, 'three connection attempts');
    let s = a.transport.stats().peers.get(2)!;
    expect(s.connected).toBe(false);
    expect(s.queuedMessages).toBe(20);
    expect(s.lastError).toMatch(/ECONNREFUSED/);
    expect(a.warnings.filter((w) => w.includes('could not connect to'))).toHaveLength(1); // logged once, not per retry

    const server = await h.bindServer(port);
    const b = h.node({ nodeId: 2, peers }, server);
    await waitFor(() => b.received.length === 20, 5000, 'the queued messages');
    expect(commits(b.received)).toEqual(range(1, 20));
    s = a.transport.stats().peers.get(2)!;
    expect(s.connected).toBe(true);
    expect(s.lastError).toBeUndefined();
    expect(s.dropped.streamBroken).toBe(0);

    // The peer restarts: the stream breaks, and the transport reconnects by itself.
    await b.transport.close();
    await server.kill();
    await waitFor(() => !a.transport.stats().peers.get(2)!.connected, 5000, 'the stream to break');
    a.transport.send(range(21, 25).map((i) => heartbeat(1, 2, i)));
    const server2 = await h.bindServer(port);
    const b2 = h.node({ nodeId: 2, peers }, server2);
    await waitFor(() => b2.received.length === 5, 5000, 'messages after the restart');
    expect(commits(b2.received)).toEqual(range(21, 25));
  });

  it('abandons a stream the peer does not accept within connectTimeoutMs, and retries', async () => {
    // Accepts TCP connections and never speaks HTTP/2.
    const sockets: net.Socket[] = [];
    const blackHole = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = blackHole.address() as net.AddressInfo;
      const a = h.node({ nodeId: 1, peers: new Map([[2, `127.0.0.1:${port}`]]), connectTimeoutMs: 50 });
      a.transport.send([heartbeat(1, 2, 1)]);
      await waitFor(() => a.transport.stats().peers.get(2)!.connectAttempts >= 2, 5000, 'a retry');
      const s = a.transport.stats().peers.get(2)!;
      expect(s.lastError).toBe('not accepted within connectTimeoutMs=50');
      expect(s.queuedMessages).toBe(1);
      await a.transport.close();
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => blackHole.close(resolve));
    }
  });

  it('bounds the queue of a peer that is down, dropping the oldest messages', async () => {
    const port = await h.freePort();
    const peers = new Map([[2, `127.0.0.1:${port}`]]);
    const a = h.node({ nodeId: 1, peers, maxQueueMessages: 10 });
    a.transport.send(range(1, 25).map((i) => heartbeat(1, 2, i)));
    const s = a.transport.stats().peers.get(2)!;
    expect(s.queuedMessages).toBe(10);
    expect(s.dropped.queueFull).toBe(15);
    expect(a.warnings.filter((w) => w.includes('send queue full'))).toHaveLength(1);

    const server = await h.bindServer(port);
    const b = h.node({ nodeId: 2, peers: new Map([[1, '127.0.0.1:0']]) }, server);
    await waitFor(() => b.received.length === 10, 5000, 'the newest ten');
    expect(commits(b.received)).toEqual(range(16, 25));
  });

  it('bounds the queue in bytes too', async () => {
    const port = await h.freePort();
    const a = h.node({
      nodeId: 1,
      peers: new Map([[2, `127.0.0.1:${port}`]]),
      maxMessageBytes: 1024,
      maxQueueBytes: 2048,
    });
    // Each append encodes in 513 bytes: four would exceed 2048.
    a.transport.send(range(1, 10).map((i) => append(1, 2, i, 500)));
    const s = a.transport.stats().peers.get(2)!;
    expect(s.queuedBytes).toBe(3 * 513);
    expect(s.queuedMessages).toBe(3);
    expect(s.dropped.queueFull).toBe(7);
  });

  it('drops and counts a message larger than a frame, logs it once, and carries on', async () => {
    const nodes = await h.cluster([1, 2], { maxMessageBytes: 1024 });
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    a.transport.send([append(1, 2, 1, 2000), heartbeat(1, 2, 7), append(1, 2, 2, 5000), append(1, 2, 3, 900)]);
    await waitFor(() => b.received.length === 2, 5000, 'the messages that fit');
    expect(commits(b.received)).toEqual([7, 3]);
    expect(a.transport.stats().peers.get(2)!.dropped.oversize).toBe(2);
    expect(a.warnings.filter((w) => /larger than a frame \(limit maxMessageBytes=1024\)/.test(w))).toHaveLength(1);
  });

  it('ends a stream that sends a malformed frame with INVALID_ARGUMENT, and keeps serving', async () => {
    const nodes = await h.cluster([1, 2]);
    const b = nodes.get(2)!;
    const raw = h.rawStream(b.address, peerMetadata('test-cluster', 1, 2));
    await raw.accepted;
    raw.call.write({ payload: encodeBatch([heartbeat(1, 2, 1)]) });
    raw.call.write({ payload: Buffer.from([1, 1, 99, 1, 2, 3]) }); // unknown tag 99
    const err = await raw.status;
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/malformed peer frame at byte 2: unknown message tag 99/);
    expect(b.received).toHaveLength(1);
    expect(b.transport.stats().peers.get(1)!.malformedFrames).toBe(1);

    // The node still serves peers.
    nodes.get(1)!.transport.send([heartbeat(1, 2, 2)]);
    await waitFor(() => b.received.length === 2, 5000, 'a message after the malformed frame');
  });

  it('drops incoming messages whose from is not the sender or whose to is not this node', async () => {
    const nodes = await h.cluster([1, 2, 3]);
    const b = nodes.get(2)!;
    const raw = h.rawStream(b.address, peerMetadata('test-cluster', 1, 2));
    await raw.accepted;
    raw.call.write({ payload: encodeBatch([heartbeat(3, 2, 1), heartbeat(1, 3, 2), heartbeat(1, 2, 3)]) });
    raw.call.end();
    expect(await raw.status).toBeNull(); // a half-close ends the stream with OK
    expect(commits(b.received)).toEqual([3]);
    expect(b.transport.stats().peers.get(1)!.dropped.misaddressed).toBe(2);
  });

  it('refuses frames above the receive limit with RESOURCE_EXHAUSTED, through gRPC', async () => {
    const nodes = await h.cluster([1, 2], { maxMessageBytes: 1024 });
    const b = nodes.get(2)!;
    const raw = h.rawStream(b.address, peerMetadata('test-cluster', 1, 2));
    await raw.accepted;
    raw.call.write({ payload: encodeBatch([append(1, 2, 1, 4000)]) });
    expect((await raw.status)?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(b.received).toHaveLength(0);
    nodes.get(1)!.transport.send([heartbeat(1, 2, 2)]);
    await waitFor(() => b.received.length === 1, 5000, 'a message after the oversized frame');
  });

  it('refuses a sender of another cluster, an unknown node, and a misdirected stream', async () => {
    const nodes = await h.cluster([1, 2]);
    const b = nodes.get(2)!;
    const refuse = async (metadata: Record<string, string>): Promise<grpc.ServiceError | null> => {
      const raw = h.rawStream(b.address, metadata);
      raw.call.write({ payload: encodeBatch([heartbeat(1, 2, 1)]) });
      return raw.status;
    };
    const otherCluster = await refuse(peerMetadata('other-cluster', 1, 2));
    expect(otherCluster?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(otherCluster?.details).toMatch(/cluster id mismatch: node 1 is in cluster "other-cluster", node 2 is in cluster "test-cluster"/);
    const unknown = await refuse(peerMetadata('test-cluster', 9, 2));
    expect(unknown?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(unknown?.details).toMatch(/node 9 is not a peer of node 2/);
    const misdirected = await refuse(peerMetadata('test-cluster', 1, 3));
    expect(misdirected?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(misdirected?.details).toMatch(/meant to reach node 3 but reached node 2/);
    const bare = await refuse({});
    expect(bare?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(b.received).toHaveLength(0);
    expect(b.transport.stats().refusedStreams).toBe(4);

    // A whole transport configured with the wrong cluster id keeps retrying and says why.
    const stranger = h.node({ nodeId: 1, clusterId: 'other-cluster', peers: new Map([[2, b.address]]) });
    stranger.transport.send([heartbeat(1, 2, 1)]);
    await waitFor(() => stranger.transport.stats().peers.get(2)!.connectAttempts >= 2, 5000, 'a retry');
    const s = stranger.transport.stats().peers.get(2)!;
    expect(s.lastError).toMatch(/FAILED_PRECONDITION: cluster id mismatch/);
    expect(s.queuedMessages).toBe(1); // nothing is lost to a refused stream
    expect(b.received).toHaveLength(0);
  });

  it('keeps one incoming stream per peer: a newer one supersedes the older', async () => {
    const nodes = await h.cluster([1, 2]);
    const b = nodes.get(2)!;
    const first = h.rawStream(b.address, peerMetadata('test-cluster', 1, 2));
    await first.accepted;
    const second = h.rawStream(b.address, peerMetadata('test-cluster', 1, 2));
    await second.accepted;
    const err = await first.status;
    expect(err?.code).toBe(grpc.status.ABORTED);
    second.call.write({ payload: encodeBatch([heartbeat(1, 2, 5)]) });
    await waitFor(() => b.received.length === 1, 5000, 'a message on the newer stream');
    second.call.end();
    expect(await second.status).toBeNull();
  });

  it('cuts a link one way with the test-only link filter, on either side', async () => {
    const nodes = await h.cluster([1, 2]);
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    const cut = (from: number, to: number): boolean => !(from === 1 && to === 2);

    // Both sides filter: 1 -> 2 is dropped at the sender, 2 -> 1 flows.
    a.transport.setLinkFilter(cut);
    b.transport.setLinkFilter(cut);
    a.transport.send([heartbeat(1, 2, 1)]);
    b.transport.send([heartbeat(2, 1, 2)]);
    await waitFor(() => a.received.length === 1, 5000, '2 -> 1');
    expect(a.transport.stats().peers.get(2)!.dropped.linkFilterOut).toBe(1);

    // Only the receiver filters: 1 -> 2 reaches node 2 and is dropped there.
    a.transport.setLinkFilter(undefined);
    a.transport.send([heartbeat(1, 2, 3)]);
    await waitFor(() => b.transport.stats().peers.get(1)!.dropped.linkFilterIn === 1, 5000, 'the incoming drop');
    expect(b.received).toHaveLength(0);

    // Healed.
    b.transport.setLinkFilter(undefined);
    a.transport.send([heartbeat(1, 2, 4)]);
    await waitFor(() => b.received.length === 1, 5000, 'the healed link');
    expect(commits(b.received)).toEqual([4]);
  });

  it('close() ends streams, so the server shuts down at once, and is idempotent', async () => {
    const nodes = await h.cluster([1, 2]);
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    a.transport.send([heartbeat(1, 2, 1)]);
    b.transport.send([heartbeat(2, 1, 1)]);
    await waitFor(() => a.received.length === 1 && b.received.length === 1);
    await Promise.all([a.transport.close(), b.transport.close(), a.transport.close()]);
    await new Promise<void>((resolve, reject) => a.server.tryShutdown((err) => (err ? reject(err) : resolve())));
    await new Promise<void>((resolve, reject) => b.server.tryShutdown((err) => (err ? reject(err) : resolve())));
    a.transport.send([heartbeat(1, 2, 2)]); // ignored after close
    expect(a.transport.stats().peers.get(2)!.queuedMessages).toBe(0);
  });

  it('drops messages to unknown nodes and rejects a message not from this node', async () => {
    const a = h.node({ nodeId: 1, peers: new Map([[2, '127.0.0.1:1']]) });
    a.transport.send([heartbeat(1, 7, 1), heartbeat(1, 7, 2)]);
    expect(a.transport.stats().droppedUnknownPeerMessages).toBe(2);
    expect(a.warnings).toHaveLength(1);
    expect(() => a.transport.send([heartbeat(3, 2, 1)])).toThrow(RangeError);
  });

  it('validates its options', () => {
    const peers = new Map([[2, '127.0.0.1:1']]);
    expect(() => new PeerTransport({ nodeId: 0, clusterId: 'c', peers })).toThrow(/nodeId/);
    expect(() => new PeerTransport({ nodeId: 1, clusterId: '', peers })).toThrow(/clusterId/);
    expect(() => new PeerTransport({ nodeId: 1, clusterId: 'c', peers, maxQueueMessages: 0 })).toThrow(/maxQueueMessages/);
    expect(() => new PeerTransport({ nodeId: 1, clusterId: 'c', peers, maxMessageBytes: 8 })).toThrow(/maxMessageBytes/);
    expect(
      () => new PeerTransport({ nodeId: 1, clusterId: 'c', peers, reconnectBackoffMinMs: 50, reconnectBackoffMaxMs: 10 }),
    ).toThrow(/minMs <= maxMs/);
  });
});
