// The linearizability checker (test/support/linearizability) on hand-made histories that are known to
// be linearizable or not, on random histories linearizable by construction and their mutations, and
// against its time and memory budgets. Random tests print their seed; SEED=<n> replays one run.

import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/raft/rng.js';
import { check, formatReport, type CheckOptions, type CheckResult } from '../support/linearizability/checker.js';
import { formatHistory, HistoryFormatError, parseHistory, type HistoryOp } from '../support/linearizability/history.js';
import { seedOf } from '../support/seed.js';
import { randomHistory, type RandomHistoryOptions } from './random-history.js';

// Builders: ret undefined means the outcome is unknown.
function put(key: string, value: string, call: number, ret: number | undefined, client = 'c1'): HistoryOp {
  return { client, op: 'put', key, value, call, ...(ret !== undefined ? { return: ret, status: 'ok' } : { status: 'unknown' }) };
}
function get(key: string, value: string | null, call: number, ret: number, client = 'c1'): HistoryOp {
  return { client, op: 'get', key, result: { value }, call, return: ret, status: 'ok' };
}
function del(key: string, call: number, ret: number | undefined, client = 'c1'): HistoryOp {
  return { client, op: 'delete', key, call, ...(ret !== undefined ? { return: ret, status: 'ok' } : { status: 'unknown' }) };
}
/** swapped undefined: the outcome is unknown (and ret is ignored). */
function cas(key: string, expected: string | null, value: string, swapped: boolean | undefined, call: number, ret: number, client = 'c1'): HistoryOp {
  return swapped === undefined
    ? { client, op: 'cas', key, expected, value, call, status: 'unknown' }
    : { client, op: 'cas', key, expected, value, result: { swapped }, call, return: ret, status: 'ok' };
}

/** Every way of running the checker must agree: with and without prechecks, simplification, each search strategy. */
const MODES: readonly CheckOptions[] = [
  {},
  { precheck: false },
  { simplify: false },
  { precheck: false, simplify: false, strategies: ['in-order'] },
  { precheck: false, simplify: false, strategies: ['known-first'] },
  { precheck: false, strategies: ['known-first'] },
];

function verdicts(h: readonly HistoryOp[], options: CheckOptions = {}): CheckResult[] {
  return MODES.map((m) => check(h, { timeoutMs: 10_000, ...options, ...m }));
}

function expectOk(h: readonly HistoryOp[], options: CheckOptions = {}): void {
  for (const r of verdicts(h, options)) expect(r.verdict, formatReport(r).join('\n')).toBe('ok');
}

/** Expects a violation in every mode; returns the default mode's result. */
function expectViolation(h: readonly HistoryOp[], options: CheckOptions = {}): CheckResult {
  const all = verdicts(h, options);
  for (const r of all) expect(r.verdict, formatReport(r).join('\n')).toBe('violation');
  return all[0]!;
}

