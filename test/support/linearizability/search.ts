// The search for a linearization of one key's history: Wing & Gong's algorithm with Lowe's
// just-in-time linearization and memoization, as in Porcupine's checkSingle (porcupine/checker.go).
//
// The history becomes a doubly linked list of call and return entries sorted by time (a call before a
// return at the same time, so touching operations count as concurrent). Walking the list, a call
// entry is an operation that may take effect now: if the model accepts it and the configuration
// (set of operations linearized, state) is not known to fail, the operation is linearized and lifted
// out of the list (its call and its return), and the walk restarts from the head. A return entry is
// an operation that had to take effect before this point and did not: the configuration fails; undo
// the last linearized operation and try the next candidate after it. Failed configurations are
// cached, so none is explored twice.
//
// Unknown operations have return +Infinity, so their return entries come after every finite one. The
// walk reaching one means every operation with a finite return is linearized: the history is
// linearizable, and the unknown operations still in the list simply never took effect.
//
// Unknown operations make the search exponential: each is a candidate at every step after its call.
// Two strategies handle them well on different histories, so when a key has any, both run, in turns
// of growing length, and the first to finish decides (each alone is exact):
//  - in-order: Porcupine's, candidates tried in list order, so an unknown operation is tried as soon
//    as it is called. Good when unknown operations took effect soon after their call.
//  - known-first: at each configuration, the operations with a finite return first, then (a second
//    pass over the same candidates) the unknown ones. A configuration is skipped when a failed one
//    has the same finite-return operations and state and a subset of its unknown operations: that
//    one is at least as strong, since an unknown operation can always be left out, and leaving it
//    out changes no candidate (its return is at infinity). And two moves are never tried, each
//    dominated by one tried anyway: an unknown operation that leaves the state as it was, and an
//    unknown blind write (put, delete) right after another (the first one could have been left
//    out). A configuration entered by a blind write is therefore not explored completely, and is not
//    cached when it fails. This finds violations among many pending unknown writes that in-order
//    cannot get through.

import type { RegisterModel } from './register-model.js';

export interface SearchLimits {
  /** Give up (verdict unknown) when nowMs() passes this. */
  readonly deadlineMs: number;
  readonly nowMs: () => number;
  /** Give up when the caches of failed configurations would hold more than about this many bytes. */
  readonly maxCacheBytes: number;
  /** The strategies to run when the key has unknown ops (default: both). */
  readonly strategies?: readonly SearchStrategy[];
}

export type SearchOutcome =
  | { readonly kind: 'ok'; readonly steps: number }
  | {
      readonly kind: 'violation';
      readonly steps: number;
      /**
       * One longest linearizable prefix the search found (the most finite-return ops, then the fewest
       * unknown ones), as op numbers of the model, in order.
       */
      readonly prefix: readonly number[];
      readonly stateAfterPrefix: number;
      /** The op that had to take effect after that prefix and could not: the first to return. */
      readonly stuck: number;
      /** The ops that had begun before `stuck` returned and were not in the prefix: none could go next. */
      readonly candidates: readonly number[];
    }
  | { readonly kind: 'unknown'; readonly steps: number; readonly reason: 'time' | 'memory'; readonly deepest: number };

export type SearchStrategy = 'in-order' | 'known-first';

/** Loop iterations between two looks at the clock. */
const CLOCK_EVERY_STEPS = 1024;
/** The first turn of each strategy, in steps; turns double up to the last. */
const FIRST_TURN_STEPS = 4096;
const LAST_TURN_STEPS = 1 << 22;
/** What one cached configuration costs besides its bitset: the object, the typed array, the bucket slot. */
const CACHE_ENTRY_OVERHEAD_BYTES = 160;
const NIL = -1;

