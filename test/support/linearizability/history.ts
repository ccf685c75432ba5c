// The history format: one operation per JSON line, as the fault harness records it and as the checker
// (or any external checker) reads it. README.md in this folder is the reference; this module is its
// validator. Readers ignore fields they do not know, so the harness may add its own (an error code, a
// session sequence number) without breaking anything.

export type OpKind = 'get' | 'put' | 'delete' | 'cas';

/**
 * ok: took effect, with that result. fail: definitely did not take effect (refused before proposing).
 * unknown: may or may not have taken effect, at any time after its call (a timeout, a lost connection).
 */
export type OpStatus = 'ok' | 'fail' | 'unknown';

export type ReadConsistency = 'LINEARIZABLE' | 'LEASE' | 'STALE';

export interface OpResult {
  /**
   * get: the value read (null: the key was absent). cas: the key's value after the operation, when the
   * server reports it (the new value on success, the unchanged current value on failure; null: absent).
   */
  readonly value?: string | null;
  /** cas: whether the swap happened. Required for an ok cas. */
  readonly swapped?: boolean;
  /** delete: whether the key existed (DeleteResponse.deleted), when recorded. */
  readonly deleted?: boolean;
  /** put, delete: the value before the operation (null: absent), when recorded (prev_kv). */
  readonly prev?: string | null;
}

export interface HistoryOp {
  /** The client (process) that issued the operation. Informational: the checker does not need it. */
  readonly client: string;
  readonly op: OpKind;
  readonly key: string;
  /** put: the value written. cas: the new value. */
  readonly value?: string;
  /** cas: the value the key must hold for the swap to happen; null: the key must be absent. */
  readonly expected?: string | null;
  readonly result?: OpResult;
  /** When the client sent the request: milliseconds on the harness's monotonic clock. */
  readonly call: number;
  /** When the client got the answer. Required for ok; ignored for unknown (treated as +infinity). */
  readonly return?: number;
  readonly status: OpStatus;
  /** get: the consistency the read used. STALE reads are not checked unless the caller asks. */
  readonly consistency?: ReadConsistency;
  /** The node that answered, if any. Informational. */
  readonly node?: number;
  /** The Raft index in the response header, if any. Informational. */
  readonly index?: number;
  /** The error code of a fail or unknown operation (NOT_LEADER, TIMEOUT, ...). Informational. */
  readonly error?: string;
}

/** A history that does not follow the format. `line` is 1-based, when the history came from text. */
export class HistoryFormatError extends Error {
  readonly line: number | undefined;
  constructor(message: string, line?: number) {
    super(line !== undefined ? `line ${line}: ${message}` : message);
    this.name = 'HistoryFormatError';
    this.line = line;
  }
}

const KINDS: readonly OpKind[] = ['get', 'put', 'delete', 'cas'];
const STATUSES: readonly OpStatus[] = ['ok', 'fail', 'unknown'];
const CONSISTENCIES: readonly ReadConsistency[] = ['LINEARIZABLE', 'LEASE', 'STALE'];

/**
 * Parses JSON lines into operations, validating each. Empty lines are skipped; operation #n in the
 * checker's reports is the n-th non-empty line.
 */
export function parseHistory(text: string): HistoryOp[] {
  const ops: HistoryOp[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (err) {
      throw new HistoryFormatError(`not JSON: ${err instanceof Error ? err.message : String(err)}`, i + 1);
    }
    ops.push(validateOp(parsed, i + 1));
  }
  return ops;
}

/** One operation as a JSON line (no newline). */
export function formatOp(op: HistoryOp): string {
  return JSON.stringify(op);
}

/** A whole history as JSON lines, each ending in a newline. */
export function formatHistory(ops: readonly HistoryOp[]): string {
  return ops.map((op) => `${formatOp(op)}\n`).join('');
}

