// The InstallSnapshot stream (proto/raft.proto): a leader streams a snapshot to a follower in
// chunks, with a window of chunks in flight, acked once the follower's sink accepted them (Raft
// paper §7: the leader sends the snapshot in chunks; the follower installs it once it has all of it).

import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { LimitError, RaftKvError } from '../../src/errors.js';
import { createRng, type SeededRng } from '../../src/raft/rng.js';
import type { Message, NodeId, SnapshotMeta } from '../../src/raft/types.js';
import { PeerTransport } from '../../src/transport/peer-transport.js';
import { peerServiceDefinition, type SnapshotAckPb, type SnapshotChunkPb } from '../../src/transport/peer-service.js';
import type { SnapshotSink } from '../../src/transport/snapshot-receiver.js';
import { SnapshotTransferError } from '../../src/transport/snapshot-sender.js';
import { waitFor } from '../support/wait.js';
import { Harness, heartbeat, peerMetadata } from './harness.js';

// Replay a failing run with SNAPSHOT_SEED=<seed> npx vitest run test/transport/snapshot-stream.test.ts
const SEED =
  process.env['SNAPSHOT_SEED'] !== undefined ? Number(process.env['SNAPSHOT_SEED']) : (Date.now() % 2 ** 32) >>> 0;

const h = new Harness();
afterEach(() => h.stopAll());

interface SinkOptions {
  /** Each write waits for release() (or abort). */
  gated?: boolean;
  /** An error for the write of chunk `seq`, if any. */
  failWrite?: (seq: number) => Error | undefined;
  failFinish?: Error;
  result?: SnapshotMeta;
}

/** A sink that records what it gets and checks how the transport drives it. */
class TestSink implements SnapshotSink {
  readonly lengths: number[] = [];
  readonly aborts: Error[] = [];
  /** Broken promises of the SnapshotSink contract. */
  readonly violations: string[] = [];
  writesCalled = 0;
  writesDone = 0;
  finishCalls = 0;
  maxConcurrentWrites = 0;
  private activeWrites = 0;
  private gated: boolean;
  private readonly gates: (() => void)[] = [];
  private readonly hash = createHash('sha256');

  constructor(
    readonly from: NodeId,
    readonly term: number,
    private readonly o: SinkOptions = {},
  ) {
    this.gated = o.gated ?? false;
  }

  async write(chunk: Uint8Array): Promise<void> {
    const seq = this.writesCalled++;
    if (this.aborts.length > 0 || this.finishCalls > 0) this.violations.push(`write ${seq} after abort or finish`);
    this.activeWrites++;
    this.maxConcurrentWrites = Math.max(this.maxConcurrentWrites, this.activeWrites);
    try {
      if (this.gated) await new Promise<void>((resolve) => this.gates.push(resolve));
      const err = this.o.failWrite?.(seq);
      if (err !== undefined) throw err;
      this.hash.update(chunk);
      this.lengths.push(chunk.length);
      this.writesDone++;
    } finally {
      this.activeWrites--;
    }
  }

  async finish(): Promise<SnapshotMeta> {
    this.finishCalls++;
    if (this.aborts.length > 0 || this.activeWrites > 0) this.violations.push('finish after abort or during a write');
    if (this.o.failFinish !== undefined) throw this.o.failFinish;
    return this.o.result ?? { index: 1, term: 1 };
  }

  abort(reason: Error): void {
    if (this.finishCalls > 0) this.violations.push('abort after finish');
    this.aborts.push(reason);
    for (const release of this.gates.splice(0)) release();
  }

  get pendingWrites(): number {
    return this.gates.length;
  }

  /** Lets the oldest pending write complete. */
  release(): void {
    this.gates.shift()?.();
  }

  /** Lets every write, pending and future, complete. */
  open(): void {
    this.gated = false;
    for (const release of this.gates.splice(0)) release();
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }
}

/** An AsyncIterable of `count` chunks that counts pulls and return() calls. */
class Source implements AsyncIterable<Uint8Array> {
  pulls = 0;
  returns = 0;
  readonly lengths: number[] = [];
  private readonly hash = createHash('sha256');

