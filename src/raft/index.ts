// The public surface of the Raft core.
export { Raft, leaseDurationTicks, type RaftStatus } from './raft.js';
export { createRng, type SeededRng } from './rng.js';
export * from './types.js';
