// The raftkv-vs-etcd comparison as text: per workload, each system's throughput, latency and server
// CPU per operation side by side with the ratio raftkv ÷ etcd, and the targets of issue 8 judged
// PASS or MISS. Pure functions of the BenchResults, so the arithmetic and the verdicts are tested
// without running either system (test/bench/compare-table.test.ts).

import type { BenchResult } from '../kvbench/runner.js';

/** The workloads of bench/compare-etcd.ts, by the names the targets refer to. */
export const WORKLOADS = {
  put64: 'put-64',
  put1: 'put-1',
  getLin64: 'get-lin-64',
  getLease64: 'get-lease-64',
  getStale64: 'get-stale-64',
  mixed: 'mixed',
} as const;

/** One workload as run on both systems; a side is missing when it was not run (or failed). */
export interface ComparePair {
  readonly name: string;
  readonly raftkv?: BenchResult;
  readonly etcd?: BenchResult;
  /** Said under the table, e.g. what etcd ran where it has no equivalent of a raftkv mode. */
  readonly note?: string;
  /**
   * The pid of the server process that was leader before and after each side's run (absent when
   * unknown or when the leader changed), to split that side's server CPU by role.
   */
  readonly leaderPids?: { readonly raftkv?: number; readonly etcd?: number };
}

/** A run's server CPU per operation on the leader and, averaged, on each other server. */
export interface RoleCpu {
  readonly leaderUsPerOp: number;
  /** The mean over the other servers (each server's own CPU per operation of the whole cluster's). */
  readonly followerUsPerOp: number;
}

export interface CompareRow {
  readonly name: string;
  readonly raftkvOpsPerSec?: number;
  readonly etcdOpsPerSec?: number;
  readonly opsRatio?: number;
  readonly raftkvP50Ms?: number;
  readonly etcdP50Ms?: number;
  readonly p50Ratio?: number;
  readonly raftkvP99Ms?: number;
  readonly etcdP99Ms?: number;
  readonly p99Ratio?: number;
  readonly raftkvCpuUsPerOp?: number;
  readonly etcdCpuUsPerOp?: number;
  readonly cpuRatio?: number;
  readonly raftkvLeaderCpuUsPerOp?: number;
  readonly etcdLeaderCpuUsPerOp?: number;
  readonly leaderCpuRatio?: number;
  readonly raftkvFollowerCpuUsPerOp?: number;
  readonly etcdFollowerCpuUsPerOp?: number;
  readonly followerCpuRatio?: number;
}

export type Verdict = 'PASS' | 'MISS' | 'N/A';

/** How a target's ratio is judged: 'atLeast' ratio ≥ limit, 'atMost' ratio ≤ limit, 'above' ratio > limit. */
export type TargetRule = { readonly how: 'atLeast' | 'atMost' | 'above'; readonly limit: number };

export interface TargetResult {
  readonly id: string;
  readonly description: string;
  readonly verdict: Verdict;
  /** The figures the verdict rests on, or why there are none. */
  readonly detail: string;
  /** The ratio judged; absent when a figure is missing (verdict N/A). */
  readonly ratio?: number;
  readonly rule: TargetRule;
}

/**
 * a ÷ b; undefined when either is missing or not finite, or b is 0 (a ratio to nothing says
 * nothing, and Infinity would print as a figure).
 */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

const usToMs = (us: number | undefined): number | undefined => (us === undefined ? undefined : us / 1000);

/**
 * The server CPU of a run split by role: undefined without per-process figures, without the
 * leader's pid among them, without another server, or without operations.
 */
export function roleCpu(res: BenchResult | undefined, leaderPid: number | undefined): RoleCpu | undefined {
  const byPid = res?.serverCpuByPid;
  if (res === undefined || byPid === undefined || leaderPid === undefined || res.ops <= 0) return undefined;
  const leaderMs = byPid[String(leaderPid)];
  const others = Object.entries(byPid).filter(([pid]) => pid !== String(leaderPid)).map(([, ms]) => ms);
  if (leaderMs === undefined || others.length === 0) return undefined;
  const perOp = (ms: number): number => (ms * 1000) / res.ops;
  return { leaderUsPerOp: perOp(leaderMs), followerUsPerOp: perOp(others.reduce((a, b) => a + b, 0) / others.length) };
}

