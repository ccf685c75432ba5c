// What a node's synced write costs, alone and when several processes write at once, as three nodes
// of a local cluster do on one machine.
//
// Each child process opens its own NodeStore and KvStateMachine (src/storage, src/kv) in a fresh
// temporary directory and persists --batches Readies one after the other, each --entries put entries
// (--value-bytes values, keys drawn from 10,000, one client session per entry as kvbench's workers
// have). With --applies combined (the default), each batch also carries the applies of the batch
// before it, prepared first, as a follower's write does when the new commit index comes with the next
// entries (src/node/raft-runtime.ts); with --applies none, the entries and hard state alone. Timed:
// the persist call, from the call to its resolution (what an acknowledgement waits for). The children
// of one run open their stores, then start together.
//
// Reported per run: the processes writing at once, the median over them of each one's p50, p90 and
// p99 persist time, LevelDB operations per batch, and the CPU per entry (each child's
// process.cpuUsage() over its loop, LevelDB's threads included: preparing the applies and persisting;
// the entries are made before the loop starts). A script, not a test: it asserts nothing about speed.
// Run: npx tsx bench/store-writes.ts [--processes 1,3] [--entries 64] [--batches 300]
//      [--value-bytes 256] [--applies combined|none] [--json FILE]

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { KvStateMachine } from '../src/kv/index.js';
import { encodeCommand } from '../src/kv/command.js';
import type { Entry } from '../src/raft/index.js';
import { createRng } from '../src/raft/rng.js';
import { NodeStore, type StateWrite } from '../src/storage/index.js';
import type { PreparedWrite } from '../src/kv/state-machine.js';
import { keyOf } from './kvbench/workload.js';
import { median } from './support/compare-table.js';
import { percentile } from './support/percentile.js';
import { parseScriptFlags } from './support/script-flags.js';

const SCRIPT_PATH = fileURLToPath(import.meta.url);
const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));
const KEY_COUNT = 10_000;
/** The seed of the keys' draw: every run writes the same keys. */
const KEY_SEED = 1;
/**
 * Limit: bytes of the entries a child makes before it starts (--batches × --entries × (--value-bytes
 * + ENTRY_OVERHEAD_BYTES)), so that a large run is refused up front rather than running out of memory.
 */
export const MAX_PREPARED_BYTES = 512 * 1024 * 1024;
/** What an entry takes besides its value, as counted against MAX_PREPARED_BYTES (key, command, objects). */
const ENTRY_OVERHEAD_BYTES = 256;
/** Set by the parent on its children's environment: the directory each is to write in. */
const CHILD_ENV = 'RAFTKV_STORE_WRITES_CHILD_DIR';

const USAGE = `usage: npx tsx bench/store-writes.ts [options]

  --processes <list>     processes writing at once, one run per item (default 1,3)
  --entries <n>          put entries per batch (default 64)
  --batches <n>          batches each process persists (default 300)
  --value-bytes <n>      bytes of each value (default 256)
  --applies <mode>       combined: each batch carries the previous batch's applies; none (default combined)
  --json FILE            also write the results as JSON
  -h, --help             this text
`;

export interface WriteParams {
  readonly entries: number;
  readonly batches: number;
  readonly valueBytes: number;
  readonly applies: 'combined' | 'none';
}

/** One process's figures. */
export interface ChildResult {
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  /** LevelDB operations per batch, on average (entries, hard state, applies). */
  readonly opsPerBatch: number;
  readonly cpuUsPerEntry: number;
}

export interface RunResult extends ChildResult {
  readonly processes: number;
}

/** A run's figures: the median over its processes of each of their figures (of two: their mean). */
export function combine(processes: number, children: readonly ChildResult[]): RunResult {
  if (children.length === 0) throw new RangeError('combine: no process results');
  const med = (pick: (c: ChildResult) => number): number => median(children.map(pick))!;
  return {
    processes,
    p50Ms: med((c) => c.p50Ms),
    p90Ms: med((c) => c.p90Ms),
    p99Ms: med((c) => c.p99Ms),
    opsPerBatch: med((c) => c.opsPerBatch),
    cpuUsPerEntry: med((c) => c.cpuUsPerEntry),
  };
}

/** "1,3" → [1, 3]; throws on anything but integers from 1 to 16. */
export function parseProcesses(list: string): number[] {
  return list.split(',').map((item) => positive('--processes (each item)', item.trim(), 16));
}

function positive(name: string, value: string, max: number): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > max) throw new RangeError(`${name} must be an integer from 1 to ${max}, got "${value}"`);
  return n;
}

