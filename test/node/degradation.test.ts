// Read-only degradation on real kvnode processes, with links cut at run time through the test-only
// FaultInjection service: a node cut off from the majority (the leader, then a follower) turns
// read-only (Status writable=false with a reason; writes, LINEARIZABLE and LEASE reads refused with
// UNAVAILABLE / NO_QUORUM; STALE reads still served, their staleness growing, TOO_STALE over
// max_staleness_ms), the majority goes on, and after the heal the node catches up and takes writes
// again by itself. Also: which consistency a LEASE read reports, on the leader and on a follower.
//
// The time from the partition to the first NO_QUORUM is printed, not asserted (no timing assertions).

import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type * as pb from '../../src/server/kv-proto.js';
import { isolationLinks, isServiceError, ProcessCluster, raftkvCode, retryUnavailable, TEST_TIMING_ARGS } from '../support/process-cluster.js';
import { reportAndCleanUp } from '../support/cluster-hooks.js';
import { waitFor } from '../support/wait.js';

const CALL_TIMEOUT_MS = 2_000;
const WAIT_MS = 10_000;
const tickMs = Number(TEST_TIMING_ARGS[TEST_TIMING_ARGS.indexOf('--tick-ms') + 1]);
const electionTimeoutMs = tickMs * Number(TEST_TIMING_ARGS[TEST_TIMING_ARGS.indexOf('--election-timeout-ticks') + 1]);

const b = (s: string): Buffer => Buffer.from(s);
const str = (v: Uint8Array | undefined | null): string => Buffer.from(v ?? new Uint8Array(0)).toString();

let cluster: ProcessCluster;

beforeAll(async () => {
  cluster = await ProcessCluster.create({ size: 3, faultInjection: true });
  await cluster.start();
});

reportAndCleanUp(() => cluster);

// A failed test must not leave the next one with cut links.
afterEach(async () => {
  await cluster?.heal();
});

/** Every write of this file carries a session, so that a retry is applied once. */
const CLIENT_ID = 'degradation-test';
let lastSeq = 0;
const session = (): pb.WriteSessionMsg => ({ client_id: CLIENT_ID, seq: ++lastSeq });

/** A write that must succeed (retried while UNAVAILABLE, e.g. during an election). */
function put(via: number, key: string, value: string): Promise<pb.PutResponse> {
  const s = session();
  return retryUnavailable(() => cluster.client(via).put({ key: b(key), value: b(value), session: s }, { timeoutMs: CALL_TIMEOUT_MS }), WAIT_MS);
}

function get(via: number, key: string, read: Record<string, unknown>, timeoutMs = CALL_TIMEOUT_MS): Promise<pb.GetResponse> {
  return cluster.client(via).get({ key: b(key), read }, { timeoutMs });
}

/** The failure of `p`, which must fail with UNAVAILABLE and raftkv-code `code`; returns its details. */
async function refusal(p: Promise<unknown>, code: string): Promise<string> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(isServiceError(err), `expected a ${code} refusal, got ${err === undefined ? 'success' : String(err)}`).toBe(true);
  const se = err as grpc.ServiceError;
  expect({ status: grpc.status[se.code], code: raftkvCode(se) }, se.details).toEqual({ status: 'UNAVAILABLE', code });
  return se.details;
}

/**
 * Sends writes to `id` until one is refused with NO_QUORUM; resolves with the time from `t0`. A
 * write sent while the node still believes it has a quorum waits, and is failed once it notices.
 * `mayCommit`: a follower forwards writes to the leader over the client channel (which the partition
 * does not cut) until it notices it has lost the leader, so those may succeed.
 */
async function timeToNoQuorum(id: number, t0: number, mayCommit: boolean): Promise<number> {
  let at = 0;
  let n = 0;
  await waitFor(
    async () => {
      try {
        await cluster.client(id).put({ key: b(`probe/${++n}`), value: b('x'), session: session() }, { timeoutMs: CALL_TIMEOUT_MS });
        if (!mayCommit) throw new Error(`a write was committed through node ${id}, which is cut off from the majority`);
        return false;
      } catch (e) {
        if (raftkvCode(e) !== 'NO_QUORUM') {
          if (!isServiceError(e)) throw e;
          return false;
        }
        at = performance.now() - t0;
        return true;
      }
    },
    WAIT_MS,
    `a NO_QUORUM answer from node ${id}`,
    10,
  );
  return at;
}