export function buildRow(pair: ComparePair): CompareRow {
  const r = pair.raftkv;
  const e = pair.etcd;
  const rr = roleCpu(r, pair.leaderPids?.raftkv);
  const er = roleCpu(e, pair.leaderPids?.etcd);
  const row = {
    name: pair.name,
    raftkvOpsPerSec: r?.opsPerSec,
    etcdOpsPerSec: e?.opsPerSec,
    raftkvP50Ms: usToMs(r?.latency.p50Us),
    etcdP50Ms: usToMs(e?.latency.p50Us),
    raftkvP99Ms: usToMs(r?.latency.p99Us),
    etcdP99Ms: usToMs(e?.latency.p99Us),
    raftkvCpuUsPerOp: r?.serverCpuUsPerOp,
    etcdCpuUsPerOp: e?.serverCpuUsPerOp,
  };
  return {
    ...row,
    opsRatio: ratio(row.raftkvOpsPerSec, row.etcdOpsPerSec),
    p50Ratio: ratio(row.raftkvP50Ms, row.etcdP50Ms),
    p99Ratio: ratio(row.raftkvP99Ms, row.etcdP99Ms),
    cpuRatio: ratio(row.raftkvCpuUsPerOp, row.etcdCpuUsPerOp),
    raftkvLeaderCpuUsPerOp: rr?.leaderUsPerOp,
    etcdLeaderCpuUsPerOp: er?.leaderUsPerOp,
    leaderCpuRatio: ratio(rr?.leaderUsPerOp, er?.leaderUsPerOp),
    raftkvFollowerCpuUsPerOp: rr?.followerUsPerOp,
    etcdFollowerCpuUsPerOp: er?.followerUsPerOp,
    followerCpuRatio: ratio(rr?.followerUsPerOp, er?.followerUsPerOp),
  };
}

// ---- targets ------------------------------------------------------------------------------------

type Side = 'raftkv' | 'etcd';
type Metric = 'ops/s' | 'p50' | 'CPU/op';

function metric(res: BenchResult | undefined, m: Metric): number | undefined {
  if (res === undefined) return undefined;
  switch (m) {
    case 'ops/s':
      return res.opsPerSec;
    case 'p50':
      return res.latency.p50Us;
    case 'CPU/op':
      return res.serverCpuUsPerOp;
  }
}

function fmtMetric(v: number, m: Metric): string {
  switch (m) {
    case 'ops/s':
      return `${fmtNum(v)} ops/s`;
    case 'p50':
      return `${fmtNum(v / 1000)} ms`;
    case 'CPU/op':
      return `${fmtNum(v)} µs`;
  }
}

/**
 * One target: `metric` of (workload a, side a) compared with `limit` × `metric` of (workload b,
 * side b). 'atLeast' passes when a ≥ limit × b, 'atMost' when a ≤ limit × b, 'above' when a > b.
 */
function judge(
  id: string,
  description: string,
  m: Metric,
  a: { res: BenchResult | undefined; label: string },
  b: { res: BenchResult | undefined; label: string },
  how: 'atLeast' | 'atMost' | 'above',
  limit = 1,
): TargetResult {
  const va = metric(a.res, m);
  const vb = metric(b.res, m);
  const rule: TargetRule = { how, limit };
  const missing = [va === undefined ? a.label : undefined, vb === undefined ? b.label : undefined].filter((x) => x !== undefined);
  if (missing.length > 0) return { id, description, verdict: 'N/A', detail: `no ${m} figure for ${missing.join(' and ')}`, rule };
  const r = ratio(va, vb);
  if (r === undefined) return { id, description, verdict: 'N/A', detail: `${b.label} ${m} is 0`, rule };
  return {
    id,
    description,
    verdict: meets(r, rule) ? 'PASS' : 'MISS',
    detail: `${a.label} ${fmtMetric(va!, m)} vs ${b.label} ${fmtMetric(vb!, m)}: ${fmtVerdictRatio(r, rule)} (needs ${ruleText(rule)})`,
    ratio: r,
    rule,
  };
}

function meets(r: number, rule: TargetRule): boolean {
  return rule.how === 'atLeast' ? r >= rule.limit : rule.how === 'atMost' ? r <= rule.limit : r > rule.limit;
}

/**
 * A ratio in a verdict's text: two decimals, or as many more (up to six) as it takes to tell a ratio
 * that is not the limit from the limit (0.998× against "≥ 1.0×" is a miss that two decimals would
 * print as 1.00×, and 0.9996× one that three would print as 1.000×).
 */
export function fmtVerdictRatio(r: number | undefined, rule: TargetRule): string {
  if (r === undefined || r === rule.limit) return fmtRatio(r);
  for (let digits = 2; digits < 6; digits++) {
    const s = r.toFixed(digits);
    if (s !== rule.limit.toFixed(digits)) return `${s}×`;
  }
  return `${r.toFixed(6)}×`;
}

