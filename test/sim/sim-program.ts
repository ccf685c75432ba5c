// The simulator's command line, driven in-process by tests with captured output (cli.ts is the shim).
//
//   npm run sim -- --seeds N [--start S] [--workers K]   run seeds S..S+N-1, print progress and a summary
//   npm run sim -- --seed S [--tail N]                   replay one seed verbosely
//
// Exit code: 0 when every seed passes, 1 on any violation, 2 on a usage error.

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { configOverrides, formatSummary, runSeed, type RunOptions } from './run.js';
import { BatchTotals, summarize, type SeedSummary } from './seed-summary.js';
import { createRng } from './random.js';
import { chooseConfig, describeConfig, PROFILES } from './sim-config.js';
import { SABOTAGES } from './simulator.js';
import type { WorkerReply, WorkerRequest } from './sim-worker.js';

export interface SimIo {
  out(line: string): void;
  /** Wall-clock milliseconds, for timing only: it never reaches a simulation. */
  nowMs(): number;
}

/** Limit: failure reports printed in full; the other failing seeds are listed by number. */
const MAX_FULL_FAILURE_REPORTS = 10;
/** Seeds handed to a worker at once. */
const WORKER_CHUNK_SEEDS = 25;

const USAGE = [
  'usage: npm run sim -- --seeds N [--start S] [--workers K] [options]',
  '       npm run sim -- --seed S [--tail N] [options]',
  '  --seeds N         run N seeds, starting at --start (default 1)',
  '  --workers K       spread the seeds over K worker threads (default 1: in this thread)',
  '  --seed S          replay seed S: print its configuration and every event',
  '  --tail N          with --seed: print only the last N events',
  'options (each overrides what the seed would choose):',
  '  --nodes N         cluster size, 3 to 9',
  '  --ticks T         length of the fault phase in ticks',
  `  --profile P       fault profile: ${[...new Set(PROFILES)].join(', ')}`,
  '  --fast-invariants after each event, call checkInvariants() only on the node it touched',
  '                    (default: on every live node)',
  `  --sabotage B      a deliberate storage bug, to see the checker fail: ${SABOTAGES.join(', ')}`,
].join('\n');

export async function runSimCli(argv: readonly string[], io: SimIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        seeds: { type: 'string' },
        start: { type: 'string' },
        seed: { type: 'string' },
        workers: { type: 'string' },
        tail: { type: 'string' },
        'fast-invariants': { type: 'boolean' },
        nodes: { type: 'string' },
        ticks: { type: 'string' },
        profile: { type: 'string' },
        sabotage: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    io.out(`error: ${err instanceof Error ? err.message : String(err)}`);
    io.out(USAGE);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  try {
    const runOptions: RunOptions = {
      ...(values['fast-invariants'] ? { invariantsOnAllNodes: false } : {}),
      ...(values.nodes !== undefined ? { clusterSize: integerArg('--nodes', values.nodes, 3, 9) } : {}),
      ...(values.ticks !== undefined ? { faultTicks: integerArg('--ticks', values.ticks, 1) } : {}),
      ...(values.profile !== undefined ? { profile: oneOf('--profile', values.profile, PROFILES) } : {}),
      ...(values.sabotage !== undefined ? { sabotage: oneOf('--sabotage', values.sabotage, SABOTAGES) } : {}),
    };
    if (values.seed !== undefined) {
      if (values.seeds !== undefined) throw new UsageError('--seed and --seeds exclude each other');
      const tail = values.tail === undefined ? undefined : integerArg('--tail', values.tail, 1);
      return replaySeed(integerArg('--seed', values.seed, 0), tail, runOptions, io);
    }
    if (values.seeds === undefined) throw new UsageError('give --seeds N or --seed S');
    const count = integerArg('--seeds', values.seeds, 1);
    const start = values.start === undefined ? 1 : integerArg('--start', values.start, 0);
    const workers = values.workers === undefined ? 1 : integerArg('--workers', values.workers, 1);
    return await runSeeds(start, count, workers, runOptions, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.out(`error: ${err.message}`);
    io.out(USAGE);
    return 2;
  }
}

class UsageError extends Error {}

function integerArg(name: string, value: string, min: number, max = 0xffffffff): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  return n;
}

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  const found = allowed.find((a) => a === value);
  if (found === undefined) throw new UsageError(`${name} must be one of ${[...new Set(allowed)].join(', ')}, got ${value}`);
  return found;
}

function replaySeed(seed: number, tail: number | undefined, options: RunOptions, io: SimIo): number {
  const full = tail === undefined;
  // The configuration is the first thing the seed decides, so it can be shown before the run.
  io.out(describeConfig(chooseConfig(seed, createRng(seed), configOverrides(options))));
  io.out('');
  const result = runSeed(seed, full ? { ...options, traceSink: (line) => io.out(line) } : { ...options, traceTail: tail });
  if (full) io.out('');
  else {
    io.out(`last ${result.traceTail.length} events:`);
    for (const line of result.traceTail) io.out(`  ${line}`);
  }
  io.out(formatSummary(result));
  if (result.violation !== undefined) {
    io.out(`VIOLATION ${result.violation.message}`);
    io.out(`replay: ${result.replay}`);
    return 1;
  }
  return 0;
}

