// A 3-node cluster of real kvnode processes on loopback: election, writes through any node, reads at
// every consistency from every node, failover after kill -9, catch-up after a restart, exactly-once
// writes with a session, and a clean SIGTERM shutdown. One cluster for the whole file; the tests run
// in order and each finds the current leader itself.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type * as pb from '../../src/server/kv-proto.js';
import { ProcessCluster, retryUnavailable } from '../support/process-cluster.js';
import { reportAndCleanUp } from '../support/cluster-hooks.js';
import { waitFor } from '../support/wait.js';

const reflectionProtoPath = join(
  dirname(createRequire(import.meta.url).resolve('@grpc/reflection')),
  '../proto/grpc/reflection/v1/reflection.proto',
);

const CALL_TIMEOUT_MS = 2_000;
const RETRY_TIMEOUT_MS = 15_000;
/** A STALE read with min_index waits (bounded by its deadline) for the node to catch up. */
const CATCH_UP_TIMEOUT_MS = 15_000;

const b = (s: string): Buffer => Buffer.from(s);
const str = (v: Uint8Array | undefined | null): string => Buffer.from(v ?? new Uint8Array(0)).toString();

let cluster: ProcessCluster;

beforeAll(async () => {
  cluster = await ProcessCluster.create({ size: 3 });
  await cluster.start();
});

reportAndCleanUp(() => cluster);

/** Every write of this file carries a session, so a retry after an election applies it once. */
const CLIENT_ID = 'cluster-test';
let lastSeq = 0;

async function put(via: number, key: string, value: string): Promise<pb.PutResponse> {
  const session = { client_id: CLIENT_ID, seq: ++lastSeq };
  return retryUnavailable(() => cluster.client(via).put({ key: b(key), value: b(value), session }, { timeoutMs: CALL_TIMEOUT_MS }), RETRY_TIMEOUT_MS);
}

async function getLinearizable(via: number, key: string): Promise<pb.GetResponse> {
  return retryUnavailable(
    () => cluster.client(via).get({ key: b(key), read: { consistency: 'LINEARIZABLE' } }, { timeoutMs: CALL_TIMEOUT_MS }),
    RETRY_TIMEOUT_MS,
  );
}

function getStale(via: number, key: string, minIndex: number | string): Promise<pb.GetResponse> {
  return cluster.client(via).get(
    { key: b(key), read: { consistency: 'STALE', min_index: String(minIndex) } },
    { timeoutMs: CATCH_UP_TIMEOUT_MS },
  );
}

/** Checks the header every response carries: a positive index and the id of a member. */
function expectHeader(h: pb.ResponseHeader | undefined): { index: number; nodeId: number } {
  expect(h).toBeDefined();
  const index = Number(h!.index);
  const nodeId = Number(h!.node_id);
  expect(Number.isSafeInteger(index) && index > 0, `header.index ${h!.index}`).toBe(true);
  expect(cluster.ids).toContain(nodeId);
  return { index, nodeId };
}

/** Reads `key` from every node in `ids`, LINEARIZABLE and STALE at `minIndex`, expecting `value`. */
async function expectReadableEverywhere(ids: readonly number[], key: string, value: string, minIndex: number): Promise<void> {
  for (const id of ids) {
    const lin = await getLinearizable(id, key);
    expect(lin.found, `LINEARIZABLE ${key} on node ${id}`).toBe(true);
    expect(str(lin.kv?.value)).toBe(value);
    const lh = expectHeader(lin.header);
    expect(lh.nodeId).toBe(id);
    expect(lh.index).toBeGreaterThanOrEqual(minIndex);
    expect(lin.header.consistency).toBe('LINEARIZABLE');

    const stale = await getStale(id, key, minIndex);
    expect(stale.found, `STALE ${key} on node ${id} at min_index ${minIndex}`).toBe(true);
    expect(str(stale.kv?.value)).toBe(value);
    const sh = expectHeader(stale.header);
    expect(sh.nodeId).toBe(id);
    expect(sh.index).toBeGreaterThanOrEqual(minIndex);
    expect(stale.header.consistency).toBe('STALE');
  }
}