function ruleText(rule: TargetRule): string {
  return `${rule.how === 'atLeast' ? '≥' : rule.how === 'atMost' ? '≤' : '>'} ${rule.limit.toFixed(1)}×`;
}

/** The targets of issue 8, from the pairs (matched by name; see WORKLOADS). */
export function evaluateTargets(pairs: readonly ComparePair[]): TargetResult[] {
  const find = (name: string): ComparePair | undefined => pairs.find((p) => p.name === name);
  const side = (name: string, s: Side, label = `${s} ${name}`): { res: BenchResult | undefined; label: string } => ({
    res: find(name)?.[s],
    label,
  });
  const W = WORKLOADS;
  return [
    judge('1', 'put-64 throughput ≥ 1.0× etcd', 'ops/s', side(W.put64, 'raftkv'), side(W.put64, 'etcd'), 'atLeast'),
    judge('2', 'put-1 p50 latency ≤ 1.0× etcd', 'p50', side(W.put1, 'raftkv'), side(W.put1, 'etcd'), 'atMost'),
    judge('3', 'get-lin-64 throughput ≥ 1.0× etcd', 'ops/s', side(W.getLin64, 'raftkv'), side(W.getLin64, 'etcd'), 'atLeast'),
    judge(
      '4a',
      'raftkv LEASE get CPU/op ≤ 0.7× raftkv LINEARIZABLE get CPU/op',
      'CPU/op',
      side(W.getLease64, 'raftkv', 'raftkv LEASE'),
      side(W.getLin64, 'raftkv', 'raftkv LINEARIZABLE'),
      'atMost',
      0.7,
    ),
    judge(
      '4b',
      'raftkv LEASE get throughput > LINEARIZABLE get throughput',
      'ops/s',
      side(W.getLease64, 'raftkv', 'raftkv LEASE'),
      side(W.getLin64, 'raftkv', 'raftkv LINEARIZABLE'),
      'above',
    ),
    judge('5a', 'put-64 server CPU/op ≤ 1.0× etcd', 'CPU/op', side(W.put64, 'raftkv'), side(W.put64, 'etcd'), 'atMost'),
    judge('5b', 'put-1 server CPU/op ≤ 1.0× etcd', 'CPU/op', side(W.put1, 'raftkv'), side(W.put1, 'etcd'), 'atMost'),
    judge('5c', 'get-lin-64 server CPU/op ≤ 1.0× etcd', 'CPU/op', side(W.getLin64, 'raftkv'), side(W.getLin64, 'etcd'), 'atMost'),
    judge(
      '5d',
      'raftkv LEASE get server CPU/op ≤ 1.0× etcd linearizable get',
      'CPU/op',
      side(W.getLease64, 'raftkv', 'raftkv LEASE'),
      side(W.getLease64, 'etcd', 'etcd linearizable'),
      'atMost',
    ),
  ];
}

// ---- text ---------------------------------------------------------------------------------------

const DASH = '–';

