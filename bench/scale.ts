// raftkv's scale figures (issue 8), on real kvnode processes on 127.0.0.1 with kvnode's default
// timings, driven by kvbench:
//
//  value-size: put throughput and latency with 64 B, 1 KiB, 16 KiB and 64 KiB values (3 nodes,
//              64 clients, 1,000 keys so that the data stays under ~64 MiB at the largest size);
//  million:    a 3-node cluster loaded with --keys keys (default 1,000,000) of 100-byte values, then
//              each node's RSS, the restart time of a follower (until it serves, and until it has
//              caught up with the leader's applied index), and the time for a node with an empty
//              data directory to catch up (it gets a snapshot, as the leader's log is compacted);
//  nodes:      put throughput and latency on 3 nodes and on 5 (64 clients, 256 B values).
//
// A fresh cluster per measurement; one cluster at a time. A script, not a test: it asserts nothing.
// Run: npx tsx bench/scale.ts [--section value-size,million,nodes] [--duration S] [--warmup S]
//      [--keys N] [--seed N]

import { readFile, rm } from 'node:fs/promises';
import { availableParallelism, cpus, release, type as osType } from 'node:os';
import { performance } from 'node:perf_hooks';
import { runBench, type BenchResult } from './kvbench/runner.js';
import type { TargetSpec } from './kvbench/targets.js';
import { defaultWorkload, type WorkloadSpec } from './kvbench/workload.js';
import { fmtNum, markdownTable } from './support/compare-table.js';
import { parseScriptFlags } from './support/script-flags.js';
import { KvClient } from '../src/client/index.js';
import type { NodeStatus } from '../src/client/types.js';
import { DEFAULT_REQUEST_LIMITS } from '../src/server/validate.js';
import { ProcessCluster } from '../test/support/process-cluster.js';
import { waitFor } from '../test/support/wait.js';

const SECTIONS = ['value-size', 'million', 'nodes'] as const;
type Section = (typeof SECTIONS)[number];

const CLIENTS = 64;
const VALUE_SIZES_BYTES = [64, 1024, 16 * 1024, 64 * 1024];
const VALUE_SIZE_KEYS = 1_000;
const MILLION_VALUE_BYTES = 100;
const NODES_VALUE_BYTES = 256;
const NODES_KEYS = 10_000;
const NODE_COUNTS = [3, 5];
const LEADER_TIMEOUT_MS = 30_000;
const STATUS_TIMEOUT_MS = 1_000;
const POLL_INTERVAL_MS = 20;
/** Gets timed on the loaded cluster after the load, to see reads work at that size. */
const MILLION_PROBE_OPS = 2_000;

const USAGE = `Usage: npx tsx bench/scale.ts [options]

raftkv's scale figures on real kvnode processes: put throughput against value size, a cluster with
a million keys (RSS, restart, catch-up of an empty node), and 3 against 5 nodes.

Options:
  --section LIST   comma-separated sections (default ${SECTIONS.join(',')})
  --duration S     measured seconds per run (default 10)
  --warmup S       unrecorded seconds before each (default 2)
  --keys N         keys loaded by the million section (default 1000000)
  --seed N         seed of the key and operation choices (default 1)
  -h, --help       this text
`;

const flags = parseScriptFlags('scale', USAGE, {
  section: { type: 'string', default: SECTIONS.join(',') },
  duration: { type: 'string', default: '10' },
  warmup: { type: 'string', default: '2' },
  keys: { type: 'string', default: '1000000' },
  seed: { type: 'string', default: '1' },
});

function parseSections(raw: string): Section[] {
  const names = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const n of names) {
    if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`--section: unknown section '${n}' (known: ${SECTIONS.join(', ')})`);
  }
  return SECTIONS.filter((s) => names.includes(s));
}

