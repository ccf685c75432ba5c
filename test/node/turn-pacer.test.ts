// TurnPacer: at most perTurn callers per turn of the event loop, the rest in order on later turns,
// a bounded queue, and no pacing at all with 0.

import { describe, expect, it } from 'vitest';
import { LimitError } from '../../src/errors.js';
import { MAX_READS_PER_TURN, TurnPacer } from '../../src/node/turn-pacer.js';

/** One turn of the event loop: resolves after the immediates queued before it (the pacer's) ran. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Calls turn() `n` times; records in `went` each caller's number when it may go on. */
function callers(p: TurnPacer, n: number, went: number[], from = 1): void {
  for (let i = from; i < from + n; i++) {
    const t = p.turn();
    if (t === undefined) went.push(i);
    else void t.then(() => went.push(i));
  }
}

describe('TurnPacer', () => {
  it('lets perTurn callers go at once and the others in order, perTurn per later turn', async () => {
    const p = new TurnPacer(2, 100, 'maxPendingReads');
    const went: number[] = [];
    callers(p, 7, went);
    expect(went).toEqual([1, 2]);
    expect(p.waitingCount).toBe(5);
    await nextTurn();
    expect(went).toEqual([1, 2, 3, 4]);
    await nextTurn();
    expect(went).toEqual([1, 2, 3, 4, 5, 6]);
    await nextTurn();
    expect(went).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(p.waitingCount).toBe(0);
  });

  it('queues a caller behind those already waiting, and lets one go at once again after a quiet turn', async () => {
    const p = new TurnPacer(2, 100, 'maxPendingReads');
    const went: number[] = [];
    callers(p, 3, went);
    await nextTurn();
    expect(went).toEqual([1, 2, 3]);
    // One of this turn's two places is taken (caller 3): the next caller goes, the one after waits.
    callers(p, 2, went, 4);
    expect(went).toEqual([1, 2, 3, 4]);
    await nextTurn();
    expect(went).toEqual([1, 2, 3, 4, 5]);
    await nextTurn();
    await nextTurn();
    callers(p, 2, went, 6);
    expect(went).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('with 0 lets every caller go at once', () => {
    const p = new TurnPacer(0, 1, 'maxPendingReads');
    const went: number[] = [];
    callers(p, 1000, went);
    expect(went).toHaveLength(1000);
    expect(p.waitingCount).toBe(0);
  });

  it('refuses a caller beyond its capacity with a LimitError naming the limit and its value', async () => {
    const p = new TurnPacer(1, 2, 'maxPendingReads');
    const went: number[] = [];
    callers(p, 3, went);
    expect(went).toEqual([1]);
    let err: unknown;
    try {
      p.turn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LimitError);
    expect((err as LimitError).code).toBe('TOO_MANY_REQUESTS');
    expect((err as LimitError).limit).toBe('maxPendingReads');
    expect((err as LimitError).value).toBe(2);
    expect((err as Error).message).toContain('limit maxPendingReads=2');
    // The refused caller took no place: the two waiting go, one per turn.
    await nextTurn();
    await nextTurn();
    expect(went).toEqual([1, 2, 3]);
  });

  it('refuses a perTurn that is not an integer in [0, MAX_READS_PER_TURN]', () => {
    for (const bad of [-1, 1.5, Number.NaN, MAX_READS_PER_TURN + 1]) {
      expect(() => new TurnPacer(bad, 10, 'maxPendingReads')).toThrow(`must be an integer in [0, ${MAX_READS_PER_TURN}]`);
    }
    expect(() => new TurnPacer(MAX_READS_PER_TURN, 10, 'maxPendingReads')).not.toThrow();
  });
});
