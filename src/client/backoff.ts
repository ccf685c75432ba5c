// Delays between retries: exponential with "full jitter" (a uniform draw in [0, ceiling), the
// ceiling doubling per retry up to a cap), so that many clients failing over at the same moment
// spread their retries instead of arriving together at the new leader.

export interface BackoffOptions {
  /** The ceiling of the first delay, in ms. */
  readonly initialMs: number;
  /** The cap on any delay, in ms. Invariant: 0 <= initialMs <= maxMs. */
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 50, maxMs: 1000 };

export function checkBackoff(b: BackoffOptions): BackoffOptions {
  const { initialMs, maxMs } = b;
  if (!(Number.isFinite(initialMs) && initialMs >= 0 && Number.isFinite(maxMs) && maxMs >= initialMs)) {
    throw new RangeError(`backoff: need 0 <= initialMs <= maxMs, got initialMs=${initialMs} maxMs=${maxMs}`);
  }
  return { initialMs, maxMs };
}

/** The ceiling of the delay before retry number `retry` (0 for the first retry). */
export function backoffCeilingMs(retry: number, b: BackoffOptions): number {
  return Math.min(b.maxMs, b.initialMs * 2 ** Math.min(retry, 30));
}

/** The delay before retry number `retry`: uniform in [0, ceiling), `random` giving floats in [0, 1). */
export function fullJitterMs(retry: number, b: BackoffOptions, random: () => number): number {
  return Math.floor(random() * backoffCeilingMs(retry, b));
}