describe('known-good histories', () => {
  it('a sequential history', () => {
    expectOk([put('k', 'a', 0, 1), get('k', 'a', 2, 3), put('k', 'b', 4, 5), get('k', 'b', 6, 7), del('k', 8, 9), get('k', null, 10, 11)]);
  });

  it('a read of an absent key before any write', () => {
    expectOk([get('k', null, 0, 1), put('k', 'a', 2, 3), get('k', 'a', 4, 5)]);
  });

  it('two overlapping puts, read afterwards in either order', () => {
    const writes = [put('k', 'x', 0, 10, 'c1'), put('k', 'y', 1, 9, 'c2')];
    expectOk([...writes, get('k', 'x', 11, 12, 'c3'), get('k', 'x', 13, 14, 'c3')]);
    expectOk([...writes, get('k', 'y', 11, 12, 'c3'), get('k', 'y', 13, 14, 'c3')]);
    // Reads during the writes may see either value once, then the other.
    expectOk([...writes, get('k', 'x', 2, 3, 'c3'), get('k', 'y', 4, 5, 'c3'), get('k', 'y', 11, 12, 'c3')]);
  });

  it('operations that touch at one instant count as concurrent', () => {
    expectOk([put('k', 'a', 0, 5, 'c1'), get('k', null, 5, 6, 'c2')]);
  });

  it('an unknown put whose value is read later', () => {
    expectOk([put('k', 'a', 0, 1), put('k', 'v', 2, undefined, 'c2'), get('k', 'a', 3, 4), get('k', 'v', 20, 21), get('k', 'v', 22, 23)]);
  });

  it('an unknown put that is never seen', () => {
    expectOk([put('k', 'a', 0, 1), put('k', 'v', 2, undefined, 'c2'), get('k', 'a', 3, 4), get('k', 'a', 50, 51)]);
    expectOk([put('k', 'v', 0, undefined, 'c2'), get('k', null, 3, 4)]);
  });

  it('unknown writes that took effect long after the client gave up, in any order', () => {
    expectOk([
      put('k', 'u1', 0, undefined, 'c1'),
      put('k', 'u2', 1, undefined, 'c2'),
      del('k', 2, undefined, 'c3'),
      get('k', null, 10, 11),
      get('k', 'u2', 12, 13),
      get('k', 'u1', 14, 15),
      get('k', null, 16, 17),
    ]);
  });

  it('a chain of compare-and-swaps', () => {
    expectOk([
      put('k', '0', 0, 1),
      cas('k', '0', '1', true, 2, 3),
      cas('k', '1', '2', true, 4, 5),
      cas('k', '1', '3', false, 6, 7),
      get('k', '2', 8, 9),
      cas('k', '2', '4', true, 10, 11),
      cas('k', null, '5', false, 12, 13),
      del('k', 14, 15),
      cas('k', null, '6', true, 16, 17),
      get('k', '6', 18, 19),
    ]);
  });

  it('two concurrent compare-and-swaps from one value: one wins', () => {
    expectOk([put('k', '0', 0, 1), cas('k', '0', 'a', true, 2, 5, 'c1'), cas('k', '0', 'b', false, 3, 6, 'c2'), get('k', 'a', 7, 8)]);
  });

  it('an unknown cas that swapped, seen by a later read', () => {
    expectOk([put('k', '0', 0, 1), cas('k', '0', 'a', undefined, 2, 0, 'c2'), get('k', 'a', 10, 11)]);
    expectOk([put('k', '0', 0, 1), cas('k', '0', 'a', undefined, 2, 0, 'c2'), get('k', '0', 10, 11)]);
  });

  it('a delete, then a read of absent', () => {
    expectOk([put('k', 'a', 0, 1), del('k', 2, 3), get('k', null, 4, 5)]);
  });

  it('rich results: prev, deleted and the current value of a failed cas', () => {
    expectOk([
      { client: 'c1', op: 'put', key: 'k', value: 'a', result: { prev: null }, call: 0, return: 1, status: 'ok' },
      { client: 'c1', op: 'put', key: 'k', value: 'b', result: { prev: 'a' }, call: 2, return: 3, status: 'ok' },
      { client: 'c1', op: 'cas', key: 'k', expected: 'a', value: 'c', result: { swapped: false, value: 'b' }, call: 4, return: 5, status: 'ok' },
      { client: 'c1', op: 'delete', key: 'k', result: { deleted: true, prev: 'b' }, call: 6, return: 7, status: 'ok' },
      { client: 'c1', op: 'delete', key: 'k', result: { deleted: false }, call: 8, return: 9, status: 'ok' },
    ]);
  });

  it('keys are independent', () => {
    expectOk([put('a', '1', 0, 1), put('b', '2', 0, 1), get('a', '1', 2, 3), get('b', '2', 2, 3), get('c', null, 2, 3)]);
  });

  it('an initial value per key', () => {
    expectOk([get('k', 'init', 0, 1), cas('k', 'init', 'a', true, 2, 3)], { initial: { k: 'init' } });
    expectOk([get('k', 'init', 0, 1)], { initial: new Map([['k', 'init']]) });
  });
});

