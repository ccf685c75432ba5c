// Measures reads at each consistency, writes, and read-only degradation on a 3-node cluster of real
// kvnode processes on loopback, with kvnode's DEFAULT timings (tick 100 ms, election timeout 10
// ticks, heartbeat every tick; lease 800 ms) and --enable-fault-injection:
//
//  (a) single-client sequential Get latency (p50/p99) per mode: LINEARIZABLE, LEASE and STALE on the
//      leader, and LINEARIZABLE (ReadIndex asked of the leader) and STALE on a follower;
//  (b) throughput per mode with C concurrent callers in a closed loop (each sends its next call when
//      the previous one is answered) for S seconds, all from this one process over one connection per
//      node: the client's own CPU is part of what limits it, so its CPU use is printed beside;
//  (c) the same for Put (each concurrent writer its own session);
//  (d) read-only degradation: the time from isolating the leader (SetLinks on every node) to its
//      first NO_QUORUM answer to a write, and to the first write committed by the majority; repeated,
//      healing and waiting for the cluster to settle between runs.
//
// A script, not a test: it asserts nothing about speed. Run: npx tsx bench/measure-reads.ts
// Options: --reads N (1000), --writes N (1000), --seconds S (5), --concurrency C (64), --isolations N (5).

import { availableParallelism, cpus, loadavg, release, type as osType } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type * as pb from '../src/server/kv-proto.js';
import { isolationLinks, ProcessCluster, raftkvCode, retryUnavailable, type KvClient } from '../test/support/process-cluster.js';
import { waitFor } from '../test/support/wait.js';
import { percentile } from './support/percentile.js';

const { values: flags } = parseArgs({
  options: {
    reads: { type: 'string', default: '1000' },
    writes: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '64' },
    isolations: { type: 'string', default: '5' },
  },
});
const READS = Number(flags.reads);
const WRITES = Number(flags.writes);
const SECONDS = Number(flags.seconds);
const CONCURRENCY = Number(flags.concurrency);
const ISOLATIONS = Number(flags.isolations);
const WARMUP = 50;
const VALUE_BYTES = 100;
const KEY = Buffer.from('bench/key');
const CALL_TIMEOUT_MS = 5_000;
/** Deadline of one write attempt to the majority while the leader is isolated (an election runs). */
const ATTEMPT_TIMEOUT_MS = 500;
const RETRY_INTERVAL_MS = 20;

type Mode = 'LINEARIZABLE' | 'LEASE' | 'STALE';

const ms = (n: number): string => `${n.toFixed(2)} ms`;
const sleep = (n: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, n));

function summary(latencies: number[]): string {
  const sorted = [...latencies].sort((x, y) => x - y);
  const mean = sorted.reduce((s, x) => s + x, 0) / Math.max(1, sorted.length);
  return `p50 ${ms(percentile(sorted, 0.5))}  p99 ${ms(percentile(sorted, 0.99))}  mean ${ms(mean)}  max ${ms(sorted[sorted.length - 1] ?? NaN)}`;
}

/** How many responses reported each consistency (a LEASE read may be served as LINEARIZABLE). */
function servedAs(counts: Map<string, number>): string {
  return [...counts].map(([c, n]) => `${c} ${n}`).join(', ');
}

/** Sequential calls of `op`; latencies of the measured ones. */
async function sequential(n: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await op(-1 - i);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await op(i);
    out.push(performance.now() - t0);
  }
  return out;
}

/** `workers` callers in a closed loop for `seconds`: completed calls, errors, latencies, client CPU. */
async function closedLoop(workers: number, seconds: number, op: (worker: number) => Promise<unknown>): Promise<{ ops: number; errors: number; latencies: number[]; cpuPercent: number; wallS: number }> {
  const latencies: number[] = [];
  let errors = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (performance.now() < end) {
        const s = performance.now();
        try {
          await op(w);
          latencies.push(performance.now() - s);
        } catch {
          errors++;
        }
      }
    }),
  );
  const wallS = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { ops: latencies.length, errors, latencies, cpuPercent: ((cpu.user + cpu.system) / 1e6 / wallS) * 100, wallS };
}

