// Seeds 1001..2000 of the fault simulator. The seeds are split over two files so vitest runs them
// on two cores; together they cover 2,000 seeds of 3- and 5-node clusters. Each test runs 100 seeds,
// so no single synchronous test holds its worker for long.

import { afterAll, describe, expect, it } from 'vitest';
import { runSeedRange } from './seed-range.js';

const FIRST_SEED = 1001;
const SEED_COUNT = 1000;
const CHUNK = 100;

describe('fault simulator', () => {
  let seeds = 0;
  let elapsedMs = 0;
  const sizes = new Map<number, number>();
  afterAll(() => {
    const bySize = [...sizes].map(([n, count]) => `${count}x${n} nodes`).join(', ');
    console.log(`simulator: ${seeds} seeds (${bySize}) in ${(elapsedMs / 1000).toFixed(1)} s, ${((1000 * seeds) / elapsedMs).toFixed(0)} seeds/s`);
  });

  const chunks = Array.from({ length: SEED_COUNT / CHUNK }, (_, k) => FIRST_SEED + k * CHUNK);
  it.each(chunks)(`keeps every safety property and recovers, seeds %i..+${CHUNK - 1}`, (start) => {
    const report = runSeedRange(start, CHUNK);
    seeds += report.seeds;
    elapsedMs += report.elapsedMs;
    for (const [n, c] of report.byClusterSize) sizes.set(n, (sizes.get(n) ?? 0) + c);
    if (report.failures.length > 0) {
      throw new Error(`${report.failures.length} seed(s) violated a property:\n\n${report.failures.join('\n\n')}`);
    }
    expect(report.seeds).toBe(CHUNK);
  });
});
