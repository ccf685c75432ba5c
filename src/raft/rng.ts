import type { Rng } from './types.js';

export interface SeededRng extends Rng {
  /** The next 32-bit unsigned integer. */
  next(): number;
  /** A float in [0, 1). */
  float(): number;
}

/**
 * A small seeded PRNG (mulberry32). Deterministic for a given seed, so a simulator run is replayed by
 * its seed alone. Not for cryptography.
 */
export function createRng(seed: number): SeededRng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    next,
    float: () => next() / 4294967296,
    int: (n: number) => {
      if (!Number.isInteger(n) || n <= 0) throw new RangeError(`rng.int: n must be a positive integer, got ${n}`);
      return Math.floor((next() / 4294967296) * n);
    },
  };
}
