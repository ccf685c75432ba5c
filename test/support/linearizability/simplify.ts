// Two rewrites of one key's history that keep its verdict and shrink the search. Each unknown write
// has return +infinity, so it is concurrent with everything after its call, and a few of them make the
// search exponential (the known weakness of Knossos and Porcupine on histories full of timeouts).
//
// 1. Drop an unknown write (put, delete, cas) of a value v (absent for a delete) that nothing after
//    it can tell apart from another value. Among the ops that return after the write's call (the
//    only ones that may come after it): no ok op requires the key to hold v (no get read it, no cas
//    swapped from it or reported it as current, no prev or deleted=false shows it), no unknown cas
//    expects it, and no ok op's result only says what the key did NOT hold (a cas that did not swap
//    and did not report the current value, a delete with deleted=true and no prev). Repeated until
//    nothing changes, since dropping an unknown cas removes its expected value from the mentions.
//    Why it is sound: a linearization without the write is one with it (it never took effect).
//    Conversely, take a linearization in which the write takes effect, and remove it. The ops that now see the
//    earlier state s instead of v, up to the next write (all of them return after the write's call),
//    are: ok ops that require v (none, by the conditions), ok ops that require another value (they
//    could not have been there), ok puts and deletes with no prev (valid in any state; they
//    overwrite, so the states after them are unchanged), and unknown cas, which found v != expected
//    and did nothing: remove them too (an unknown op may never take effect). What is left is a
//    linearization without the write.
// 2. Bound an unknown write of a value v that an ok op observed (required the key to hold v), when it
//    is the only op that writes v (absent, for a delete) and v is not the key's initial value: it must
//    have taken effect, before the first observer's linearization point, so before that observer
//    returned. Its return becomes that observer's return, and it must be linearized (an unknown cas
//    must have swapped).
//
// These are optimisations only; check(..., { simplify: false }) skips them, and the randomized tests
// compare the verdicts both ways.

import type { KeyOp } from './register-model.js';

export interface SimplifiedKey {
  readonly ops: readonly KeyOp[];
  /** Unknown writes dropped by rule 1. */
  readonly dropped: number;
  /** Unknown writes bounded by rule 2. */
  readonly bounded: number;
}

/** The value an op writes (put, cas new value; null for a delete), or undefined for a get. */
function written(k: KeyOp): string | null | undefined {
  const o = k.op;
  if (o.op === 'delete') return null;
  return o.op === 'put' || o.op === 'cas' ? (o.value ?? null) : undefined;
}

/** Values an ok op requires the key to hold (null: absent). */
function requiredValues(k: KeyOp): (string | null)[] {
  const o = k.op;
  const r = o.result;
  if (o.status !== 'ok') return [];
  const out: (string | null | undefined)[] = [];
  if (o.op === 'get') out.push(r?.value);
  if (o.op === 'cas') out.push(r?.swapped ? o.expected : r?.value);
  if (o.op === 'put' || o.op === 'delete') out.push(r?.prev);
  if (o.op === 'delete' && r?.deleted === false) out.push(null);
  return out.filter((v): v is string | null => v !== undefined);
}

/**
 * Values whose presence (as opposed to another value) an op can tell: those an ok op requires the
 * key to hold, and the expected value of an unknown cas (it swaps on that value only).
 */
function mentionedValues(k: KeyOp): (string | null)[] {
  const o = k.op;
  if (o.status === 'unknown' && o.op === 'cas') return [o.expected ?? null];
  return requiredValues(k);
}

/** An ok op whose result only rules a state out. */
function onlyRulesOut(k: KeyOp): boolean {
  const o = k.op;
  if (o.status !== 'ok') return false;
  if (o.op === 'cas') return o.result?.swapped === false && o.result.value === undefined;
  if (o.op === 'delete') return o.result?.deleted === true && o.result.prev === undefined;
  return false;
}

export function simplifyKey(ops: readonly KeyOp[], initial: string | null): SimplifiedKey {
  // Rule 1, to a fixed point: dropping an unknown cas removes its mention of its expected value.
  // Only ops that may come after the write count: those that return after it was called.
  let latestBlockerRet = -Infinity;
  for (const k of ops) if (onlyRulesOut(k)) latestBlockerRet = Math.max(latestBlockerRet, k.ret);
  let kept = ops;
  let dropped = 0;
  for (;;) {
    const mentionedBy = new Map<string | null, KeyOp[]>();
    for (const k of kept) {
      for (const v of new Set(mentionedValues(k))) {
        let by = mentionedBy.get(v);
        if (by === undefined) mentionedBy.set(v, (by = []));
        by.push(k);
      }
    }
    const next = kept.filter((k) => {
      const v = k.op.status === 'unknown' ? written(k) : undefined;
      if (v === undefined || latestBlockerRet >= k.op.call) return true;
      // An unknown cas of v -> v mentions its own value; that does not count.
      return (mentionedBy.get(v) ?? []).some((m) => m !== k && m.ret >= k.op.call);
    });
    if (next.length === kept.length) break;
    dropped += kept.length - next.length;
    kept = next;
  }

  // Rule 2.
  const writers = new Map<string | null, number>(); // value -> how many ops write it
  const firstObserverReturn = new Map<string | null, number>();
  for (const k of kept) {
    const w = written(k);
    if (w !== undefined) writers.set(w, (writers.get(w) ?? 0) + 1);
    for (const v of requiredValues(k)) firstObserverReturn.set(v, Math.min(firstObserverReturn.get(v) ?? Infinity, k.ret));
  }
  let bounded = 0;
  const out = kept.map((k): KeyOp => {
    const v = k.op.status === 'unknown' ? written(k) : undefined;
    if (v === undefined) return k;
    const observedBy = firstObserverReturn.get(v);
    if (observedBy === undefined || writers.get(v) !== 1 || v === initial || observedBy < k.op.call) return k;
    bounded++;
    return { ...k, ret: observedBy, mustTakeEffect: true };
  });
  return { ops: out, dropped, bounded };
}
