// Validation of every client request field. Each failure is an INVALID_ARGUMENT that names the field,
// and for a limit, the limit and its value.

import { LimitError, RaftKvError } from '../errors.js';
import type { Compare } from '../kv/command.js';
import type { ConsistencyName, ReadOptionsMsg, U64, WriteSessionMsg } from './kv-proto.js';

export interface RequestLimits {
  /** Limit: bytes in a key. */
  readonly maxKeyBytes: number;
  /** Limit: bytes in a value. */
  readonly maxValueBytes: number;
  /** Limit: key-value pairs in one Range page. */
  readonly maxRangePageSize: number;
  /** Limit: bytes in a client id. */
  readonly maxClientIdBytes: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxKeyBytes: 4 * 1024,
  maxValueBytes: 1024 * 1024,
  maxRangePageSize: 1000,
  maxClientIdBytes: 128,
};

export class InvalidArgumentError extends RaftKvError {
  readonly field: string;
  constructor(field: string, message: string) {
    super('INVALID_ARGUMENT', `${field}: ${message}`);
    this.field = field;
  }
}

function tooLarge(field: string, limit: string, value: number, actual: number): LimitError {
  return new LimitError('INVALID_ARGUMENT', limit, value, `${field} is ${actual} bytes, over the limit`);
}

/** A protobuf uint64 (decoded as a decimal string) as an exact JS number. */
export function parseU64(field: string, v: U64 | undefined | null): number {
  if (v === undefined || v === null || v === '') return 0;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(field, `${v} is not a non-negative integer below 2^53`);
    return v;
  }
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError(field, `"${v}" is not an unsigned integer`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(field, `${v} is beyond 2^53 - 1, the largest supported value`);
  return n;
}

export function checkKey(field: string, key: Uint8Array | undefined | null, limits: RequestLimits, allowEmpty = false): Uint8Array {
  const k = key ?? new Uint8Array(0);
  if (!allowEmpty && k.length === 0) throw new InvalidArgumentError(field, 'must not be empty');
  if (k.length > limits.maxKeyBytes) throw tooLarge(field, 'maxKeyBytes', limits.maxKeyBytes, k.length);
  return k;
}

export function checkValue(field: string, value: Uint8Array | undefined | null, limits: RequestLimits): Uint8Array {
  const v = value ?? new Uint8Array(0);
  if (v.length > limits.maxValueBytes) throw tooLarge(field, 'maxValueBytes', limits.maxValueBytes, v.length);
  return v;
}

export interface Session {
  readonly clientId?: string;
  readonly seq?: number;
}

export function checkSession(s: WriteSessionMsg | null | undefined, limits: RequestLimits): Session {
  if (!s || (s.client_id === '' && (s.seq === '0' || s.seq === 0 || s.seq === ''))) return {};
  const clientId = s.client_id ?? '';
  const seq = parseU64('session.seq', s.seq);
  if (clientId === '') throw new InvalidArgumentError('session.client_id', 'must be set when session.seq is');
  const bytes = Buffer.byteLength(clientId, 'utf8');
  if (bytes > limits.maxClientIdBytes) {
    throw new LimitError('INVALID_ARGUMENT', 'maxClientIdBytes', limits.maxClientIdBytes, `session.client_id is ${bytes} bytes, over the limit`);
  }
  if (seq < 1) throw new InvalidArgumentError('session.seq', 'must be >= 1 when session.client_id is set');
  return { clientId, seq };
}

const consistencies: ReadonlySet<string> = new Set(['CONSISTENCY_UNSPECIFIED', 'LINEARIZABLE', 'LEASE', 'STALE']);

export interface ReadRequestOptions {
  readonly consistency: Exclude<ConsistencyName, 'CONSISTENCY_UNSPECIFIED'>;
  readonly minIndex: number;
  readonly maxStalenessMs: number;
}

export function checkReadOptions(r: ReadOptionsMsg | null | undefined): ReadRequestOptions {
  const c = r?.consistency ?? 'CONSISTENCY_UNSPECIFIED';
  // proto-loader leaves an enum value it does not know as a number.
  if (typeof c !== 'string' || !consistencies.has(c)) {
    throw new InvalidArgumentError('read.consistency', `unknown value ${String(c)}; use LINEARIZABLE, LEASE or STALE`);
  }
  const consistency = c === 'CONSISTENCY_UNSPECIFIED' ? 'LINEARIZABLE' : (c as ReadRequestOptions['consistency']);
  const minIndex = parseU64('read.min_index', r?.min_index);
  const maxStalenessMs = parseU64('read.max_staleness_ms', r?.max_staleness_ms);
  if (consistency !== 'STALE' && (minIndex > 0 || maxStalenessMs > 0)) {
    throw new InvalidArgumentError(minIndex > 0 ? 'read.min_index' : 'read.max_staleness_ms', 'applies to STALE reads only');
  }
  return { consistency, minIndex, maxStalenessMs };
}

export function checkCompare(req: {
  compare?: string;
  expected_value?: Uint8Array;
  expected_mod_index?: U64;
  expect_absent?: boolean;
}, limits: RequestLimits): Compare {
  switch (req.compare) {
    case 'expected_value':
      return { kind: 'value', value: checkValue('expected_value', req.expected_value, limits) };
    case 'expected_mod_index': {
      const modIndex = parseU64('expected_mod_index', req.expected_mod_index);
      if (modIndex < 1) throw new InvalidArgumentError('expected_mod_index', 'must be >= 1 (use expect_absent for a missing key)');
      return { kind: 'modIndex', modIndex };
    }
    case 'expect_absent':
      if (req.expect_absent !== true) throw new InvalidArgumentError('expect_absent', 'must be true when set');
      return { kind: 'absent' };
    default:
      throw new InvalidArgumentError('compare', 'one of expected_value, expected_mod_index or expect_absent is required');
  }
}