describe('known-bad histories', () => {
  it('a stale read: the old value after a later write completed', () => {
    const h = [put('k', 'a', 0, 1), put('k', 'b', 2, 3), get('k', 'a', 4, 5, 'c2')];
    const r = expectViolation(h);
    const k = r.perKey.get('k')!;
    expect(k.violation).toMatchObject({ kind: 'no-linearization', op: 2, prefix: [0, 1], valueAfterPrefix: 'b' });
    expect(k.violation?.candidates).toEqual([{ op: 2, reason: 'it read "a" but the key held "b"' }]);
    expect(r.explanation).toContain('#3 c2 get "k" -> "a"');
    expect(r.explanation).toContain('it read "a" but the key held "b"');
  });

  it('a lost write: acknowledged, then never seen by any client, who all see the older value', () => {
    const h = [
      put('k', 'old', 0, 1, 'c1'),
      put('k', 'new', 2, 4, 'c2'),
      get('k', 'old', 3, 5, 'c3'), // concurrent with the put: fine so far
      get('k', 'old', 6, 7, 'c1'),
      get('k', 'old', 6.5, 8, 'c3'),
      get('k', 'old', 9, 10, 'c2'),
    ];
    const r = expectViolation(h);
    expect(r.perKey.get('k')!.violation?.op).toBe(3);
  });

  it('a read of a value never written', () => {
    const h = [put('k', 'a', 0, 1), get('k', 'zzz', 2, 3)];
    const r = expectViolation(h);
    expect(r.perKey.get('k')!.violation).toEqual({ kind: 'unwritten-value', op: 1 });
    expect(r.explanation).toContain('it observed "zzz", which no operation on this key wrote');
  });

  it('a read of the value of a failed put (failed means it did not take effect)', () => {
    const failed: HistoryOp = { client: 'c2', op: 'put', key: 'k', value: 'b', call: 0, return: 1, status: 'fail', error: 'NOT_LEADER' };
    const r = expectViolation([failed, get('k', 'b', 2, 3)]);
    expect(r.droppedFailed).toBe(1);
  });

  it('a compare-and-swap that succeeded twice from the same expected value', () => {
    const h = [put('k', '0', 0, 1), cas('k', '0', 'a', true, 2, 5, 'c1'), cas('k', '0', 'b', true, 3, 6, 'c2')];
    const r = expectViolation(h);
    expect(r.perKey.get('k')!.violation?.kind).toBe('no-linearization');
    expect(r.explanation).toMatch(/it swapped from "0" but the key held "(a|b)"/);
  });

  it('a read of absent after an acknowledged put, with nothing deleting the key', () => {
    const r = expectViolation([put('k', 'a', 0, 1), get('k', null, 2, 3, 'c2')]);
    expect(r.perKey.get('k')!.violation?.candidates).toEqual([{ op: 1, reason: 'it read absent but the key held "a"' }]);
  });

  it('an unknown write cannot take effect before it was called', () => {
    expectViolation([get('k', 'v', 0, 1), put('k', 'v', 2, undefined, 'c2')]);
  });

  it('an unknown write takes effect at most once', () => {
    expectViolation([put('k', 'a', 0, 1), put('k', 'v', 2, undefined, 'c2'), get('k', 'v', 3, 4), put('k', 'b', 5, 6), get('k', 'v', 7, 8)]);
  });

  it('a value that went back and forth with only one write of each', () => {
    const writes = [put('k', 'x', 0, 10, 'c1'), put('k', 'y', 1, 9, 'c2')];
    expectViolation([...writes, get('k', 'x', 2, 3, 'c3'), get('k', 'y', 4, 5, 'c3'), get('k', 'x', 6, 7, 'c3')]);
  });

  it('results that contradict themselves', () => {
    const failedCas: HistoryOp = { client: 'c1', op: 'cas', key: 'k', expected: 'a', value: 'b', result: { swapped: false, value: 'a' }, call: 2, return: 3, status: 'ok' };
    const r = expectViolation([put('k', 'a', 0, 1), failedCas]);
    expect(r.perKey.get('k')!.violation).toEqual({ kind: 'contradictory-result', op: 1 });
    const badDelete: HistoryOp = { client: 'c1', op: 'delete', key: 'k', result: { deleted: true }, call: 2, return: 3, status: 'ok' };
    expectViolation([get('k', null, 0, 1), badDelete]);
  });

  it('only the bad key is reported', () => {
    const r = expectViolation([put('a', '1', 0, 1), get('a', '1', 2, 3), put('b', '1', 0, 1), get('b', null, 2, 3)]);
    expect(r.perKey.get('a')!.verdict).toBe('ok');
    expect(r.perKey.get('b')!.verdict).toBe('violation');
  });

  it('STALE reads are left out unless asked for', () => {
    const stale: HistoryOp = { ...get('k', 'a', 4, 5), consistency: 'STALE' };
    const h = [put('k', 'a', 0, 1), put('k', 'b', 2, 3), stale];
    const r = check(h);
    expect(r.verdict).toBe('ok');
    expect(r.droppedStaleReads).toBe(1);
    expectViolation(h, { includeStaleReads: true });
    expectViolation([put('k', 'a', 0, 1), put('k', 'b', 2, 3), { ...stale, consistency: 'LEASE' }]);
  });
});

