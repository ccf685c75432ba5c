// ReadPacer: at most perTurn reads per turn of the event loop, the rest in order on later turns, a
// read whose deadline passed while it waited refused with TIMEOUT, a bounded queue, and no pacing
// at all with 0.

import { describe, expect, it } from 'vitest';
import { LimitError, RaftKvError } from '../../src/errors.js';
import { MAX_READS_PER_TURN, ReadPacer } from '../../src/node/read-pacer.js';

/** One turn of the event loop: resolves after the immediates queued before it (the pacer's) ran. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const FAR = Number.MAX_SAFE_INTEGER;

/**
 * Calls turn() `n` times; records in `went` each read's number when it may be served, and in
 * `failed` the errors of those refused later.
 */
function reads(p: ReadPacer, n: number, went: number[], from = 1, deadlineMs = FAR, failed: [number, unknown][] = []): void {
  for (let i = from; i < from + n; i++) {
    const t = p.turn(deadlineMs);
    if (t === undefined) went.push(i);
    else
      t.then(
        () => went.push(i),
        (e: unknown) => failed.push([i, e]),
      );
  }
}

describe('ReadPacer', () => {
  it('lets perTurn reads go at once and the others in order, perTurn per later turn', async () => {
    const p = new ReadPacer(2, 100);
    const went: number[] = [];
    reads(p, 7, went);
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

  it('counts the reads it let go at a turn with those that go at once after it, and starts again after a quiet turn', async () => {
    const p = new ReadPacer(2, 100);
    const went: number[] = [];
    reads(p, 3, went);
    await nextTurn();
    expect(went).toEqual([1, 2, 3]);
    // One of this turn's two places is taken (read 3): the next read goes, the one after waits.
    reads(p, 2, went, 4);
    expect(went).toEqual([1, 2, 3, 4]);
    await nextTurn();
    expect(went).toEqual([1, 2, 3, 4, 5]);
    await nextTurn();
    await nextTurn();
    reads(p, 2, went, 6);
    expect(went).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('refuses with TIMEOUT a read whose deadline passed while it waited; it takes no place in the turn', async () => {
    const p = new ReadPacer(1, 100);
    const went: number[] = [];
    const failed: [number, unknown][] = [];
    reads(p, 1, went);
    reads(p, 1, went, 2, Date.now() - 1, failed);
    reads(p, 1, went, 3, FAR, failed);
    expect(went).toEqual([1]);
    await nextTurn();
    expect(went).toEqual([1, 3]);
    expect(failed).toHaveLength(1);
    const [which, err] = failed[0]!;
    expect(which).toBe(2);
    expect(err).toBeInstanceOf(RaftKvError);
    expect((err as RaftKvError).code).toBe('TIMEOUT');
  });

  it('with 0 lets every read go at once', () => {
    const p = new ReadPacer(0, 1);
    const went: number[] = [];
    reads(p, 1000, went);
    expect(went).toHaveLength(1000);
    expect(p.waitingCount).toBe(0);
  });

  it('refuses a read beyond its capacity with a LimitError naming maxPendingReads and its value', async () => {
    const p = new ReadPacer(1, 2);
    const went: number[] = [];
    reads(p, 3, went);
    expect(went).toEqual([1]);
    let err: unknown;
    try {
      p.turn(FAR);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LimitError);
    expect((err as LimitError).code).toBe('TOO_MANY_REQUESTS');
    expect((err as LimitError).limit).toBe('maxPendingReads');
    expect((err as LimitError).value).toBe(2);
    expect((err as Error).message).toContain('limit maxPendingReads=2');
    // The refused read took no place: the two waiting go, one per turn.
    await nextTurn();
    await nextTurn();
    expect(went).toEqual([1, 2, 3]);
  });

  it('refuses a perTurn that is not an integer in [0, MAX_READS_PER_TURN]', () => {
    for (const bad of [-1, 1.5, Number.NaN, MAX_READS_PER_TURN + 1]) {
      expect(() => new ReadPacer(bad, 10)).toThrow(`must be an integer in [0, ${MAX_READS_PER_TURN}]`);
    }
    expect(() => new ReadPacer(MAX_READS_PER_TURN, 10)).not.toThrow();
  });
});
