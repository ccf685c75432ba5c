// Reconnect delays: exponential, capped, with jitter so that the nodes of a cluster that lost a peer
// at the same moment do not all knock on its door at the same moment.

export interface BackoffOptions {
  /** The first delay's upper bound, in ms. */
  readonly minMs: number;
  /** The cap on any delay, in ms. Invariant: minMs <= maxMs. */
  readonly maxMs: number;
  /** A float in [0, 1); Math.random unless a test makes it deterministic. */
  readonly random: () => number;
}

export class Backoff {
  /** Failed attempts since the last success. */
  private attempts = 0;

  constructor(private readonly options: BackoffOptions) {
    const { minMs, maxMs } = options;
    if (!(Number.isFinite(minMs) && minMs >= 0 && Number.isFinite(maxMs) && maxMs >= minMs)) {
      throw new RangeError(`backoff: need 0 <= minMs <= maxMs, got minMs=${minMs} maxMs=${maxMs}`);
    }
  }

  /**
   * The delay before the next attempt: "equal jitter" over min(maxMs, minMs * 2^attempts), that is,
   * uniformly in [ceiling / 2, ceiling). Half the ceiling is guaranteed, so a flapping peer is not
   * hammered; the other half is random, so retries spread out.
   */
  nextDelayMs(): number {
    const ceiling = Math.min(this.options.maxMs, this.options.minMs * 2 ** Math.min(this.attempts, 30));
    this.attempts++;
    return Math.floor(ceiling / 2 + this.options.random() * (ceiling / 2));
  }

  reset(): void {
    this.attempts = 0;
  }
}
