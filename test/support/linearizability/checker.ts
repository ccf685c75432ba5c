// The linearizability checker for key-value histories: get, put, delete and compare-and-swap on
// registers, each key checked on its own. A history is linearizable if and only if each key's
// sub-history is (Herlihy & Wing's locality; P-compositionality in Horn & Kroening's terms), so the
// exponential search runs per key (search.ts). What the checker drops first, and why:
//  - fail: the operation definitely did not take effect;
//  - unknown gets: a read has no effect, and its result is unknown;
//  - STALE reads, unless includeStaleReads: they are allowed to be stale, so not linearizable.
// Before searching it looks for violations that need no search (a read of a value nothing wrote, a
// result that contradicts itself), which also gives a clearer report, and it simplifies unknown
// writes (simplify.ts).

import { describeOp, HistoryFormatError, validateOp, type HistoryOp } from './history.js';
import { ABSENT, RegisterModel, type KeyOp } from './register-model.js';
import { searchLinearization, type SearchStrategy } from './search.js';
import { simplifyKey } from './simplify.js';

export type Verdict = 'ok' | 'violation' | 'unknown';

export interface CheckOptions {
  /** Time budget of the whole check, shared by all keys (default 60 s). Past it: verdict unknown. */
  readonly timeoutMs?: number;
  /** Memory budget of one key's search cache (default 512 MiB). Past it: verdict unknown. */
  readonly maxCacheBytes?: number;
  /** Each key's value before the history starts (default: absent). */
  readonly initial?: ReadonlyMap<string, string | null> | Readonly<Record<string, string | null>>;
  /** Check STALE reads too (default false: they may legitimately be stale). */
  readonly includeStaleReads?: boolean;
  /** Apply simplify.ts (default true). Off: the plain search, for comparison. */
  readonly simplify?: boolean;
  /** Look for violations that need no search first (default true). Off: the search finds them. */
  readonly precheck?: boolean;
  /** The search strategies for keys with unknown ops (default both, in turns; see search.ts). */
  readonly strategies?: readonly SearchStrategy[];
  /** The clock for the time budget (default performance.now). */
  readonly nowMs?: () => number;
}

export interface KeyViolation {
  /**
   * unwritten-value: an ok op observed a value that no operation on the key wrote.
   * contradictory-result: an ok op's result is impossible in any state (a failed cas that reports the
   *   expected value as current, a delete that says the key existed and that it was absent, ...).
   * no-linearization: the search found no order.
   */
  readonly kind: 'unwritten-value' | 'contradictory-result' | 'no-linearization';
  /** The op (0-based index into the history) that could not be placed. */
  readonly op: number;
  /** no-linearization: one longest linearizable prefix found, as history indexes, in order. */
  readonly prefix?: readonly number[];
  /** no-linearization: the key's value after that prefix (null: absent). */
  readonly valueAfterPrefix?: string | null;
  /**
   * no-linearization: the ops that had begun by the time `op` returned, outside the prefix (`op`
   * among them), each with why it could not take effect right after the prefix.
   */
  readonly candidates?: readonly { readonly op: number; readonly reason: string }[];
}

export interface KeyResult {
  readonly key: string;
  readonly verdict: Verdict;
  /** Wall-clock time spent on this key. */
  readonly ms: number;
  /** Operations the key's search worked on (after dropping and simplifying). */
  readonly ops: number;
  /** Unknown writes dropped / bounded by simplify.ts. */
  readonly droppedUnknownWrites: number;
  readonly boundedUnknownWrites: number;
  /** Search steps taken (0 when a precheck decided). */
  readonly steps: number;
  readonly violation?: KeyViolation;
  /** Why the verdict is unknown: out of time or memory, with how far the search got. */
  readonly unknownReason?: string;
  /** A human-readable account of a violation or an unknown verdict, several lines. */
  readonly explanation?: string;
}