/** A figure with 3 significant digits at most, grouped (12,345 / 678 / 4.56 / 0.123). */
export function fmtNum(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return DASH;
  const abs = Math.abs(v);
  if (abs >= 100) return Math.round(v).toLocaleString('en-US');
  if (abs >= 10) return v.toFixed(1);
  if (abs >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

export function fmtRatio(r: number | undefined): string {
  return r === undefined ? DASH : `${r.toFixed(2)}×`;
}

/** A Markdown table (pipes and a separator row) whose columns are also aligned for a terminal. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[], rightAlignFrom = 1): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const cell = (s: string, c: number): string => (c >= rightAlignFrom ? s.padStart(widths[c]!) : s.padEnd(widths[c]!));
  const line = (cells: readonly string[]): string => `| ${header.map((_, c) => cell(cells[c] ?? '', c)).join(' | ')} |`;
  const sep = `|${widths.map((w, c) => (c >= rightAlignFrom ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}

/** The side-by-side table; every ratio is raftkv ÷ etcd. */
export function formatCompareTable(rows: readonly CompareRow[]): string {
  const header = [
    'workload',
    'raftkv ops/s', 'etcd ops/s', 'ratio',
    'raftkv p50 ms', 'etcd p50 ms', 'ratio',
    'raftkv p99 ms', 'etcd p99 ms', 'ratio',
    'raftkv CPU µs/op', 'etcd CPU µs/op', 'ratio',
  ];
  const body = rows.map((r) => [
    r.name,
    fmtNum(r.raftkvOpsPerSec), fmtNum(r.etcdOpsPerSec), fmtRatio(r.opsRatio),
    fmtNum(r.raftkvP50Ms), fmtNum(r.etcdP50Ms), fmtRatio(r.p50Ratio),
    fmtNum(r.raftkvP99Ms), fmtNum(r.etcdP99Ms), fmtRatio(r.p99Ratio),
    fmtNum(r.raftkvCpuUsPerOp), fmtNum(r.etcdCpuUsPerOp), fmtRatio(r.cpuRatio),
  ]);
  return markdownTable(header, body);
}

const ROLE_HEADER = ['workload', 'raftkv leader', 'etcd leader', 'ratio', 'raftkv follower', 'etcd follower', 'ratio'];
const ROLE_TITLE = 'Server CPU per operation by role, µs (a follower: the mean of the two; ratio = raftkv ÷ etcd)';

/** The server CPU per operation split into the leader's and a follower's; empty when no row has it. */
export function formatRoleTable(rows: readonly CompareRow[]): string {
  const has = rows.filter((r) => r.raftkvLeaderCpuUsPerOp !== undefined || r.etcdLeaderCpuUsPerOp !== undefined);
  if (has.length === 0) return '';
  const body = has.map((r) => [
    r.name,
    fmtNum(r.raftkvLeaderCpuUsPerOp), fmtNum(r.etcdLeaderCpuUsPerOp), fmtRatio(r.leaderCpuRatio),
    fmtNum(r.raftkvFollowerCpuUsPerOp), fmtNum(r.etcdFollowerCpuUsPerOp), fmtRatio(r.followerCpuRatio),
  ]);
  return markdownTable(ROLE_HEADER, body);
}

/** One verdict per target, its figures on the line below (one run's, or the rounds' summary). */
export function formatTargets(targets: readonly Pick<TargetResult, 'id' | 'verdict' | 'description' | 'detail'>[]): string {
  const idWidth = Math.max(0, ...targets.map((t) => t.id.length)) + 2;
  return targets.map((t) => `${`(${t.id})`.padEnd(idWidth)} ${t.verdict.padEnd(4)}  ${t.description}\n${' '.repeat(idWidth + 7)}${t.detail}`).join('\n');
}

/** "3 PASS, 6 MISS" (and N/A when any). */
function verdictCounts(targets: readonly { readonly verdict: Verdict }[]): string {
  const counts = (v: Verdict): number => targets.filter((t) => t.verdict === v).length;
  return `${counts('PASS')} PASS, ${counts('MISS')} MISS${counts('N/A') > 0 ? `, ${counts('N/A')} N/A` : ''}`;
}

/** Errors of each run, one line per run that had any. */
export function formatErrors(pairs: readonly ComparePair[]): string[] {
  const out: string[] = [];
  for (const p of pairs) {
    for (const s of ['raftkv', 'etcd'] as const) {
      const res = p[s];
      if (res === undefined) continue;
      const entries = Object.entries(res.errors).filter(([, n]) => n > 0);
      if (entries.length === 0) continue;
      const total = entries.reduce((sum, [, n]) => sum + n, 0);
      out.push(`${s} ${p.name}: ${total} errors (${entries.map(([k, n]) => `${k} ${n}`).join(', ')}) in ${res.ops} ops`);
    }
  }
  return out;
}

/** The whole comparison: table, notes, errors, targets. */
export function formatComparison(pairs: readonly ComparePair[]): string {
  const rows = pairs.map(buildRow);
  const notes = pairs.filter((p) => p.note !== undefined).map((p) => `- ${p.name}: ${p.note}`);
  const errors = formatErrors(pairs);
  const targets = evaluateTargets(pairs);
  const roles = formatRoleTable(rows);
  return [
    'Side by side (ratio = raftkv ÷ etcd: above 1× is better for ops/s, below 1× is better for latency and CPU)',
    '',
    formatCompareTable(rows),
    ...(roles !== '' ? ['', ROLE_TITLE, '', roles] : []),
    ...(notes.length > 0 ? ['', 'Notes:', ...notes] : []),
    '',
    errors.length > 0 ? `Errors:\n${errors.map((e) => `- ${e}`).join('\n')}` : 'Errors: none',
    '',
    `Targets (issue 8): ${verdictCounts(targets)}`,
    formatTargets(targets),
  ].join('\n');
}

// ---- several rounds -----------------------------------------------------------------------------
//
// On a shared machine one run of a workload can move by tens of percent, as much as some of the gaps
// the targets measure. Several rounds (every workload on both systems, again) give each ratio a
// spread, and the verdict rests on the median ratio instead of on one draw.

/** The middle value (the mean of the two middle ones for an even count); undefined for none. */
export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1]! + s[mid]!) / 2;
}

