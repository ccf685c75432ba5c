// The sequential model of one key: a register holding a string or nothing (absent), compiled for the
// search. Values are interned to small integers so a step compares integers, and each operation
// becomes a few constraints on the state before it and the state it leaves.

import { describeOp, type HistoryOp } from './history.js';

/** The state of an absent key. Every other state v > 0 is the v-th distinct value seen on the key. */
export const ABSENT = 0;
/** No constraint / no write. */
const NONE = -1;
/** A constraint no state satisfies: the operation's own result contradicts itself. */
const IMPOSSIBLE = -2;

/** One operation of a key, as the checker hands it to the model. */
export interface KeyOp {
  readonly op: HistoryOp;
  /** Position in the whole history (0-based), for reports. */
  readonly index: number;
  /** When it returned; +Infinity when its outcome is unknown (it may take effect any time after call). */
  readonly ret: number;
  /**
   * An unknown write that must have taken effect, because an ok operation observed its value and
   * nothing else wrote it. Its ret is then the first such observer's return (see simplify.ts).
   */
  readonly mustTakeEffect?: boolean;
}

export class RegisterModel {
  readonly ops: readonly KeyOp[];
  readonly size: number;
  readonly call: Float64Array;
  readonly ret: Float64Array;
  /** The state before the op must equal this (NONE: any; IMPOSSIBLE: no state can). */
  readonly reqEq: Int32Array;
  /** The state before the op must differ from this (NONE: any). */
  readonly reqNe: Int32Array;
  /** The state after the op (NONE: unchanged). */
  readonly write: Int32Array;
  /** An unknown cas: the write happens only if the state before equals this (NONE: unconditional). */
  readonly condEq: Int32Array;
  readonly initial: number;
  /** state -> value (index ABSENT holds null). */
  private readonly values: (string | null)[] = [null];
  private readonly ids = new Map<string, number>();

  constructor(ops: readonly KeyOp[], initialValue: string | null) {
    this.ops = ops;
    const n = (this.size = ops.length);
    this.call = new Float64Array(n);
    this.ret = new Float64Array(n);
    this.reqEq = new Int32Array(n).fill(NONE);
    this.reqNe = new Int32Array(n).fill(NONE);
    this.write = new Int32Array(n).fill(NONE);
    this.condEq = new Int32Array(n).fill(NONE);
    this.initial = this.id(initialValue);
    ops.forEach((k, i) => {
      this.call[i] = k.op.call;
      this.ret[i] = k.ret;
      this.compile(i, k);
    });
  }

  /** The state after `op` runs in state `s`, or -1 when `op` cannot run in `s` with the result it had. */
  step(op: number, s: number): number {
    const eq = this.reqEq[op]!;
    if (eq !== NONE && s !== eq) return -1;
    const ne = this.reqNe[op]!;
    if (ne !== NONE && s === ne) return -1;
    const w = this.write[op]!;
    if (w === NONE) return s;
    const cond = this.condEq[op]!;
    return cond === NONE || s === cond ? w : s;
  }

  /** An op with an unknown outcome that writes whatever the state: an unknown put or delete. */
  blindUnknownWrite(op: number): boolean {
    return this.ret[op] === Infinity && this.write[op] !== NONE && this.condEq[op] === NONE && this.reqEq[op] === NONE && this.reqNe[op] === NONE;
  }

  /** Whether `op`'s result is impossible in every state (for example a failed cas reporting the expected value). */
  selfContradictory(op: number): boolean {
    const eq = this.reqEq[op]!;
    return eq === IMPOSSIBLE || (eq !== NONE && eq === this.reqNe[op]);
  }

  value(s: number): string | null {
    return this.values[s] ?? null;
  }

  stateName(s: number): string {
    const v = this.value(s);
    return v === null ? 'absent' : JSON.stringify(v);
  }