/** Searches `model` for a linearization within `limits`. */
export function searchLinearization(model: RegisterModel, limits: SearchLimits): SearchOutcome {
  let hasUnknown = false;
  for (let i = 0; i < model.size; i++) if (model.ret[i] === Infinity) hasUnknown = true;
  const strategies = hasUnknown ? (limits.strategies ?? ['in-order', 'known-first']) : ['in-order' as const];
  if (strategies.length === 0) throw new Error('searchLinearization: no strategy');
  const active = strategies.map((s) => new LinearizationSearch(model, s, limits.maxCacheBytes / strategies.length));
  let retiredSteps = 0;
  let retiredDeepest = 0;
  const steps = (): number => active.reduce((sum, s) => sum + s.steps, retiredSteps);
  const deepest = (): number => Math.max(retiredDeepest, ...active.map((s) => s.deepest()));
  for (let turn = FIRST_TURN_STEPS; ; turn = Math.min(turn * 2, LAST_TURN_STEPS)) {
    for (const s of [...active]) {
      const out = s.run(s.steps + turn, limits);
      if (out === undefined) continue;
      if (out.kind === 'unknown' && out.reason === 'memory' && active.length > 1) {
        // Out of memory: the other strategy goes on alone.
        active.splice(active.indexOf(s), 1);
        retiredSteps += s.steps;
        retiredDeepest = Math.max(retiredDeepest, s.deepest());
        continue;
      }
      return out.kind === 'unknown' ? { ...out, steps: steps(), deepest: deepest() } : { ...out, steps: steps() };
    }
  }
}

interface CacheEntry {
  readonly bits: Uint32Array;
  readonly state: number;
}

/** One strategy's search, run in turns: run() goes on from where the last turn stopped. */
export class LinearizationSearch {
  /** Loop iterations so far. */
  steps = 0;

  private readonly model: RegisterModel;
  private readonly knownFirst: boolean;
  private readonly maxCacheBytes: number;
  private readonly words: number;
  // The entries 0..2n-1 in time order; HEAD is a sentinel before the first.
  private readonly head: number;
  private readonly opOf: Int32Array;
  private readonly isCall: Uint8Array;
  /** Call entry -> its return entry. */
  private readonly match: Int32Array;
  private readonly infiniteReturn: Uint8Array;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** Per op: 1 if its return is at infinity (its outcome is unknown). */
  private readonly isUnknown: Uint8Array;
  /** Per op: 1 if it is an unknown blind write. */
  private readonly blind: Uint8Array;
  private readonly unknownMask: Uint32Array;
  private readonly zobrist1: Int32Array;
  private readonly zobrist2: Int32Array;
  /** The set of ops linearized. */
  private readonly bits: Uint32Array;
  private readonly failed = new Map<number, CacheEntry[]>();
  private cacheBytes = 0;
  private readonly entryBytes: number;
  // The ops linearized so far, in order, with the state before each and the pass that found each.
  private readonly stackCall: Int32Array;
  private readonly stackState: Int32Array;
  private readonly stackPass: Uint8Array;
  // Where the walk is: the scalars a turn saves for the next.
  private depth = 0;
  private state: number;
  private hash1 = 0;
  private hash2 = 0;
  /** known-first: 0 while trying finite-return ops, 1 while trying unknown ones. in-order: always 0. */
  private pass = 0;
  private e: number;
  /** Finite-return ops among the linearized ones. */
  private knownDepth = 0;
  /**
   * The best dead end met, for the report: the most finite-return ops linearized, then the fewest
   * unknown ones.
   */
  private best: { prefix: number[]; known: number; state: number; stuckReturn: number } | undefined;

