// Human-readable output of kvbench: the result block and the live progress line.

import type { BenchResult, OpStats, Progress } from './runner.js';
import { formatMix, OP_KINDS } from './workload.js';

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const one = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

const ms2 = (us: number): string => (us / 1000).toFixed(2);

function pad(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

function latencyTable(rows: ReadonlyArray<readonly [string, OpStats]>): string[] {
  const header = ['latency (ms)', 'count', 'p50', 'p95', 'p99', 'max', 'mean'];
  const body = rows.map(([name, s]) => [`  ${name}`, int.format(s.count), ms2(s.p50Us), ms2(s.p95Us), ms2(s.p99Us), ms2(s.maxUs), ms2(s.meanUs)]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  return [pad(header, widths), ...body.map((r) => pad(r, widths))];
}

/** The result as a block of text (no trailing newline). */
export function formatResult(r: BenchResult): string {
  const w = r.workload;
  const t = r.target;
  const lines: string[] = [];
  const label = t.label !== undefined ? ` "${t.label}"` : '';
  lines.push(`target:     ${t.system}${label}: ${r.targetDescription ?? t.endpoints.join(',')}`);
  const bound = w.ops !== undefined ? `${int.format(w.ops)} ops` : `${one.format((w.durationMs ?? 0) / 1000)} s`;
  const dist = w.keyDistribution === 'zipf' ? `zipf(theta=${w.zipfTheta})` : w.keyDistribution;
  const served = r.consistencyServed === w.consistency ? w.consistency : `${w.consistency} (served: ${r.consistencyServed})`;
  lines.push(
    `workload:   ${w.clients} clients, ${int.format(w.keys)} keys ${dist}, ${int.format(w.valueBytes)} B values, mix ${formatMix(w.mix)}, ` +
      `reads ${served}, seed ${w.seed}`,
  );
  lines.push(`            ${bound} after ${one.format(w.warmupMs / 1000)} s warm-up${r.warmupOps !== undefined ? ` (${int.format(r.warmupOps)} ops)` : ''}, preload ${w.preload ? 'yes' : 'no'}, key prefix "${w.keyPrefix}"`);
  lines.push(`throughput: ${int.format(r.ops)} ops in ${(r.elapsedMs / 1000).toFixed(2)} s = ${int.format(r.opsPerSec)} ops/s`);
  const rows: Array<readonly [string, OpStats]> = [['all', r.latency]];
  for (const k of OP_KINDS) {
    const s = r.byOp[k];
    if (s !== undefined) rows.push([k, s]);
  }
  lines.push(...latencyTable(rows));
  const outcomes: string[] = [];
  if (r.casSucceeded !== undefined) outcomes.push(`cas succeeded ${int.format(r.casSucceeded)} of ${int.format(r.byOp.cas?.count ?? 0)}`);
  if (r.getsFound !== undefined) outcomes.push(`gets found ${int.format(r.getsFound)} of ${int.format(r.byOp.get?.count ?? 0)}`);
  if (outcomes.length > 0) lines.push(`outcomes:   ${outcomes.join(', ')}`);
  const errs = Object.entries(r.errors).sort((a, b) => b[1] - a[1]);
  lines.push(`errors:     ${errs.length === 0 ? 'none' : errs.map(([code, n]) => `${code} ${int.format(n)}`).join(', ')}`);
  if (r.clampedLatencies !== undefined && r.clampedLatencies > 0) lines.push(`            ${int.format(r.clampedLatencies)} latencies above 60 s were recorded as 60 s`);
  if (r.serverCpuMs !== undefined) {
    const perPid = Object.entries(r.serverCpuByPid ?? {})
      .map(([pid, ms]) => `pid ${pid} ${int.format(ms)} ms`)
      .join(', ');
    lines.push(`server CPU: ${one.format(r.serverCpuUsPerOp ?? 0)} µs/op (${int.format(r.serverCpuMs)} ms: ${perPid})`);
  } else {
    lines.push('server CPU: not measured (no --server-pids)');
  }
  lines.push(`client CPU: ${one.format(r.clientCpuUsPerOp)} µs/op (${int.format(r.clientCpuMs)} ms, this process)`);
  return lines.join('\n');
}

/** One line of live progress: "  3.0 s  12,345 ops  4,100 ops/s  p99 12.3 ms  errors 0". */
export function formatProgress(p: Progress): string {
  return `${one.format(p.elapsedMs / 1000).padStart(6)} s  ${int.format(p.ops).padStart(9)} ops  ${int.format(p.opsPerSec).padStart(7)} ops/s  p99 ${one.format(p.p99Us / 1000)} ms  errors ${int.format(p.errors)}`;
}
