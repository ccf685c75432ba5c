// The client's leader following, retries and backoff, against scripted fake nodes (fake-server.ts):
// where each attempt goes, what it carries (the session's seq, read options), which errors are
// retried and which are not, and that every call ends: within its deadline and its retry limit.

import { createServer, type AddressInfo, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  InvalidArgumentError,
  KvClient,
  KvError,
  NoQuorumError,
  NotLeaderError,
  ResourceExhaustedError,
  TimeoutError,
  TooStaleError,
  UnavailableError,
  type Clock,
  type KvClientOptions,
} from '../../src/index.js';
import { backoffCeilingMs } from '../../src/client/backoff.js';
import { deadAddress, FakeNode, header, raftkvError, type Behavior } from './fake-server.js';

const nodes: FakeNode[] = [];
const clients: KvClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

async function fake(behave: Behavior): Promise<FakeNode> {
  const n = await FakeNode.start(behave);
  nodes.push(n);
  return n;
}

function client(opts: KvClientOptions): KvClient {
  const c = new KvClient({ backoff: { initialMs: 1, maxMs: 4 }, ...opts });
  clients.push(c);
  return c;
}

/** Answers every call with success, as node `id` believing `leaderId` leads. */
const ok =
  (id: number, leaderId = id, index = 7): Behavior =>
  (method) => {
    if (method === 'Put') return { response: { header: header(index, leaderId, leaderId) } };
    if (method === 'Get') return { response: { header: header(index, id, leaderId, 1, 'LINEARIZABLE'), found: false } };
    if (method === 'Status') {
      return { response: { node_id: String(id), role: id === leaderId ? 'leader' : 'follower', term: '1', leader_id: String(leaderId), members: [], writable: true } };
    }
    return { response: { header: header(index, id, leaderId) } };
  };

const seqOf = (req: Record<string, unknown>): number => Number((req['session'] as { seq: string }).seq);

async function failure(p: Promise<unknown>): Promise<KvError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof KvError) return e;
    throw e;
  }
  throw new Error('expected the call to fail');
}

/** A clock whose sleeps return at once and move its time forward (on top of real time). */
function fakeClock(): Clock & { sleeps: number[] } {
  let offset = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => Date.now() + offset,
    sleep: async (ms) => {
      sleeps.push(ms);
      offset += ms;
    },
  };
}

describe('leader following', () => {
  it('follows a NOT_LEADER hint to the leader at once, and sends later writes there directly', async () => {
    const leader = await fake(ok(2));
    const follower = await fake(() => raftkvError('NOT_LEADER', 'not the leader; the leader is node 2', { 'raftkv-leader-id': '2', 'raftkv-leader-address': leader.address }));
    // The leader is not even among the endpoints: the hint alone leads there.
    const c = client({ endpoints: [follower.address], backoff: { initialMs: 10_000, maxMs: 10_000 } });

    const first = await c.put('k', 'v1');
    expect(first.header).toMatchObject({ index: 7, nodeId: 2, leaderId: 2 });
    await c.put('k', 'v2');

    expect(follower.callsOf('Put').map((x) => seqOf(x.request))).toEqual([1]);
    // The retry after the hint reused seq 1; the next write took seq 2.
    expect(leader.callsOf('Put').map((x) => seqOf(x.request))).toEqual([1, 2]);
    expect(c.knownLeader).toEqual({ id: 2, address: leader.address });
  });

  it('after NOT_LEADER without a known leader, backs off and tries the next endpoint', async () => {
    const a = await fake(() => raftkvError('NOT_LEADER', 'not the leader; no leader is known'));
    const b = await fake(ok(2));
    const c = client({ endpoints: [a.address, b.address] });
    await c.put('k', 'v');
    expect(a.calls).toHaveLength(1);
    expect(b.calls).toHaveLength(1);
  });

  it('moves on from an endpoint that refuses connections', async () => {
    const dead = await deadAddress();
    const b = await fake(ok(2));
    const c = client({ endpoints: [dead, b.address] });
    const res = await c.get('k');
    expect(res.found).toBe(false);
    expect(b.callsOf('Get')).toHaveLength(1);
    // The current endpoint moved on: the next call goes straight to b.
    await c.get('k', { consistency: 'stale' });
    expect(b.callsOf('Get')).toHaveLength(2);
  });

  it('sends STALE reads to the first endpoint and leader reads to the known leader', async () => {
    const f = await fake(ok(1, 2));
    const l = await fake(ok(2));
    const c = client({ endpoints: [f.address, l.address] });
    // A read answered by node 2 at l tells the client where node 2 is.
    await c.status(l.address);
    await c.get('k', { consistency: 'stale' });
    await c.get('k', { consistency: 'linearizable' });
    await c.get('k', { consistency: 'lease' });
    expect(f.callsOf('Get').map((x) => (x.request['read'] as { consistency: string }).consistency)).toEqual(['STALE']);
    expect(l.callsOf('Get').map((x) => (x.request['read'] as { consistency: string }).consistency)).toEqual(['LINEARIZABLE', 'LEASE']);
  });
});

