// raftkv against etcd 3.4 on the same machine (issue 8): the same kvbench workloads on a 3-node
// raftkv cluster (kvnode's default timings: tick 100 ms, election timeout 10 ticks) and on a 3-member
// etcd cluster (its defaults: heartbeat 100 ms, election timeout 1000 ms), all on 127.0.0.1, then a
// side-by-side table, the server CPU per operation split into the leader's and a follower's (the
// leader's pid is looked up before and after each run; no split when it moved), and the issue's
// targets judged PASS or MISS.
//
// One system at a time: for each workload, a fresh raftkv cluster is started, measured and stopped,
// then a fresh etcd cluster is started, measured and stopped. Never both at once (the machine this
// was written on has 2 cores: the idle system's heartbeats and the load generator would share them
// with the measured one), and each pair is measured minutes apart at most, so drift in a shared
// machine's load shows less in the ratios than it would between two long runs. Fresh clusters also
// mean no workload runs on another's data (etcd keeps every revision until compacted).
//
// With --rounds N, all of that is done N times, the order of the two systems alternating from round
// to round, and a summary gives each ratio's median and range over the rounds and judges the targets
// on the median ratios: one run moves by tens of percent on a shared machine.
//
// A script, not a test: it asserts nothing. Run: npx tsx bench/compare-etcd.ts
// Options: --duration S (10), --warmup S (2), --rounds N (1), --json FILE, --only NAME,... ,
// --put-clients N,... (puts at other numbers of clients), --seed N (random).

import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, release, type as osType } from 'node:os';
import { formatResult } from './kvbench/report.js';
import { runBench, type BenchResult } from './kvbench/runner.js';
import type { TargetSpec } from './kvbench/targets.js';
import { defaultWorkload, type WorkloadSpec } from './kvbench/workload.js';
import {
  buildRow,
  evaluateTargets,
  formatComparison,
  formatRounds,
  summarizeRounds,
  type ComparePair,
} from './support/compare-table.js';
import { COMPARE_WORKLOADS, selectAll, type CompareWorkload } from './support/compare-workloads.js';
import { EtcdCluster, ensureEtcdInstalled } from './support/etcd-cluster.js';
import { parseScriptFlags } from './support/script-flags.js';
import { ProcessCluster } from '../test/support/process-cluster.js';

const CLUSTER_SIZE = 3;
const KEYS = 10_000;
const VALUE_BYTES = 256;
const LEADER_TIMEOUT_MS = 30_000;
const PROGRESS_INTERVAL_MS = 1_000;
/**
 * Limit on --rounds: each round is two runs of (warm-up + duration) per workload, plus cluster
 * start-ups (12 runs for the six standard workloads, up to 16 more with --put-clients).
 */
const MAX_ROUNDS = 20;

const USAGE = `Usage: npx tsx bench/compare-etcd.ts [options]

raftkv against etcd 3.4: the same kvbench workloads on a fresh 3-node cluster of each, one at a
time, then both side by side with ratios, each side's server CPU per operation split into the
leader's and a follower's, and the issue's targets judged PASS or MISS.

Options:
  --duration S     measured seconds per workload and system (default 10)
  --warmup S       unrecorded seconds before each (default 2)
  --rounds N       run everything N times, alternating which system goes first, and judge the
                   targets on the median ratio over the rounds (default 1)
  --only NAMES     comma-separated workloads (${COMPARE_WORKLOADS.map((w) => w.name).join(', ')})
  --put-clients N,...
                   also puts at these numbers of clients (put-N: as put-64, at N clients), after
                   the workloads above; e.g. --only put-64 --put-clients 16,32,128,256
  --json FILE      also write every result as JSON
  --seed N         seed of the key and operation choices (default: random, printed)
  -h, --help       this text
`;

const flags = parseScriptFlags('compare-etcd', USAGE, {
  duration: { type: 'string', default: '10' },
  warmup: { type: 'string', default: '2' },
  rounds: { type: 'string', default: '1' },
  json: { type: 'string' },
  only: { type: 'string' },
  'put-clients': { type: 'string' },
  seed: { type: 'string' },
});

