// The workloads of bench/compare-etcd.ts: the six the targets of issue 8 are judged on, and puts at
// other numbers of clients (--put-clients), to see how each system's throughput and CPU per put move
// with concurrency. Pure: parsed and tested without running either system
// (test/bench/compare-workloads.test.ts).

import { MAX_CLIENTS, type WorkloadSpec } from '../kvbench/workload.js';
import { WORKLOADS } from './compare-table.js';

/** Limit on --put-clients: the extra put workloads one run takes (each is two runs per round). */
export const MAX_PUT_SWEEP = 8;

export interface CompareWorkload {
  readonly name: string;
  readonly description: string;
  /** The workload on raftkv (over the common settings). */
  readonly spec: Partial<WorkloadSpec>;
  /** What etcd runs instead, where it differs. */
  readonly etcdSpec?: Partial<WorkloadSpec>;
  /** Said under the table. */
  readonly note?: string;
}

export const COMPARE_WORKLOADS: readonly CompareWorkload[] = [
  putWorkload(64),
  { ...putWorkload(1), description: 'puts, 1 client, 256 B values, 10,000 keys uniform (latency: p50 is the figure)' },
  {
    name: WORKLOADS.getLin64,
    description: 'LINEARIZABLE gets, 64 clients, 10,000 keys preloaded with 256 B values',
    spec: { clients: 64, mix: { put: 0, get: 1, cas: 0 }, consistency: 'linearizable', preload: true },
  },
  {
    name: WORKLOADS.getLease64,
    description: 'raftkv LEASE gets, 64 clients, 10,000 keys preloaded; etcd: linearizable gets',
    spec: { clients: 64, mix: { put: 0, get: 1, cas: 0 }, consistency: 'lease', preload: true },
    etcdSpec: { consistency: 'linearizable' },
    note: 'etcd has no lease-based read; its column is its linearizable get (the reference a LEASE read must beat)',
  },
  {
    name: WORKLOADS.getStale64,
    description: 'STALE gets (etcd: serializable), 64 clients, 10,000 keys preloaded',
    spec: { clients: 64, mix: { put: 0, get: 1, cas: 0 }, consistency: 'stale', preload: true },
    note: 'etcd serves it as a serializable read (served by the member asked, from its own state)',
  },
  {
    name: WORKLOADS.mixed,
    description: '50% puts, 50% LINEARIZABLE gets, 64 clients, zipf keys, preloaded',
    spec: { clients: 64, mix: { put: 50, get: 50, cas: 0 }, consistency: 'linearizable', keyDistribution: 'zipf', preload: true },
  },
];

/** The workloads --only names (all of COMPARE_WORKLOADS without it), in their order. */
export function selectWorkloads(only: string | undefined): CompareWorkload[] {
  if (only === undefined) return [...COMPARE_WORKLOADS];
  const names = only.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = names.filter((n) => !COMPARE_WORKLOADS.some((w) => w.name === n));
  if (unknown.length > 0) {
    const sweepHint = unknown.some((n) => /^put-\d+$/.test(n)) ? '; puts at other numbers of clients: --put-clients N,...' : '';
    throw new RangeError(`--only: unknown workload ${unknown.join(', ')} (known: ${COMPARE_WORKLOADS.map((w) => w.name).join(', ')}${sweepHint})`);
  }
  return COMPARE_WORKLOADS.filter((w) => names.includes(w.name));
}

/** What a run of compare-etcd measures: --only's workloads (all without it), then --put-clients' puts. */
export function selectAll(only: string | undefined, putClients: string | undefined): CompareWorkload[] {
  return [...selectWorkloads(only), ...(putClients !== undefined ? putSweep(putClients) : [])];
}

/** A put workload at `clients` clients, as put-64 is at 64 (the name says how many). */
export function putWorkload(clients: number): CompareWorkload {
  return {
    name: `put-${clients}`,
    description: `puts, ${clients} client${clients === 1 ? '' : 's'}, 256 B values, 10,000 keys uniform`,
    spec: { clients, mix: { put: 1, get: 0, cas: 0 } },
  };
}

/**
 * --put-clients: "16,32,128" → put-16, put-32 and put-128. Each an integer from 1 to MAX_CLIENTS, at
 * most MAX_PUT_SWEEP of them, none twice, and none that is already a workload (put-64, put-1: name
 * them with --only).
 */
export function putSweep(list: string): CompareWorkload[] {
  const items = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new RangeError('--put-clients: no number of clients given');
  if (items.length > MAX_PUT_SWEEP) throw new RangeError(`--put-clients: at most ${MAX_PUT_SWEEP} numbers of clients (limit MAX_PUT_SWEEP), got ${items.length}`);
  const seen = new Set<number>();
  return items.map((item) => {
    const n = /^\d+$/.test(item) ? Number(item) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_CLIENTS) throw new RangeError(`--put-clients: "${item}" is not an integer from 1 to ${MAX_CLIENTS}`);
    if (seen.has(n)) throw new RangeError(`--put-clients: ${n} is given twice`);
    seen.add(n);
    const w = putWorkload(n);
    if (COMPARE_WORKLOADS.some((c) => c.name === w.name)) throw new RangeError(`--put-clients: ${w.name} is one of the standard workloads; name it with --only`);
    return w;
  });
}
