// Seeds 1..1000 of the fault simulator. The seeds are split over two files so vitest runs them
// on two cores; together they cover 2,000 seeds of 3- and 5-node clusters.

import { describe, expect, it } from 'vitest';
import { runSeedRange } from './seed-range.js';

const FIRST_SEED = 1;
const SEED_COUNT = 1000;

describe('fault simulator', () => {
  it(`keeps every safety property and recovers, seeds ${FIRST_SEED}..${FIRST_SEED + SEED_COUNT - 1}`, () => {
    const report = runSeedRange(FIRST_SEED, SEED_COUNT);
    const sizes = [...report.byClusterSize].map(([n, count]) => `${count}x${n} nodes`).join(', ');
    console.log(
      `simulator: ${report.seeds} seeds (${sizes}) in ${(report.elapsedMs / 1000).toFixed(1)} s, ` +
        `${((1000 * report.seeds) / report.elapsedMs).toFixed(0)} seeds/s, ${report.failures.length} violations`,
    );
    if (report.failures.length > 0) {
      throw new Error(`${report.failures.length} seed(s) violated a property:\n\n${report.failures.join('\n\n')}`);
    }
    expect(report.byClusterSize.get(3)).toBeGreaterThan(0);
    expect(report.byClusterSize.get(5)).toBeGreaterThan(0);
  }, 120_000);
});