export interface CheckResult {
  /** violation if any key has one; else unknown if any key is unknown; else ok. */
  readonly verdict: Verdict;
  readonly perKey: Map<string, KeyResult>;
  readonly ms: number;
  /** Operations in the history, and those left out before checking (see the header comment). */
  readonly total: number;
  readonly droppedFailed: number;
  readonly droppedUnknownReads: number;
  readonly droppedStaleReads: number;
  /** The explanations of every key whose verdict is not ok (violations first); absent when ok. */
  readonly explanation?: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_MAX_CACHE_BYTES = 512 * 1024 * 1024;
/** Limit: prefix ops shown in an explanation (the last ones). */
const EXPLAIN_PREFIX_OPS = 8;
/** Limit: candidate ops shown in an explanation. */
const EXPLAIN_CANDIDATE_OPS = 12;

/** Checks `history` (validated first: HistoryFormatError names the bad operation). */
export function check(history: readonly HistoryOp[], options: CheckOptions = {}): CheckResult {
  const nowMs = options.nowMs ?? (() => performance.now());
  const startMs = nowMs();
  const deadlineMs = startMs + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const initialOf = (key: string): string | null => {
    const init = options.initial;
    if (init === undefined) return null;
    const v = init instanceof Map ? init.get(key) : Object.hasOwn(init, key) ? (init as Readonly<Record<string, string | null>>)[key] : undefined;
    return v ?? null;
  };

  let droppedFailed = 0;
  let droppedUnknownReads = 0;
  let droppedStaleReads = 0;
  const byKey = new Map<string, KeyOp[]>();
  history.forEach((op, index) => {
    try {
      validateOp(op);
    } catch (err) {
      throw err instanceof HistoryFormatError ? new HistoryFormatError(`operation #${index + 1}: ${err.message}`) : err;
    }
    if (op.status === 'fail') {
      droppedFailed++;
      return;
    }
    if (op.op === 'get' && op.status === 'unknown') {
      droppedUnknownReads++;
      return;
    }
    if (op.op === 'get' && op.consistency === 'STALE' && !options.includeStaleReads) {
      droppedStaleReads++;
      return;
    }
    const ret = op.status === 'ok' ? op.return! : Infinity;
    let ops = byKey.get(op.key);
    if (ops === undefined) byKey.set(op.key, (ops = []));
    ops.push({ op, index, ret });
  });

  // Small keys first, so one hard key does not use up the budget of the others.
  const keys = [...byKey.keys()].sort((a, b) => byKey.get(a)!.length - byKey.get(b)!.length || (a < b ? -1 : a > b ? 1 : 0));
  const perKey = new Map<string, KeyResult>();
  for (const key of keys) {
    perKey.set(key, checkKey(key, byKey.get(key)!, initialOf(key), { ...options, nowMs, deadlineMs }));
  }
  const results = [...perKey.values()];
  const verdict: Verdict = results.some((r) => r.verdict === 'violation')
    ? 'violation'
    : results.some((r) => r.verdict === 'unknown')
      ? 'unknown'
      : 'ok';
  const explained = [...results.filter((r) => r.verdict === 'violation'), ...results.filter((r) => r.verdict === 'unknown')];
  return {
    verdict,
    perKey,
    ms: nowMs() - startMs,
    total: history.length,
    droppedFailed,
    droppedUnknownReads,
    droppedStaleReads,
    ...(explained.length > 0 ? { explanation: explained.map((r) => r.explanation ?? `key ${JSON.stringify(r.key)}: ${r.verdict}`).join('\n\n') } : {}),
  };
}

interface KeyContext extends CheckOptions {
  readonly nowMs: () => number;
  readonly deadlineMs: number;
}

function checkKey(key: string, ops: readonly KeyOp[], initial: string | null, ctx: KeyContext): KeyResult {
  const t0 = ctx.nowMs();
  const simplified = ctx.simplify === false ? { ops, dropped: 0, bounded: 0 } : simplifyKey(ops, initial);
  const model = new RegisterModel(simplified.ops, initial);
  const base = {
    key,
    ops: model.size,
    droppedUnknownWrites: simplified.dropped,
    boundedUnknownWrites: simplified.bounded,
  };
  const done = (r: Omit<KeyResult, keyof typeof base | 'ms'>): KeyResult => ({ ...base, ...r, ms: ctx.nowMs() - t0 });
  const title = `key ${JSON.stringify(key)} (${plural(model.size, 'op')})`;

  if (ctx.precheck !== false) {
    const v = precheck(model, initial);
    if (v !== undefined) {
      return done({ verdict: 'violation', steps: 0, violation: v.violation, explanation: `${title}: not linearizable.\n  ${v.text}` });
    }
  }
  if (ctx.nowMs() > ctx.deadlineMs) {
    const reason = 'the time budget ran out before this key was searched';
    return done({ verdict: 'unknown', steps: 0, unknownReason: reason, explanation: `${title}: unknown: ${reason}.` });
  }

  const out = searchLinearization(model, {
    deadlineMs: ctx.deadlineMs,
    nowMs: ctx.nowMs,
    maxCacheBytes: ctx.maxCacheBytes ?? DEFAULT_MAX_CACHE_BYTES,
    ...(ctx.strategies !== undefined ? { strategies: ctx.strategies } : {}),
  });
  switch (out.kind) {
    case 'ok':
      return done({ verdict: 'ok', steps: out.steps });
    case 'unknown': {
      const budget = out.reason === 'time' ? 'the time budget ran out' : 'the search cache reached its memory budget';
      const reason = `${budget} after ${out.steps} search steps; the deepest linearizable prefix found places ${out.deepest} of ${model.size} ops`;
      return done({ verdict: 'unknown', steps: out.steps, unknownReason: reason, explanation: `${title}: unknown: ${reason}.` });
    }
    case 'violation': {
      const idx = (op: number): number => model.ops[op]!.index;
      const isUnknown = (op: number): boolean => model.ret[op] === Infinity;
      const unknownOps = model.ops.filter((k) => k.ret === Infinity).length;
      const placed = (prefix: readonly number[]): string => {
        const u = prefix.filter(isUnknown).length;
        const known = `${prefix.length - u} of the ${model.size - unknownOps} ops that took effect`;
        return unknownOps > 0 ? `${known} (and ${u} of the ${unknownOps} whose outcome is unknown)` : known;
      };
      const candidates = out.candidates.map((op) => ({ op: idx(op), reason: model.whyNot(op, out.stateAfterPrefix) }));
      const violation: KeyViolation = {
        kind: 'no-linearization',
        op: idx(out.stuck),
        prefix: out.prefix.map(idx),
        valueAfterPrefix: model.value(out.stateAfterPrefix),
        candidates,
      };
      const lines = [
        `${title}: not linearizable.`,
        `  One longest linearizable prefix places ${placed(out.prefix)} and leaves the key ${out.stateAfterPrefix === ABSENT ? 'absent' : `holding ${model.stateName(out.stateAfterPrefix)}`}.`,
      ];
      if (out.prefix.length > 0) {
        const shown = out.prefix.slice(-EXPLAIN_PREFIX_OPS);
        lines.push(`  Its ${shown.length === out.prefix.length ? '' : `last ${shown.length} `}ops, in order:`);
        for (const op of shown) lines.push(`    ${model.describe(op)}`);
      }
      lines.push(`  Then ${model.describe(out.stuck)} had to take effect before it returned, and could not.`);
      lines.push(`  No op that had begun by then could go next:`);
      for (const op of out.candidates.slice(0, EXPLAIN_CANDIDATE_OPS)) lines.push(`    ${model.describe(op)}: ${model.whyNot(op, out.stateAfterPrefix)}`);
      if (out.candidates.length > EXPLAIN_CANDIDATE_OPS) lines.push(`    ... and ${out.candidates.length - EXPLAIN_CANDIDATE_OPS} more`);
      return done({ verdict: 'violation', steps: out.steps, violation, explanation: lines.join('\n') });
    }
  }
}

/** Violations visible without a search: a self-contradicting result, a value nothing wrote. */
function precheck(model: RegisterModel, initial: string | null): { violation: KeyViolation; text: string } | undefined {
  const writtenValues = new Set<string>();
  if (initial !== null) writtenValues.add(initial);
  for (const k of model.ops) {
    if ((k.op.op === 'put' || k.op.op === 'cas') && k.op.value !== undefined) writtenValues.add(k.op.value);
  }
  for (let i = 0; i < model.size; i++) {
    const k = model.ops[i]!;
    if (model.selfContradictory(i)) {
      return {
        violation: { kind: 'contradictory-result', op: k.index },
        text: `${describeOp(k.op, k.index)}: its result is impossible in any state.`,
      };
    }
    if (k.op.status !== 'ok') continue;
    const r = k.op.result;
    const seen: (string | null | undefined)[] =
      k.op.op === 'get' ? [r?.value] : k.op.op === 'cas' ? [r?.swapped ? k.op.expected : r?.value] : [r?.prev];
    for (const v of seen) {
      if (typeof v === 'string' && !writtenValues.has(v)) {
        return {
          violation: { kind: 'unwritten-value', op: k.index },
          text: `${describeOp(k.op, k.index)}: it observed ${JSON.stringify(v)}, which no operation on this key wrote${initial !== null ? ' and is not its initial value' : ''}.`,
        };
      }
    }
  }
  return undefined;
}

/** The check's result as lines for a terminal: a verdict per key, then each explanation. */
export function formatReport(result: CheckResult): string[] {
  const lines: string[] = [];
  const dropped = [
    result.droppedFailed > 0 ? `${result.droppedFailed} failed` : '',
    result.droppedUnknownReads > 0 ? `${result.droppedUnknownReads} unknown reads` : '',
    result.droppedStaleReads > 0 ? `${result.droppedStaleReads} STALE reads` : '',
  ].filter((s) => s !== '');
  lines.push(
    `${plural(result.total, 'operation')} on ${plural(result.perKey.size, 'key')}${dropped.length > 0 ? ` (left out: ${dropped.join(', ')})` : ''}; checked in ${result.ms.toFixed(1)} ms`,
  );
  const keys = [...result.perKey.keys()].sort();
  for (const key of keys) {
    const r = result.perKey.get(key)!;
    const simplified = r.droppedUnknownWrites + r.boundedUnknownWrites > 0 ? `, unknown writes: ${r.droppedUnknownWrites} dropped, ${r.boundedUnknownWrites} bounded` : '';
    lines.push(`  ${JSON.stringify(key)}: ${r.verdict} (${plural(r.ops, 'op')}, ${plural(r.steps, 'step')}, ${r.ms.toFixed(1)} ms${simplified})`);
  }
  for (const key of keys) {
    const r = result.perKey.get(key)!;
    if (r.explanation !== undefined) lines.push('', ...r.explanation.split('\n'));
  }
  lines.push('', `verdict: ${result.verdict}`);
  return lines;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}