describe('exactly-once writes', () => {
  it('a retried write reuses its sequence number', async () => {
    let n = 0;
    const a = await fake((method) => (method === 'Put' && n++ === 0 ? raftkvError('UNAVAILABLE', 'the node is shutting down') : ok(1)(method, {}, a)));
    const c = client({ endpoints: [a.address], clientId: 'me' });
    await c.put('k', 'v');
    await c.put('k', 'w');
    const sessions = a.callsOf('Put').map((x) => x.request['session']);
    expect(sessions).toEqual([
      { client_id: 'me', seq: '1' },
      { client_id: 'me', seq: '1' },
      { client_id: 'me', seq: '2' },
    ]);
  });

  it('runs one write at a time, in call order, while reads run alongside', async () => {
    const release: Array<() => void> = [];
    const a = await fake(
      (method) =>
        new Promise((resolve) => {
          const answer = ok(1)(method, {}, a);
          if (method === 'Put') release.push(() => resolve(answer));
          else resolve(answer);
        }),
    );
    const c = client({ endpoints: [a.address] });
    const puts = [c.put('a', '1'), c.put('b', '2'), c.put('c', '3')];
    for (let i = 0; i < 3; i++) {
      // Wait for the one write in flight, check that no other is, then let it finish.
      while (release.length === 0) await new Promise((r) => setImmediate(r));
      expect(a.inFlight).toBe(1);
      await c.get('x'); // a read is not held up by the write in flight
      release.shift()!();
    }
    await Promise.all(puts);
    expect(a.callsOf('Put').map((x) => [Buffer.from(x.request['key'] as Buffer).toString(), seqOf(x.request)])).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
  });

  it('bounds the write queue', async () => {
    const a = await fake(() => 'hang');
    const c = client({ endpoints: [a.address], maxQueuedWrites: 1, timeoutMs: 60_000 });
    const first = c.put('a', '1');
    const second = c.put('b', '2');
    const third = await failure(c.put('c', '3'));
    expect(third).toBeInstanceOf(ResourceExhaustedError);
    expect(third.code).toBe('TOO_MANY_REQUESTS');
    c.close();
    expect((await failure(first)).code).toBe('CLOSED');
    expect((await failure(second)).code).toBe('CLOSED');
  });
});