describe('a 3-node kvnode cluster', () => {
  it('answers the standard health check and lists its services by reflection', async () => {
    const addr = cluster.addresses.get(1)!;
    const health = protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: String });
    const Health = grpc.makeGenericClientConstructor(health['grpc.health.v1.Health'] as grpc.ServiceDefinition, 'Health');
    const hc = new Health(addr, grpc.credentials.createInsecure()) as unknown as {
      Check(req: { service: string }, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: { status: string }) => void): void;
      close(): void;
    };
    const status = await new Promise<{ status: string }>((resolve, reject) =>
      hc.Check({ service: 'raftkv.v1.KV' }, { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r))),
    );
    hc.close();
    expect(status.status).toBe('SERVING');

    const reflection = protoLoader.loadSync(reflectionProtoPath, { keepCase: true });
    const Refl = grpc.makeGenericClientConstructor(
      reflection['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition,
      'ServerReflection',
    );
    const rc = new Refl(addr, grpc.credentials.createInsecure()) as unknown as {
      ServerReflectionInfo(o: grpc.CallOptions): grpc.ClientDuplexStream<{ list_services: string }, { list_services_response?: { service: { name: string }[] } }>;
      close(): void;
    };
    const names = await new Promise<string[]>((resolve, reject) => {
      const call = rc.ServerReflectionInfo({ deadline: Date.now() + 5000 });
      call.on('data', (r) => {
        resolve((r.list_services_response?.service ?? []).map((x: { name: string }) => x.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
    rc.close();
    expect(names).toEqual(expect.arrayContaining(['raftkv.v1.KV', 'raftkv.peer.v1.RaftPeer']));
  });

  it('elects exactly one leader, and every node names it', async () => {
    let statuses: pb.StatusResponse[] = [];
    // Wait for a moment when every node knows a leader in one term; then that snapshot must show
    // exactly one node in the leader role, the one all of them name (election safety, §5.2).
    await waitFor(
      async () => {
        const polled = await Promise.all(cluster.ids.map((id) => cluster.client(id).status({ timeoutMs: 1_000 }).catch(() => undefined)));
        if (polled.some((s) => s === undefined)) return false;
        statuses = polled as pb.StatusResponse[];
        const first = statuses[0]!;
        return statuses.every((s) => s.leader_id !== '0' && s.leader_id === first.leader_id && s.term === first.term);
      },
      10_000,
      'every node to know the same leader in the same term',
      20,
    );
    const leaders = statuses.filter((s) => s.role === 'leader');
    expect(leaders).toHaveLength(1);
    expect(leaders[0]!.node_id).toBe(statuses[0]!.leader_id);
    expect(statuses.map((s) => Number(s.node_id)).sort()).toEqual([1, 2, 3]);
  });

  it('serves writes through the leader and through a follower (forwarded), readable from every node', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;

    const viaLeader = await put(leader, 'via-leader', 'L');
    const viaFollower = await put(follower, 'via-follower', 'F');
    const wl = expectHeader(viaLeader.header);
    const wf = expectHeader(viaFollower.header);
    expect(wf.index).toBeGreaterThan(wl.index);

    await expectReadableEverywhere(cluster.ids, 'via-leader', 'L', wl.index);
    await expectReadableEverywhere(cluster.ids, 'via-follower', 'F', wf.index);
  });

  let killed = 0;
  let writtenWhileDown = { key: '', index: 0 };

  it('elects a new leader after kill -9 of the leader, and writes continue', async () => {
    const before = await put(await cluster.waitForLeader(), 'before-kill', 'B');
    killed = await cluster.waitForLeader();
    const exit = await cluster.kill(killed);
    expect(exit.signal).toBe('SIGKILL');

    const survivors = cluster.ids.filter((id) => id !== killed);
    const newLeader = await cluster.waitForLeader(10_000, survivors);
    expect(newLeader).not.toBe(killed);

    // Through each survivor: one is the new leader, the other forwards to it.
    const w1 = await put(survivors[0]!, 'after-kill-1', 'A1');
    const w2 = await put(survivors[1]!, 'after-kill-2', 'A2');
    expect(expectHeader(w1.header).index).toBeGreaterThan(Number(before.header.index));
    expect(expectHeader(w2.header).index).toBeGreaterThan(Number(w1.header.index));
    await expectReadableEverywhere(survivors, 'before-kill', 'B', Number(before.header.index));
    await expectReadableEverywhere(survivors, 'after-kill-2', 'A2', Number(w2.header.index));
    writtenWhileDown = { key: 'after-kill-2', index: Number(w2.header.index) };
  });

  it('lets the killed node, restarted, catch up with what was written while it was down', async () => {
    expect(killed).not.toBe(0);
    await cluster.restart(killed);
    // STALE with min_index waits on that node until it has applied the write.
    const r = await getStale(killed, writtenWhileDown.key, writtenWhileDown.index);
    expect(r.found).toBe(true);
    expect(str(r.kv?.value)).toBe('A2');
    expect(Number(r.header.node_id)).toBe(killed);
    expect(Number(r.header.index)).toBeGreaterThanOrEqual(writtenWhileDown.index);
    // And it takes part again: every node agrees on one leader, and reads through it work.
    await cluster.waitForLeader();
    await expectReadableEverywhere(cluster.ids, 'after-kill-1', 'A1', writtenWhileDown.index);
  });

  it('applies a write retried with the same session once', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;
    const session = (seq: number) => ({ client_id: 'exactly-once-test', seq });
    const cas = (via: number, req: Record<string, unknown>) =>
      retryUnavailable(() => cluster.client(via).compareAndSwap({ key: b('counter'), ...req }, { timeoutMs: CALL_TIMEOUT_MS }), RETRY_TIMEOUT_MS);

    // counter := 1 if absent; sent twice (the retry through a follower, forwarded).
    const create = { compare: 'expect_absent', expect_absent: true, value: b('1'), session: session(1) };
    const c1 = await cas(leader, create);
    const c2 = await cas(follower, create);
    expect(c1.succeeded).toBe(true);
    expect(c2.succeeded).toBe(true);
    expect(c2.header.index).toBe(c1.header.index);

    // counter := 2 if it is 1; sent twice. Applied twice, the second would find 2 and fail.
    const increment = { compare: 'expected_value', expected_value: b('1'), value: b('2'), session: session(2) };
    const i1 = await cas(follower, increment);
    const i2 = await cas(leader, increment);
    expect(i1.succeeded).toBe(true);
    expect(i2.succeeded).toBe(true);
    expect(i2.header.index).toBe(i1.header.index);

    const read = await getLinearizable(leader, 'counter');
    expect(str(read.kv?.value)).toBe('2');
    // version counts the writes to the key: the create and one increment.
    expect(read.kv?.version).toBe('2');
    expect(read.kv?.mod_index).toBe(i1.header.index);

    // The same with a plain put: the key's version shows one application.
    const p = { key: b('put-once'), value: b('x'), session: session(3) };
    const p1 = await retryUnavailable(() => cluster.client(leader).put(p, { timeoutMs: CALL_TIMEOUT_MS }), RETRY_TIMEOUT_MS);
    const p2 = await retryUnavailable(() => cluster.client(follower).put(p, { timeoutMs: CALL_TIMEOUT_MS }), RETRY_TIMEOUT_MS);
    expect(p2.header.index).toBe(p1.header.index);
    const pr = await getLinearizable(follower, 'put-once');
    expect(pr.kv?.version).toBe('1');
  });

  it('stops a node cleanly on SIGTERM (exit code 0), and it restarts with its data', async () => {
    const leader = await cluster.waitForLeader();
    const w = await put(leader, 'before-sigterm', 'S');
    const index = Number(w.header.index);
    // Make sure the node to stop has applied the write before it goes.
    const onLeader = await getStale(leader, 'before-sigterm', index);
    expect(onLeader.found).toBe(true);

    const exit = await cluster.stopNode(leader);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(cluster.node(leader).stderr).toContain('"event":"stopped"');

    await cluster.restart(leader);
    const after = await getStale(leader, 'before-sigterm', index);
    expect(after.found).toBe(true);
    expect(str(after.kv?.value)).toBe('S');
    expect(Number(after.header.node_id)).toBe(leader);

    // The cluster goes on with it.
    const w2 = await put(leader, 'after-sigterm', 'T');
    await expectReadableEverywhere(cluster.ids, 'after-sigterm', 'T', Number(w2.header.index));
  });
});
