// HdrHistogram: percentiles within the promised precision, exact extremes, merge, clamping, empty.

import { describe, expect, it } from 'vitest';
import { HdrHistogram } from '../../bench/kvbench/histogram.js';
import { Prng } from '../../bench/kvbench/workload.js';

/** The value of rank ceil(q/100 * n) in sorted order (the definition the histogram approximates). */
function exactPercentile(sorted: readonly number[], q: number): number {
  const rank = Math.max(1, Math.ceil((q / 100) * sorted.length));
  return sorted[rank - 1]!;
}

const QS = [0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100];

function checkWithin(h: HdrHistogram, values: number[], relErr: number): void {
  const sorted = [...values].sort((a, b) => a - b);
  for (const q of QS) {
    const want = exactPercentile(sorted, q);
    const got = h.percentile(q);
    // Highest equivalent value: never below the true value (integers), above it by < 0.1%.
    expect(got, `p${q}`).toBeGreaterThanOrEqual(want);
    expect(Math.abs(got - want) / Math.max(want, 1), `p${q}: got ${got}, want ${want}`).toBeLessThanOrEqual(relErr);
  }
}

describe('HdrHistogram', () => {
  it('uniform integers over six decades: every percentile within 0.1%', () => {
    const prng = new Prng(7);
    const h = new HdrHistogram();
    const values: number[] = [];
    for (let i = 0; i < 200_000; i++) {
      const v = 1 + prng.nextInt(1_000_000);
      values.push(v);
      h.record(v);
    }
    expect(h.count).toBe(values.length);
    checkWithin(h, values, 0.001);
  });

  it('log-normal-like latencies (µs to seconds): within 0.1%, exact min, max and mean', () => {
    const prng = new Prng(42);
    const h = new HdrHistogram();
    const values: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      // exp of a uniform over [ln 50, ln 5e6]: spread evenly over the decades.
      const v = Math.floor(Math.exp(Math.log(50) + prng.nextFloat() * (Math.log(5e6) - Math.log(50))));
      values.push(v);
      h.record(v);
    }
    checkWithin(h, values, 0.001);
    expect(h.min).toBe(Math.min(...values));
    expect(h.max).toBe(Math.max(...values));
    expect(h.mean).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 6);
  });

  it('small values are exact (one slot per unit below 2048)', () => {
    const h = new HdrHistogram();
    for (let v = 0; v < 2048; v++) h.record(v);
    expect(h.percentile(50)).toBe(1023);
    expect(h.percentile(100)).toBe(2047);
    expect(h.percentile(0)).toBe(0);
  });

  it('a single value: every percentile is that value (bounded by the exact min and max)', () => {
    const h = new HdrHistogram();
    h.record(123_456.7);
    for (const q of QS) expect(h.percentile(q)).toBe(123_456.7);
    expect(h.min).toBe(123_456.7);
    expect(h.max).toBe(123_456.7);
  });

  it('merge gives the histogram of both sets', () => {
    const prng = new Prng(3);
    const a = new HdrHistogram();
    const b = new HdrHistogram();
    const both = new HdrHistogram();
    const values: number[] = [];
    for (let i = 0; i < 50_000; i++) {
      const v = 1 + prng.nextInt(i % 2 === 0 ? 1_000 : 10_000_000);
      values.push(v);
      (i % 2 === 0 ? a : b).record(v);
      both.record(v);
    }
    a.merge(b);
    expect(a.count).toBe(both.count);
    expect(a.min).toBe(both.min);
    expect(a.max).toBe(both.max);
    expect(a.mean).toBeCloseTo(both.mean, 6);
    for (const q of QS) expect(a.percentile(q)).toBe(both.percentile(q));
    checkWithin(a, values, 0.001);
  });

  it('merge refuses a histogram of another layout', () => {
    expect(() => new HdrHistogram().merge(new HdrHistogram({ significantDigits: 2 }))).toThrow(RangeError);
  });

  it('values above highestUs are clamped to it and counted; max stays exact', () => {
    const h = new HdrHistogram({ highestUs: 1_000_000 });
    h.record(10);
    h.record(5_000_000);
    h.record(2_000_000);
    expect(h.clamped).toBe(2);
    expect(h.count).toBe(3);
    expect(h.max).toBe(5_000_000);
    // The clamped values sit in highestUs's slot.
    const p = h.percentile(50);
    expect(Math.abs(p - 1_000_000) / 1_000_000).toBeLessThanOrEqual(0.001);
  });

  it('empty: count 0 and NaN for min, max, mean and percentiles; reset empties', () => {
    const h = new HdrHistogram();
    expect(h.count).toBe(0);
    expect(h.min).toBeNaN();
    expect(h.max).toBeNaN();
    expect(h.mean).toBeNaN();
    expect(h.percentile(99)).toBeNaN();
    h.record(5);
    h.reset();
    expect(h.count).toBe(0);
    expect(h.percentile(50)).toBeNaN();
  });

  it('refuses bad input', () => {
    const h = new HdrHistogram();
    expect(() => h.record(-1)).toThrow(RangeError);
    expect(() => h.record(Number.NaN)).toThrow(RangeError);
    expect(() => h.percentile(101)).toThrow(RangeError);
    expect(() => new HdrHistogram({ highestUs: 2 ** 40 })).toThrow(RangeError);
  });
});