/**
 * Every batch's put entries, made before the clock starts so that the CPU counted is the store's and
 * the state machine's, not this script's encoding. Keys are named as kvbench's and drawn from a
 * fixed seed, the same in every child and run; entry i of each batch belongs to client i.
 */
function makeBatches(p: WriteParams): Entry[][] {
  const value = new Uint8Array(p.valueBytes).fill(0x76);
  const encoder = new TextEncoder();
  const rng = createRng(KEY_SEED);
  let index = 0;
  const batches: Entry[][] = [];
  for (let b = 0; b < p.batches; b++) {
    const entries: Entry[] = [];
    for (let i = 0; i < p.entries; i++) {
      const key = encoder.encode(keyOf('store-writes/', rng.int(KEY_COUNT)));
      const data = encodeCommand({ op: 'put', key, value, clientId: `client-${i}`, seq: b + 1, proposedAtMs: 1_000_000 + b });
      entries.push({ index: ++index, term: 1, type: 'normal', data });
    }
    batches.push(entries);
  }
  return batches;
}

/** Persists `batches` one after the other, timing each persist call. */
async function persistBatches(store: NodeStore, sm: KvStateMachine, batches: readonly Entry[][], p: WriteParams): Promise<ChildResult> {
  const latencies: number[] = [];
  let ops = 0;
  let previous: readonly Entry[] | undefined;
  const cpu0 = process.cpuUsage();
  for (const entries of batches) {
    // The previous batch is committed by now; its applies (when carried) reach its last index.
    const hardState = { term: 1, vote: 1, commit: entries[0]!.index - 1 };
    let write: PreparedWrite | undefined;
    let state: StateWrite | undefined;
    if (p.applies === 'combined' && previous !== undefined) {
      await sm.prepare(previous);
      write = sm.takeWrite();
      if (write !== undefined) {
        const data = [...(write.write.data ?? [])];
        const sessions = [...(write.write.sessions ?? [])];
        state = { ...write.write, data, sessions };
        // The applies' puts: data, sessions, the applied index and the session clock.
        ops += data.length + sessions.length + 2;
      }
    }
    // The entries and the hard state (its commit moves every batch).
    ops += entries.length + 1;
    const t0 = performance.now();
    await store.persist({ hardState, entries, ...(state !== undefined ? { state } : {}) });
    latencies.push(performance.now() - t0);
    write?.written();
    previous = entries;
  }
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  return {
    p50Ms: percentile(latencies, 0.5),
    p90Ms: percentile(latencies, 0.9),
    p99Ms: percentile(latencies, 0.99),
    opsPerBatch: ops / p.batches,
    cpuUsPerEntry: (cpu.user + cpu.system) / (p.batches * p.entries),
  };
}

/**
 * One writer: opens a store in `dir` (a fresh temporary directory, removed after, when none is
 * given), makes its batches, waits for `signalReady`, persists them and returns its figures.
 */
export async function writeBatches(p: WriteParams, dir?: string, signalReady: () => Promise<void> = async () => {}): Promise<ChildResult> {
  const own = dir === undefined ? mkdtempSync(join(tmpdir(), 'raftkv-store-writes-')) : undefined;
  try {
    const store = await NodeStore.open(join(dir ?? own!, 'node'), { clusterId: 'store-writes', nodeId: 1 });
    try {
      const sm = await KvStateMachine.open(store, {});
      const batches = makeBatches(p);
      await signalReady();
      return await persistBatches(store, sm, batches, p);
    } finally {
      await store.close();
    }
  } finally {
    if (own !== undefined) rmSync(own, { recursive: true, force: true });
  }
}

/** A child's exit, as a reason: its code, or the signal that ended it. */
function exitReason(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
}

/**
 * Runs `processes` children at once; each opens its store, says "ready", and starts on "go". If one
 * fails (exits without its result, or says something that is not its result), the others are killed
 * and the run rejects with why.
 */
