// The per-file hooks every process-cluster test needs: print the nodes' recent output when a test
// fails, and always stop the nodes and remove their folder after the file. (Kept apart from
// process-cluster.ts, which the benchmark scripts import outside vitest.)

import { afterAll, beforeEach } from 'vitest';
import type { ProcessCluster } from './process-cluster.js';

export function reportAndCleanUp(cluster: () => ProcessCluster | undefined): void {
  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => console.error(`kvnode output:\n${cluster()?.describe() ?? '(no cluster)'}`));
  });
  afterAll(async () => {
    await cluster()?.cleanup();
  });
}