describe('the history format', () => {
  it('round-trips JSON lines', () => {
    const h = [put('k', 'a', 0, 1.25), put('k', 'b', 2, undefined, 'c2'), cas('k', null, 'c', false, 3, 4), { ...get('k', 'a', 5, 6), consistency: 'LEASE' as const, node: 2, index: 17 }];
    const text = formatHistory(h);
    expect(text.split('\n')).toHaveLength(h.length + 1);
    expect(parseHistory(text)).toEqual(h);
    expect(parseHistory(`\n${text}\n\n`)).toEqual(h);
  });

  it('check() validates what it is given', () => {
    const bad = { client: 'c1', op: 'put', key: 'k', value: 'a', call: 0, status: 'ok' } as HistoryOp;
    expect(() => check([put('k', 'a', 0, 1), bad])).toThrow('operation #2: an ok operation needs "return"');
  });

  it('ignores fields it does not know', () => {
    expect(parseHistory('{"client":"c1","op":"get","key":"k","result":{"value":null},"call":1,"return":2,"status":"ok","seq":9}\n')).toHaveLength(1);
  });

  it.each([
    ['not json', 'not JSON'],
    ['[]', 'an operation must be a JSON object'],
    ['{"client":"c1","op":"inc","key":"k","call":0,"return":1,"status":"ok"}', '"op" must be one of'],
    ['{"client":"c1","op":"put","key":"k","call":0,"return":1,"status":"ok"}', 'a put needs "value"'],
    ['{"client":"c1","op":"get","key":"k","call":0,"return":1,"status":"ok"}', 'an ok get needs "result.value"'],
    ['{"client":"c1","op":"put","key":"k","value":"a","call":0,"status":"ok"}', 'an ok operation needs "return"'],
    ['{"client":"c1","op":"put","key":"k","value":"a","call":5,"return":1,"status":"ok"}', '"return" is before "call"'],
    ['{"client":"c1","op":"cas","key":"k","value":"a","call":0,"return":1,"status":"ok","result":{"swapped":true}}', 'a cas needs "expected"'],
    ['{"client":"c1","op":"cas","key":"k","expected":null,"value":"a","call":0,"return":1,"status":"ok"}', 'an ok cas needs "result.swapped"'],
    ['{"client":"c1","op":"get","key":"k","result":{"value":1},"call":0,"return":1,"status":"ok"}', '"result.value" must be a string or null'],
    ['{"client":"c1","op":"get","key":"k","result":{"value":null},"call":0,"return":1,"status":"done"}', '"status" must be one of'],
    ['{"client":"c1","op":"get","key":"k","result":{"value":null},"call":0,"return":1,"status":"ok","consistency":"SOMETIMES"}', '"consistency" must be one of'],
  ])('refuses %s', (line, message) => {
    const text = `{"client":"c1","op":"get","key":"k","result":{"value":null},"call":0,"return":1,"status":"ok"}\n${line}\n`;
    expect(() => parseHistory(text)).toThrow(HistoryFormatError);
    expect(() => parseHistory(text)).toThrow(`line 2: ${message}`);
  });
});