  constructor(model: RegisterModel, strategy: SearchStrategy, maxCacheBytes: number) {
    this.model = model;
    this.knownFirst = strategy === 'known-first';
    this.maxCacheBytes = maxCacheBytes;
    const n = model.size;
    const size = 2 * n;
    const order: number[] = [];
    for (let i = 0; i < n; i++) order.push(i * 2, i * 2 + 1); // even: call of op i/2, odd: its return
    const timeOf = (e: number): number => (e & 1 ? model.ret[e >> 1]! : model.call[e >> 1]!);
    order.sort((a, b) => timeOf(a) - timeOf(b) || (a & 1) - (b & 1) || a - b);
    this.head = size;
    this.opOf = new Int32Array(size);
    this.isCall = new Uint8Array(size);
    this.match = new Int32Array(size).fill(NIL);
    this.infiniteReturn = new Uint8Array(size);
    const posOfCall = new Int32Array(n);
    const posOfReturn = new Int32Array(n);
    order.forEach((e, pos) => {
      const op = e >> 1;
      this.opOf[pos] = op;
      if (e & 1) {
        posOfReturn[op] = pos;
        this.infiniteReturn[pos] = model.ret[op] === Infinity ? 1 : 0;
      } else {
        posOfCall[op] = pos;
        this.isCall[pos] = 1;
      }
    });
    for (let op = 0; op < n; op++) this.match[posOfCall[op]!] = posOfReturn[op]!;
    this.next = new Int32Array(size + 1);
    this.prev = new Int32Array(size + 1);
    for (let p = 0; p < size; p++) {
      this.next[p] = p + 1 < size ? p + 1 : NIL;
      this.prev[p] = p === 0 ? this.head : p - 1;
    }
    this.next[this.head] = size > 0 ? 0 : NIL;
    this.prev[this.head] = NIL;

    // Zobrist hashes of the set; known-first leaves unknown ops out of them, so configurations that
    // differ only in unknown ops share a bucket, where subsumption is checked.
    this.words = (n + 31) >>> 5;
    this.bits = new Uint32Array(this.words);
    this.unknownMask = new Uint32Array(this.words);
    this.isUnknown = new Uint8Array(n);
    this.blind = new Uint8Array(n);
    this.zobrist1 = new Int32Array(n);
    this.zobrist2 = new Int32Array(n);
    let seed = 0x9e3779b9 ^ n;
    const random32 = (): number => {
      // mulberry32: deterministic, so a run (and its step count) is reproducible.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return t ^ (t >>> 14);
    };
    for (let i = 0; i < n; i++) {
      this.blind[i] = model.blindUnknownWrite(i) ? 1 : 0;
      if (model.ret[i] === Infinity) {
        this.isUnknown[i] = 1;
        this.unknownMask[i >>> 5]! |= 1 << (i & 31);
      }
      if (!this.knownFirst || model.ret[i] !== Infinity) {
        this.zobrist1[i] = random32();
        this.zobrist2[i] = random32();
      }
    }
    this.entryBytes = this.words * 4 + CACHE_ENTRY_OVERHEAD_BYTES;
    this.stackCall = new Int32Array(n);
    this.stackState = new Int32Array(n);
    this.stackPass = new Uint8Array(n);
    this.state = model.initial;
    this.e = this.next[this.head]!;
  }

  /** The longest linearizable prefix met so far. */
  deepest(): number {
    return Math.max(this.depth, this.best?.prefix.length ?? 0);
  }

  /** Runs until `steps` reaches untilStep (undefined: not done yet), or to an outcome. */
  run(untilStep: number, limits: SearchLimits): SearchOutcome | undefined {
    const { model, next, opOf, isCall, isUnknown, blind, stackCall, stackState, stackPass, bits, zobrist1, zobrist2 } = this;
    const head = this.head;
    const knownFirst = this.knownFirst;
    let { depth, knownDepth, state, hash1, hash2, pass, e, steps } = this;
    const save = (): void => {
      this.depth = depth;
      this.knownDepth = knownDepth;
      this.state = state;
      this.hash1 = hash1;
      this.hash2 = hash2;
      this.pass = pass;
      this.e = e;
      this.steps = steps;
    };

    while (next[head] !== NIL) {
      if (steps >= untilStep) {
        save();
        return undefined;
      }
      if (++steps % CLOCK_EVERY_STEPS === 0 && limits.nowMs() > limits.deadlineMs) {
        save();
        return { kind: 'unknown', steps, reason: 'time', deepest: this.deepest() };
      }
      if (isCall[e]) {
        const op = opOf[e]!;
        if (knownFirst && isUnknown[op] !== pass) {
          e = next[e]!;
          continue;
        }
        const after = model.step(op, state);
        const dominated =
          knownFirst && isUnknown[op] === 1 && (after === state || (depth > 0 && blind[op] === 1 && blind[opOf[stackCall[depth - 1]!]!] === 1));
        if (after >= 0 && !dominated) {
          const bit = 1 << (op & 31);
          bits[op >>> 5]! |= bit;
          const h1 = hash1 ^ zobrist1[op]!;
          const h2 = hash2 ^ zobrist2[op]!;
          if (!this.knownToFail(cacheKey(h1, h2, after), after)) {
            stackCall[depth] = e;
            stackState[depth] = state;
            stackPass[depth] = pass;
            depth++;
            knownDepth += 1 - isUnknown[op]!;
            state = after;
            hash1 = h1;
            hash2 = h2;
            this.lift(e);
            pass = 0;
            e = next[head]!;
            continue;
          }
          bits[op >>> 5]! &= ~bit;
        }
        e = next[e]!;
        continue;
      }
      // A return entry: its op had to take effect by now.
      if (this.infiniteReturn[e]) {
        save();
        return { kind: 'ok', steps };
      }
      if (knownFirst && pass === 0) {
        pass = 1;
        e = next[head]!;
        continue;
      }
      // Every candidate was tried: this configuration fails.
      const best = this.best;
      if (best === undefined || knownDepth > best.known || (knownDepth === best.known && depth < best.prefix.length)) {
        const prefix: number[] = [];
        for (let i = 0; i < depth; i++) prefix.push(opOf[stackCall[i]!]!);
        this.best = { prefix, known: knownDepth, state, stuckReturn: e };
      }
      if (depth === 0) {
        save();
        return this.violation(steps);
      }
      // A configuration entered by a blind write did not try another blind write next (see the
      // header), so its failure is not complete: it must not prune others.
      const complete = !knownFirst || blind[opOf[stackCall[depth - 1]!]!] === 0;
      if (complete && !this.recordFailure(cacheKey(hash1, hash2, state), state)) {
        save();
        return { kind: 'unknown', steps, reason: 'memory', deepest: this.deepest() };
      }
      depth--;
      const c = stackCall[depth]!;
      const op = opOf[c]!;
      knownDepth -= 1 - isUnknown[op]!;
      state = stackState[depth]!;
      pass = stackPass[depth]!;
      bits[op >>> 5]! &= ~(1 << (op & 31));
      hash1 ^= zobrist1[op]!;
      hash2 ^= zobrist2[op]!;
      this.unlift(c);
      e = next[c]!;
    }
    save();
    return { kind: 'ok', steps };
  }