function positiveNumber(flag: string, raw: string, allowZero = false): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${flag} must be a ${allowZero ? 'non-negative' : 'positive'} number, got '${raw}'`);
  return n;
}

/** A running cluster of either system, as the runner needs it. */
interface Running {
  readonly target: TargetSpec;
  /** The pid of the server process that is leader now (waits for one, with a deadline). */
  leaderPid(): Promise<number | undefined>;
  cleanup(): Promise<void>;
}

async function startRaftkv(): Promise<Running> {
  const cluster = await ProcessCluster.create({ size: CLUSTER_SIZE, timingArgs: [] });
  try {
    await cluster.start();
    await cluster.waitForLeader(LEADER_TIMEOUT_MS);
    const pids = cluster.ids.map((id) => cluster.node(id).child.pid).filter((p): p is number => p !== undefined);
    return {
      target: { system: 'raftkv', endpoints: [...cluster.addresses.values()], serverPids: pids, label: `raftkv ${CLUSTER_SIZE} nodes` },
      leaderPid: async () => cluster.node(await cluster.waitForLeader(LEADER_TIMEOUT_MS)).child.pid,
      cleanup: () => cluster.cleanup(),
    };
  } catch (err) {
    await cluster.cleanup();
    throw err;
  }
}

async function startEtcd(): Promise<Running> {
  const cluster = await EtcdCluster.create({ size: CLUSTER_SIZE });
  try {
    await cluster.start();
    await cluster.leaderEndpoint(LEADER_TIMEOUT_MS);
    return {
      target: { system: 'etcd', endpoints: cluster.clientEndpoints, serverPids: cluster.pids(), label: `etcd ${CLUSTER_SIZE} members` },
      leaderPid: async () => cluster.pidOf(await cluster.leaderEndpoint(LEADER_TIMEOUT_MS)),
      cleanup: () => cluster.cleanup(),
    };
  } catch (err) {
    await cluster.cleanup();
    throw err;
  }
}

/** A run's result, and the pid of the server that was leader before and after it (if the same). */
interface Measured {
  readonly result: BenchResult;
  readonly leaderPid?: number;
}

/** The leader's pid, or undefined when none is found (the run's figures stand without the split). */
async function leaderPidOrNone(running: Running): Promise<number | undefined> {
  try {
    return await running.leaderPid();
  } catch {
    return undefined;
  }
}

async function measure(system: 'raftkv' | 'etcd', w: CompareWorkload, workload: WorkloadSpec, signal: AbortSignal): Promise<Measured> {
  const running = system === 'raftkv' ? await startRaftkv() : await startEtcd();
  try {
    const before = await leaderPidOrNone(running);
    const result = await runBench(running.target, workload, {
      signal,
      progressIntervalMs: PROGRESS_INTERVAL_MS,
      onProgress: (p) =>
        process.stderr.write(
          `  [${system} ${w.name}] ${(p.elapsedMs / 1000).toFixed(0)} s: ${p.ops} ops, ${Math.round(p.opsPerSec)} ops/s, p99 ${(p.p99Us / 1000).toFixed(1)} ms, ${p.errors} errors\n`,
        ),
    });
    const after = await leaderPidOrNone(running);
    return { result, ...(before !== undefined && before === after ? { leaderPid: before } : {}) };
  } finally {
    await running.cleanup();
  }
}

async function main(): Promise<void> {
  const durationMs = positiveNumber('duration', flags.duration) * 1000;
  const warmupMs = positiveNumber('warmup', flags.warmup, true) * 1000;
  const rounds = Number(flags.rounds);
  if (!Number.isSafeInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS) throw new Error(`--rounds must be an integer from 1 to ${MAX_ROUNDS}, got '${flags.rounds}'`);
  const seed = flags.seed !== undefined ? Number(flags.seed) : Math.floor(Math.random() * 2 ** 31);
  if (!Number.isSafeInteger(seed)) throw new Error(`--seed must be an integer, got '${flags.seed}'`);
  const selected = selectAll(flags.only, flags['put-clients']);

  const etcd = await ensureEtcdInstalled();
  const args = process.argv.slice(2);
  console.log(`command: npx tsx bench/compare-etcd.ts${args.length > 0 ? ' ' + args.join(' ') : ''}`);
  console.log(`seed: ${seed}`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, ${osType()} ${release()}, Node ${process.version}, etcd ${etcd.version} (${etcd.path})`);
  console.log(`raftkv: ${CLUSTER_SIZE} kvnode processes, default timings (tick 100 ms, election timeout 10 ticks, heartbeat 1 tick)`);
  console.log(`etcd:   ${CLUSTER_SIZE} members, default timings (heartbeat 100 ms, election timeout 1000 ms), default quota, http`);
  console.log(`both on 127.0.0.1 with the load generator; one system runs at a time (a fresh cluster per workload and system)`);
  console.log(`each run: ${warmupMs / 1000} s warm-up, then ${durationMs / 1000} s measured; ${KEYS.toLocaleString('en-US')} keys, ${VALUE_BYTES} B values`);
  if (rounds > 1) console.log(`${rounds} rounds; odd rounds run raftkv first, even rounds etcd first; the targets are judged on the median ratio`);
  console.log('');
  console.log('Workloads:');
  for (const w of selected) console.log(`- ${w.name}: ${w.description}`);

  const abort = new AbortController();
  const onSigint = (): void => {
    process.stderr.write('interrupted: stopping the current run and its cluster\n');
    abort.abort();
  };
  process.once('SIGINT', onSigint);

  const allRounds: ComparePair[][] = [];
  const texts: string[] = [];
  try {
    for (let round = 1; round <= rounds && !abort.signal.aborted; round++) {
      const pairs: ComparePair[] = [];
      allRounds.push(pairs);
      const tag = rounds > 1 ? ` (round ${round} of ${rounds})` : '';
      const order = round % 2 === 1 ? (['raftkv', 'etcd'] as const) : (['etcd', 'raftkv'] as const);
      for (const w of selected) {
        const common: Partial<WorkloadSpec> = { durationMs, warmupMs, keys: KEYS, valueBytes: VALUE_BYTES, seed };
        const specs = { raftkv: defaultWorkload({ ...common, ...w.spec }), etcd: defaultWorkload({ ...common, ...w.spec, ...w.etcdSpec }) };
        const leaderPids: { raftkv?: number; etcd?: number } = {};
        const pair: { name: string; note?: string; raftkv?: BenchResult; etcd?: BenchResult; leaderPids: typeof leaderPids } = {
          name: w.name,
          ...(w.note !== undefined ? { note: w.note } : {}),
          leaderPids,
        };
        pairs.push(pair);
        for (const system of order) {
          if (abort.signal.aborted) break;
          process.stderr.write(`${system} ${w.name}${tag}: starting a fresh cluster\n`);
          try {
            const { result: res, leaderPid } = await measure(system, w, specs[system], abort.signal);
            pair[system] = res;
            if (leaderPid !== undefined) leaderPids[system] = leaderPid;
            console.log('');
            console.log(`## ${system} ${w.name}${tag}`);
            console.log(formatResult(res));
          } catch (err) {
            if (abort.signal.aborted) break;
            console.log('');
            console.log(`## ${system} ${w.name}${tag}: FAILED: ${(err as Error).message}`);
          }
        }
        if (abort.signal.aborted) break;
      }
      const text = formatComparison(pairs);
      texts.push(text);
      console.log('');
      if (rounds > 1) console.log(`# Round ${round} of ${rounds}\n`);
      console.log(text);
    }
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
  const summary = allRounds.length > 1 ? formatRounds(allRounds) : undefined;
  if (summary !== undefined) {
    console.log('');
    console.log(summary);
  }
  const pairs = allRounds[0] ?? [];

  if (flags.json !== undefined) {
    const doc = {
      command: `npx tsx bench/compare-etcd.ts ${args.join(' ')}`.trim(),
      seed,
      machine: { cpu: cpus()[0]?.model, nproc: availableParallelism(), os: `${osType()} ${release()}`, node: process.version, etcd: etcd.version },
      // The first round at the top level (as with one round); every round under `rounds`.
      results: pairs,
      rows: pairs.map(buildRow),
      targets: evaluateTargets(pairs),
      text: texts[0] ?? '',
      rounds: allRounds.map((r, k) => ({ results: r, rows: r.map(buildRow), targets: evaluateTargets(r), text: texts[k] ?? '' })),
      ...(summary !== undefined ? { summary: { targets: summarizeRounds(allRounds), text: summary } } : {}),
    };
    await writeFile(flags.json, JSON.stringify(doc, null, 2) + '\n');
    process.stderr.write(`wrote ${flags.json}\n`);
  }
  if (abort.signal.aborted) process.exitCode = 130;
}

main().catch((err: unknown) => {
  console.error(`compare-etcd failed: ${(err as Error).message}`);
  process.exitCode = 1;
});