/** An ok get moved to a value that was certainly not current anywhere in its interval, or undefined. */
function staleReadMutation(h: readonly HistoryOp[], pick: (n: number) => number): HistoryOp[] | undefined {
  // A value written by exactly one op (W); an ok overwrite (W2) begins after W returns and returns
  // before the read (R) begins. Then R cannot see W's value: W is over before W2, W2 before R.
  const writers = new Map<string, number>();
  for (const o of h) if (o.status !== 'fail' && o.value !== undefined) writers.set(o.value, (writers.get(o.value) ?? 0) + 1);
  const definiteWrite = (o: HistoryOp): boolean =>
    o.status === 'ok' && (o.op === 'put' || o.op === 'delete' || (o.op === 'cas' && o.result?.swapped === true));
  const options: [number, string][] = [];
  h.forEach((r, ri) => {
    if (r.op !== 'get' || r.status !== 'ok') return;
    for (const w of h) {
      if (!definiteWrite(w) || w.key !== r.key || w.value === undefined || writers.get(w.value) !== 1 || w.value === r.result?.value) continue;
      const overwritten = h.some((w2) => definiteWrite(w2) && w2.key === r.key && w2.value !== w.value && w2.call > w.return! && w2.return! < r.call);
      if (overwritten) options.push([ri, w.value]);
    }
  });
  if (options.length === 0) return undefined;
  const [ri, value] = options[pick(options.length)]!;
  return h.map((o, i) => (i === ri ? { ...o, result: { value } } : o));
}

describe('random histories, linearizable by construction', () => {
  const profiles: readonly RandomHistoryOptions[] = [
    { ops: 60, clients: 3, keys: 1, values: 'unique', unknownRate: 0.1, failRate: 0.05, richResults: false, maxDurationMs: 20 },
    { ops: 60, clients: 4, keys: 2, values: 'few', unknownRate: 0.1, failRate: 0.05, richResults: true, maxDurationMs: 20 },
    { ops: 120, clients: 5, keys: 3, values: 'unique', unknownRate: 0.05, failRate: 0.05, richResults: true, maxDurationMs: 10 },
    { ops: 40, clients: 3, keys: 1, values: 'few', unknownRate: 0.2, failRate: 0, richResults: false, maxDurationMs: 30 },
  ];

  it('are linearizable, in every mode; a read of a value never written is not', () => {
    const seed = seedOf('linearizability random good/unwritten');
    const rng = createRng(seed);
    for (let run = 0; run < 120; run++) {
      const profile = profiles[run % profiles.length]!;
      const h = randomHistory(rng, profile);
      const label = `seed ${seed} run ${run}`;
      for (const r of verdicts(h)) expect(r.verdict, `${label}\n${formatReport(r).join('\n')}`).toBe('ok');

      const reads = h.flatMap((o, i) => (o.op === 'get' && o.status === 'ok' && o.consistency !== 'STALE' ? [i] : []));
      if (reads.length === 0) continue;
      const victim = reads[rng.int(reads.length)]!;
      const bad = h.map((o, i) => (i === victim ? { ...o, result: { value: 'never-written' } } : o));
      const all = verdicts(bad);
      for (const r of all) expect(r.verdict, `${label} (read #${victim + 1} mutated)\n${formatReport(r).join('\n')}`).toBe('violation');
      // Without the precheck, the search itself must stop at the mutated read or earlier.
      expect(all[1]!.perKey.get(h[victim]!.key)!.violation?.kind, label).toBe('no-linearization');
    }
  });

  it('a read moved to a value overwritten before it began is a violation, in every mode', () => {
    const seed = seedOf('linearizability random stale read');
    const rng = createRng(seed);
    let mutated = 0;
    for (let run = 0; run < 120; run++) {
      const profile = { ...profiles[run % profiles.length]!, values: 'unique' as const };
      const h = randomHistory(rng, profile);
      const bad = staleReadMutation(h, (n) => rng.int(n));
      if (bad === undefined) continue;
      mutated++;
      for (const r of verdicts(bad)) expect(r.verdict, `seed ${seed} run ${run}\n${formatReport(r).join('\n')}`).toBe('violation');
    }
    expect(mutated).toBeGreaterThan(30);
  });
});

/**
 * An independent oracle for small histories: tries every order of every subset of the operations
 * (unknown ones may be left out), straight from the semantics in README.md.
 */