async function runChildren(processes: number, p: WriteParams): Promise<ChildResult[]> {
  const args = ['--entries', String(p.entries), '--batches', String(p.batches), '--value-bytes', String(p.valueBytes), '--applies', p.applies];
  // The parent makes and removes the children's directories, so that none is left however they end.
  const dirs = Array.from({ length: processes }, () => mkdtempSync(join(tmpdir(), 'raftkv-store-writes-')));
  const children = dirs.map((dir) =>
    spawn(process.execPath, ['--import', 'tsx', SCRIPT_PATH, ...args], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, [CHILD_ENV]: dir },
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  const runs = children.map((child, i) => {
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    const result = new Promise<ChildResult>((resolve, reject) => {
      let got: ChildResult | undefined;
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        if (line === 'ready') return markReady();
        try {
          got = JSON.parse(line) as ChildResult;
        } catch {
          reject(new Error(`child ${i + 1} said ${JSON.stringify(line.slice(0, 200))}, not its result`));
        }
      });
      child.on('error', reject);
      // 'close' comes after its output has been read, unlike 'exit'.
      child.on('close', (code, signal) => {
        if (got !== undefined && code === 0) resolve(got);
        else reject(new Error(`child ${i + 1} ${exitReason(code, signal)} before its result`));
      });
    });
    return { ready, result };
  });
  const all = Promise.all(runs.map((r) => r.result));
  try {
    // A child that fails before it is ready fails the run now.
    await Promise.race([Promise.all(runs.map((r) => r.ready)), all]);
    for (const child of children) child.stdin!.end('go\n');
    return await all;
  } catch (err) {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.allSettled(runs.map((r) => r.result));
    throw err;
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}

async function childMain(p: WriteParams, dir: string): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  // The parent ends our stdin with "go"; an end without it means the parent is gone.
  const go = new Promise<void>((resolve, reject) => {
    lines.once('line', () => resolve());
    lines.once('close', () => reject(new Error('stdin closed before "go"')));
  });
  go.catch(() => undefined);
  const result = await writeBatches(p, dir, async () => {
    process.stdout.write('ready\n');
    await go;
  });
  lines.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function table(runs: readonly RunResult[], p: WriteParams): string {
  const f2 = (n: number): string => n.toFixed(2);
  const lines = [
    `store-writes: ${p.batches} synced batches of ${p.entries} put entries (${p.valueBytes} B values) per process, applies ${p.applies}`,
    '',
    '| processes at once | persist p50 ms | p90 ms | p99 ms | LevelDB ops per batch | CPU µs per entry |',
    '|---:|---:|---:|---:|---:|---:|',
    ...runs.map((r) => `| ${r.processes} | ${f2(r.p50Ms)} | ${f2(r.p90Ms)} | ${f2(r.p99Ms)} | ${Math.round(r.opsPerBatch)} | ${r.cpuUsPerEntry.toFixed(1)} |`),
  ];
  return `${lines.join('\n')}\n`;
}

export async function main(): Promise<number> {
  const v = parseScriptFlags('store-writes', USAGE, {
    processes: { type: 'string', default: '1,3' },
    entries: { type: 'string', default: '64' },
    batches: { type: 'string', default: '300' },
    'value-bytes': { type: 'string', default: '256' },
    applies: { type: 'string', default: 'combined' },
    json: { type: 'string' },
  });
  let params: WriteParams;
  let processes: number[];
  try {
    if (v.applies !== 'combined' && v.applies !== 'none') throw new RangeError(`--applies must be combined or none, got "${v.applies}"`);
    params = {
      entries: positive('--entries', v.entries, 10_000),
      batches: positive('--batches', v.batches, 1_000_000),
      valueBytes: positive('--value-bytes', v['value-bytes'], 1 << 20),
      applies: v.applies,
    };
    processes = parseProcesses(v.processes);
    const prepared = params.batches * params.entries * (params.valueBytes + ENTRY_OVERHEAD_BYTES);
    if (prepared > MAX_PREPARED_BYTES) {
      throw new RangeError(
        `--batches × --entries × (--value-bytes + ${ENTRY_OVERHEAD_BYTES}) = ${prepared} bytes of entries made up front, over the limit of ${MAX_PREPARED_BYTES} (MAX_PREPARED_BYTES)`,
      );
    }
  } catch (e) {
    process.stderr.write(`store-writes: ${(e as Error).message}\n\n${USAGE}`);
    return 64;
  }
  const childDir = process.env[CHILD_ENV];
  if (childDir !== undefined && childDir !== '') {
    try {
      await childMain(params, childDir);
      return 0;
    } catch (e) {
      process.stderr.write(`store-writes child: ${(e as Error)?.message ?? String(e)}\n`);
      return 1;
    }
  }
  const runs: RunResult[] = [];
  try {
    for (const n of processes) runs.push(combine(n, await runChildren(n, params)));
  } catch (e) {
    process.stderr.write(`store-writes: ${(e as Error)?.message ?? String(e)}\n`);
    return 1;
  }
  process.stdout.write(table(runs, params));
  if (v.json !== undefined) writeFileSync(v.json, `${JSON.stringify({ params, runs }, null, 2)}\n`);
  return 0;
}

// Run only as a script (the test imports the helpers above).
if (process.argv[1] !== undefined && resolve(process.argv[1]) === SCRIPT_PATH) {
  process.exitCode = await main();
}