function number(flag: string, raw: string, min: number): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${flag} must be a number >= ${min}, got '${raw}'`);
  return n;
}

const ms = (n: number): string => `${fmtNum(n)} ms`;
const mib = (bytes: number): string => `${fmtNum(bytes / (1024 * 1024))} MiB`;
const sizeLabel = (b: number): string => (b >= 1024 ? `${b / 1024} KiB` : `${b} B`);

function errorCount(r: BenchResult): number {
  return Object.values(r.errors).reduce((s, n) => s + n, 0);
}

function targetOf(cluster: ProcessCluster, label: string): TargetSpec {
  return {
    system: 'raftkv',
    endpoints: [...cluster.addresses.values()],
    serverPids: cluster.ids.map((id) => cluster.node(id).child.pid).filter((p): p is number => p !== undefined),
    label,
  };
}

/** A cluster of `size` nodes with kvnode's default timings, started, with a leader; cleaned up after `fn`. */
async function withCluster<T>(size: number, args: readonly string[], fn: (c: ProcessCluster) => Promise<T>): Promise<T> {
  const cluster = await ProcessCluster.create({ size, timingArgs: [], args });
  try {
    await cluster.start();
    await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    return await fn(cluster);
  } catch (err) {
    process.stderr.write(`${cluster.describe()}\n`);
    throw err;
  } finally {
    await cluster.cleanup();
  }
}

function progress(label: string): (p: { elapsedMs: number; ops: number; opsPerSec: number; errors: number; p99Us: number }) => void {
  return (p) =>
    process.stderr.write(`  [${label}] ${(p.elapsedMs / 1000).toFixed(0)} s: ${p.ops} ops, ${Math.round(p.opsPerSec)} ops/s, p99 ${(p.p99Us / 1000).toFixed(1)} ms, ${p.errors} errors\n`);
}

// ---- value size ---------------------------------------------------------------------------------

async function valueSizeSection(common: Partial<WorkloadSpec>): Promise<void> {
  const largest = Math.max(...VALUE_SIZES_BYTES);
  // kvnode refuses values above --max-value-bytes (default 1 MiB); raise it only if a size needs it.
  const args = largest > DEFAULT_REQUEST_LIMITS.maxValueBytes ? ['--max-value-bytes', String(largest)] : [];
  console.log('');
  console.log(`## Value size: puts, ${CLIENTS} clients, 3 nodes, ${VALUE_SIZE_KEYS.toLocaleString('en-US')} keys uniform`);
  console.log(`(kvnode --max-value-bytes default ${mib(DEFAULT_REQUEST_LIMITS.maxValueBytes)}${args.length > 0 ? `, raised to ${largest}` : ': no flag needed'})`);
  const rows: string[][] = [];
  for (const size of VALUE_SIZES_BYTES) {
    const r = await withCluster(3, args, (c) =>
      runBench(
        targetOf(c, `raftkv 3 nodes, ${sizeLabel(size)} values`),
        defaultWorkload({ ...common, clients: CLIENTS, keys: VALUE_SIZE_KEYS, valueBytes: size, mix: { put: 1, get: 0, cas: 0 } }),
        { onProgress: progress(`value ${sizeLabel(size)}`) },
      ),
    );
    rows.push([
      sizeLabel(size),
      fmtNum(r.opsPerSec),
      fmtNum((r.opsPerSec * size) / (1024 * 1024)),
      fmtNum(r.latency.p50Us / 1000),
      fmtNum(r.latency.p99Us / 1000),
      fmtNum(r.serverCpuUsPerOp),
      String(errorCount(r)),
    ]);
  }
  console.log(markdownTable(['value', 'puts/s', 'MiB/s', 'p50 ms', 'p99 ms', 'server CPU µs/op', 'errors'], rows));
}

// ---- a million keys -----------------------------------------------------------------------------

