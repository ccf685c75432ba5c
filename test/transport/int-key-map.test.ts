// IntKeyMap against a Map: the same answers for the same operations (a random sequence prints its
// seed; SEED=<n> replays one run), iteration in ascending key order over what is present, and what a
// Map's iterator would skip. Why it exists (V8's Map tables under churn) is measured, not tested:
// README "Where the time goes".

import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/raft/rng.js';
import { IntKeyMap, MAX_INT_KEY } from '../../src/transport/int-key-map.js';
import { seedOf } from '../support/seed.js';

describe('IntKeyMap', () => {
  it('answers as a Map does over a random churn of growing keys', () => {
    const seed = seedOf('IntKeyMap churn');
    const rng = createRng(seed);
    const m = new IntKeyMap<string>();
    const ref = new Map<number, string>();
    let nextKey = 1;
    for (let step = 0; step < 5000; step++) {
      const op = rng.int(10);
      // Keys mostly grow (as stream ids and log indices do), now and then one goes back or is far ahead.
      const key = op === 0 ? rng.int(nextKey + 1) : op === 1 ? nextKey + 2000 + rng.int(5000) : Math.max(0, nextKey - rng.int(70));
      if (op < 5) {
        nextKey += 1 + rng.int(2);
        expect(m.set(key, `v${step}`)).toBe(m);
        ref.set(key, `v${step}`);
      } else if (op < 8) {
        expect(m.delete(key), `step ${step}: delete ${key}`).toBe(ref.delete(key));
      } else {
        expect(m.get(key), `step ${step}: get ${key}`).toBe(ref.get(key));
        expect(m.has(key)).toBe(ref.has(key));
      }
      expect(m.size).toBe(ref.size);
    }
    const sorted = [...ref.entries()].sort((a, b) => a[0] - b[0]);
    expect([...m]).toEqual(sorted);
    expect([...m.keys()]).toEqual(sorted.map(([k]) => k));
    expect([...m.values()]).toEqual(sorted.map(([, v]) => v));
  });

  it('refuses a key that is not an element index, and stays as it was', () => {
    const m = new IntKeyMap<string>().set(0, 'zero').set(MAX_INT_KEY, 'last');
    for (const bad of [-1, 1.5, MAX_INT_KEY + 1, Number.NaN]) {
      expect(() => m.set(bad, 'x'), String(bad)).toThrow(`IntKeyMap: a key must be an integer from 0 to ${MAX_INT_KEY}, got ${bad}`);
    }
    expect([...m]).toEqual([
      [0, 'zero'],
      [MAX_INT_KEY, 'last'],
    ]);
  });

  it('keeps a key whose value is undefined, and counts it', () => {
    const m = new IntKeyMap<string | undefined>();
    m.set(7, undefined);
    expect(m.has(7)).toBe(true);
    expect(m.size).toBe(1);
    expect([...m]).toEqual([[7, undefined]]);
    expect(m.delete(7)).toBe(true);
    expect(m.delete(7)).toBe(false);
    expect(m.size).toBe(0);
  });

  it('iterates in ascending key order, skipping what is deleted during the walk, as a Map does', () => {
    const m = new IntKeyMap<string>();
    for (const k of [9, 3, 5, 1, 7]) m.set(k, `v${k}`);
    const seen: [number, string, IntKeyMap<string>][] = [];
    m.forEach((v, k, map) => {
      seen.push([k, v, map]);
      // Node's session closes each stream from inside forEach; closing deletes it from the map.
      m.delete(k);
      if (k === 3) m.delete(7);
    });
    expect(seen).toEqual([
      [1, 'v1', m],
      [3, 'v3', m],
      [5, 'v5', m],
      [9, 'v9', m],
    ]);
    expect(m.size).toBe(0);
  });

  it('stops yielding once cleared during a walk, and starts empty after clear', () => {
    const m = new IntKeyMap<number>();
    for (let k = 1; k <= 5; k++) m.set(k, k * 10);
    const seen: number[] = [];
    for (const [k] of m) {
      seen.push(k);
      if (k === 2) m.clear();
    }
    expect(seen).toEqual([1, 2]);
    expect(m.size).toBe(0);
    expect(m.get(3)).toBeUndefined();
    m.set(3, 30);
    expect([...m]).toEqual([[3, 30]]);
  });

  it('passes thisArg to forEach and tags itself', () => {
    const m = new IntKeyMap<number>().set(1, 1);
    const self = { calls: 0 };
    m.forEach(function (this: typeof self) {
      this.calls++;
    }, self);
    expect(self.calls).toBe(1);
    expect(Object.prototype.toString.call(m)).toBe('[object IntKeyMap]');
  });
});
