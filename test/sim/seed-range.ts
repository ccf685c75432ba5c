// Runs a range of seeds for the vitest suites and reports, for a failing seed, everything needed to
// replay it.

import { afterAll, describe, expect, it } from 'vitest';
import { formatFailure, runSeed } from './run.js';

export interface SeedRangeReport {
  readonly seeds: number;
  readonly elapsedMs: number;
  /** Seeds per cluster size, to show that both 3- and 5-node clusters ran. */
  readonly byClusterSize: ReadonlyMap<number, number>;
  /** One full report per failing seed: the check, the trace tail and the replay command. */
  readonly failures: readonly string[];
  /** Seeds in which some follower installed a snapshot from a leader. */
  readonly withInstall: number;
}

export function runSeedRange(start: number, count: number): SeedRangeReport {
  const t0 = performance.now();
  const byClusterSize = new Map<number, number>();
  const failures: string[] = [];
  let withInstall = 0;
  for (let seed = start; seed < start + count; seed++) {
    const r = runSeed(seed);
    if (r.snapshotsInstalled > 0) withInstall++;
    byClusterSize.set(r.config.clusterSize, (byClusterSize.get(r.config.clusterSize) ?? 0) + 1);
    if (r.violation !== undefined) failures.push(formatFailure(r));
  }
  return { seeds: count, elapsedMs: performance.now() - t0, byClusterSize, failures, withInstall };
}

/**
 * Defines a vitest suite over seeds first..first+count-1, in tests of `chunk` seeds each (so no one
 * synchronous test holds its worker for long), and prints the seed count and time at the end.
 */
export function defineSeedSuite(first: number, count: number, chunk = 100): void {
  describe('fault simulator', () => {
    let seeds = 0;
    let elapsedMs = 0;
    let withInstall = 0;
    const sizes = new Map<number, number>();
    afterAll(() => {
      const bySize = [...sizes].map(([n, c]) => `${c}x${n} nodes`).join(', ');
      console.log(`simulator: ${seeds} seeds (${bySize}; ${withInstall} with a snapshot installed) in ${(elapsedMs / 1000).toFixed(1)} s, ${((1000 * seeds) / elapsedMs).toFixed(0)} seeds/s`);
    });
    const starts = Array.from({ length: Math.ceil(count / chunk) }, (_, k) => first + k * chunk);
    it.each(starts)(`keeps every safety property and recovers, seeds %i..+${chunk - 1}`, (start) => {
      const n = Math.min(chunk, first + count - start);
      const report = runSeedRange(start, n);
      seeds += report.seeds;
      elapsedMs += report.elapsedMs;
      withInstall += report.withInstall;
      for (const [size, c] of report.byClusterSize) sizes.set(size, (sizes.get(size) ?? 0) + c);
      if (report.failures.length > 0) {
        throw new Error(`${report.failures.length} seed(s) violated a property:\n\n${report.failures.join('\n\n')}`);
      }
      expect(report.seeds).toBe(n);
    });
  });
}