async function rssBytes(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

async function rssLine(cluster: ProcessCluster): Promise<string> {
  const parts = await Promise.all(
    cluster.ids.map(async (id) => {
      const rss = await rssBytes(cluster.isRunning(id) ? cluster.node(id).child.pid : undefined);
      return `node ${id} ${rss === undefined ? '–' : mib(rss)}`;
    }),
  );
  return parts.join(', ');
}

async function statusOf(client: KvClient, endpoint: string): Promise<NodeStatus | undefined> {
  try {
    return await client.status(endpoint, { timeoutMs: STATUS_TIMEOUT_MS });
  } catch {
    return undefined;
  }
}

/**
 * Waits until node `id` answers Status and its applied index has reached the leader's (both read in
 * the same poll); returns the first time it answered and the time it caught up (performance.now()).
 */
async function waitCaughtUp(
  cluster: ProcessCluster,
  client: KvClient,
  id: number,
  leaderId: number,
  timeoutMs: number,
): Promise<{ servedAt: number; caughtUpAt: number; status: NodeStatus }> {
  let servedAt: number | undefined;
  let last: NodeStatus | undefined;
  let leaderApplied = 0;
  await waitFor(
    async () => {
      if (!cluster.isRunning(id)) throw new Error(`node ${id} exited while catching up\n${cluster.node(id).describe()}`);
      const [mine, leader] = await Promise.all([statusOf(client, cluster.addresses.get(id)!), statusOf(client, cluster.addresses.get(leaderId)!)]);
      if (mine === undefined) return false;
      servedAt ??= performance.now();
      last = mine;
      if (leader !== undefined) leaderApplied = leader.appliedIndex;
      return leaderApplied > 0 && mine.appliedIndex >= leaderApplied;
    },
    timeoutMs,
    `node ${id} to catch up with the leader's applied index (${leaderApplied}; node at ${last?.appliedIndex ?? '?'})`,
    POLL_INTERVAL_MS,
  );
  return { servedAt: servedAt!, caughtUpAt: performance.now(), status: last! };
}

async function millionSection(common: Partial<WorkloadSpec>, keys: number): Promise<void> {
  // Deadlines that grow with the data: loading or shipping a snapshot of it may take minutes.
  const catchUpTimeoutMs = Math.max(60_000, keys);
  console.log('');
  console.log(`## ${keys.toLocaleString('en-US')} keys: 3 nodes, ${MILLION_VALUE_BYTES}-byte values, loaded by kvbench's preload (${CLIENTS} clients, sequential keys)`);
  await withCluster(3, [], async (cluster) => {
    const workload = defaultWorkload({
      ...common,
      clients: CLIENTS,
      keys,
      keyDistribution: 'sequential',
      valueBytes: MILLION_VALUE_BYTES,
      preload: true,
      // After the load, a short timed run of gets (not part of the load rate).
      mix: { put: 0, get: 1, cas: 0 },
      consistency: 'linearizable',
      warmupMs: 0,
      durationMs: undefined,
      ops: MILLION_PROBE_OPS,
    });
    const t0 = performance.now();
    const r = await runBench(targetOf(cluster, `raftkv 3 nodes, ${keys} keys`), workload, { onProgress: progress('million gets') });
    // The preload is the call's time less the measured gets (it also holds the clients' set-up).
    const loadMs = performance.now() - t0 - r.elapsedMs;
    const rows: string[][] = [];
    rows.push(['load', `${keys.toLocaleString('en-US')} puts in ${ms(loadMs)}: ${fmtNum((keys * 1000) / loadMs)} puts/s`]);
    rows.push(['gets after the load', `${fmtNum(r.opsPerSec)} ops/s, p50 ${ms(r.latency.p50Us / 1000)}, p99 ${ms(r.latency.p99Us / 1000)} (${r.ops} LINEARIZABLE gets, ${errorCount(r)} errors)`]);

    const client = new KvClient({ endpoints: [...cluster.addresses.values()] });
    try {
      let leaderId = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
      const leaderStatus = await client.status(cluster.addresses.get(leaderId)!);
      rows.push(['applied index (leader)', `${leaderStatus.appliedIndex.toLocaleString('en-US')} (log starts at ${leaderStatus.snapshots.logStartIndex.toLocaleString('en-US')})`]);
      rows.push(['RSS after the load', await rssLine(cluster)]);

      // Restart of a follower: SIGTERM, spawn on the same data, until it serves and has caught up.
      const follower = cluster.ids.find((id) => id !== leaderId)!;
      const tStop = performance.now();
      await cluster.stopNode(follower, 30_000);
      const stopMs = performance.now() - tStop;
      const tSpawn = performance.now();
      const proc = cluster.spawn(follower);
      await proc.waitStarted(catchUpTimeoutMs);
      const startedAt = performance.now();
      const restart = await waitCaughtUp(cluster, client, follower, leaderId, catchUpTimeoutMs);
      rows.push([
        `restart of follower ${follower}`,
        `stop ${ms(stopMs)}; spawn → serving ${ms(Math.max(startedAt, restart.servedAt) - tSpawn)}; spawn → caught up ${ms(restart.caughtUpAt - tSpawn)} (applied ${restart.status.appliedIndex.toLocaleString('en-US')})`,
      ]);

      // A new node: a member's id with an empty data directory, so it needs the whole state. raftkv
      // has no membership change, so a new node can only take the place of a member, and Raft
      // assumes a member never loses its log: the leader remembers the old node's match index and
      // would tell the empty node to commit entries it does not have (the node stops on that broken
      // invariant, as etcd's raft panics). So while the emptied node is down the leader is
      // restarted, and the next leader, in a higher term, starts from no knowledge of it. That also
      // keeps votes safe: the empty node, which forgot its vote, can only vote in terms after it.
      leaderId = await cluster.waitForLeader(LEADER_TIMEOUT_MS);
      const fresh = cluster.ids.find((id) => id !== leaderId)!;
      const others = cluster.ids.filter((id) => id !== fresh);
      await cluster.stopNode(fresh, 30_000);
      await rm(cluster.dataDir(fresh), { recursive: true, force: true });
      const termBefore = (await client.status(cluster.addresses.get(leaderId)!)).term;
      await cluster.restart(leaderId);
      leaderId = await cluster.waitForLeader(LEADER_TIMEOUT_MS, others);
      const termAfter = (await client.status(cluster.addresses.get(leaderId)!)).term;
      if (termAfter <= termBefore) throw new Error(`expected a new term after restarting the leader, still ${termAfter}`);
      const sentBefore = (await client.status(cluster.addresses.get(leaderId)!)).snapshots.sent;
      const tFresh = performance.now();
      const freshProc = cluster.spawn(fresh);
      await freshProc.waitStarted(catchUpTimeoutMs);
      const freshStartedAt = performance.now();
      const caughtUp = await waitCaughtUp(cluster, client, fresh, leaderId, catchUpTimeoutMs);
      const sentAfter = (await client.status(cluster.addresses.get(leaderId)!)).snapshots.sent;
      rows.push([
        `new node ${fresh} (empty data dir; leader ${leaderId})`,
        `spawn → serving ${ms(Math.max(freshStartedAt, caughtUp.servedAt) - tFresh)}; spawn → caught up ${ms(caughtUp.caughtUpAt - tFresh)} ` +
          `(snapshots installed ${caughtUp.status.snapshots.installed}, snapshots the leader sent: ${sentAfter - sentBefore})`,
      ]);
      rows.push(['RSS at the end', await rssLine(cluster)]);
    } finally {
      client.close();
    }
    console.log(markdownTable(['what', 'figure'], rows, 2));
  });
}

// ---- 3 vs 5 nodes -------------------------------------------------------------------------------

async function nodesSection(common: Partial<WorkloadSpec>): Promise<void> {
  console.log('');
  console.log(`## Cluster size: puts, ${CLIENTS} clients, ${NODES_VALUE_BYTES} B values, ${NODES_KEYS.toLocaleString('en-US')} keys uniform`);
  const rows: string[][] = [];
  for (const size of NODE_COUNTS) {
    const r = await withCluster(size, [], (c) =>
      runBench(
        targetOf(c, `raftkv ${size} nodes`),
        defaultWorkload({ ...common, clients: CLIENTS, keys: NODES_KEYS, valueBytes: NODES_VALUE_BYTES, mix: { put: 1, get: 0, cas: 0 } }),
        { onProgress: progress(`${size} nodes`) },
      ),
    );
    rows.push([String(size), fmtNum(r.opsPerSec), fmtNum(r.latency.p50Us / 1000), fmtNum(r.latency.p99Us / 1000), fmtNum(r.serverCpuUsPerOp), String(errorCount(r))]);
  }
  console.log(markdownTable(['nodes', 'puts/s', 'p50 ms', 'p99 ms', 'server CPU µs/op (all nodes)', 'errors'], rows));
}

async function main(): Promise<void> {
  const sections = parseSections(flags.section);
  const durationMs = Math.round(number('duration', flags.duration, 0.001) * 1000);
  const warmupMs = Math.round(number('warmup', flags.warmup, 0) * 1000);
  const keys = number('keys', flags.keys, 1);
  const seed = number('seed', flags.seed, 0);
  if (!Number.isSafeInteger(keys) || !Number.isSafeInteger(seed)) throw new Error('--keys and --seed must be integers');
  const args = process.argv.slice(2);
  console.log(`command: npx tsx bench/scale.ts${args.length > 0 ? ' ' + args.join(' ') : ''}`);
  console.log(`seed: ${seed}`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, ${osType()} ${release()}, Node ${process.version}`);
  console.log(`raftkv: kvnode processes on 127.0.0.1 with default timings (tick 100 ms, election timeout 10 ticks); a fresh cluster per measurement`);
  console.log(`each timed run: ${warmupMs / 1000} s warm-up, then ${durationMs / 1000} s measured`);

  const common: Partial<WorkloadSpec> = { durationMs, warmupMs, seed };
  for (const s of sections) {
    switch (s) {
      case 'value-size':
        await valueSizeSection(common);
        break;
      case 'million':
        await millionSection(common, keys);
        break;
      case 'nodes':
        await nodesSection(common);
        break;
    }
  }
}

main().catch((err: unknown) => {
  console.error(`scale failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
