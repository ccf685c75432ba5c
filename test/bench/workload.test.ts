// Workload spec parsing and validation, and the seeded choosers: determinism and zipf skew.

import { describe, expect, it } from 'vitest';
import { defaultWorkload, KeyWriter, keyOf, opChooser, parseMix, Prng, validateWorkload, workerSource, ZipfChooser, type WorkloadSpec } from '../../bench/kvbench/workload.js';

describe('parseMix', () => {
  it('parses weights; kinds not named are 0', () => {
    expect(parseMix('put=1')).toEqual({ put: 1, get: 0, cas: 0 });
    expect(parseMix('put=50,get=50')).toEqual({ put: 50, get: 50, cas: 0 });
    expect(parseMix(' get = 90 , cas=10')).toEqual({ put: 0, get: 90, cas: 10 });
  });

  it.each([
    ['', /empty/],
    ['put', /not KIND=WEIGHT/],
    ['put=-1', /not KIND=WEIGHT/],
    ['del=1', /unknown operation "del"/],
    ['put=1,put=2', /"put" given twice/],
    ['put=0,get=0', /add up to 0/],
  ])('refuses %j', (s, re) => {
    expect(() => parseMix(s)).toThrow(RangeError);
    expect(() => parseMix(s)).toThrow(re);
  });
});

describe('validateWorkload', () => {
  it('accepts the defaults (10 s when neither bound is given)', () => {
    const w = validateWorkload(defaultWorkload());
    expect(w.durationMs).toBe(10_000);
    expect(validateWorkload(defaultWorkload({ ops: 5 })).durationMs).toBeUndefined();
  });

  it.each<[Partial<WorkloadSpec>, RegExp]>([
    [{ clients: 0 }, /workload\.clients .* got 0/],
    [{ keys: 1.5 }, /workload\.keys .* got 1\.5/],
    [{ valueBytes: -1 }, /workload\.valueBytes/],
    [{ zipfTheta: 1 }, /workload\.zipfTheta .* got 1/],
    [{ seed: 2 ** 32 }, /workload\.seed/],
    [{ keyDistribution: 'gauss' as 'zipf' }, /workload\.keyDistribution .* got "gauss"/],
    [{ consistency: 'strong' as 'stale' }, /workload\.consistency .* got "strong"/],
    [{ mix: { put: 0, get: 0, cas: 0 } }, /workload\.mix/],
    [{ mix: { put: Number.NaN, get: 1, cas: 0 } }, /workload\.mix\.put/],
    [{ durationMs: 1000, ops: 10 }, /exactly one of durationMs and ops/],
  ])('refuses %j', (over, re) => {
    expect(() => validateWorkload({ ...defaultWorkload(), ...over })).toThrow(RangeError);
    expect(() => validateWorkload({ ...defaultWorkload(), ...over })).toThrow(re);
  });
});

describe('choosers', () => {
  const drawKeys = (w: WorkloadSpec, worker: number, n: number): number[] => {
    const src = workerSource(w, worker);
    return Array.from({ length: n }, () => src.nextKey.next());
  };

  it('the same seed gives the same key sequence, value and ops; another seed or worker does not', () => {
    for (const keyDistribution of ['uniform', 'zipf'] as const) {
      const w = defaultWorkload({ seed: 1234, keyDistribution, keys: 1000 });
      expect(drawKeys(w, 0, 500)).toEqual(drawKeys(w, 0, 500));
      expect(drawKeys(w, 0, 500)).not.toEqual(drawKeys({ ...w, seed: 1235 }, 0, 500));
      expect(drawKeys(w, 0, 500)).not.toEqual(drawKeys(w, 1, 500));
    }
    const w = defaultWorkload({ seed: 9, valueBytes: 64, mix: { put: 1, get: 1, cas: 1 } });
    const a = workerSource(w, 3);
    const b = workerSource(w, 3);
    expect(a.value.equals(b.value)).toBe(true);
    expect(a.value.length).toBe(64);
    expect(Array.from({ length: 100 }, () => a.nextOp())).toEqual(Array.from({ length: 100 }, () => b.nextOp()));
  });

  it('zipf: the hottest key gets far more picks than under uniform', () => {
    const n = 10_000;
    const draws = 100_000;
    const count = (keys: number[]): Map<number, number> => {
      const m = new Map<number, number>();
      for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
      return m;
    };
    const zipf = count(drawKeys(defaultWorkload({ keys: n, keyDistribution: 'zipf', zipfTheta: 0.99, seed: 5 }), 0, draws));
    const uniform = count(drawKeys(defaultWorkload({ keys: n, keyDistribution: 'uniform', seed: 5 }), 0, draws));
    const maxOf = (m: Map<number, number>): number => Math.max(...m.values());
    // Expected: uniform's busiest key ~ draws / n = 10 (+ noise); zipf's key 0 ~ draws / zeta(n) ~ 10%.
    expect(zipf.get(0)!).toBe(maxOf(zipf));
    expect(maxOf(zipf)).toBeGreaterThan(50 * maxOf(uniform));
    expect(zipf.get(0)! / draws).toBeGreaterThan(0.05);
    for (const k of zipf.keys()) expect(k >= 0 && k < n).toBe(true);
  });

  it('zipf indexes stay in range for tiny key spaces', () => {
    const prng = new Prng(1);
    for (const n of [1, 2, 3]) {
      const z = new ZipfChooser(n, 0.99);
      for (let i = 0; i < 1000; i++) {
        const k = z.next(prng.nextFloat());
        expect(k >= 0 && k < n).toBe(true);
      }
    }
  });

  it('sequential: each worker walks the key space from its own start, wrapping', () => {
    const w = defaultWorkload({ keys: 10, clients: 2, keyDistribution: 'sequential' });
    expect(drawKeys(w, 0, 12)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    expect(drawKeys(w, 1, 6)).toEqual([5, 6, 7, 8, 9, 0]);
  });

  it('the op chooser follows the weights', () => {
    const next = opChooser({ put: 1, get: 3, cas: 0 }, new Prng(11));
    const counts = { put: 0, get: 0, cas: 0 };
    for (let i = 0; i < 40_000; i++) counts[next()]++;
    expect(counts.cas).toBe(0);
    expect(counts.put / 40_000).toBeGreaterThan(0.23);
    expect(counts.put / 40_000).toBeLessThan(0.27);
  });

  it('keys are the prefix and the index zero-padded to 10 digits', () => {
    const kw = new KeyWriter('kvbench/');
    expect(kw.key(42).toString()).toBe('kvbench/0000000042');
    expect(kw.key(9_999_999_999).toString()).toBe(keyOf('kvbench/', 9_999_999_999));
    expect(new KeyWriter('é/').key(7).toString()).toBe('é/0000000007');
  });
});
