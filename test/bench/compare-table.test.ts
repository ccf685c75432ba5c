// The comparison table's arithmetic and the issue-8 verdicts, from made-up BenchResults: no
// cluster runs here.

import { describe, expect, it } from 'vitest';
import type { BenchResult, OpStats } from '../../bench/kvbench/runner.js';
import type { WorkloadSpec } from '../../bench/kvbench/workload.js';
import {
  buildRow,
  evaluateTargets,
  fmtNum,
  formatComparison,
  formatRoleTable,
  formatRounds,
  markdownTable,
  median,
  ratio,
  roleCpu,
  summarizeRounds,
  WORKLOADS,
  type ComparePair,
  type TargetResult,
} from '../../bench/support/compare-table.js';

const WORKLOAD: WorkloadSpec = {
  clients: 64,
  durationMs: 5_000,
  warmupMs: 1_000,
  keys: 10_000,
  keyDistribution: 'uniform',
  zipfTheta: 0.99,
  keyPrefix: 'k',
  valueBytes: 256,
  mix: { put: 1, get: 0, cas: 0 },
  consistency: 'linearizable',
  preload: false,
  seed: 1,
};

function stats(p50Us: number, p99Us: number): OpStats {
  return { count: 1000, p50Us, p95Us: p99Us, p99Us, maxUs: p99Us * 2, meanUs: p50Us };
}

function result(system: 'raftkv' | 'etcd', f: { opsPerSec: number; p50Us?: number; p99Us?: number; cpuUsPerOp?: number; errors?: Record<string, number> }): BenchResult {
  const latency = stats(f.p50Us ?? 1_000, f.p99Us ?? 5_000);
  return {
    target: { system, endpoints: ['127.0.0.1:1'] },
    workload: WORKLOAD,
    consistencyServed: 'linearizable',
    elapsedMs: 5_000,
    ops: Math.round(f.opsPerSec * 5),
    opsPerSec: f.opsPerSec,
    latency,
    byOp: { put: latency },
    errors: f.errors ?? {},
    ...(f.cpuUsPerOp !== undefined ? { serverCpuUsPerOp: f.cpuUsPerOp, serverCpuMs: (f.cpuUsPerOp * f.opsPerSec * 5) / 1000 } : {}),
    clientCpuMs: 100,
    clientCpuUsPerOp: 10,
    targetDescription: `${system} leader`,
    clampedLatencies: 0,
    warmupOps: 0,
  };
}

/** A run where raftkv meets every target. */
function passingPairs(): ComparePair[] {
  return [
    { name: WORKLOADS.put64, raftkv: result('raftkv', { opsPerSec: 12_000, cpuUsPerOp: 80 }), etcd: result('etcd', { opsPerSec: 10_000, cpuUsPerOp: 100 }) },
    {
      name: WORKLOADS.put1,
      raftkv: result('raftkv', { opsPerSec: 500, p50Us: 1_800, p99Us: 4_000, cpuUsPerOp: 300 }),
      etcd: result('etcd', { opsPerSec: 450, p50Us: 2_000, p99Us: 5_000, cpuUsPerOp: 400 }),
    },
    { name: WORKLOADS.getLin64, raftkv: result('raftkv', { opsPerSec: 20_000, cpuUsPerOp: 50 }), etcd: result('etcd', { opsPerSec: 20_000, cpuUsPerOp: 50 }) },
    {
      name: WORKLOADS.getLease64,
      raftkv: result('raftkv', { opsPerSec: 30_000, cpuUsPerOp: 30 }),
      etcd: result('etcd', { opsPerSec: 20_000, cpuUsPerOp: 50 }),
      note: 'etcd has no lease read: its linearizable read',
    },
  ];
}

function byId(targets: readonly TargetResult[], id: string): TargetResult {
  const t = targets.find((x) => x.id === id);
  if (t === undefined) throw new Error(`no target ${id}`);
  return t;
}

describe('ratio', () => {
  it('divides, and gives nothing for missing, non-finite or zero denominators', () => {
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(undefined, 2)).toBeUndefined();
    expect(ratio(3, undefined)).toBeUndefined();
    expect(ratio(3, 0)).toBeUndefined();
    expect(ratio(Number.NaN, 2)).toBeUndefined();
  });
});