function bruteForceLinearizable(h: readonly HistoryOp[]): boolean {
  const ops = h.filter((o) => o.status !== 'fail' && !(o.op === 'get' && o.status === 'unknown'));
  const keys = new Set(ops.map((o) => o.key));
  for (const key of keys) {
    const kops = ops.filter((o) => o.key === key);
    const placed = new Array<boolean>(kops.length).fill(false);
    const retOf = (o: HistoryOp): number => (o.status === 'ok' ? o.return! : Infinity);
    // The state after o runs in s, or undefined if o cannot run in s with its result.
    const run = (o: HistoryOp, s: string | null): string | null | undefined => {
      const r = o.result;
      if (o.status === 'unknown') {
        if (o.op === 'put') return o.value!;
        if (o.op === 'delete') return null;
        return s === o.expected ? o.value! : s;
      }
      switch (o.op) {
        case 'get':
          return r?.value === s ? s : undefined;
        case 'put':
          return r?.prev !== undefined && r.prev !== s ? undefined : o.value!;
        case 'delete':
          if (r?.prev !== undefined && r.prev !== s) return undefined;
          if (r?.deleted !== undefined && r.deleted !== (s !== null)) return undefined;
          return null;
        case 'cas':
          if (r?.swapped) return s === o.expected && (r.value === undefined || r.value === o.value) ? o.value! : undefined;
          return s !== o.expected && (r?.value === undefined || r.value === s) ? s : undefined;
      }
    };
    const search = (s: string | null): boolean => {
      if (kops.every((o, i) => placed[i] || o.status === 'unknown')) return true;
      for (let i = 0; i < kops.length; i++) {
        if (placed[i]) continue;
        const o = kops[i]!;
        // o may go next only if no unplaced op returned before o was called.
        if (kops.some((p, j) => !placed[j] && j !== i && retOf(p) < o.call)) continue;
        const after = run(o, s);
        if (after === undefined) continue;
        placed[i] = true;
        const found = search(after);
        placed[i] = false;
        if (found) return true;
      }
      return false;
    };
    if (!search(null)) return false;
  }
  return true;
}

/** A small history of random operations with random results: mostly not linearizable. */
function randomGarbage(rng: ReturnType<typeof createRng>): HistoryOp[] {
  const vals = ['a', 'b', 'c'];
  const val = (): string => vals[rng.int(vals.length)]!;
  const valOrNull = (): string | null => (rng.int(4) === 0 ? null : val());
  const h: HistoryOp[] = [];
  const n = 1 + rng.int(8);
  for (let i = 0; i < n; i++) {
    const call = rng.int(10);
    const ret = call + rng.int(6);
    const status = rng.int(3) === 0 ? 'unknown' : rng.int(10) === 0 ? 'fail' : 'ok';
    const timing = status === 'unknown' ? { call } : { call, return: ret };
    const base = { client: `c${i}`, key: rng.int(5) === 0 ? 'j' : 'k', status, ...timing } as const;
    const kind = rng.int(4);
    const rich = rng.int(3) === 0;
    if (kind === 0) h.push({ ...base, op: 'get', ...(status === 'unknown' ? {} : { result: { value: valOrNull() } }) });
    else if (kind === 1) h.push({ ...base, op: 'put', value: val(), ...(rich && status === 'ok' ? { result: { prev: valOrNull() } } : {}) });
    else if (kind === 2) h.push({ ...base, op: 'delete', ...(rich && status === 'ok' ? { result: { deleted: rng.int(2) === 0 } } : {}) });
    else {
      const result = status === 'unknown' ? {} : { result: { swapped: rng.int(2) === 0, ...(rich ? { value: valOrNull() } : {}) } };
      h.push({ ...base, op: 'cas', expected: valOrNull(), value: val(), ...result });
    }
  }
  return h;
}

describe('against a brute-force oracle', () => {
  it('agrees on small random histories with random results, in every mode', () => {
    const seed = seedOf('linearizability brute-force oracle');
    const rng = createRng(seed);
    let bad = 0;
    for (let run = 0; run < 3000; run++) {
      const h = randomGarbage(rng);
      const expected = bruteForceLinearizable(h) ? 'ok' : 'violation';
      if (expected === 'violation') bad++;
      for (const r of verdicts(h)) expect(r.verdict, `seed ${seed} run ${run}\n${formatHistory(h)}\n${formatReport(r).join('\n')}`).toBe(expected);
    }
    // Both verdicts must be well represented for the comparison to mean something.
    expect(bad).toBeGreaterThan(300);
    expect(bad).toBeLessThan(2700);
  });
});

