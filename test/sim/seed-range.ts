// Runs a range of seeds for the vitest suites and reports, for a failing seed, everything needed to
// replay it.

import { formatFailure, runSeed } from './run.js';

export interface SeedRangeReport {
  readonly seeds: number;
  readonly elapsedMs: number;
  /** Seeds per cluster size, to show that both 3- and 5-node clusters ran. */
  readonly byClusterSize: ReadonlyMap<number, number>;
  /** One full report per failing seed: the check, the trace tail and the replay command. */
  readonly failures: readonly string[];
}

export function runSeedRange(start: number, count: number): SeedRangeReport {
  const t0 = performance.now();
  const byClusterSize = new Map<number, number>();
  const failures: string[] = [];
  for (let seed = start; seed < start + count; seed++) {
    const r = runSeed(seed);
    byClusterSize.set(r.config.clusterSize, (byClusterSize.get(r.config.clusterSize) ?? 0) + 1);
    if (r.violation !== undefined) failures.push(formatFailure(r));
  }
  return { seeds: count, elapsedMs: performance.now() - t0, byClusterSize, failures };
}
