// The errors of the client library. One base class, KvError, with a stable machine-readable `code`
// (the server's "raftkv-code" trailing metadata when it sent one, else a code derived from the gRPC
// status), the endpoint that answered, and the gRPC status; subclassed by kind of fault, so callers
// can `catch (e) { if (e instanceof NotLeaderError) ... }` or switch on `e.code`.

import * as grpc from '@grpc/grpc-js';
import type { ErrorCode } from '../errors.js';

/**
 * The server's codes (src/errors.ts, TOO_STALE included), plus the client's own: RESOURCE_EXHAUSTED (a
 * gRPC limit such as the message size), CANCELLED, CLOSED (the client was closed), PROTOCOL (a
 * response the client cannot represent, e.g. an integer beyond 2^53 - 1), and the name of any other
 * gRPC status. Codes a newer server sends pass through as strings.
 */
export type KvErrorCode =
  | ErrorCode
  | 'RESOURCE_EXHAUSTED'
  | 'CANCELLED'
  | 'CLOSED'
  | 'PROTOCOL'
  | (string & Record<never, never>);

export interface KvErrorOptions {
  /** The endpoint (host:port) whose answer this is; undefined for errors raised by the client itself. */
  readonly endpoint?: string | undefined;
  /** The gRPC status code, when the error came from a call. */
  readonly grpcCode?: grpc.status | undefined;
  /** The node that answered (metadata "raftkv-node-id"), 0 if unknown. */
  readonly nodeId?: number | undefined;
  readonly cause?: unknown;
}

export class KvError extends Error {
  readonly code: KvErrorCode;
  readonly endpoint: string | undefined;
  readonly grpcCode: grpc.status | undefined;
  readonly nodeId: number;
  /** How many attempts the call made before giving up with this error (1: no retry). */
  attempts = 1;

  constructor(code: KvErrorCode, message: string, options: KvErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.endpoint = options.endpoint;
    this.grpcCode = options.grpcCode;
    this.nodeId = options.nodeId ?? 0;
  }
}

/** The node asked is not the leader. `leaderId`/`leaderAddress` name the leader when it knows one. */
export class NotLeaderError extends KvError {
  /** 0 when no leader is known. */
  readonly leaderId: number;
  readonly leaderAddress: string | undefined;
  constructor(message: string, leaderId: number, leaderAddress: string | undefined, options: KvErrorOptions = {}) {
    super('NOT_LEADER', message, options);
    this.leaderId = leaderId;
    this.leaderAddress = leaderAddress;
  }
}

/**
 * The node asked cannot reach a majority (a leader cut off from it, or a follower that has not heard
 * from a leader within an election timeout), so it can neither commit writes nor confirm reads: the
 * cluster is read-only from there, and STALE reads still work. Transient: retried (on the next
 * endpoint, within the call's deadline), and writes resume by themselves once a quorum is back.
 */
export class NoQuorumError extends KvError {}

/** The request is malformed or over a limit; the message names the field or limit. Never retried. */
export class InvalidArgumentError extends KvError {}

/**
 * The deadline passed. For a write, the outcome is unknown: it may still be applied (once: a
 * retry with the same session sequence would not apply it again).
 */
export class TimeoutError extends KvError {}

/** No node could serve the call: connection refused or reset, no leader known, node shutting down. */
export class UnavailableError extends KvError {}

/** A STALE read was refused because the node has not heard from a leader within max_staleness_ms. */
export class TooStaleError extends KvError {}

/** A limit was reached: pending requests on a node, uncommitted bytes, or a gRPC message size. */
export class ResourceExhaustedError extends KvError {}

type Ctor = new (code: KvErrorCode, message: string, options?: KvErrorOptions) => KvError;

const classOfCode: Readonly<Record<string, Ctor>> = {
  NO_QUORUM: NoQuorumError,
  INVALID_ARGUMENT: InvalidArgumentError,
  TIMEOUT: TimeoutError,
  UNAVAILABLE: UnavailableError,
  TOO_STALE: TooStaleError,
  TOO_MANY_REQUESTS: ResourceExhaustedError,
  UNCOMMITTED_LIMIT: ResourceExhaustedError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
};

/** The code the client uses for a gRPC status that came without "raftkv-code" metadata. */
const codeOfStatus: Partial<Record<grpc.status, KvErrorCode>> = {
  [grpc.status.UNAVAILABLE]: 'UNAVAILABLE',
  [grpc.status.DEADLINE_EXCEEDED]: 'TIMEOUT',
  [grpc.status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [grpc.status.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [grpc.status.CANCELLED]: 'CANCELLED',
};

/** An error built from its code: the subclass that code belongs to. */
export function kvErrorOf(code: KvErrorCode, message: string, options: KvErrorOptions = {}): KvError {
  const C = classOfCode[code] ?? KvError;
  return new C(code, message, options);
}

export function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number' && 'metadata' in err;
}

function firstString(md: grpc.Metadata | undefined, key: string): string | undefined {
  const v = md?.get(key)[0];
  return v === undefined ? undefined : String(v);
}

/** The KvError for a failed call to `endpoint` (anything else thrown is wrapped as INTERNAL). */
export function fromCallError(err: unknown, endpoint: string): KvError {
  if (err instanceof KvError) return err;
  if (!isServiceError(err)) {
    return new KvError('INTERNAL', (err as Error)?.message ?? String(err), { endpoint, cause: err });
  }
  const md = err.metadata;
  const raftkvCode = firstString(md, 'raftkv-code');
  const nodeId = Number(firstString(md, 'raftkv-node-id') ?? 0) || 0;
  const code: KvErrorCode = raftkvCode ?? codeOfStatus[err.code] ?? grpc.status[err.code] ?? 'UNKNOWN';
  // The server puts "CODE: " in front of its message; the code is carried separately here.
  // gRPC's connection errors may end in an empty "Resolution note:".
  let message = (err.details || err.message).replace(/\s*Resolution note:\s*$/, '');
  if (raftkvCode !== undefined && message.startsWith(`${raftkvCode}: `)) message = message.slice(raftkvCode.length + 2);
  const options: KvErrorOptions = { endpoint, grpcCode: err.code, nodeId, cause: err };
  if (code === 'NOT_LEADER') {
    const leaderId = Number(firstString(md, 'raftkv-leader-id') ?? 0) || 0;
    return new NotLeaderError(message, leaderId, firstString(md, 'raftkv-leader-address'), options);
  }
  return kvErrorOf(code, message, options);
}

/**
 * Whether another attempt (on another node, after a backoff) may succeed. Faults of one node or of
 * the moment (no leader yet, node down, overloaded, too stale) are retried; faults of the request
 * (INVALID_ARGUMENT), of the session (STALE_SEQUENCE, FAILED_PRECONDITION) and of the server's
 * state (INTERNAL, STORE_*) are not: retrying would give the same answer.
 */
export function isRetryable(e: KvError): boolean {
  switch (e.code) {
    case 'NOT_LEADER':
    case 'NO_QUORUM':
    case 'UNAVAILABLE':
    case 'TIMEOUT':
    case 'TOO_STALE':
    case 'TOO_MANY_REQUESTS':
    case 'UNCOMMITTED_LIMIT':
      return true;
    default:
      return false;
  }
}