describe('buildRow', () => {
  it('puts both systems side by side with raftkv ÷ etcd ratios, latencies in ms', () => {
    const row = buildRow(passingPairs()[1]!);
    expect(row.raftkvOpsPerSec).toBe(500);
    expect(row.opsRatio).toBeCloseTo(500 / 450);
    expect(row.raftkvP50Ms).toBe(1.8);
    expect(row.etcdP50Ms).toBe(2);
    expect(row.p50Ratio).toBeCloseTo(0.9);
    expect(row.p99Ratio).toBeCloseTo(0.8);
    expect(row.cpuRatio).toBeCloseTo(0.75);
  });

  it('leaves the ratios empty when a side did not run or measured no CPU', () => {
    const row = buildRow({ name: 'x', raftkv: result('raftkv', { opsPerSec: 10 }) });
    expect(row.etcdOpsPerSec).toBeUndefined();
    expect(row.opsRatio).toBeUndefined();
    expect(row.raftkvCpuUsPerOp).toBeUndefined();
    expect(row.cpuRatio).toBeUndefined();
  });
});

describe('server CPU by role', () => {
  /** A result whose server CPU is split over pids 11 (leader), 12 and 13, in ms over `ops` operations. */
  function split(system: 'raftkv' | 'etcd', ops: number, byPid: Record<string, number>): BenchResult {
    const r = result(system, { opsPerSec: ops / 5, cpuUsPerOp: 1 });
    return { ...r, ops, serverCpuByPid: byPid };
  }

  it("gives the leader's CPU per operation and the mean of the others'", () => {
    const rc = roleCpu(split('raftkv', 10_000, { '11': 1_500, '12': 600, '13': 700 }), 11);
    expect(rc?.leaderUsPerOp).toBe(150);
    expect(rc?.followerUsPerOp).toBe(65);
  });

  it('gives nothing without a leader pid among the figures, without another server, or without operations', () => {
    expect(roleCpu(split('raftkv', 10_000, { '11': 1_500, '12': 600 }), undefined)).toBeUndefined();
    expect(roleCpu(split('raftkv', 10_000, { '11': 1_500, '12': 600 }), 99)).toBeUndefined();
    expect(roleCpu(split('raftkv', 10_000, { '11': 1_500 }), 11)).toBeUndefined();
    expect(roleCpu(split('raftkv', 0, { '11': 1_500, '12': 600 }), 11)).toBeUndefined();
    expect(roleCpu(result('raftkv', { opsPerSec: 10, cpuUsPerOp: 5 }), 11)).toBeUndefined();
  });

  it('puts both sides by role in the row, with raftkv ÷ etcd ratios, and prints them', () => {
    const pair: ComparePair = {
      name: WORKLOADS.put64,
      raftkv: split('raftkv', 10_000, { '11': 1_600, '12': 640, '13': 640 }),
      etcd: split('etcd', 10_000, { '21': 1_200, '22': 600, '23': 680 }),
      leaderPids: { raftkv: 11, etcd: 21 },
    };
    const row = buildRow(pair);
    expect(row.raftkvLeaderCpuUsPerOp).toBe(160);
    expect(row.etcdLeaderCpuUsPerOp).toBe(120);
    expect(row.leaderCpuRatio).toBeCloseTo(4 / 3);
    expect(row.raftkvFollowerCpuUsPerOp).toBe(64);
    expect(row.etcdFollowerCpuUsPerOp).toBe(64);
    expect(row.followerCpuRatio).toBe(1);
    expect(formatRoleTable([row])).toMatch(/\| put-64 +\| +160 \| +120 \| 1\.33× \| +64\.0 \| +64\.0 \| 1\.00× \|/);
    expect(formatComparison([pair])).toContain('Server CPU per operation by role');
    // Without the leaders' pids there is no split, and no table.
    expect(formatRoleTable([buildRow({ ...pair, leaderPids: {} })])).toBe('');
    expect(formatComparison([{ ...pair, leaderPids: {} }])).not.toContain('by role');
  });

  it('takes the median of each figure over rounds', () => {
    const round = (leaderMs: number): ComparePair[] => [
      {
        name: WORKLOADS.put64,
        raftkv: split('raftkv', 10_000, { '11': leaderMs, '12': 640, '13': 640 }),
        etcd: split('etcd', 10_000, { '21': 1_000, '22': 600, '23': 600 }),
        leaderPids: { raftkv: 11, etcd: 21 },
      },
    ];
    const text = formatRounds([round(1_500), round(2_000), round(1_700)]);
    expect(text).toContain('by role, µs, median of the rounds');
    expect(text).toMatch(/\| put-64 +\| +170 \| +100 \| 1\.70× \| +64\.0 \| +60\.0 \| 1\.07× \|/);
  });
});

