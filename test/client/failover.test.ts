// Exactly-once writes through a leader crash: three clients keep writing (puts of distinct keys,
// puts to one counter key, compare-and-swap increments) to a cluster of real kvnode processes while
// the leader is killed with SIGKILL mid-stream. Every write must be acknowledged, and the final state
// must show each acknowledged write applied exactly once:
//  - a distinct key has version 1 (a second apply of its put would make it 2);
//  - the counter key's version equals the number of acknowledged puts to it;
//  - the CAS counter equals the number of acknowledged increments, and no increment is reported as
//    failed (nobody else writes it, so a failure means a retry was executed again instead of being
//    answered with its first result).

import { beforeAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/index.js';
import { ProcessCluster } from '../support/process-cluster.js';
import { reportAndCleanUp } from '../support/cluster-hooks.js';
import { waitFor } from '../support/wait.js';

const WRITERS = 3;
/** Rounds (each: one put, one counter put, one CAS) per writer before the kill, and after it. */
const ROUNDS_BEFORE = 15;
const ROUNDS_AFTER = 15;

let cluster: ProcessCluster;

beforeAll(async () => {
  cluster = await ProcessCluster.create({ size: 3 });
  await cluster.start();
});

reportAndCleanUp(() => cluster);

interface Writer {
  readonly id: number;
  readonly client: KvClient;
  rounds: number;
  counterPuts: number;
  casValue: number;
  readonly keys: string[];
}

async function round(w: Writer): Promise<void> {
  const i = w.rounds;
  const key = `w${w.id}/key-${String(i).padStart(4, '0')}`;
  // Issued together: the client queues them and sends one at a time, each with its own seq.
  const [, , cas] = await Promise.all([
    w.client.put(key, String(i)),
    w.client.put(`w${w.id}/counter`, String(i)),
    w.client.compareAndSwap(`w${w.id}/cas`, w.casValue === 0 ? { expectAbsent: true } : { expectedValue: String(w.casValue) }, String(w.casValue + 1)),
  ]);
  expect(cas.succeeded, `writer ${w.id}: CAS ${w.casValue} -> ${w.casValue + 1} reported failure`).toBe(true);
  w.keys.push(key);
  w.counterPuts++;
  w.casValue++;
  w.rounds++;
}

describe('a leader killed mid-stream of writes', () => {
  it('every acknowledged write is applied exactly once', async () => {
    const endpoints = [...cluster.addresses.values()];
    const oldLeader = await cluster.waitForLeader();
    const writers: Writer[] = Array.from({ length: WRITERS }, (_, i) => ({
      id: i + 1,
      // Failover takes well under a second with the test timings; the deadline leaves ample room.
      client: new KvClient({ endpoints, timeoutMs: 15_000, maxRetries: 100, backoff: { initialMs: 10, maxMs: 200 } }),
      rounds: 0,
      counterPuts: 0,
      casValue: 0,
      keys: [],
    }));
    try {
      let killedAt: number[] | undefined;
      const run = async (w: Writer): Promise<void> => {
        while (killedAt === undefined || w.rounds < killedAt[w.id - 1]! + ROUNDS_AFTER) await round(w);
      };
      const running = Promise.all(writers.map(run));
      // Kill the leader once every writer is well into its stream, with writes in flight.
      await waitFor(() => writers.every((w) => w.rounds >= ROUNDS_BEFORE), 20_000, 'writes before the kill');
      await cluster.kill(oldLeader);
      killedAt = writers.map((w) => w.rounds);
      await running;

      const newLeader = await cluster.waitForLeader();
      expect(newLeader).not.toBe(oldLeader);

      const check = new KvClient({ endpoints: endpoints.filter((_, i) => i + 1 !== oldLeader) });
      try {
        for (const w of writers) {
          for (const [i, key] of w.keys.entries()) {
            const r = await check.get(key);
            expect(r.found, key).toBe(true);
            expect(r.valueString).toBe(String(i));
            expect(r.kv!.version, `${key} was applied ${r.kv!.version} times`).toBe(1);
          }
          const counter = await check.get(`w${w.id}/counter`);
          expect(counter.kv!.version, `writer ${w.id}'s counter puts`).toBe(w.counterPuts);
          const cas = await check.get(`w${w.id}/cas`);
          expect(cas.valueString).toBe(String(w.casValue));
          // Nothing else was written under the writer's prefix.
          const all = [];
          for await (const kv of check.scan({ prefix: `w${w.id}/` }, { keysOnly: true })) all.push(kv.keyString);
          expect(all).toHaveLength(w.keys.length + 2);
        }
      } finally {
        check.close();
      }
    } finally {
      for (const w of writers) w.client.close();
    }
  });
});