  describe(op: number): string {
    const k = this.ops[op]!;
    return `${describeOp(k.op, k.index)}${k.mustTakeEffect ? ` (its value was read by ${k.ret.toFixed(3)})` : ''}`;
  }

  /** Why `op` cannot take effect in state `s` (or why that does not help), in words. */
  whyNot(op: number, s: number): string {
    if (this.selfContradictory(op)) return 'its result contradicts itself';
    if (this.step(op, s) >= 0) {
      return this.ret[op] === Infinity ? 'its outcome is unknown, and taking effect here leads nowhere' : 'it could take effect here, but no order goes on from there';
    }
    const held = this.stateName(s);
    const o = this.ops[op]!.op;
    const r = o.result;
    switch (o.op) {
      case 'get':
        return `it read ${this.stateName(this.reqEq[op]!)} but the key held ${held}`;
      case 'put':
        return `it saw the previous value ${this.stateName(this.reqEq[op]!)} but the key held ${held}`;
      case 'delete':
        if (r?.prev !== undefined && s !== this.reqEq[op]) return `it saw the previous value ${this.stateName(this.reqEq[op]!)} but the key held ${held}`;
        return r?.deleted ? 'it deleted a key that was absent' : `it found the key absent but the key held ${held}`;
      case 'cas':
        if (o.status !== 'ok' || r?.swapped) return `it swapped from ${this.stateName(this.reqEq[op]!)} but the key held ${held}`;
        if (this.reqNe[op] === s) return `it did not swap, yet the key held the expected ${held}`;
        return `it reported the current value ${this.stateName(this.reqEq[op]!)} but the key held ${held}`;
    }
  }

  private id(v: string | null): number {
    if (v === null) return ABSENT;
    let id = this.ids.get(v);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(v);
      this.ids.set(v, id);
    }
    return id;
  }

  private requireEq(i: number, v: string | null): void {
    const s = this.id(v);
    const cur = this.reqEq[i]!;
    this.reqEq[i] = cur === NONE || cur === s ? s : IMPOSSIBLE;
  }

  private compile(i: number, k: KeyOp): void {
    const o = k.op;
    const r = o.result;
    if (o.status === 'ok') {
      switch (o.op) {
        case 'get':
          this.requireEq(i, r?.value ?? null);
          return;
        case 'put':
          this.write[i] = this.id(o.value ?? null);
          if (r?.prev !== undefined) this.requireEq(i, r.prev);
          return;
        case 'delete':
          this.write[i] = ABSENT;
          if (r?.deleted === true) this.reqNe[i] = ABSENT;
          if (r?.deleted === false) this.requireEq(i, null);
          if (r?.prev !== undefined) this.requireEq(i, r.prev);
          return;
        case 'cas':
          if (r?.swapped) {
            this.requireEq(i, o.expected ?? null);
            this.write[i] = this.id(o.value ?? null);
            // The server reports the pair after the swap: it must be the new value.
            if (r.value !== undefined && r.value !== o.value) this.reqEq[i] = IMPOSSIBLE;
          } else {
            this.reqNe[i] = this.id(o.expected ?? null);
            if (r?.value !== undefined) this.requireEq(i, r.value);
          }
          return;
      }
    }
    // Unknown: the op may take effect (once, at any point after its call) or never. Unknown gets never
    // reach the model: a read has no effect.
    switch (o.op) {
      case 'get':
        throw new Error(`RegisterModel: an unknown get reached the model (${describeOp(o, k.index)})`);
      case 'put':
        this.write[i] = this.id(o.value ?? null);
        return;
      case 'delete':
        this.write[i] = ABSENT;
        return;
      case 'cas':
        this.write[i] = this.id(o.value ?? null);
        // Observed: it must have swapped. Otherwise a cas that found another value is a no-op, which is
        // the same as never taking effect.
        if (k.mustTakeEffect) this.requireEq(i, o.expected ?? null);
        else this.condEq[i] = this.id(o.expected ?? null);
        return;
    }
  }
}