async function waitWritable(id: number, writable: boolean): Promise<pb.StatusResponse> {
  let status: pb.StatusResponse | undefined;
  await waitFor(
    async () => {
      status = await cluster.client(id).status({ timeoutMs: 1_000 }).catch(() => undefined);
      return status !== undefined && status.writable === writable;
    },
    WAIT_MS,
    `node ${id} to report writable=${writable}`,
    10,
  );
  return status!;
}

/**
 * What a node cut off from the majority does: refuses writes and strong reads with NO_QUORUM, serves
 * STALE reads with growing staleness (and TOO_STALE above max_staleness_ms). `key` holds `value` on it.
 */
async function expectReadOnly(id: number, key: string, value: string): Promise<void> {
  const status = await waitWritable(id, false);
  expect(status.read_only_reason).not.toBe('');

  const write = await refusal(cluster.client(id).put({ key: b(key), value: b('refused'), session: session() }, { timeoutMs: CALL_TIMEOUT_MS }), 'NO_QUORUM');
  expect(write).toMatch(/^NO_QUORUM: write refused: the cluster is read-only from this node: .+; STALE reads still work$/);
  const lin = await refusal(get(id, key, { consistency: 'LINEARIZABLE' }), 'NO_QUORUM');
  expect(lin).toMatch(/read refused: the cluster is read-only/);
  await refusal(get(id, key, { consistency: 'LEASE' }), 'NO_QUORUM');

  // STALE keeps answering, from local state, saying how stale it is; the staleness grows.
  const s1 = await get(id, key, { consistency: 'STALE' });
  expect({ found: s1.found, value: str(s1.kv?.value), node: Number(s1.header.node_id), consistency: s1.header.consistency }).toEqual({
    found: true,
    value,
    node: id,
    consistency: 'STALE',
  });
  const stale1 = Number(s1.header.staleness_ms);
  // It lost contact a moment ago, not "never": the staleness counts from its last contact.
  expect(stale1).toBeGreaterThan(0);
  expect(stale1).toBeLessThan(WAIT_MS);
  let stale2 = stale1;
  await waitFor(
    async () => {
      stale2 = Number((await get(id, key, { consistency: 'STALE' })).header.staleness_ms);
      return stale2 !== stale1;
    },
    WAIT_MS,
    'a second STALE read with another staleness',
  );
  expect(stale2).toBeGreaterThan(stale1);

  // max_staleness_ms: refused when the node is staler than that, served when it is not.
  const tooStale = await refusal(get(id, key, { consistency: 'STALE', max_staleness_ms: String(Math.max(1, Math.floor(stale2 / 2))) }), 'TOO_STALE');
  expect(tooStale).toMatch(/last heard from a leader \d+ ms ago, more than max_staleness_ms=\d+/);
  expect((await get(id, key, { consistency: 'STALE', max_staleness_ms: '600000' })).found).toBe(true);
}

/** After the heal: `id` applies `index` (a write made without it), is writable again, and takes writes. */
async function expectRecovered(id: number, key: string, value: string, index: number): Promise<void> {
  const t0 = performance.now();
  const caughtUp = await get(id, key, { consistency: 'STALE', min_index: String(index) }, WAIT_MS);
  expect({ found: caughtUp.found, value: str(caughtUp.kv?.value) }).toEqual({ found: true, value });
  expect(Number(caughtUp.header.index)).toBeGreaterThanOrEqual(index);
  const caughtUpMs = performance.now() - t0;

  const status = await waitWritable(id, true);
  expect(status.read_only_reason).toBe('');
  // No operator action: it takes writes again (forwarded, if it follows) and strong reads.
  const w = await put(id, `${key}/after-heal`, 'again');
  expect(Number(w.header.index)).toBeGreaterThan(index);
  if ((await cluster.client(id).status()).role === 'follower') expect(Number(w.header.node_id)).not.toBe(id);
  const lin = await retryUnavailable(() => get(id, `${key}/after-heal`, { consistency: 'LINEARIZABLE' }), WAIT_MS);
  expect(str(lin.kv?.value)).toBe('again');
  console.log(`node ${id}: caught up to index ${index} ${caughtUpMs.toFixed(0)} ms after the heal`);
}

