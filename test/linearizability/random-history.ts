// Random key-value histories that are linearizable by construction: every client runs its operations
// one after another with random durations; each operation that takes effect gets a random point
// inside its interval, and the operations run on a sequential map in the order of those points, which
// decides their results. Unknown writes took effect at their point or never, chosen at random.

import type { SeededRng } from '../../src/raft/rng.js';
import type { HistoryOp, OpKind } from '../support/linearizability/history.js';

export interface RandomHistoryOptions {
  readonly ops: number;
  readonly clients: number;
  readonly keys: number;
  /** unique: every write a value of its own. few: values drawn from a handful, so values repeat. */
  readonly values: 'unique' | 'few';
  /** Probability that a write's outcome is unknown (a read's: it is recorded unknown and dropped). */
  readonly unknownRate: number;
  /** Probability that an operation fails (and so does not take effect). */
  readonly failRate: number;
  /** Record prev for puts and deletes, deleted for deletes, the current value for cas. */
  readonly richResults: boolean;
  /** Include deletes (default true). */
  readonly deletes?: boolean;
  /** Longest operation, in ms; most are much shorter. */
  readonly maxDurationMs: number;
}

interface Planned {
  readonly client: string;
  readonly kind: OpKind;
  readonly key: string;
  readonly value: string | undefined;
  readonly call: number;
  readonly ret: number;
  /** When it takes effect; undefined when it never does. */
  readonly at: number | undefined;
  readonly status: 'ok' | 'fail' | 'unknown';
}

const FEW_VALUES = ['a', 'b', 'c', 'd'];

export function randomHistory(rng: SeededRng, o: RandomHistoryOptions): HistoryOp[] {
  const planned: Planned[] = [];
  const clock = new Array<number>(o.clients).fill(0);
  let seq = 0;
  for (let i = 0; i < o.ops; i++) {
    const c = rng.int(o.clients);
    const client = `c${c + 1}`;
    const call = clock[c]! + rng.float() * 2;
    const duration = rng.float() < 0.1 ? rng.float() * o.maxDurationMs : rng.float() * (o.maxDurationMs / 10);
    const ret = call + duration;
    clock[c] = ret;
    const roll = rng.float();
    const kind: OpKind = roll < 0.4 ? 'get' : roll < 0.65 ? 'put' : roll < 0.9 || o.deletes === false ? 'cas' : 'delete';
    const key = `k${rng.int(o.keys)}`;
    const value = kind === 'put' || kind === 'cas' ? (o.values === 'unique' ? `${client}-${++seq}` : FEW_VALUES[rng.int(FEW_VALUES.length)]!) : undefined;
    const s = rng.float();
    const status = s < o.failRate ? 'fail' : s < o.failRate + o.unknownRate ? 'unknown' : 'ok';
    const takesEffect = status === 'ok' || (status === 'unknown' && kind !== 'get' && rng.float() < 0.5);
    // An unknown op may take effect later than the client gave up on it.
    const end = status === 'unknown' ? ret + rng.float() * o.maxDurationMs : ret;
    planned.push({ client, kind, key, value, call, ret, at: takesEffect ? call + rng.float() * (end - call) : undefined, status });
  }

  const state = new Map<string, string>();
  const written: string[] = [];
  const results = new Map<Planned, HistoryOp>();
  const effective = planned.filter((p) => p.at !== undefined).sort((a, b) => a.at! - b.at!);
  for (const p of effective) {
    const cur = state.get(p.key) ?? null;
    const base = { client: p.client, key: p.key, call: p.call, status: p.status, ...(p.status === 'ok' ? { return: p.ret } : {}) };
    const rich = o.richResults && p.status === 'ok';
    let op: HistoryOp;
    switch (p.kind) {
      case 'get':
        op = { ...base, op: 'get', result: { value: cur }, consistency: 'LINEARIZABLE' };
        break;
      case 'put':
        op = { ...base, op: 'put', value: p.value!, ...(rich ? { result: { prev: cur } } : {}) };
        state.set(p.key, p.value!);
        written.push(p.value!);
        break;
      case 'delete':
        op = { ...base, op: 'delete', ...(rich ? { result: { deleted: cur !== null, prev: cur } } : {}) };
        state.delete(p.key);
        break;
      case 'cas': {
        // Expect the current value most of the time, so chains of swaps happen.
        const r = rng.float();
        const expected = r < 0.6 ? cur : r < 0.8 || written.length === 0 ? null : written[rng.int(written.length)]!;
        const swapped = expected === cur;
        if (swapped) state.set(p.key, p.value!);
        const after = state.get(p.key) ?? null;
        const result = p.status === 'ok' ? { result: { swapped, ...(rich ? { value: after } : {}) } } : {};
        op = { ...base, op: 'cas', expected, value: p.value!, ...result };
        written.push(p.value!);
        break;
      }
    }
    results.set(p, op);
  }

  // Ops that never took effect: unknown writes (their inputs still matter), unknown reads, failures.
  return planned.map((p) => {
    const done = results.get(p);
    if (done !== undefined) return done;
    const base = { client: p.client, key: p.key, call: p.call, status: p.status, ...(p.status === 'fail' ? { return: p.ret, error: 'NOT_LEADER' } : { error: 'TIMEOUT' }) };
    switch (p.kind) {
      case 'get':
        return { ...base, op: 'get' };
      case 'put':
        return { ...base, op: 'put', value: p.value! };
      case 'delete':
        return { ...base, op: 'delete' };
      case 'cas':
        return { ...base, op: 'cas', expected: written.length > 0 && rng.float() < 0.5 ? written[rng.int(written.length)]! : null, value: p.value! };
    }
  });
}