describe('what is retried', () => {
  it('does not retry INVALID_ARGUMENT', async () => {
    const a = await fake(() => raftkvError('INVALID_ARGUMENT', 'key: must not be empty'));
    const b = await fake(ok(2));
    const c = client({ endpoints: [a.address, b.address] });
    const e = await failure(c.put('', 'v'));
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect(e).toMatchObject({ code: 'INVALID_ARGUMENT', endpoint: a.address, grpcCode: grpc.status.INVALID_ARGUMENT, nodeId: 9, attempts: 1 });
    expect(e.message).toBe('key: must not be empty');
    expect(b.calls).toHaveLength(0);
  });

  it('does not retry STALE_SEQUENCE (FAILED_PRECONDITION)', async () => {
    const a = await fake(() => raftkvError('STALE_SEQUENCE', 'sequence 1 is below the last applied sequence 5'));
    const c = client({ endpoints: [a.address] });
    const e = await failure(c.put('k', 'v'));
    expect(e.code).toBe('STALE_SEQUENCE');
    expect(e.grpcCode).toBe(grpc.status.FAILED_PRECONDITION);
    expect(a.calls).toHaveLength(1);
  });

  it.each([
    ['NO_QUORUM', NoQuorumError],
    ['TOO_MANY_REQUESTS', ResourceExhaustedError],
    ['TOO_STALE', TooStaleError],
    ['UNAVAILABLE', UnavailableError],
  ] as const)('retries %s, and gives its error class when the retries run out', async (code, cls) => {
    const a = await fake(() => raftkvError(code, 'no'));
    const c = client({ endpoints: [a.address], maxRetries: 2 });
    const e = await failure(c.get('k', { consistency: 'stale' }));
    expect(e).toBeInstanceOf(cls);
    expect(e.code).toBe(code);
    expect(e.attempts).toBe(3);
    expect(a.calls).toHaveLength(3);
  });

  it('maps the code TOO_STALE to TooStaleError, and goes by the code only, never by the wording', async () => {
    const refusal = 'this node last heard from a leader 900 ms ago, more than max_staleness_ms=100';
    const a = await fake(() => raftkvError('TOO_STALE', refusal));
    const c = client({ endpoints: [a.address], maxRetries: 0 });
    const e = await failure(c.get('k', { consistency: 'stale', maxStalenessMs: 100 }));
    expect(e).toBeInstanceOf(TooStaleError);
    expect(e).toMatchObject({ code: 'TOO_STALE', grpcCode: grpc.status.UNAVAILABLE, endpoint: a.address, message: refusal });
    expect((a.callsOf('Get')[0]!.request['read'] as { max_staleness_ms: string }).max_staleness_ms).toBe('100');

    const b = await fake(() => raftkvError('UNAVAILABLE', refusal));
    const d = client({ endpoints: [b.address], maxRetries: 0 });
    const u = await failure(d.get('k', { consistency: 'stale', maxStalenessMs: 100 }));
    expect(u).toBeInstanceOf(UnavailableError);
    expect(u.code).toBe('UNAVAILABLE');
  });

  it('builds NotLeaderError from the hint metadata', async () => {
    const a = await fake(() => raftkvError('NOT_LEADER', 'not the leader', { 'raftkv-leader-id': '3', 'raftkv-leader-address': 'elsewhere:1' }));
    const c = client({ endpoints: [a.address], maxRetries: 0 });
    const e = await failure(c.put('k', 'v'));
    expect(e).toBeInstanceOf(NotLeaderError);
    expect(e).toMatchObject({ leaderId: 3, leaderAddress: 'elsewhere:1' });
  });
});