describe('budgets', () => {
  /**
   * 40 concurrent puts of one value and a read that is stale whatever order they take: the search must
   * try every subset of the puts before it can say so (2^40 configurations).
   */
  function pathological(): HistoryOp[] {
    const h = [put('k', 'y', 0, 1), put('k', 'z', 2, 3)];
    for (let i = 0; i < 40; i++) h.push(put('k', 'x', 4, 100, `w${i}`));
    h.push(get('k', 'y', 4, 100, 'r'));
    return h;
  }

  it('gives up with verdict unknown when the time budget runs out, and says where', () => {
    const timeoutMs = 100;
    const t0 = performance.now();
    const r = check(pathological(), { timeoutMs });
    const elapsedMs = performance.now() - t0;
    console.log(`pathological history: verdict ${r.verdict} after ${elapsedMs.toFixed(1)} ms (budget ${timeoutMs} ms)`);
    expect(r.verdict).toBe('unknown');
    expect(elapsedMs).toBeLessThan(timeoutMs * 5);
    const k = r.perKey.get('k')!;
    expect(k.verdict).toBe('unknown');
    expect(k.ops).toBe(43);
    expect(k.unknownReason).toMatch(/^the time budget ran out after \d+ search steps/);
    expect(r.explanation).toContain('key "k" (43 ops): unknown: the time budget ran out');
  });

  it('keys searched after the budget ran out are unknown, but an earlier violation still counts', () => {
    let now = 0;
    const h = [...pathological(), put('a', '1', 0, 1), get('a', '2', 2, 3)];
    const r = check(h, { timeoutMs: 10, nowMs: () => (now += 1) });
    expect(r.perKey.get('a')!.verdict).toBe('violation');
    expect(r.perKey.get('k')!.verdict).toBe('unknown');
    expect(r.verdict).toBe('violation');
  });

  it('gets through many pending unknown writes to a stale read', () => {
    // 24 unknown writes nobody observes, 30 acknowledged puts, then a read of the first value. Each
    // unknown write could take effect anywhere after its call; without simplification, trying them in
    // order is exponential, and the known-first strategy is not.
    const h: HistoryOp[] = [put('k', 'a', 0, 1)];
    for (let i = 0; i < 24; i++) h.push(i % 2 ? del('k', 2, undefined, `u${i}`) : put('k', `u${i}`, 2, undefined, `u${i}`));
    for (let j = 0; j < 30; j++) h.push(put('k', `b${j}`, 3 + 2 * j, 4 + 2 * j));
    h.push(get('k', 'a', 100, 101));
    for (const options of [{}, { simplify: false }, { simplify: false, strategies: ['known-first'] as const }]) {
      const r = check(h, { timeoutMs: 20_000, ...options });
      console.log(`24 pending unknown writes, ${JSON.stringify(options)}: ${r.verdict} in ${r.ms.toFixed(1)} ms, ${r.perKey.get('k')!.steps} steps`);
      expect(r.verdict).toBe('violation');
      expect(r.perKey.get('k')!.violation?.op).toBe(h.length - 1);
    }
  });

  it('gives up with verdict unknown when the search cache reaches its memory budget', () => {
    const r = check(pathological(), { timeoutMs: 10_000, maxCacheBytes: 1 << 20 });
    expect(r.verdict).toBe('unknown');
    expect(r.perKey.get('k')!.unknownReason).toMatch(/^the search cache reached its memory budget/);
  });

  it('checks a 5,000-op history of 5 clients on 5 keys quickly', () => {
    const seed = seedOf('linearizability 5,000 ops');
    const h = randomHistory(createRng(seed), {
      ops: 5000,
      clients: 5,
      keys: 5,
      values: 'unique',
      unknownRate: 0.02,
      failRate: 0.02,
      richResults: false,
      maxDurationMs: 20,
    });
    for (const options of [{}, { simplify: false }] as const) {
      const r = check(h, { timeoutMs: 30_000, ...options });
      console.log(`5,000 ops, ${JSON.stringify(options)}: ${r.verdict} in ${r.ms.toFixed(1)} ms`);
      console.log(formatReport(r).slice(0, 6).join('\n'));
      expect(r.verdict, `seed ${seed}`).toBe('ok');
    }
  });
});