describe('evaluateTargets', () => {
  it('passes every target when raftkv meets them', () => {
    const targets = evaluateTargets(passingPairs());
    expect(targets.map((t) => t.id)).toEqual(['1', '2', '3', '4a', '4b', '5a', '5b', '5c', '5d']);
    expect(targets.filter((t) => t.verdict !== 'PASS')).toEqual([]);
    // Equal throughput meets "≥ 1.0×".
    expect(byId(targets, '3').detail).toContain('1.00×');
  });

  it('misses a target that raftkv does not meet, and says by how much', () => {
    const pairs = passingPairs();
    pairs[0] = { name: WORKLOADS.put64, raftkv: result('raftkv', { opsPerSec: 6_000, cpuUsPerOp: 150 }), etcd: result('etcd', { opsPerSec: 10_000, cpuUsPerOp: 100 }) };
    const targets = evaluateTargets(pairs);
    expect(byId(targets, '1').verdict).toBe('MISS');
    expect(byId(targets, '1').detail).toContain('0.60×');
    expect(byId(targets, '5a').verdict).toBe('MISS');
    expect(byId(targets, '5a').detail).toContain('1.50×');
    expect(byId(targets, '2').verdict).toBe('PASS');
  });

  it('holds LEASE to 0.7× the CPU of LINEARIZABLE and to strictly more throughput', () => {
    const pairs = passingPairs();
    // 36 / 50 = 0.72: above the 0.7 limit. Equal throughput: not "more".
    pairs[3] = { name: WORKLOADS.getLease64, raftkv: result('raftkv', { opsPerSec: 20_000, cpuUsPerOp: 36 }), etcd: result('etcd', { opsPerSec: 20_000, cpuUsPerOp: 50 }) };
    const targets = evaluateTargets(pairs);
    expect(byId(targets, '4a').verdict).toBe('MISS');
    expect(byId(targets, '4a').detail).toContain('0.72×');
    expect(byId(targets, '4b').verdict).toBe('MISS');
    expect(byId(targets, '5d').verdict).toBe('PASS');
  });

  it('prints more decimals where two would show the limit for a ratio beside it', () => {
    const linearizable = (raftkvOps: number, etcdOps: number): ComparePair => ({
      name: WORKLOADS.getLin64,
      raftkv: result('raftkv', { opsPerSec: raftkvOps, cpuUsPerOp: 50 }),
      etcd: result('etcd', { opsPerSec: etcdOps, cpuUsPerOp: 50 }),
    });
    const pairs = passingPairs();
    // 4,939 / 4,950 = 0.9978: a miss of "≥ 1.0×" that two decimals would print as 1.00×.
    pairs[2] = linearizable(4_939, 4_950);
    // 35.2 / 50 = 0.704: a miss of "≤ 0.7×" (LEASE against LINEARIZABLE CPU).
    pairs[3] = { name: WORKLOADS.getLease64, raftkv: result('raftkv', { opsPerSec: 30_000, cpuUsPerOp: 35.2 }), etcd: result('etcd', { opsPerSec: 20_000, cpuUsPerOp: 50 }) };
    const targets = evaluateTargets(pairs);
    expect(byId(targets, '3').verdict).toBe('MISS');
    expect(byId(targets, '3').detail).toContain(': 0.998× (needs ≥ 1.0×)');
    expect(byId(targets, '4a').verdict).toBe('MISS');
    expect(byId(targets, '4a').detail).toContain(': 0.704× (needs ≤ 0.7×)');
    // Far from the limit, or on it exactly: two decimals.
    expect(byId(targets, '1').detail).toContain(': 1.20× (needs');
    expect(byId(targets, '5c').detail).toContain(': 1.00× (needs ≤ 1.0×)');
    const rounds = formatRounds([pairs, passingPairs(), pairs]);
    expect(rounds).toMatch(/\(3\) +MISS .*\n +median 0\.998× \(needs ≥ 1\.0×\); rounds 0\.998×, 1\.00×, 0\.998×; passed in 1 of 3/);
    // 9,996 / 10,000 = 0.9996: three decimals would print 1.000×.
    pairs[2] = linearizable(9_996, 10_000);
    expect(byId(evaluateTargets(pairs), '3').detail).toContain(': 0.9996× (needs ≥ 1.0×)');
  });

  it('says N/A, not PASS or MISS, when a figure is missing', () => {
    const pairs = passingPairs().filter((p) => p.name !== WORKLOADS.put1);
    pairs[0] = { name: WORKLOADS.put64, raftkv: result('raftkv', { opsPerSec: 12_000 }), etcd: result('etcd', { opsPerSec: 10_000, cpuUsPerOp: 100 }) };
    const targets = evaluateTargets(pairs);
    expect(byId(targets, '2').verdict).toBe('N/A');
    expect(byId(targets, '5b').verdict).toBe('N/A');
    expect(byId(targets, '5a').verdict).toBe('N/A');
    expect(byId(targets, '5a').detail).toContain('raftkv put-64');
    expect(byId(targets, '1').verdict).toBe('PASS');
  });
});

