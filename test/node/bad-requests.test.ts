// Bad requests to real kvnode processes: each is refused with INVALID_ARGUMENT, the raftkv-code
// metadata, and a message naming the field or the limit; the node goes on serving good requests.
// Each is sent both to the leader and to a follower (which validates before it would forward).
// A malformed raw frame to the peer service is covered by test/transport.

import * as grpc from '@grpc/grpc-js';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProcessCluster, isServiceError, raftkvCode, retryUnavailable, type KvClient } from '../support/process-cluster.js';
import { reportAndCleanUp } from '../support/cluster-hooks.js';

// Small limits keep the oversized requests cheap.
const MAX_KEY_BYTES = 16;
const MAX_VALUE_BYTES = 64;
const MAX_RANGE_PAGE = 10;
const MAX_MESSAGE_BYTES = 8192;

let cluster: ProcessCluster;
let leader = 0;
let follower = 0;
let seq = 0;

beforeAll(async () => {
  cluster = await ProcessCluster.create({
    size: 3,
    args: [
      '--max-key-bytes', String(MAX_KEY_BYTES),
      '--max-value-bytes', String(MAX_VALUE_BYTES),
      '--max-range-page', String(MAX_RANGE_PAGE),
      '--max-message-bytes', String(MAX_MESSAGE_BYTES),
    ],
  });
  await cluster.start();
  leader = await cluster.waitForLeader();
  follower = cluster.ids.find((id) => id !== leader)!;
});

reportAndCleanUp(() => cluster);

const b = (s: string): Buffer => Buffer.from(s);

/** Calls `fn` and returns the error it must fail with. */
async function refusal(fn: () => Promise<unknown>): Promise<grpc.ServiceError> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'the request must be refused').toBeDefined();
  if (!isServiceError(caught)) throw new Error(`expected a gRPC error, got ${String(caught)}`);
  return caught;
}

/** A good write and a good read through the same node: it still serves. */
async function expectServes(client: KvClient): Promise<void> {
  const key = b(`good-${++seq}`);
  const w = await retryUnavailable(() =>
    client.put({ key, value: b('ok'), session: { client_id: 'bad-requests-test', seq } }, { timeoutMs: 2_000 }),
  );
  const r = await retryUnavailable(() =>
    client.get({ key, read: { consistency: 'STALE', min_index: w.header.index } }, { timeoutMs: 5_000 }),
  );
  expect(r.found).toBe(true);
  expect(Buffer.from(r.kv!.value).toString()).toBe('ok');
}

interface BadRequest {
  readonly name: string;
  readonly send: (c: KvClient) => Promise<unknown>;
  /** What the message must name: the field, or the limit and its value. */
  readonly names: readonly string[];
}

const key = b('k');
const badRequests: readonly BadRequest[] = [
  { name: 'an empty key (Put)', send: (c) => c.put({ key: b(''), value: b('v') }), names: ['key: must not be empty'] },
  { name: 'an empty key (Get)', send: (c) => c.get({ key: b('') }), names: ['key: must not be empty'] },
  {
    name: 'an oversized key',
    send: (c) => c.put({ key: Buffer.alloc(MAX_KEY_BYTES + 1, 'k'), value: b('v') }),
    names: ['key', `maxKeyBytes=${MAX_KEY_BYTES}`],
  },
  {
    name: 'an oversized value',
    send: (c) => c.put({ key, value: Buffer.alloc(MAX_VALUE_BYTES + 1, 'v') }),
    names: ['value', `maxValueBytes=${MAX_VALUE_BYTES}`],
  },
  {
    // proto-loader passes an enum number it does not know through as a number.
    name: 'an unknown consistency value',
    send: (c) => c.get({ key, read: { consistency: 99 } }),
    names: ['read.consistency', '99'],
  },
  {
    name: 'a uint64 beyond 2^53 in read.min_index',
    send: (c) => c.get({ key, read: { consistency: 'STALE', min_index: '18446744073709551615' } }),
    names: ['read.min_index', '18446744073709551615', '2^53'],
  },
  {
    name: 'min_index on a LINEARIZABLE read',
    send: (c) => c.get({ key, read: { consistency: 'LINEARIZABLE', min_index: '5' } }),
    names: ['read.min_index', 'STALE'],
  },
  { name: 'a CAS without a compare', send: (c) => c.compareAndSwap({ key, value: b('v') }), names: ['compare'] },
  {
    name: 'a range with both prefix and start',
    send: (c) => c.range({ prefix: b('a'), start: b('b') }),
    names: ['prefix', 'start'],
  },
  {
    name: 'a range limit over the page limit',
    send: (c) => c.range({ prefix: b('a'), limit: MAX_RANGE_PAGE + 1 }),
    names: ['limit', `maxRangePageSize=${MAX_RANGE_PAGE}`],
  },
  {
    name: 'a session with a seq but no client id',
    send: (c) => c.put({ key, value: b('v'), session: { client_id: '', seq: 5 } }),
    names: ['session.client_id'],
  },
];

describe.each([
  ['the leader', () => leader],
  ['a follower', () => follower],
])('bad requests to %s', (_, target) => {
  it.each(badRequests)('refuses $name with INVALID_ARGUMENT, and serves on', async ({ send, names }) => {
    const client = cluster.client(target());
    const err = await refusal(() => send(client));
    expect(err.code, err.message).toBe(grpc.status.INVALID_ARGUMENT);
    expect(raftkvCode(err)).toBe('INVALID_ARGUMENT');
    expect(err.details.startsWith('INVALID_ARGUMENT: ')).toBe(true);
    for (const n of names) expect(err.details).toContain(n);
    await expectServes(client);
  });

  it('refuses a message over --max-message-bytes with RESOURCE_EXHAUSTED, and serves on', async () => {
    const client = cluster.client(target());
    const err = await refusal(() => client.put({ key, value: Buffer.alloc(MAX_MESSAGE_BYTES + 1, 'v') }));
    // gRPC itself refuses it, before any raftkv code runs: no raftkv-code metadata here.
    expect(err.code, err.message).toBe(grpc.status.RESOURCE_EXHAUSTED);
    await expectServes(client);
  });
});
