// npm run nemesis -- --duration SECONDS --faults kill,pause,partition,clock --consistency LINEARIZABLE
//   [--seed N] [--runs N] [--nodes 3|5] [--clients-per-node N] [--keys N] [--out DIR]
//
// Runs the nemesis (test/nemesis/nemesis.ts) `--runs` times in a row, seeds N, N+1, ..., each for
// `--duration` seconds, and writes each run's history.jsonl, faults.jsonl and summary.json to
// DIR/seed-N/. Exit code: 0 all ok, 1 a violation, 2 a verdict unknown (checker out of time).

import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ReadConsistency } from '../support/linearizability/history.js';
import { FAULT_KINDS, runNemesis, type FaultKind, type NemesisReport } from './nemesis.js';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '60' },
      faults: { type: 'string', default: FAULT_KINDS.join(',') },
      consistency: { type: 'string', default: 'LINEARIZABLE' },
      seed: { type: 'string', default: String(Date.now() % 1_000_000) },
      runs: { type: 'string', default: '1' },
      nodes: { type: 'string', default: '3' },
      'clients-per-node': { type: 'string', default: '2' },
      keys: { type: 'string', default: '3' },
      out: { type: 'string', default: 'nemesis-out' },
    },
  });
  const faults = values.faults.split(',').filter((f) => f !== '') as FaultKind[];
  for (const f of faults) if (!FAULT_KINDS.includes(f)) throw new Error(`--faults: unknown fault "${f}"; use ${FAULT_KINDS.join(', ')}`);
  const consistency = values.consistency.toUpperCase() as ReadConsistency;
  if (!['LINEARIZABLE', 'LEASE', 'STALE'].includes(consistency)) throw new Error('--consistency: LINEARIZABLE, LEASE or STALE');
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
    return n;
  };
  const seed = int('seed', values.seed, 0);
  const runs = int('runs', values.runs, 1);
  const out = resolve(values.out);
  await mkdir(out, { recursive: true });
  const reports: NemesisReport[] = [];
  for (let r = 0; r < runs; r++) {
    const s = seed + r;
    console.log(`run ${r + 1}/${runs}: seed ${s}, ${consistency}, faults ${faults.join(',')}, ${values.duration} s (replay the schedule: --seed ${s})`);
    reports.push(
      await runNemesis({
        seed: s,
        durationMs: int('duration', values.duration, 1) * 1000,
        faults,
        consistency,
        nodes: int('nodes', values.nodes, 3),
        clientsPerNode: int('clients-per-node', values['clients-per-node'], 1),
        keys: int('keys', values.keys, 1),
        outDir: join(out, `seed-${s}`),
      }),
    );
  }
  const sum = (f: (r: NemesisReport) => number): number => reports.reduce((a, r) => a + f(r), 0);
  const summary = {
    runs: reports.length,
    ops: sum((r) => r.ops.total),
    ok: sum((r) => r.ops.ok),
    unknown: sum((r) => r.ops.unknown),
    faults: sum((r) => r.faults.total),
    faultsByKind: reports.reduce<Record<string, number>>((acc, r) => {
      for (const [k, v] of Object.entries(r.faults.byKind)) acc[k] = (acc[k] ?? 0) + v;
      return acc;
    }, {}),
    verdicts: reports.map((r) => ({ seed: r.seed, verdict: r.verdict })),
  };
  await writeFile(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  console.log(`summary: ${JSON.stringify(summary)}`);
  if (reports.some((r) => r.verdict === 'violation')) return 1;
  return reports.some((r) => r.verdict === 'unknown') ? 2 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  },
);