  private violation(steps: number): SearchOutcome {
    const b = this.best!;
    const inPrefix = new Set(b.prefix);
    const candidates: number[] = [];
    for (let pos = 0; pos < b.stuckReturn; pos++) {
      if (this.isCall[pos] && !inPrefix.has(this.opOf[pos]!)) candidates.push(this.opOf[pos]!);
    }
    return { kind: 'violation', steps, prefix: b.prefix, stateAfterPrefix: b.state, stuck: this.opOf[b.stuckReturn]!, candidates };
  }

  /** Removes a call entry and its return entry from the list. */
  private lift(c: number): void {
    const { next, prev } = this;
    next[prev[c]!] = next[c]!;
    prev[next[c]!] = prev[c]!; // a call is always followed by something: at least its return
    const r = this.match[c]!;
    next[prev[r]!] = next[r]!;
    if (next[r] !== NIL) prev[next[r]!] = prev[r]!;
  }

  /** Puts them back; lifts are undone in reverse order, so their neighbours are where they were. */
  private unlift(c: number): void {
    const { next, prev } = this;
    const r = this.match[c]!;
    next[prev[r]!] = r;
    if (next[r] !== NIL) prev[next[r]!] = r;
    next[prev[c]!] = c;
    prev[next[c]!] = c;
  }

  /**
   * Whether a failed configuration is at least as strong as the current one. in-order: the same set.
   * known-first: the same finite-return ops, and a subset of the unknown ones.
   */
  private subsumes(failed: Uint32Array): boolean {
    const { bits, words } = this;
    if (!this.knownFirst) {
      for (let i = 0; i < words; i++) if (failed[i] !== bits[i]) return false;
      return true;
    }
    for (let i = 0; i < words; i++) {
      const x = failed[i]!;
      const y = bits[i]!;
      if ((x & ~y) !== 0 || (y & ~x & ~this.unknownMask[i]!) !== 0) return false;
    }
    return true;
  }

  private knownToFail(key: number, state: number): boolean {
    const bucket = this.failed.get(key);
    if (bucket === undefined) return false;
    for (const c of bucket) if (c.state === state && this.subsumes(c.bits)) return true;
    return false;
  }

  /** Records the current configuration as failed. False: over the memory budget. */
  private recordFailure(key: number, state: number): boolean {
    const entry: CacheEntry = { bits: this.bits.slice(), state };
    const bucket = this.failed.get(key);
    if (bucket === undefined) {
      this.failed.set(key, [entry]);
    } else {
      bucket.push(entry);
    }
    this.cacheBytes += this.entryBytes;
    return this.cacheBytes <= this.maxCacheBytes;
  }
}

function cacheKey(h1: number, h2: number, state: number): number {
  const s1 = (h1 ^ Math.imul(state + 1, 0x85ebca6b)) >>> 0;
  const s2 = (h2 ^ Math.imul(state + 1, 0xc2b2ae35)) & 0x1fffff;
  return s1 * 0x200000 + s2; // 53 bits: a safe integer
}