describe('NO_QUORUM: a read-only node', () => {
  const readOnly = 'write refused: the cluster is read-only from this node: this node has not heard from a leader for 900 ms (election timeout 200 ms); STALE reads still work';

  it('is transient: a write is retried on the next endpoint, with the same seq, and succeeds once a quorum is back', async () => {
    let quorumBack = false;
    // a is cut off for good; b is read-only for its first two answers, then has a quorum again.
    const a = await fake(() => raftkvError('NO_QUORUM', readOnly));
    const b = await fake((method, _req, node) => {
      if (node.callsOf(method).length > 2) quorumBack = true;
      return quorumBack ? ok(2)(method, {}, node) : raftkvError('NO_QUORUM', readOnly);
    });
    const c = client({ endpoints: [a.address, b.address], clientId: 'me' });
    const res = await c.put('k', 'v');
    expect(res.header).toMatchObject({ index: 7, nodeId: 2 });
    // Attempts alternate between the endpoints; every one carries the write's one seq.
    expect(b.callsOf('Put')).toHaveLength(3);
    expect(a.callsOf('Put').length).toBeGreaterThanOrEqual(2);
    expect([...a.callsOf('Put'), ...b.callsOf('Put')].map((x) => seqOf(x.request))).toEqual(Array(a.callsOf('Put').length + 3).fill(1));
    // The next write goes on with the next seq.
    await c.put('k', 'w');
    expect(b.callsOf('Put').map((x) => seqOf(x.request)).at(-1)).toBe(2);
  });

  it('a quorum that does not come back within the deadline: NoQuorumError with the node\'s reason, at the deadline', async () => {
    const a = await fake(() => raftkvError('NO_QUORUM', readOnly));
    const clock = fakeClock();
    const timeoutMs = 3_000;
    const c = client({ endpoints: [a.address], timeoutMs, maxRetries: 1_000, clock, backoff: { initialMs: 50, maxMs: 400 }, random: () => 0.5 });
    const e = await failure(c.put('k', 'v'));
    expect(e).toBeInstanceOf(NoQuorumError);
    expect(e).toMatchObject({ code: 'NO_QUORUM', grpcCode: grpc.status.UNAVAILABLE, endpoint: a.address, message: readOnly });
    // Retried for as long as the deadline allowed (not stopped after the first refusal), never past it.
    expect(e.attempts).toBeGreaterThan(5);
    expect(e.attempts).toBe(a.calls.length);
    const slept = clock.sleeps.reduce((x, y) => x + y, 0);
    expect(slept).toBeLessThan(timeoutMs);
    expect(slept).toBeGreaterThan(timeoutMs - 400 - 50);
  });

  it('a strong read refused with NO_QUORUM by the node taken for the leader goes to another node', async () => {
    const cutOff = await fake((method, _req, node) => (method === 'Status' ? ok(1)(method, {}, node) : raftkvError('NO_QUORUM', 'read refused: the cluster is read-only from this node')));
    const b = await fake(ok(2));
    const c = client({ endpoints: [cutOff.address, b.address] });
    await c.status(cutOff.address); // it says it leads: the client takes it for the leader
    expect(c.knownLeader).toEqual({ id: 1, address: cutOff.address });
    const r = await c.get('k');
    expect(r.header.nodeId).toBe(2);
    expect(cutOff.callsOf('Get')).toHaveLength(1);
  });
});

