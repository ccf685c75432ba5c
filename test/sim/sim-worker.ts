// A worker thread of the simulator CLI: runs the chunks of seeds it is sent and posts back one
// summary per seed. Seeds are independent, so the result does not depend on how they are spread.

import { parentPort, workerData } from 'node:worker_threads';
import { runSeed, type RunOptions } from './run.js';
import { summarize } from './seed-summary.js';

export interface WorkerRequest {
  readonly seeds: readonly number[];
}

export type WorkerReply = { readonly kind: 'seed'; readonly summary: ReturnType<typeof summarize> } | { readonly kind: 'chunk-done' };

const port = parentPort;
if (port === null) throw new Error('sim-worker.ts must run in a worker thread');
const options = workerData as RunOptions;

port.on('message', (req: WorkerRequest) => {
  for (const seed of req.seeds) {
    const reply: WorkerReply = { kind: 'seed', summary: summarize(runSeed(seed, options)) };
    port.postMessage(reply);
  }
  const done: WorkerReply = { kind: 'chunk-done' };
  port.postMessage(done);
});