describe('text', () => {
  it('formats figures to about 3 significant digits', () => {
    expect(fmtNum(12_345.6)).toBe('12,346');
    expect(fmtNum(45.67)).toBe('45.7');
    expect(fmtNum(4.567)).toBe('4.57');
    expect(fmtNum(0.1234)).toBe('0.123');
    expect(fmtNum(undefined)).toBe('–');
  });

  it('aligns a Markdown table', () => {
    const t = markdownTable(['name', 'n'], [['a', '1'], ['bbb', '100']]);
    expect(t.split('\n')).toEqual(['| name |   n |', '|------|----:|', '| a    |   1 |', '| bbb  | 100 |']);
  });

  it('prints the table, the notes, the errors and the verdicts', () => {
    const pairs = passingPairs();
    pairs[0] = {
      name: WORKLOADS.put64,
      raftkv: result('raftkv', { opsPerSec: 6_000, cpuUsPerOp: 80, errors: { TIMEOUT: 3 } }),
      etcd: result('etcd', { opsPerSec: 10_000, cpuUsPerOp: 100 }),
    };
    const text = formatComparison(pairs);
    expect(text).toContain('| put-64 ');
    expect(text).toContain('0.60×');
    expect(text).toContain('get-lease-64: etcd has no lease read');
    expect(text).toContain('raftkv put-64: 3 errors (TIMEOUT 3) in 30000 ops');
    expect(text).toContain('Targets (issue 8): 8 PASS, 1 MISS');
    expect(text).toMatch(/^\(1\) {2}MISS {2}put-64 throughput/m);
  });
});

describe('several rounds', () => {
  /** passingPairs with raftkv's put-64 throughput set (etcd's stays 10,000 ops/s). */
  function roundWithPut64(opsPerSec: number): ComparePair[] {
    const pairs = passingPairs();
    pairs[0] = { name: WORKLOADS.put64, raftkv: result('raftkv', { opsPerSec, cpuUsPerOp: 80 }), etcd: result('etcd', { opsPerSec: 10_000, cpuUsPerOp: 100 }) };
    return pairs;
  }

  it('takes the median: the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeUndefined();
  });

  it('judges each target on the median ratio and counts the rounds that passed', () => {
    // put-64 ratios 0.9, 1.2, 1.05: one round misses, the median (1.05) passes.
    const summary = summarizeRounds([roundWithPut64(9_000), roundWithPut64(12_000), roundWithPut64(10_500)]);
    const t1 = summary.find((t) => t.id === '1')!;
    expect(t1.ratios.map((r) => r?.toFixed(2))).toEqual(['0.90', '1.20', '1.05']);
    expect(t1.median).toBeCloseTo(1.05, 10);
    expect(t1.verdict).toBe('PASS');
    expect(t1.passedRounds).toBe(2);
    // 0.8, 0.95, 1.1: the median misses although one round passed.
    const t1b = summarizeRounds([roundWithPut64(8_000), roundWithPut64(9_500), roundWithPut64(11_000)]).find((t) => t.id === '1')!;
    expect(t1b.verdict).toBe('MISS');
    expect(t1b.passedRounds).toBe(1);
  });

  it('says N/A only when no round had the figure, and uses the rounds that did', () => {
    const withoutPut1 = passingPairs().filter((p) => p.name !== WORKLOADS.put1);
    const slow = passingPairs();
    slow[1] = {
      name: WORKLOADS.put1,
      raftkv: result('raftkv', { opsPerSec: 400, p50Us: 3_000, cpuUsPerOp: 300 }),
      etcd: result('etcd', { opsPerSec: 450, p50Us: 2_000, cpuUsPerOp: 400 }),
    };
    const t2 = summarizeRounds([withoutPut1, slow]).find((t) => t.id === '2')!;
    expect(t2.ratios).toEqual([undefined, 1.5]);
    expect(t2.median).toBe(1.5);
    expect(t2.verdict).toBe('MISS');
    const none = summarizeRounds([withoutPut1, withoutPut1]).find((t) => t.id === '2')!;
    expect(none.verdict).toBe('N/A');
    expect(none.median).toBeUndefined();
  });

  it('prints the median ratios with their range and the targets on the medians', () => {
    const text = formatRounds([roundWithPut64(9_000), roundWithPut64(12_000), roundWithPut64(10_500)]);
    expect(text).toContain('Across 3 rounds');
    expect(text).toMatch(/\| put-64 +\| 1\.05× \(0\.90×–1\.20×\) \|/);
    expect(text).toContain('Targets (issue 8) on the median of 3 rounds: 9 PASS, 0 MISS');
    expect(text).toContain('median 1.05× (needs ≥ 1.0×); rounds 0.90×, 1.20×, 1.05×; passed in 2 of 3');
  });
});