  constructor(
    private readonly count: number,
    private readonly chunk: (i: number) => Uint8Array,
    private readonly onPull?: (pulls: number) => void,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    let finished = false;
    return {
      next: async (): Promise<IteratorResult<Uint8Array>> => {
        if (finished || this.pulls >= this.count) {
          finished = true;
          return { done: true, value: undefined };
        }
        const c = this.chunk(this.pulls++);
        this.hash.update(c);
        this.lengths.push(c.length);
        this.onPull?.(this.pulls);
        return { done: false, value: c };
      },
      return: async (): Promise<IteratorResult<Uint8Array>> => {
        this.returns++;
        finished = true;
        return { done: true, value: undefined };
      },
    };
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }
}

function randomChunk(rng: SeededRng, bytes: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(bytes / 4));
  for (let i = 0; i < words.length; i++) words[i] = rng.next();
  return new Uint8Array(words.buffer, 0, bytes);
}

const kb = (i: number): Uint8Array => new Uint8Array(1024).fill(i % 256);

/** A cluster whose nodes open sinks with the options `sinkOptions()` gives at the time; sinks are recorded per node. */
async function snapshotCluster(
  ids: readonly NodeId[],
  extra: Parameters<Harness['cluster']>[1] = {},
  sinkOptions: () => SinkOptions = () => ({}),
) {
  const sinks = new Map<NodeId, TestSink[]>(ids.map((id) => [id, []]));
  const nodes = await h.cluster(ids, extra);
  for (const [id, n] of nodes) {
    n.transport.onSnapshot((from, term) => {
      const sink = new TestSink(from, term, sinkOptions());
      sinks.get(id)!.push(sink);
      return sink;
    });
  }
  return { nodes, sinks: (id: NodeId): TestSink[] => sinks.get(id)! };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

function transferError(e: Error): SnapshotTransferError {
  expect(e).toBeInstanceOf(SnapshotTransferError);
  return e as SnapshotTransferError;
}

describe('InstallSnapshot', () => {
  it(`transfers a multi-MB snapshot intact and in order, and an empty one (seed ${SEED})`, async () => {
    console.log(`snapshot stream seed: ${SEED} (replay with SNAPSHOT_SEED=${SEED})`);
    const rng = createRng(SEED);
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) chunks.push(randomChunk(rng, i === 5 ? 0 : 1 + rng.int(256 * 1024)));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    expect(total).toBeGreaterThan(2 * 1024 * 1024);

    const { nodes, sinks } = await snapshotCluster([1, 2], {}, () => ({ result: { index: 1234, term: 7 } }));
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    const source = new Source(chunks.length, (i) => chunks[i]!);
    await expect(a.transport.sendSnapshot(2, 3, source)).resolves.toEqual({ index: 1234, term: 7 });

    const [sink] = sinks(2);
    expect(sinks(2)).toHaveLength(1);
    expect([sink!.from, sink!.term]).toEqual([1, 3]);
    expect(sink!.lengths).toEqual(source.lengths);
    expect(sink!.digest()).toBe(source.digest());
    expect(sink!.maxConcurrentWrites).toBe(1);
    expect(sink!.finishCalls).toBe(1);
    expect(sink!.aborts).toEqual([]);
    expect(sink!.violations).toEqual([]);
    expect(source.returns).toBe(0); // it finished by itself

    // An empty snapshot is one empty chunk.
    const empty = new Source(0, kb);
    await expect(a.transport.sendSnapshot(2, 3, empty)).resolves.toEqual({ index: 1234, term: 7 });
    expect(sinks(2)[1]!.lengths).toEqual([0]);

    await waitFor(() => !b.transport.stats().peers.get(1)!.snapshots.receiving, 5000, 'the receiver to end the call');
    expect(a.transport.stats().peers.get(2)!.snapshots).toEqual({
      sending: 0,
      receiving: false,
      sentTransfers: 2,
      sentBytes: total,
      sendFailures: 0,
      receivedTransfers: 0,
      receivedBytes: 0,
      receiveFailures: 0,
    });
    expect(b.transport.stats().peers.get(1)!.snapshots).toMatchObject({
      receivedTransfers: 2,
      receivedBytes: total,
      receiveFailures: 0,
    });
    expect(a.transport.stats().snapshotTransfers).toBe(0);
    // The peer stream is untouched by snapshot traffic.
    expect(a.transport.stats().peers.get(2)!.connectAttempts).toBe(0);
  });

  it('flow control: pulls at most window + 1 chunks ahead of what the sink accepted', async () => {
    const WINDOW = 3;
    const N = 20;
    const { nodes, sinks } = await snapshotCluster([1, 2], { maxSnapshotChunksInFlight: WINDOW }, () => ({ gated: true }));
    let maxAhead = 0;
    const source = new Source(N, kb, (pulls) => {
      maxAhead = Math.max(maxAhead, pulls - (sinks(2)[0]?.writesDone ?? 0));
    });
    const result = nodes.get(1)!.transport.sendSnapshot(2, 1, source);
    for (let k = 0; k < N; k++) {
      // Write k is pending; the sender fills its window and then waits: pulls stop at k + window + 1.
      await waitFor(
        () => sinks(2)[0]?.writesCalled === k + 1 && source.pulls === Math.min(N, k + WINDOW + 1),
        5000,
        `write ${k} and a full window`,
      );
      expect(sinks(2)[0]!.pendingWrites).toBe(1);
      sinks(2)[0]!.release();
    }
    await expect(result).resolves.toEqual({ index: 1, term: 1 });
    expect(maxAhead).toBe(WINDOW + 1);
    expect(sinks(2)[0]!.maxConcurrentWrites).toBe(1);
    expect(sinks(2)[0]!.digest()).toBe(source.digest());
  });

  it('an abort through the signal cancels the call, returns the iterator and aborts the sink', async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2], {}, () => ({ gated: true }));
    const a = nodes.get(1)!;
    let pulls = 0;
    let returned = false;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          pulls++;
          yield kb(pulls);
        }
      } finally {
        returned = true; // where a producer releases its LevelDB iterator
      }
    }
    const controller = new AbortController();
    const result = a.transport.sendSnapshot(2, 4, chunks(), { signal: controller.signal });
    await waitFor(() => sinks(2)[0]?.writesCalled === 1 && pulls === 5, 5000, 'a full default window (4 + 1 pulled)');
    expect(a.transport.stats().peers.get(2)!.snapshots.sending).toBe(1);

    controller.abort(new Error('node 1 stepped down'));
    const err = transferError(await rejection(result));
    expect(err.kind).toBe('aborted');
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toBe('snapshot transfer to node 2 aborted: node 1 stepped down');
    await waitFor(() => returned, 5000, "the generator's finally block");
    await waitFor(() => sinks(2)[0]!.aborts.length === 1, 5000, 'the receiver to abort its sink');
    expect(sinks(2)[0]!.aborts[0]!.message).toMatch(/node 1 cancelled the snapshot transfer/);
    expect(sinks(2)[0]!.finishCalls).toBe(0);
    expect(sinks(2)[0]!.violations).toEqual([]);
    await waitFor(() => !nodes.get(2)!.transport.stats().peers.get(1)!.snapshots.receiving);
    expect(a.transport.stats().peers.get(2)!.snapshots).toMatchObject({ sending: 0, sendFailures: 1, sentTransfers: 0 });
    expect(nodes.get(2)!.transport.stats().peers.get(1)!.snapshots.receiveFailures).toBe(1);

    // An already aborted signal refuses at once, and still returns the iterator.
    const source = new Source(3, kb);
    const again = transferError(await rejection(a.transport.sendSnapshot(2, 4, source, { signal: controller.signal })));
    expect(again.kind).toBe('aborted');
    expect([source.pulls, source.returns]).toEqual([0, 1]);
  });

  it('a failing sink write reaches the sender with its message; the iterator is returned', async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2], {}, () => ({
      failWrite: (seq) => (seq === 2 ? new RaftKvError('INVALID_ARGUMENT', 'chunk 2 failed its checksum') : undefined),
    }));
    const source = new Source(Infinity, kb);
    const err = transferError(await rejection(nodes.get(1)!.transport.sendSnapshot(2, 1, source)));
    expect(err.kind).toBe('peer');
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.status).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.message).toBe('snapshot transfer to node 2 failed: INVALID_ARGUMENT: chunk 2 failed its checksum');
    await waitFor(() => source.returns === 1, 5000, 'return() on the iterator');
    // A write error aborts the sink (it may hold a partial snapshot).
    expect(sinks(2)[0]!.aborts.map((e) => e.message)).toEqual(['chunk 2 failed its checksum']);
    expect(sinks(2)[0]!.writesDone).toBe(2);
  });

  it('a failing finish reaches the sender as DATA_LOSS for a corrupt snapshot, without an abort', async () => {
    const corrupt = new RaftKvError('SNAPSHOT_CORRUPT', 'snapshot checksum mismatch');
    const { nodes, sinks } = await snapshotCluster([1, 2], {}, () => ({ failFinish: corrupt }));
    const source = new Source(3, kb);
    const err = transferError(await rejection(nodes.get(1)!.transport.sendSnapshot(2, 1, source)));
    expect(err.status).toBe(grpc.status.DATA_LOSS);
    expect(err.message).toMatch(/DATA_LOSS: snapshot checksum mismatch/);
    expect(sinks(2)[0]!.finishCalls).toBe(1);
    expect(sinks(2)[0]!.aborts).toEqual([]); // the sink cleans up after its own finish()
    expect(source.returns).toBe(0); // the iterator had finished
  });

  it('the receiver aborts the sink when the stream ends without `last`, out of order, or changes term', async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2], { maxSnapshotChunkBytes: 1024 });
    const b = nodes.get(2)!;
    const meta = peerMetadata('test-cluster', 1, 2);
    const chunk = (seq: number, term: number, last = false, bytes = 3) => ({ term, seq, data: Buffer.alloc(bytes, seq), last });

    const noLast = h.rawSnapshot(b.address, meta);
    await noLast.accepted;
    noLast.call.write(chunk(0, 3));
    noLast.call.end();
    let status = await noLast.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe('the snapshot stream ended without its last chunk (after 1 chunks)');
    expect(noLast.acks.map((a) => [a.seq, a.done])).toEqual([['0', false]]);
    expect(sinks(2)[0]!.aborts).toHaveLength(1);

    const outOfOrder = h.rawSnapshot(b.address, meta);
    outOfOrder.call.write(chunk(0, 3));
    outOfOrder.call.write(chunk(2, 3));
    status = await outOfOrder.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe('snapshot chunk out of order: expected seq 1, got 2');
    expect(sinks(2)[1]!.aborts).toHaveLength(1);
    expect(sinks(2)[1]!.writesCalled).toBe(1);

    const termChange = h.rawSnapshot(b.address, meta);
    termChange.call.write(chunk(0, 3));
    termChange.call.write(chunk(1, 4, true));
    status = await termChange.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe('snapshot term changed mid-transfer: chunk 0 had term 3, chunk 1 has 4');
    expect(sinks(2)[2]!.aborts).toHaveLength(1);

    const oversized = h.rawSnapshot(b.address, meta);
    oversized.call.write(chunk(0, 3));
    oversized.call.write(chunk(1, 3, true, 1025));
    status = await oversized.status;
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toBe('snapshot chunk 1 has 1025 bytes (limit maxSnapshotChunkBytes=1024)');
    expect(sinks(2)[3]!.aborts).toHaveLength(1);

    // Not starting at 0: refused before a sink is opened.
    const late = h.rawSnapshot(b.address, meta);
    late.call.write(chunk(1, 3, true));
    status = await late.status;
    expect(status.details).toBe('snapshot chunk out of order: expected seq 0, got 1');
    expect(sinks(2)).toHaveLength(4);

    for (const s of sinks(2)) {
      expect(s.finishCalls).toBe(0);
      expect(s.violations).toEqual([]);
    }
    expect(b.transport.stats().peers.get(1)!.snapshots.receiveFailures).toBe(5);
  });

  it('refusals: no handler, onSnapshot throws, wrong cluster id', async () => {
    const nodes = await h.cluster([1, 2]);
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;

    let source = new Source(Infinity, kb);
    let err = transferError(await rejection(a.transport.sendSnapshot(2, 1, source)));
    expect(err.status).toBe(grpc.status.UNIMPLEMENTED);
    expect(err.message).toMatch(/node 2 does not accept snapshots: it has no onSnapshot handler/);
    expect([source.pulls, source.returns]).toEqual([0, 1]); // refused before anything was pulled
    expect(b.transport.stats().refusedStreams).toBe(1);

    const opened: number[] = [];
    b.transport.onSnapshot((_from, term) => {
      opened.push(term);
      throw new RaftKvError('INVALID_ARGUMENT', `stale snapshot: term ${term} < current term 5`);
    });
    source = new Source(Infinity, kb);
    err = transferError(await rejection(a.transport.sendSnapshot(2, 2, source)));
    expect(err.status).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.message).toBe('snapshot transfer to node 2 failed: INVALID_ARGUMENT: stale snapshot: term 2 < current term 5');
    expect(opened).toEqual([2]);
    await waitFor(() => source.returns === 1, 5000, 'return() on the iterator');

    b.transport.onSnapshot(() => new TestSink(1, 1));
    const stranger = h.node({ nodeId: 1, clusterId: 'other-cluster', peers: new Map([[2, b.address]]) });
    source = new Source(Infinity, kb);
    err = transferError(await rejection(stranger.transport.sendSnapshot(2, 1, source)));
    expect(err.status).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.message).toMatch(/cluster id mismatch: node 1 is in cluster "other-cluster", node 2 is in cluster "test-cluster"/);
    expect([source.pulls, source.returns]).toEqual([0, 1]);
    expect(b.transport.stats().refusedStreams).toBe(2);
  });

  it(`limits concurrent outgoing transfers to maxSnapshotTransfers`, async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2, 3], {}, () => ({ gated: true }));
    const a = nodes.get(1)!;
    const to2 = a.transport.sendSnapshot(2, 1, new Source(3, kb));
    const to3 = a.transport.sendSnapshot(3, 1, new Source(3, kb));
    expect(a.transport.stats().snapshotTransfers).toBe(2);

    const third = new Source(3, kb);
    const err = await rejection(a.transport.sendSnapshot(2, 1, third));
    expect(err).toBeInstanceOf(LimitError);
    expect((err as LimitError).code).toBe('TOO_MANY_REQUESTS');
    expect((err as LimitError).limit).toBe('maxSnapshotTransfers');
    expect(err.message).toBe('snapshot transfer to node 2 refused: 2 snapshot transfers are running (limit maxSnapshotTransfers=2)');
    expect([third.pulls, third.returns]).toEqual([0, 1]);
    expect(a.transport.stats().peers.get(2)!.snapshots.sendFailures).toBe(1);

    await waitFor(() => sinks(2).length === 1 && sinks(3).length === 1, 5000, 'both transfers to start');
    sinks(2)[0]!.open();
    sinks(3)[0]!.open();
    await expect(Promise.all([to2, to3])).resolves.toEqual([
      { index: 1, term: 1 },
      { index: 1, term: 1 },
    ]);
    expect(a.transport.stats().snapshotTransfers).toBe(0);
    const next = a.transport.sendSnapshot(2, 1, new Source(1, kb));
    await waitFor(() => sinks(2).length === 2, 5000, 'a transfer after the others');
    sinks(2)[1]!.open();
    await expect(next).resolves.toEqual({ index: 1, term: 1 });
  });

  it('gives up after snapshotIdleTimeoutMs without an ack, and the receiver without a chunk', async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2], { snapshotIdleTimeoutMs: 100 }, () => ({ gated: true }));
    const source = new Source(Infinity, kb);
    const started = Date.now();
    const err = transferError(await rejection(nodes.get(1)!.transport.sendSnapshot(2, 1, source)));
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    expect(err.kind).toBe('timeout');
    expect(err.code).toBe('TIMEOUT');
    expect(err.message).toBe('snapshot transfer to node 2 timed out: no acknowledgement within snapshotIdleTimeoutMs=100');
    await waitFor(() => source.returns === 1, 5000, 'return() on the iterator');
    await waitFor(() => sinks(2)[0]!.aborts.length === 1, 5000, 'the receiver to abort its sink');

    // A sender that goes quiet after a chunk: the receiver ends the call and aborts the sink.
    const raw = h.rawSnapshot(nodes.get(2)!.address, peerMetadata('test-cluster', 1, 2));
    raw.call.write({ term: 1, seq: 0, data: Buffer.alloc(10), last: false });
    await waitFor(() => sinks(2)[1]?.writesCalled === 1, 5000, 'the first chunk');
    sinks(2)[1]!.open();
    const status = await raw.status;
    expect(status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(status.details).toBe('no snapshot chunk within snapshotIdleTimeoutMs=100');
    expect(raw.acks.map((a) => a.seq)).toEqual(['0']);
    expect(sinks(2)[1]!.aborts).toHaveLength(1);
  });

  it('the test link filter refuses transfers across a cut link and breaks running ones, on either side', async () => {
    let gated = true;
    const { nodes, sinks } = await snapshotCluster([1, 2], {}, () => ({ gated }));
    const a = nodes.get(1)!;
    const b = nodes.get(2)!;
    const cut = (x: NodeId, y: NodeId) => (from: NodeId, to: NodeId) => !(from === x && to === y);

    // A cut in the direction of the acks is enough to refuse.
    a.transport.setLinkFilter(cut(2, 1));
    let source = new Source(Infinity, kb);
    let err = transferError(await rejection(a.transport.sendSnapshot(2, 1, source)));
    expect(err.kind).toBe('link-cut');
    expect(err.message).toBe('snapshot transfer to node 2 failed: the link 1 <-> 2 is cut by the test link filter');
    expect([source.pulls, source.returns]).toEqual([0, 1]);
    a.transport.setLinkFilter(undefined);

    // Cut at the sender while running.
    source = new Source(Infinity, kb);
    let result = a.transport.sendSnapshot(2, 1, source);
    await waitFor(() => sinks(2)[0]?.writesCalled === 1, 5000, 'the first transfer to run');
    a.transport.setLinkFilter(cut(1, 2));
    err = transferError(await rejection(result));
    expect(err.kind).toBe('link-cut');
    expect(source.returns).toBe(1);
    await waitFor(() => sinks(2)[0]!.aborts.length === 1, 5000, 'the receiver to abort its sink');
    a.transport.setLinkFilter(undefined);

    // Cut at the receiver while running.
    source = new Source(Infinity, kb);
    result = a.transport.sendSnapshot(2, 1, source);
    await waitFor(() => sinks(2)[1]?.writesCalled === 1, 5000, 'the second transfer to run');
    b.transport.setLinkFilter(cut(1, 2));
    err = transferError(await rejection(result));
    expect(err.status).toBe(grpc.status.UNAVAILABLE);
    expect(err.message).toMatch(/the link 2 <-> 1 is cut by the test link filter/);
    expect(sinks(2)[1]!.aborts).toHaveLength(1);
    await waitFor(() => source.returns === 1, 5000, 'return() on the iterator');

    // The receiver refuses new transfers while cut, and accepts them once healed.
    err = transferError(await rejection(a.transport.sendSnapshot(2, 1, new Source(1, kb))));
    expect(err.status).toBe(grpc.status.UNAVAILABLE);
    expect(err.message).toMatch(/the link 1 <-> 2 is cut by the test link filter/);
    b.transport.setLinkFilter(undefined);
    gated = false;
    await expect(a.transport.sendSnapshot(2, 1, new Source(3, kb))).resolves.toEqual({ index: 1, term: 1 });
  });

  it('keeps one incoming transfer per sender: a newer one aborts the older', async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2], {}, () => ({ gated: true }));
    const a = nodes.get(1)!;
    const firstSource = new Source(Infinity, kb);
    const first = a.transport.sendSnapshot(2, 1, firstSource);
    await waitFor(() => sinks(2)[0]?.writesCalled === 1, 5000, 'the first transfer to run');
    const second = a.transport.sendSnapshot(2, 1, new Source(2, kb));
    const err = transferError(await rejection(first));
    expect(err.status).toBe(grpc.status.ABORTED);
    expect(err.message).toMatch(/superseded by a newer snapshot transfer from node 1/);
    expect(sinks(2)[0]!.aborts).toHaveLength(1);
    await waitFor(() => firstSource.returns === 1, 5000, 'return() on the first iterator');
    await waitFor(() => sinks(2).length === 2, 5000, 'the second transfer to open a sink');
    sinks(2)[1]!.open();
    await expect(second).resolves.toEqual({ index: 1, term: 1 });
  });

  it('close() ends transfers both ways', async () => {
    const { nodes, sinks } = await snapshotCluster([1, 2, 3], {}, () => ({ gated: true }));
    const a = nodes.get(1)!;
    const c = nodes.get(3)!;

    // The receiver shuts down.
    let source = new Source(Infinity, kb);
    let result = a.transport.sendSnapshot(2, 1, source);
    await waitFor(() => sinks(2)[0]?.writesCalled === 1, 5000, 'a transfer to node 2');
    await nodes.get(2)!.transport.close();
    let err = transferError(await rejection(result));
    expect(err.status).toBe(grpc.status.UNAVAILABLE);
    expect(err.message).toMatch(/node 2 is shutting down/);
    expect(sinks(2)[0]!.aborts).toHaveLength(1);
    await waitFor(() => source.returns === 1, 5000, 'return() on the iterator');

    // The sender shuts down.
    source = new Source(Infinity, kb);
    result = a.transport.sendSnapshot(3, 1, source);
    await waitFor(() => sinks(3)[0]?.writesCalled === 1, 5000, 'a transfer to node 3');
    await a.transport.close();
    err = transferError(await rejection(result));
    expect(err.kind).toBe('closed');
    expect(source.returns).toBe(1);
    await waitFor(() => sinks(3)[0]!.aborts.length === 1, 5000, 'node 3 to abort its sink');
    await waitFor(() => !c.transport.stats().peers.get(1)!.snapshots.receiving);

    source = new Source(1, kb);
    err = transferError(await rejection(a.transport.sendSnapshot(3, 1, source)));
    expect(err.message).toBe("snapshot transfer to node 3 failed: node 1's transport is closed");
    expect(source.returns).toBe(1);
  });

  it('fails with UNAVAILABLE when the peer is down or breaks the protocol', async () => {
    const port = await h.freePort();
    const down = h.node({ nodeId: 1, peers: new Map([[2, `127.0.0.1:${port}`]]) });
    let source = new Source(Infinity, kb);
    let err = transferError(await rejection(down.transport.sendSnapshot(2, 1, source)));
    expect([err.kind, err.code, err.status]).toEqual(['peer', 'UNAVAILABLE', grpc.status.UNAVAILABLE]);
    expect([source.pulls, source.returns]).toEqual([0, 1]);

    // A fake peer: acks what `behave` says for each chunk, then ends the call with OK.
    let behave: (chunk: SnapshotChunkPb) => SnapshotAckPb[] | 'end' = () => 'end';
    const fake = await h.bindServer();
    fake.server.addService(peerServiceDefinition, {
      Stream: () => {},
      InstallSnapshot: (call: grpc.ServerDuplexStream<SnapshotChunkPb, SnapshotAckPb>) => {
        call.sendMetadata(new grpc.Metadata());
        call.on('data', (chunk: SnapshotChunkPb) => {
          const out = behave(chunk);
          if (out === 'end') call.end();
          else for (const ack of out) call.write(ack);
        });
        call.on('error', () => {});
      },
    });
    const a = h.node({ nodeId: 1, peers: new Map([[2, fake.address]]) });
    const ack = (seq: number, done = false): SnapshotAckPb => ({ seq, done, index: done ? 5 : 0, term: done ? 1 : 0 });

    behave = (c) => (Number(c.seq) < 2 ? [ack(Number(c.seq))] : 'end');
    source = new Source(Infinity, kb);
    err = transferError(await rejection(a.transport.sendSnapshot(2, 1, source)));
    expect(err.kind).toBe('protocol');
    expect(err.message).toBe('snapshot transfer to node 2 failed: protocol error: the peer ended the call without a final ack');
    expect(source.returns).toBe(1);

    behave = (c) => [ack(Number(c.seq) + 1)];
    err = transferError(await rejection(a.transport.sendSnapshot(2, 1, new Source(Infinity, kb))));
    expect(err.message).toMatch(/protocol error: an ack for chunk 1, expected one for chunk 0/);

    behave = (c) => (c.last ? [ack(Number(c.seq), true)] : [ack(Number(c.seq))]);
    err = transferError(await rejection(a.transport.sendSnapshot(2, 1, new Source(3, kb))));
    expect(err.message).toMatch(/protocol error: a final ack \(seq 2\) before every chunk was acknowledged/);

    behave = (c) => (c.last ? [ack(Number(c.seq)), ack(Number(c.seq), true)] : [ack(Number(c.seq))]);
    await expect(a.transport.sendSnapshot(2, 1, new Source(3, kb))).resolves.toEqual({ index: 5, term: 1 });
  });

  it('rejects programmer errors: oversized or non-byte chunks, unknown peers, bad terms', async () => {
    const { nodes } = await snapshotCluster([1, 2], { maxSnapshotChunkBytes: 1024 });
    const a = nodes.get(1)!;
    let source = new Source(Infinity, (i) => new Uint8Array(i === 1 ? 1025 : 10));
    let err = await rejection(a.transport.sendSnapshot(2, 1, source));
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toBe('PeerTransport.sendSnapshot: chunk 1 has 1025 bytes (limit maxSnapshotChunkBytes=1024)');
    expect(source.returns).toBe(1);

    const notBytes: AsyncIterable<Uint8Array> = (async function* () {
      yield 'abc' as unknown as Uint8Array;
    })();
    err = await rejection(a.transport.sendSnapshot(2, 1, notBytes));
    expect(err.message).toBe('PeerTransport.sendSnapshot: chunk 0 is not a Uint8Array');

    source = new Source(1, kb);
    err = await rejection(a.transport.sendSnapshot(9, 1, source));
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toMatch(/node 9 is not a peer of node 1/);
    expect(source.returns).toBe(1);
    err = await rejection(a.transport.sendSnapshot(2, 0, new Source(1, kb)));
    expect(err.message).toMatch(/term must be a positive safe integer, got 0/);
    expect(a.transport.stats().snapshotTransfers).toBe(0);
  });

  it('send() refuses a Snap message before queueing anything of the batch', () => {
    const a = h.node({ nodeId: 1, peers: new Map([[2, '127.0.0.1:1']]) });
    const snap: Message = { type: 'Snap', from: 1, to: 2, term: 3 };
    expect(() => a.transport.send([heartbeat(1, 2, 1), snap])).toThrow(
      /a Snap message \(to node 2\) never travels on the peer stream; stream the snapshot with sendSnapshot\(\)/,
    );
    expect(a.transport.stats().peers.get(2)!.queuedMessages).toBe(0);
  });

  it('validates its snapshot options and fits the default chunk into maxMessageBytes', () => {
    const peers = new Map([[2, '127.0.0.1:1']]);
    const t = (o: object): PeerTransport => new PeerTransport({ nodeId: 1, clusterId: 'c', peers, ...o });
    expect(t({}).maxSnapshotChunkBytes).toBe(1024 * 1024);
    expect(t({ maxMessageBytes: 1024 }).maxSnapshotChunkBytes).toBe(1024 - 32);
    expect(() => t({ maxMessageBytes: 1024, maxSnapshotChunkBytes: 1000 })).toThrow(/maxSnapshotChunkBytes must be an integer in \[1, maxMessageBytes - 32\] = \[1, 992\].*got 1000/);
    expect(() => t({ maxSnapshotChunksInFlight: 0 })).toThrow(/maxSnapshotChunksInFlight/);
    expect(() => t({ maxSnapshotTransfers: 0 })).toThrow(/maxSnapshotTransfers/);
    expect(() => t({ snapshotIdleTimeoutMs: 0 })).toThrow(/snapshotIdleTimeoutMs/);
  });
});
