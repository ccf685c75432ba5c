import { describe, expect, it } from 'vitest';
import { Backoff } from '../../src/transport/backoff.js';
import { RingQueue } from '../../src/transport/ring-queue.js';

describe('Backoff', () => {
  it('doubles up to the cap, with the upper half of each step jittered, and resets', () => {
    const low = new Backoff({ minMs: 100, maxMs: 1000, random: () => 0 });
    expect([1, 2, 3, 4, 5, 6].map(() => low.nextDelayMs())).toEqual([50, 100, 200, 400, 500, 500]);
    low.reset();
    expect(low.nextDelayMs()).toBe(50);
    const high = new Backoff({ minMs: 100, maxMs: 1000, random: () => 0.999999 });
    expect([1, 2, 3, 4, 5].map(() => high.nextDelayMs())).toEqual([99, 199, 399, 799, 999]);
  });

  it('never overflows after many failures', () => {
    const b = new Backoff({ minMs: 10, maxMs: 2000, random: () => 0.5 });
    for (let i = 0; i < 10_000; i++) expect(b.nextDelayMs()).toBeLessThanOrEqual(2000);
  });
});

describe('RingQueue', () => {
  it('is a FIFO of fixed capacity that wraps around', () => {
    const q = new RingQueue<number>(3);
    q.push(1);
    q.push(2);
    q.push(3);
    expect(q.full).toBe(true);
    expect(() => q.push(4)).toThrow(/full/);
    expect(q.shift()).toBe(1);
    q.push(4);
    expect([q.shift(), q.shift(), q.peek(), q.shift(), q.shift()]).toEqual([2, 3, 4, 4, undefined]);
    expect(q.length).toBe(0);
  });
});
