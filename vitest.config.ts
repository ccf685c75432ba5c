import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // CI has 2 cores; without this vitest 3 uses one worker there and runs the simulator files in turn.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
