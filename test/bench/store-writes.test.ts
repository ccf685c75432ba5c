// bench/store-writes.ts: its figures' arithmetic, one writer in this process, and a run of two child
// processes through the script's command line. No assertion on speed.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { combine, MAX_PREPARED_BYTES, parseProcesses, writeBatches } from '../../bench/store-writes.js';
import { percentile } from '../../bench/support/percentile.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('percentile, combine and parseProcesses', () => {
  it('take the nearest rank, and the median over the processes of each figure', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect([percentile(sorted, 0.5), percentile(sorted, 0.9), percentile(sorted, 0.99), percentile(sorted, 0)]).toEqual([5, 9, 10, 1]);
    expect(percentile([], 0.5)).toBeNaN();
    const child = (p50Ms: number, cpuUsPerEntry: number) => ({ p50Ms, p90Ms: p50Ms * 2, p99Ms: p50Ms * 3, opsPerBatch: 10, cpuUsPerEntry });
    expect(combine(3, [child(3, 30), child(1, 10), child(2, 20)])).toEqual({ processes: 3, p50Ms: 2, p90Ms: 4, p99Ms: 6, opsPerBatch: 10, cpuUsPerEntry: 20 });
    // Of two processes, the mean.
    expect(combine(2, [child(1, 10), child(2, 30)])).toMatchObject({ p50Ms: 1.5, cpuUsPerEntry: 20 });
    expect(() => combine(1, [])).toThrow(RangeError);
  });

  it('reads a list of process counts and refuses anything else', () => {
    expect(parseProcesses('1,3')).toEqual([1, 3]);
    expect(parseProcesses(' 2 ')).toEqual([2]);
    for (const bad of ['', '0', '17', '1,,3', '1.5', 'x', '-1']) expect(() => parseProcesses(bad), bad).toThrow(/--processes/);
  });
});

describe('writeBatches', () => {
  it('persists the entries alone with --applies none: the entries and the hard state per batch', async () => {
    const r = await writeBatches({ entries: 4, batches: 5, valueBytes: 16, applies: 'none' });
    expect(r.opsPerBatch).toBe(5);
    expect(r.p50Ms).toBeGreaterThan(0);
    expect(r.p50Ms).toBeLessThanOrEqual(r.p90Ms);
    expect(r.p90Ms).toBeLessThanOrEqual(r.p99Ms);
    expect(r.cpuUsPerEntry).toBeGreaterThan(0);
  });

  it("carries the previous batch's applies with --applies combined: data, sessions, applied index and clock", async () => {
    const r = await writeBatches({ entries: 4, batches: 5, valueBytes: 16, applies: 'combined' });
    // Batch 1: 4 entries and the hard state. Batches 2 to 5 add the previous batch's applies: its 4
    // keys (the fixed seed's draw repeats none within a batch), 4 sessions (one per client), the
    // applied index and the clock.
    expect(r.opsPerBatch).toBe((5 + 4 * (5 + 4 + 4 + 2)) / 5);
  });
});

describe('the script', () => {
  it('runs a child process per writer, one run per process count, and leaves no directory behind', () => {
    const dir = mkdtempSync(join(tmpdir(), 'raftkv-store-writes-test-'));
    try {
      const file = join(dir, 'out.json');
      const args = ['--import', 'tsx', 'bench/store-writes.ts', '--processes', '1,2', '--entries', '3', '--batches', '4', '--json', file];
      const run = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, TMPDIR: dir } });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toContain('| processes at once |');
      const doc = JSON.parse(readFileSync(file, 'utf8')) as { runs: { processes: number; opsPerBatch: number }[] };
      expect(doc.runs.map((r) => r.processes)).toEqual([1, 2]);
      // 3 entries and the hard state, and from the second batch on the previous batch's 3 keys and 3
      // sessions, the applied index and the clock: (4 + 3 × 12) / 4.
      for (const r of doc.runs) expect(r.opsPerBatch).toBe(10);
      // The children's stores were in TMPDIR (where tsx also keeps its cache), and are gone.
      expect(readdirSync(dir).filter((name) => name.startsWith('raftkv-store-writes-'))).toEqual([]);
      expect(readdirSync(dir)).toContain('out.json');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a bad option value, or a run over its memory limit, with the usage and exit code 64', () => {
    const refuse = (args: string[], message: string): void => {
      const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/store-writes.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
      expect(run.status, run.stderr).toBe(64);
      expect(run.stderr).toContain(message);
      expect(run.stderr).toContain('usage: npx tsx bench/store-writes.ts');
    };
    refuse(['--applies', 'sometimes'], '--applies must be combined or none');
    refuse(['--batches', '1000000', '--entries', '64'], `over the limit of ${MAX_PREPARED_BYTES} (MAX_PREPARED_BYTES)`);
  });
});