async function main(): Promise<void> {
  for (const [name, v] of Object.entries({ READS, WRITES, SECONDS, CONCURRENCY, ISOLATIONS })) {
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`--${name.toLowerCase()} must be a positive integer`);
  }
  console.log(`command: npx tsx bench/measure-reads.ts${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, ${osType()} ${release()}, Node ${process.version}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log('cluster: 3 kvnode processes on 127.0.0.1, default timings (tick 100 ms, election timeout 10 ticks, heartbeat 1 tick, lease 800 ms), --enable-fault-injection');
  console.log(`client: this process, the test harness's gRPC client (one connection per node); ${VALUE_BYTES}-byte values`);

  const cluster = await ProcessCluster.create({ size: 3, timingArgs: [], faultInjection: true });
  const value = Buffer.alloc(VALUE_BYTES, 'v');
  let seq = 0;
  try {
    await cluster.start();
    const leader = await cluster.waitForLeader(30_000);
    const follower = cluster.ids.find((id) => id !== leader)!;
    const w = await retryUnavailable(() => cluster.client(leader).put({ key: KEY, value, session: { client_id: 'bench-setup', seq: ++seq } }, { timeoutMs: CALL_TIMEOUT_MS }), 30_000);
    // The follower has the key before it is read there.
    await cluster.client(follower).get({ key: KEY, read: { consistency: 'STALE', min_index: w.header.index } }, { timeoutMs: 30_000 });

    const targets: Array<{ label: string; node: number; mode: Mode }> = [
      { label: `LINEARIZABLE on the leader (node ${leader})`, node: leader, mode: 'LINEARIZABLE' },
      { label: `LEASE on the leader (node ${leader})`, node: leader, mode: 'LEASE' },
      { label: `STALE on the leader (node ${leader})`, node: leader, mode: 'STALE' },
      { label: `LINEARIZABLE on a follower (node ${follower})`, node: follower, mode: 'LINEARIZABLE' },
      { label: `STALE on a follower (node ${follower})`, node: follower, mode: 'STALE' },
    ];
    const getOp = (c: KvClient, mode: Mode, counts: Map<string, number>) => async (): Promise<void> => {
      const r: pb.GetResponse = await c.get({ key: KEY, read: { consistency: mode } }, { timeoutMs: CALL_TIMEOUT_MS });
      counts.set(r.header.consistency, (counts.get(r.header.consistency) ?? 0) + 1);
    };

    console.log(`\n(a) sequential Get, one client, ${READS} reads per mode after ${WARMUP} warm-up reads:`);
    for (const t of targets) {
      const counts = new Map<string, number>();
      const lat = await sequential(READS, getOp(cluster.client(t.node), t.mode, counts));
      console.log(`    ${t.label.padEnd(40)} ${summary(lat)}   served as: ${servedAs(counts)}`);
    }

    console.log(`\n(b) Get throughput, ${CONCURRENCY} concurrent callers in a closed loop for ${SECONDS} s (one process; its CPU use beside, 100% = one core):`);
    for (const t of targets) {
      const counts = new Map<string, number>();
      const op = getOp(cluster.client(t.node), t.mode, counts);
      const r = await closedLoop(CONCURRENCY, SECONDS, op);
      console.log(`    ${t.label.padEnd(40)} ${(r.ops / r.wallS).toFixed(0).padStart(6)} reads/s  ${summary(r.latencies)}  errors ${r.errors}  client CPU ${r.cpuPercent.toFixed(0)}%   served as: ${servedAs(counts)}`);
    }

    console.log(`\n(c) Put through the leader (node ${leader}), ${VALUE_BYTES}-byte values, each writer its own session:`);
    const leaderClient = cluster.client(leader);
    const lat = await sequential(WRITES, async (i) => leaderClient.put({ key: Buffer.from(`bench/seq/${i}`), value, session: { client_id: 'bench-seq', seq: ++seq } }, { timeoutMs: CALL_TIMEOUT_MS }));
    console.log(`    sequential, one client, ${WRITES} puts:`.padEnd(45) + summary(lat));
    const seqOf = new Array<number>(CONCURRENCY).fill(0);
    const r = await closedLoop(CONCURRENCY, SECONDS, (wk) =>
      leaderClient.put({ key: Buffer.from(`bench/w${wk}/${seqOf[wk]}`), value, session: { client_id: `bench-w${wk}`, seq: ++seqOf[wk]! } }, { timeoutMs: CALL_TIMEOUT_MS }),
    );
    console.log(`    ${CONCURRENCY} concurrent writers, ${SECONDS} s:`.padEnd(45) + `${(r.ops / r.wallS).toFixed(0)} writes/s  ${summary(r.latencies)}  errors ${r.errors}  client CPU ${r.cpuPercent.toFixed(0)}%`);

    console.log(`\n(d) isolating the leader (SetLinks on every node), ${ISOLATIONS} runs:`);
    const toNoQuorum: number[] = [];
    const toMajorityWrite: number[] = [];
    for (let run = 1; run <= ISOLATIONS; run++) {
      const old = await cluster.waitForLeader(30_000);
      // A settled cluster: every node writable (the last heal is over) before the next cut.
      await waitFor(async () => (await Promise.all(cluster.ids.map((id) => cluster.client(id).status()))).every((s) => s.writable), 30_000, 'every node writable', 20);
      const majority = cluster.ids.filter((id) => id !== old);
      const t0 = performance.now();
      await cluster.partition(isolationLinks(old, cluster.ids));
      const setLinksMs = performance.now() - t0;
      // Writes to the old leader until one is refused with NO_QUORUM (a write sent while it still
      // believes it leads waits, and is failed when it notices). Meanwhile, writes to the majority
      // until one commits there.
      const noQuorum = (async (): Promise<number> => {
        for (;;) {
          try {
            await cluster.client(old).put({ key: Buffer.from(`bench/iso/${run}/old`), value, session: { client_id: 'bench-iso-old', seq: ++seq } }, { timeoutMs: CALL_TIMEOUT_MS });
            throw new Error(`run ${run}: a write committed on the isolated leader`);
          } catch (e) {
            if (raftkvCode(e) === 'NO_QUORUM') return performance.now() - t0;
            if (performance.now() - t0 > 60_000) throw new Error(`run ${run}: no NO_QUORUM within 60 s`);
          }
        }
      })();
      const majorityWrite = (async (): Promise<number> => {
        const session = { client_id: 'bench-iso-majority', seq: ++seq };
        for (let i = 0; ; i++) {
          const started = performance.now();
          try {
            await cluster.client(majority[i % 2]!).put({ key: Buffer.from(`bench/iso/${run}/majority`), value, session }, { timeoutMs: ATTEMPT_TIMEOUT_MS });
            return performance.now() - t0;
          } catch {
            if (performance.now() - t0 > 60_000) throw new Error(`run ${run}: no write committed by the majority within 60 s`);
            await sleep(Math.max(0, RETRY_INTERVAL_MS - (performance.now() - started)));
          }
        }
      })();
      const [nq, mw] = await Promise.all([noQuorum, majorityWrite]);
      toNoQuorum.push(nq);
      toMajorityWrite.push(mw);
      console.log(`    run ${run}: isolated leader node ${old} (SetLinks on 3 nodes took ${ms(setLinksMs)}); its first NO_QUORUM after ${ms(nq)}; first write committed by the majority after ${ms(mw)}`);
      await cluster.heal();
    }
    const med = (xs: number[]): string => ms(percentile([...xs].sort((x, y) => x - y), 0.5));
    console.log(`    median: first NO_QUORUM ${med(toNoQuorum)}; first majority write ${med(toMajorityWrite)}  (election timeout 1000-2000 ms)`);
  } catch (err) {
    console.error(`measure-reads failed: ${(err as Error).stack ?? String(err)}\n${cluster.describe()}`);
    process.exitCode = 1;
  } finally {
    await cluster.cleanup();
  }
}

await main();