describe('every call ends', () => {
  it('stops after maxRetries retries, however much time is left', async () => {
    const a = await fake(() => raftkvError('UNAVAILABLE', 'no leader is known'));
    const clock = fakeClock();
    const c = client({ endpoints: [a.address], maxRetries: 5, timeoutMs: 3_600_000, clock, random: () => 0 });
    const e = await failure(c.put('k', 'v'));
    expect(e).toBeInstanceOf(UnavailableError);
    expect(e.attempts).toBe(6);
    expect(a.calls).toHaveLength(6);
  });

  it('backs off with full jitter under an exponential ceiling, and never past the deadline', async () => {
    const a = await fake(() => raftkvError('UNAVAILABLE', 'no leader is known'));
    for (const r of [0.999999, 0.5, 0.1]) {
      const clock = fakeClock();
      const backoff = { initialMs: 10, maxMs: 160 };
      const timeoutMs = 2_000;
      const c = client({ endpoints: [a.address], maxRetries: 1_000, timeoutMs, backoff, clock, random: () => r });
      const start = clock.now();
      const e = await failure(c.put('k', 'v'));
      expect(e).toBeInstanceOf(UnavailableError);
      clock.sleeps.forEach((ms, i) => {
        expect(ms).toBeGreaterThanOrEqual(0);
        expect(ms).toBeLessThanOrEqual(backoffCeilingMs(i, backoff));
        expect(ms).toBe(Math.floor(r * backoffCeilingMs(i, backoff)));
      });
      // The sleeps never reach past the deadline: the call gave up instead of sleeping into it.
      expect(clock.sleeps.reduce((s, x) => s + x, 0)).toBeLessThan(timeoutMs);
      expect(clock.now() - start).toBeLessThan(timeoutMs + 1_000);
      expect(e.attempts).toBe(clock.sleeps.length + 1);
    }
  });

  it('a node that never answers ends the call at its deadline', async () => {
    const a = await fake(() => 'hang');
    const c = client({ endpoints: [a.address], timeoutMs: 200 });
    const e = await failure(c.put('k', 'v'));
    expect(e).toBeInstanceOf(TimeoutError);
    expect(e).toMatchObject({ code: 'TIMEOUT', grpcCode: grpc.status.DEADLINE_EXCEEDED, endpoint: a.address });
    expect(a.calls).toHaveLength(1);
  });

  it('a deadline that passes before any connection is made is UNAVAILABLE, not TIMEOUT', async () => {
    // Accepts TCP connections but never speaks HTTP/2: the channel never becomes ready.
    const sockets: Socket[] = [];
    const mute = createServer((sock) => sockets.push(sock));
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    try {
      const address = `127.0.0.1:${(mute.address() as AddressInfo).port}`;
      const c = client({ endpoints: [address], timeoutMs: 300 });
      const e = await failure(c.get('k'));
      expect(e).toBeInstanceOf(UnavailableError);
      expect(e).toMatchObject({ code: 'UNAVAILABLE', grpcCode: grpc.status.DEADLINE_EXCEEDED, endpoint: address });
      expect(e.message).toMatch(/^no connection to 127\.0\.0\.1:\d+ before the deadline/);
      c.close();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => mute.close(resolve));
    }
  });

  it('with attemptTimeoutMs, leaves a hung node for the next one within the deadline', async () => {
    const hung = await fake(() => 'hang');
    const b = await fake(ok(2));
    const c = client({ endpoints: [hung.address, b.address], timeoutMs: 10_000, attemptTimeoutMs: 100 });
    await c.put('k', 'v');
    expect(hung.calls).toHaveLength(1);
    expect(b.callsOf('Put').map((x) => seqOf(x.request))).toEqual([1]);
  });

  it('close() ends calls in progress and refuses new ones', async () => {
    const a = await fake(() => 'hang');
    const c = client({ endpoints: [a.address], timeoutMs: 60_000 });
    const pending = c.get('k');
    while (a.calls.length === 0) await new Promise((r) => setImmediate(r));
    c.close();
    expect((await failure(pending)).code).toBe('CLOSED');
    expect((await failure(c.get('k'))).code).toBe('CLOSED');
  });
});

describe('responses', () => {
  it('refuses a uint64 beyond 2^53 - 1 instead of rounding it', async () => {
    const a = await fake(() => ({ response: { header: header('9007199254740993', 1) } }));
    const c = client({ endpoints: [a.address] });
    const e = await failure(c.put('k', 'v'));
    expect(e.code).toBe('PROTOCOL');
    expect(e.message).toContain('9007199254740993');
  });

  it('with session: true, STALE reads carry the highest index seen; other reads carry none', async () => {
    const a = await fake((method, req) => {
      if (method === 'Put') return { response: { header: header(42, 1) } };
      const read = req['read'] as { consistency: string };
      return { response: { header: header(read.consistency === 'STALE' ? 40 : 45, 1, 1, 1, read.consistency), found: false } };
    });
    const c = client({ endpoints: [a.address], session: true });
    const minIndexes = (): number[] => a.callsOf('Get').map((x) => Number((x.request['read'] as { min_index: string }).min_index));
    await c.get('k', { consistency: 'stale' });
    await c.put('k', 'v');
    await c.get('k', { consistency: 'stale' });
    await c.get('k', { consistency: 'stale', minIndex: 44 });
    await c.get('k'); // linearizable: answered at 45
    await c.get('k', { consistency: 'stale' });
    expect(minIndexes()).toEqual([0, 42, 44, 0, 45]);
    expect(c.lastSeenIndex).toBe(45);
  });

  it('without session, STALE reads carry only the caller\'s minIndex', async () => {
    const a = await fake(ok(1, 1, 42));
    const c = client({ endpoints: [a.address] });
    await c.put('k', 'v');
    await c.get('k', { consistency: 'stale' });
    expect(Number((a.callsOf('Get')[0]!.request['read'] as { min_index: string }).min_index)).toBe(0);
  });
});
