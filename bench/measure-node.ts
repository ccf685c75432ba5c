// Measures a 3-node cluster of real kvnode processes on loopback, with kvnode's DEFAULT timings
// (tick 100 ms, election timeout 10 ticks, heartbeat every tick):
//
//  (a) put latency: one client, sequential puts of 100-byte values through the leader; p50 and p99;
//  (b) failover: time from `kill -9` of the leader to the next successful write through a surviving
//      node, by a client retrying every ~20 ms; repeated, restarting the killed node (and waiting for
//      it to catch up) between runs.
//
// A script, not a test: it asserts nothing about speed. Run: npx tsx bench/measure-node.ts
// Options: --puts N (default 500), --failovers N (default 5).

import { availableParallelism, cpus, release, type as osType } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ProcessCluster, retryUnavailable } from '../test/support/process-cluster.js';
import { percentile } from './support/percentile.js';

const { values: flags } = parseArgs({
  options: {
    puts: { type: 'string', default: '500' },
    failovers: { type: 'string', default: '5' },
  },
});
const PUTS = Number(flags.puts);
const WARMUP_PUTS = 50;
const FAILOVERS = Number(flags.failovers);
const VALUE_BYTES = 100;
const RETRY_INTERVAL_MS = 20;
/** Deadline of one write attempt during a failover; shorter than an election, so the client retries. */
const ATTEMPT_TIMEOUT_MS = 500;
const CLIENT_ID = 'measure-node';

const ms = (n: number): string => `${n.toFixed(2)} ms`;
const sleep = (n: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, n));

async function main(): Promise<void> {
  if (!Number.isSafeInteger(PUTS) || PUTS < 1 || !Number.isSafeInteger(FAILOVERS) || FAILOVERS < 1) {
    throw new Error('--puts and --failovers must be positive integers');
  }
  console.log(`command: npx tsx bench/measure-node.ts${process.argv.slice(2).length ? ' ' + process.argv.slice(2).join(' ') : ''}`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, ${osType()} ${release()}, Node ${process.version}`);
  console.log('cluster: 3 kvnode processes on 127.0.0.1, default timings (tick 100 ms, election timeout 10 ticks, heartbeat 1 tick)');

  const cluster = await ProcessCluster.create({ size: 3, timingArgs: [] });
  let seq = 0;
  const value = Buffer.alloc(VALUE_BYTES, 'v');
  try {
    await cluster.start();
    let leader = await cluster.waitForLeader(30_000);

    // (a) sequential put latency through the leader.
    const leaderClient = cluster.client(leader);
    const putOnce = (key: string): Promise<unknown> => {
      const session = { client_id: CLIENT_ID, seq: ++seq };
      return retryUnavailable(() => leaderClient.put({ key: Buffer.from(key), value, session }, { timeoutMs: 5_000 }), 30_000);
    };
    for (let i = 0; i < WARMUP_PUTS; i++) await putOnce(`warmup-${i}`);
    const latencies: number[] = [];
    for (let i = 0; i < PUTS; i++) {
      const t0 = performance.now();
      await putOnce(`latency-${i}`);
      latencies.push(performance.now() - t0);
    }
    latencies.sort((x, y) => x - y);
    const mean = latencies.reduce((s, x) => s + x, 0) / latencies.length;
    console.log(`\n(a) sequential put latency through the leader (node ${leader}), ${PUTS} puts of ${VALUE_BYTES}-byte values after ${WARMUP_PUTS} warm-up puts:`);
    console.log(`    p50 ${ms(percentile(latencies, 0.5))}  p99 ${ms(percentile(latencies, 0.99))}  mean ${ms(mean)}  min ${ms(latencies[0]!)}  max ${ms(latencies[latencies.length - 1]!)}`);

    // (b) failover: kill -9 of the leader to the next successful write through a survivor.
    const samples: number[] = [];
    for (let run = 1; run <= FAILOVERS; run++) {
      leader = await cluster.waitForLeader(30_000);
      const survivor = cluster.ids.find((id) => id !== leader)!;
      const client = cluster.client(survivor);
      const session = { client_id: CLIENT_ID, seq: ++seq };
      const key = Buffer.from(`failover-${run}`);

      const t0 = performance.now();
      const killed = cluster.kill(leader);
      let attempts = 0;
      let index = '';
      for (;;) {
        const started = performance.now();
        attempts++;
        try {
          const r = await client.put({ key, value, session }, { timeoutMs: ATTEMPT_TIMEOUT_MS });
          index = String(r.header.index);
          break;
        } catch {
          if (performance.now() - t0 > 60_000) throw new Error(`run ${run}: no successful write within 60 s of the kill`);
          await sleep(Math.max(0, RETRY_INTERVAL_MS - (performance.now() - started)));
        }
      }
      const failoverMs = performance.now() - t0;
      await killed;
      samples.push(failoverMs);
      const newLeader = await cluster.waitForLeader(30_000, cluster.ids.filter((id) => id !== leader));
      console.log(`    run ${run}: killed leader ${leader}; write through node ${survivor} succeeded after ${ms(failoverMs)} (${attempts} attempts; new leader ${newLeader})`);

      // Bring the killed node back and wait until it has applied the write made without it.
      await cluster.restart(leader);
      await cluster.client(leader).get({ key, read: { consistency: 'STALE', min_index: index } }, { timeoutMs: 30_000 });
    }
    const sorted = [...samples].sort((x, y) => x - y);
    console.log(`\n(b) failover, kill -9 of the leader to the next successful write through a survivor (client retrying every ~${RETRY_INTERVAL_MS} ms), ${FAILOVERS} runs:`);
    console.log(`    median ${ms(percentile(sorted, 0.5))}  samples ${samples.map((s) => s.toFixed(0)).join(', ')} ms`);
  } catch (err) {
    console.error(`measure-node failed: ${(err as Error).message}\n${cluster.describe()}`);
    process.exitCode = 1;
  } finally {
    await cluster.cleanup();
  }
}

await main();