async function runSeeds(start: number, count: number, workers: number, options: RunOptions, io: SimIo): Promise<number> {
  const t0 = io.nowMs();
  const totals = new BatchTotals();
  const progressEvery = Math.max(1, Math.floor(count / 20));
  io.out(`running seeds ${start}..${start + count - 1}${workers > 1 ? ` on ${workers} workers` : ''}`);
  const onSeed = (s: SeedSummary): void => {
    totals.add(s);
    if (s.check !== undefined) io.out(`seed ${s.seed}: VIOLATION ${s.check}  (replay: ${s.replay})`);
    if (totals.seeds % progressEvery === 0 || totals.seeds === count) {
      const secs = (io.nowMs() - t0) / 1000;
      io.out(
        `  ${totals.seeds}/${count} seeds (${((100 * totals.seeds) / count).toFixed(0)}%), ` +
          `${totals.failures.length} violations, ${secs.toFixed(1)} s, ${(totals.seeds / Math.max(secs, 1e-3)).toFixed(0)} seeds/s`,
      );
    }
  };
  if (workers <= 1) {
    for (let seed = start; seed < start + count; seed++) onSeed(summarize(runSeed(seed, options)));
  } else {
    await runOnWorkers(start, count, Math.min(workers, availableParallelism() * 2), options, onSeed);
  }
  const secs = (io.nowMs() - t0) / 1000;
  printSummary(totals, secs, io);
  return totals.failures.length === 0 ? 0 : 1;
}

function printSummary(t: BatchTotals, secs: number, io: SimIo): void {
  const perSeed = (n: number): string => (n / Math.max(1, t.seeds)).toFixed(1);
  const counts = (m: Map<string | number, number>): string => [...m].sort().map(([k, v]) => `${k}=${v}`).join(' ');
  io.out('');
  io.out(
    `summary: ${t.seeds} seeds, ${t.failures.length} violations, ${secs.toFixed(1)} s, ` +
      `${(t.seeds / Math.max(secs, 1e-3)).toFixed(1)} seeds/s (${((1000 * secs) / Math.max(1, t.seeds)).toFixed(1)} ms/seed)`,
  );
  io.out(
    `  per seed: ${perSeed(t.steps)} events, ${perSeed(t.ticks)} ticks, ${perSeed(t.messagesSent)} messages, ` +
      `${perSeed(t.crashes)} crashes, ${perSeed(t.partitions)} partitions, ${perSeed(t.leadersElected)} leaders, ` +
      `${perSeed(t.committedEntries)} committed entries, ${perSeed(t.compactions)} compactions, ` +
      `${perSeed(t.snapshotsInstalled)} snapshots installed (in ${t.seedsWithInstall} seeds)`,
  );
  io.out(`  profiles: ${counts(t.byProfile)}; cluster sizes: ${counts(t.byClusterSize)}`);
  if (t.failures.length === 0) return;
  const byCheck = new Map<string, number[]>();
  for (const f of t.failures) byCheck.set(f.check!, [...(byCheck.get(f.check!) ?? []), f.seed]);
  io.out('');
  io.out('violations:');
  for (const [check, seeds] of byCheck) io.out(`  ${check}: seeds ${seeds.join(', ')}`);
  for (const f of t.failures.slice(0, MAX_FULL_FAILURE_REPORTS)) {
    io.out('');
    io.out(f.failure!);
  }
  if (t.failures.length > MAX_FULL_FAILURE_REPORTS) {
    io.out(`(${t.failures.length - MAX_FULL_FAILURE_REPORTS} more failing seeds; replay each with the command printed for it above)`);
  }
}

/**
 * A worker does not inherit tsx's loader, so it registers it before loading the TypeScript worker
 * module. (The simulator only runs under tsx or vitest, never compiled.)
 */
function workerBootstrap(): string {
  const tsxApi = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const workerModule = JSON.stringify(new URL('./sim-worker.ts', import.meta.url).href);
  return `
    import(${tsxApi})
      .then(({ register }) => { register(); return import(${workerModule}); })
      .catch((err) => { setImmediate(() => { throw err; }); });
  `;
}

/** Spreads seeds over worker threads, a chunk at a time to whichever worker is free. */
async function runOnWorkers(
  start: number,
  count: number,
  workers: number,
  options: RunOptions,
  onSeed: (s: SeedSummary) => void,
): Promise<void> {
  let nextSeed = start;
  const end = start + count;
  const takeChunk = (): number[] => {
    const seeds: number[] = [];
    while (seeds.length < WORKER_CHUNK_SEEDS && nextSeed < end) seeds.push(nextSeed++);
    return seeds;
  };
  const results = new Map<number, SeedSummary>();
  let reported = start;
  // Report in seed order, so the output does not depend on thread timing.
  const flush = (): void => {
    for (let s = results.get(reported); s !== undefined; s = results.get(reported)) {
      results.delete(reported);
      onSeed(s);
      reported++;
    }
  };
  const bootstrap = workerBootstrap();
  const pool = Array.from({ length: workers }, () => {
    const worker = new Worker(bootstrap, { eval: true, workerData: options });
    return new Promise<void>((resolve, reject) => {
      const feed = (): void => {
        const seeds = takeChunk();
        if (seeds.length === 0) {
          void worker.terminate().then(() => resolve(), reject);
          return;
        }
        const req: WorkerRequest = { seeds };
        worker.postMessage(req);
      };
      worker.on('message', (reply: WorkerReply) => {
        if (reply.kind === 'seed') {
          results.set(reply.summary.seed, reply.summary);
          flush();
        } else {
          feed();
        }
      });
      worker.on('error', reject);
      worker.on('online', feed);
    });
  });
  await Promise.all(pool);
  flush();
}