export interface RoundsTarget {
  readonly id: string;
  readonly description: string;
  /** Each round's ratio, in round order (undefined where that round had no figure). */
  readonly ratios: readonly (number | undefined)[];
  readonly median?: number;
  /** Judged on the median ratio; N/A when no round had a figure. */
  readonly verdict: Verdict;
  /** Rounds whose own verdict was PASS. */
  readonly passedRounds: number;
  readonly rule: TargetRule;
}

/** The targets over several rounds of pairs (each round as evaluateTargets takes it). */
export function summarizeRounds(rounds: readonly (readonly ComparePair[])[]): RoundsTarget[] {
  const perRound = rounds.map(evaluateTargets);
  const first = perRound[0] ?? evaluateTargets([]);
  return first.map((t, k) => {
    const results = perRound.map((targets) => targets[k]!);
    const ratios = results.map((x) => x.ratio);
    const m = median(ratios.filter((r): r is number => r !== undefined));
    return {
      id: t.id,
      description: t.description,
      ratios,
      ...(m !== undefined ? { median: m } : {}),
      verdict: m === undefined ? 'N/A' : meets(m, t.rule) ? 'PASS' : 'MISS',
      passedRounds: results.filter((x) => x.verdict === 'PASS').length,
      rule: t.rule,
    };
  });
}

/** Per workload, each ratio's median over the rounds and its range. */
export function formatRoundsTable(rounds: readonly (readonly ComparePair[])[]): string {
  const names = [...new Set(rounds.flatMap((pairs) => pairs.map((p) => p.name)))];
  const cell = (values: readonly (number | undefined)[]): string => {
    const vs = values.filter((v): v is number => v !== undefined);
    if (vs.length === 0) return DASH;
    const m = median(vs)!;
    return vs.length === 1 ? fmtRatio(m) : `${fmtRatio(m)} (${fmtRatio(Math.min(...vs))}–${fmtRatio(Math.max(...vs))})`;
  };
  const body = names.map((name) => {
    const rows = rounds.map((pairs) => pairs.find((p) => p.name === name)).filter((p) => p !== undefined).map(buildRow);
    return [name, cell(rows.map((r) => r.opsRatio)), cell(rows.map((r) => r.p50Ratio)), cell(rows.map((r) => r.p99Ratio)), cell(rows.map((r) => r.cpuRatio))];
  });
  return markdownTable(['workload', 'ops/s ratio', 'p50 ratio', 'p99 ratio', 'CPU/op ratio'], body);
}

/** The fields of a row that the table by role shows. */
const ROLE_FIELDS = [
  'raftkvLeaderCpuUsPerOp',
  'etcdLeaderCpuUsPerOp',
  'leaderCpuRatio',
  'raftkvFollowerCpuUsPerOp',
  'etcdFollowerCpuUsPerOp',
  'followerCpuRatio',
] as const satisfies readonly (keyof CompareRow)[];

/** Per workload, the median over the rounds of each role's CPU per operation and of its ratios; empty when none has it. */
export function formatRoundsRoleTable(rounds: readonly (readonly ComparePair[])[]): string {
  const names = [...new Set(rounds.flatMap((pairs) => pairs.map((p) => p.name)))];
  const rows = names.map((name) => {
    const rs = rounds.map((pairs) => pairs.find((p) => p.name === name)).filter((p) => p !== undefined).map(buildRow);
    const row: { -readonly [K in keyof CompareRow]: CompareRow[K] } = { name };
    for (const k of ROLE_FIELDS) row[k] = median(rs.map((r) => r[k]).filter((v): v is number => v !== undefined));
    return row;
  });
  return formatRoleTable(rows);
}

/** The summary of several rounds: the median-ratio table and the targets judged on the medians. */
export function formatRounds(rounds: readonly (readonly ComparePair[])[]): string {
  const targets = summarizeRounds(rounds);
  const lines = targets.map((t) => ({
    ...t,
    detail: `median ${fmtVerdictRatio(t.median, t.rule)} (needs ${ruleText(t.rule)}); rounds ${t.ratios.map((r) => fmtVerdictRatio(r, t.rule)).join(', ')}; passed in ${t.passedRounds} of ${rounds.length}`,
  }));
  const roles = formatRoundsRoleTable(rounds);
  return [
    `Across ${rounds.length} rounds: median ratio (lowest–highest), raftkv ÷ etcd`,
    '',
    formatRoundsTable(rounds),
    ...(roles !== '' ? ['', `${ROLE_TITLE.replace(', µs', ', µs, median of the rounds')}`, '', roles] : []),
    '',
    `Targets (issue 8) on the median of ${rounds.length} rounds: ${verdictCounts(targets)}`,
    formatTargets(lines),
  ].join('\n');
}