/** Checks one decoded record against the format and returns it typed. Throws HistoryFormatError. */
export function validateOp(x: unknown, line?: number): HistoryOp {
  const bad = (msg: string): never => {
    throw new HistoryFormatError(msg, line);
  };
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return bad('an operation must be a JSON object');
  const o = x as Record<string, unknown>;
  if (typeof o.client !== 'string' || o.client === '') bad('"client" must be a non-empty string');
  if (!KINDS.includes(o.op as OpKind)) bad(`"op" must be one of ${KINDS.join(', ')}`);
  if (typeof o.key !== 'string') bad('"key" must be a string');
  if (!STATUSES.includes(o.status as OpStatus)) bad(`"status" must be one of ${STATUSES.join(', ')}`);
  if (typeof o.call !== 'number' || !Number.isFinite(o.call)) bad('"call" must be a finite number');
  const kind = o.op as OpKind;
  const status = o.status as OpStatus;

  if (o.return !== undefined) {
    if (typeof o.return !== 'number' || !Number.isFinite(o.return)) bad('"return" must be a finite number');
    if (status !== 'unknown' && (o.return as number) < (o.call as number)) bad('"return" is before "call"');
  } else if (status === 'ok') {
    bad('an ok operation needs "return"');
  }

  if (kind === 'put' || kind === 'cas') {
    if (typeof o.value !== 'string') bad(`a ${kind} needs "value" (a string)`);
  } else if (o.value !== undefined) {
    bad(`a ${kind} takes no "value"`);
  }
  if (kind === 'cas') {
    if (!('expected' in o) || (o.expected !== null && typeof o.expected !== 'string')) bad('a cas needs "expected" (a string, or null for absent)');
  } else if (o.expected !== undefined) {
    bad(`a ${kind} takes no "expected"`);
  }

  if (o.result !== undefined) {
    if (typeof o.result !== 'object' || o.result === null || Array.isArray(o.result)) bad('"result" must be an object');
    const r = o.result as Record<string, unknown>;
    if (r.value !== undefined && r.value !== null && typeof r.value !== 'string') bad('"result.value" must be a string or null');
    if (r.swapped !== undefined && typeof r.swapped !== 'boolean') bad('"result.swapped" must be a boolean');
    if (r.deleted !== undefined && typeof r.deleted !== 'boolean') bad('"result.deleted" must be a boolean');
    if (r.prev !== undefined && r.prev !== null && typeof r.prev !== 'string') bad('"result.prev" must be a string or null');
  }
  const result = o.result as OpResult | undefined;
  if (status === 'ok' && kind === 'get' && result?.value === undefined) bad('an ok get needs "result.value" (a string, or null for absent)');
  if (status === 'ok' && kind === 'cas' && result?.swapped === undefined) bad('an ok cas needs "result.swapped"');

  if (o.consistency !== undefined && !CONSISTENCIES.includes(o.consistency as ReadConsistency)) {
    bad(`"consistency" must be one of ${CONSISTENCIES.join(', ')}`);
  }
  for (const f of ['node', 'index'] as const) {
    if (o[f] !== undefined && (typeof o[f] !== 'number' || !Number.isInteger(o[f]) || (o[f] as number) < 0)) bad(`"${f}" must be a non-negative integer`);
  }
  if (o.error !== undefined && typeof o.error !== 'string') bad('"error" must be a string');
  return o as unknown as HistoryOp;
}

/** A one-line description of operation `i` (0-based) for reports: `#13 c2 get "k1" -> "v1" ok [10.000, 12.500] (node 2, index 40)`. */
export function describeOp(op: HistoryOp, i: number): string {
  const q = (v: string | null | undefined): string => (v === null || v === undefined ? 'absent' : JSON.stringify(v));
  const r = op.result;
  let what: string;
  switch (op.op) {
    case 'get':
      what = `get ${JSON.stringify(op.key)}${op.status === 'ok' ? ` -> ${q(r?.value)}` : ''}`;
      break;
    case 'put':
      what = `put ${JSON.stringify(op.key)} = ${q(op.value)}${r?.prev !== undefined ? ` (prev ${q(r.prev)})` : ''}`;
      break;
    case 'delete':
      what = `delete ${JSON.stringify(op.key)}${r?.deleted !== undefined ? ` (deleted ${r.deleted})` : ''}${r?.prev !== undefined ? ` (prev ${q(r.prev)})` : ''}`;
      break;
    case 'cas':
      what = `cas ${JSON.stringify(op.key)} ${q(op.expected)} -> ${q(op.value)}`;
      if (op.status === 'ok') what += r?.swapped ? ' swapped' : ` not swapped${r?.value !== undefined ? ` (current ${q(r.value)})` : ''}`;
      break;
  }
  const ret = op.status === 'unknown' || op.return === undefined ? '?' : op.return.toFixed(3);
  const cons = op.consistency !== undefined && op.consistency !== 'LINEARIZABLE' ? ` ${op.consistency}` : '';
  const where = [op.node !== undefined ? `node ${op.node}` : '', op.index !== undefined ? `index ${op.index}` : ''].filter((s) => s !== '').join(', ');
  return `#${i + 1} ${op.client} ${what}${cons} ${op.status} [${op.call.toFixed(3)}, ${ret}]${where !== '' ? ` (${where})` : ''}`;
}
