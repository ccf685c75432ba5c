// The runtime's tick clock and its test-only rate skew (setClockRate, for the clock-drift nemesis),
// with a fake core that only counts ticks. The bounds on real time are one-sided where they are exact
// (a tick is never given before the skewed clock reaches it) and generous where they depend on the
// event loop being on time.

import { afterEach, describe, expect, it } from 'vitest';
import { MAX_CLOCK_RATE, RaftRuntime } from '../../src/node/raft-runtime.js';
import type { Raft } from '../../src/raft/raft.js';
import { waitFor } from '../support/wait.js';

const silent = { info() {}, warn() {}, error() {}, debug() {} };

const TICK_MS = 5;
/** Large, so that the catch-up cap (4 election timeouts) drops no ticks when the event loop runs late. */
const ELECTION_TIMEOUT_TICKS = 100;

interface Counted {
  runtime: RaftRuntime<undefined, never>;
  /** Ticks the core was given. */
  ticks: number;
}

const running: RaftRuntime<undefined, never>[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.stop();
});

/** A runtime over a core that counts ticks and never has work. */
function counted(): Counted {
  const c = { ticks: 0 } as Counted;
  const raft = {
    appliedIndex: 0,
    snapshot: { index: 0, term: 0 },
    pendingSnapshot: undefined,
    tick() {
      c.ticks++;
    },
    hasQuorumContact: () => true,
    hasReady: () => false,
  } as unknown as Raft;
  c.runtime = new RaftRuntime<undefined, never>({
    raft,
    store: { persist: async () => {}, compactLog: async () => 0 },
    stateMachine: { apply: async (es) => es.map(() => undefined), reload: async () => {} },
    transport: { send() {} },
    snapshots: { send() {} },
    snapshotPolicy: { snapshotEntries: 0, snapshotBytes: 0, compactionMarginEntries: 0 },
    tickMs: TICK_MS,
    maxPendingProposals: 10,
    maxPendingReads: 10,
    electionTimeoutTicks: ELECTION_TIMEOUT_TICKS,
    logger: silent as never,
    onFatal: (e) => {
      throw e;
    },
  });
  running.push(c.runtime);
  return c;
}

/** Starts a runtime at `rate` and returns the real ms it took to give the core `n` ticks. */
async function realMsForTicks(rate: number, n: number): Promise<number> {
  const c = counted();
  const t0 = performance.now();
  c.runtime.start();
  if (rate !== 1) c.runtime.setClockRate(rate);
  await waitFor(() => c.ticks >= n, 20_000, `${n} ticks at rate ${rate}`, 2);
  return performance.now() - t0;
}

describe('RaftRuntime tick clock', () => {
  it.each([
    // [rate, ticks to wait for]: about 0.5 s of real time each.
    [1, 100],
    [2, 200],
    [0.5, 50],
  ])('at rate %s gives the core ticks at that multiple of real time', async (rate, n) => {
    const expectedMs = (n * TICK_MS) / rate;
    const tookMs = await realMsForTicks(rate, n);
    // Exact: tick n is due once the clock, at `rate`, has run n * TICK_MS (less a timer's rounding).
    expect(tookMs).toBeGreaterThanOrEqual(expectedMs - 2);
    // Generous: the event loop may run late, but catch-up gives every due tick at the next timer.
    // Still well under the real-time figure for rate 2 (n * TICK_MS = 1000 ms).
    expect(tookMs).toBeLessThan(expectedMs * 1.3 + 200);
  });

  it('a rate change continues from where the clock is: no burst of ticks when it speeds up, no stall when it slows', async () => {
    const c = counted();
    c.runtime.start();
    await waitFor(() => c.ticks >= 40, 20_000, '40 ticks at real time', 2);
    // Ten times as fast from here: the 40 ticks already given are not multiplied after the fact
    // (that would be a burst of about 40 * 9 ticks).
    c.runtime.catchUpTicks();
    const before = c.ticks;
    c.runtime.setClockRate(10);
    c.runtime.catchUpTicks();
    expect(c.ticks - before).toBeLessThanOrEqual(1);
    await waitFor(() => c.ticks >= before + 200, 20_000, '200 more ticks at rate 10', 2);

    // Back down to half speed after the fast phase: the clock is now well ahead of real time, and
    // goes on from there rather than waiting for real time to catch up with it.
    c.runtime.catchUpTicks();
    const fast = c.ticks;
    c.runtime.setClockRate(0.5);
    const t0 = performance.now();
    await waitFor(() => c.ticks >= fast + 10, 20_000, '10 more ticks at rate 0.5', 2);
    const tookMs = performance.now() - t0;
    // 10 ticks at half speed: 9 to 10 tick lengths of the slowed clock, since the first may be partly run.
    expect(tookMs).toBeGreaterThanOrEqual((9 * TICK_MS) / 0.5 - 2);
    expect(tookMs).toBeLessThan(((10 * TICK_MS) / 0.5) * 1.3 + 200);
  });

  it('refuses a rate outside (0, MAX_CLOCK_RATE]', () => {
    const c = counted();
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, MAX_CLOCK_RATE + 0.01]) {
      expect(() => c.runtime.setClockRate(bad), String(bad)).toThrow(RangeError);
    }
    expect(() => c.runtime.setClockRate(MAX_CLOCK_RATE)).not.toThrow();
    expect(() => c.runtime.setClockRate(0.001)).not.toThrow();
  });
});
