// Helpers over the seeded PRNG. The simulator draws every random choice through these, from one
// generator created from the seed, so the seed alone decides a run.

import { createRng } from '../../src/raft/rng.js';

export type SimRng = ReturnType<typeof createRng>;

export { createRng };

/** An integer in [lo, hi] (both inclusive). */
export function intBetween(rng: SimRng, lo: number, hi: number): number {
  if (hi < lo) throw new Error(`intBetween: empty range [${lo}, ${hi}]`);
  return lo + rng.int(hi - lo + 1);
}

/** True with probability p. Draws nothing when p is 0, so a disabled fault does not shift the stream. */
export function chance(rng: SimRng, p: number): boolean {
  if (p <= 0) return false;
  return rng.float() < p;
}

export function pick<T>(rng: SimRng, items: readonly T[]): T {
  if (items.length === 0) throw new Error('pick: no items');
  return items[rng.int(items.length)]!;
}

/** A Fisher-Yates shuffle into a new array. */
export function shuffled<T>(rng: SimRng, items: readonly T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = out[i]!;
    out[i] = out[j]!;
    out[j] = tmp;
  }
  return out;
}

/** An exponentially distributed delay with the given mean, at least 1. */
export function exponential(rng: SimRng, mean: number): number {
  return Math.max(1, Math.round(-Math.log(1 - rng.float()) * mean));
}