describe('a node cut off from the majority turns read-only, and recovers by itself', () => {
  it('an isolated leader: read-only; the majority elects a new leader and takes writes; after the heal it catches up', async () => {
    const old = await cluster.waitForLeader();
    const rest = cluster.ids.filter((id) => id !== old);
    const before = await put(old, 'iso-leader', 'v0');
    expect(Number(before.header.node_id)).toBe(old);

    const t0 = performance.now();
    await cluster.partition(isolationLinks(old, cluster.ids));
    const noQuorumMs = await timeToNoQuorum(old, t0, false);
    console.log(`isolated leader node ${old}: first NO_QUORUM answer to a write ${noQuorumMs.toFixed(0)} ms after the partition (election timeout ${electionTimeoutMs}-${2 * electionTimeoutMs} ms)`);

    await expectReadOnly(old, 'iso-leader', 'v0');

    // The majority elects a new leader among itself and keeps taking writes, through either node.
    const newLeader = await cluster.waitForLeader(WAIT_MS, rest);
    expect(newLeader).not.toBe(old);
    await put(rest[0]!, 'iso-leader', 'v1');
    const during = await put(rest[1]!, 'iso-leader', 'v2');
    const index = Number(during.header.index);
    // The old leader, cut off, has not seen them.
    const onOld = await get(old, 'iso-leader', { consistency: 'STALE' });
    expect(str(onOld.kv?.value)).toBe('v0');
    expect(Number(onOld.header.index)).toBeLessThan(index);

    await cluster.heal();
    await expectRecovered(old, 'iso-leader', 'v2', index);
    await cluster.waitForLeader(WAIT_MS);
  });

  it('an isolated follower: read-only after about an election timeout; the leader side is unaffected; after the heal it catches up', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;
    const before = await put(leader, 'iso-follower', 'v0');
    // The follower has it before it is cut off.
    await get(follower, 'iso-follower', { consistency: 'STALE', min_index: before.header.index }, WAIT_MS);

    const t0 = performance.now();
    await cluster.partition(isolationLinks(follower, cluster.ids));
    const noQuorumMs = await timeToNoQuorum(follower, t0, true);
    console.log(`isolated follower node ${follower}: first NO_QUORUM answer to a write ${noQuorumMs.toFixed(0)} ms after the partition (election timeout ${electionTimeoutMs}-${2 * electionTimeoutMs} ms)`);

    await expectReadOnly(follower, 'iso-follower', 'v0');
    expect((await cluster.client(follower).status()).read_only_reason).toMatch(/has not heard from a leader for \d+ ms/);

    // The majority side: still writable, takes writes and strong reads.
    const majority = cluster.ids.filter((id) => id !== follower);
    const leaderNow = await cluster.waitForLeader(WAIT_MS, majority);
    if (leaderNow !== leader) console.log(`note: the leader changed from node ${leader} to node ${leaderNow} during the test (a busy machine?)`);
    expect((await cluster.client(leaderNow).status()).writable).toBe(true);
    const during = await put(leaderNow, 'iso-follower', 'v1');
    const index = Number(during.header.index);
    const other = majority.find((id) => id !== leaderNow)!;
    expect(str((await retryUnavailable(() => get(other, 'iso-follower', { consistency: 'LINEARIZABLE' }), WAIT_MS)).kv?.value)).toBe('v1');

    await cluster.heal();
    await expectRecovered(follower, 'iso-follower', 'v1', index);
  });
});

describe('LEASE reads', () => {
  it('a healthy leader serves them from its lease (header LEASE); a follower serves them as LINEARIZABLE', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.ids.find((id) => id !== leader)!;
    const w = await put(leader, 'lease', 'L');
    // The lease holds while heartbeat rounds are acknowledged; on a busy machine it may lapse for a
    // moment and a read then falls back to ReadIndex (and says so). Either way it is one of the two.
    let served: pb.GetResponse | undefined;
    await waitFor(
      async () => {
        served = await get(leader, 'lease', { consistency: 'LEASE' });
        expect(['LEASE', 'LINEARIZABLE']).toContain(served.header.consistency);
        return served.header.consistency === 'LEASE';
      },
      WAIT_MS,
      'a LEASE read on the leader served from its lease',
      10,
    );
    expect({ value: str(served!.kv?.value), node: Number(served!.header.node_id) }).toEqual({ value: 'L', node: leader });
    expect(Number(served!.header.index)).toBeGreaterThanOrEqual(Number(w.header.index));

    for (let i = 0; i < 5; i++) {
      const r = await retryUnavailable(() => get(follower, 'lease', { consistency: 'LEASE' }), WAIT_MS);
      expect({ value: str(r.kv?.value), node: Number(r.header.node_id), consistency: r.header.consistency }).toEqual({
        value: 'L',
        node: follower,
        consistency: 'LINEARIZABLE',
      });
    }
  });
});
