// The one base error of raftkv. Every error a caller can meet carries a stable, machine-readable
// `code`; later layers map each code to one gRPC status. This module is pure (the Raft core uses it).

export type ErrorCode =
  | 'NOT_LEADER'
  | 'UNCOMMITTED_LIMIT'
  | 'INVALID_ARGUMENT'
  | 'NO_QUORUM'
  | 'TIMEOUT'
  | 'UNAVAILABLE'
  | 'TOO_MANY_REQUESTS'
  /** A STALE read with max_staleness_ms reached a node that heard from a leader longer ago than that. */
  | 'TOO_STALE'
  /** A write's sequence number is below its client's last one: it is older than a write already applied. */
  | 'STALE_SEQUENCE'
  | 'INTERNAL'
  /** The data directory holds data that fails validation (a gap in the log, an undecodable value). */
  | 'STORE_CORRUPT'
  /** The data directory is not ours: another cluster or node, not a raftkv store, unknown format. */
  | 'STORE_MISMATCH'
  /** The data directory cannot be used: missing (and creating was not allowed), locked, or I/O failed. */
  | 'STORE_UNAVAILABLE'
  /** A snapshot stream fails validation: not a snapshot, truncated, a bad checksum, a record over a limit. */
  | 'SNAPSHOT_CORRUPT';

export class RaftKvError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A proposal or read reached a node that is not the leader. `leader` is 0 when none is known. */
export class NotLeaderError extends RaftKvError {
  readonly leader: number;
  constructor(leader: number, message?: string) {
    super('NOT_LEADER', message ?? (leader ? `not the leader; the leader is node ${leader}` : 'not the leader; no leader is known'));
    this.leader = leader;
  }
}

/** A limit was reached. The message names the limit and its value. */
export class LimitError extends RaftKvError {
  readonly limit: string;
  readonly value: number;
  constructor(code: ErrorCode, limit: string, value: number, detail: string) {
    super(code, `${detail} (limit ${limit}=${value})`);
    this.limit = limit;
    this.value = value;
  }
}

/** The node's durable store refused to open or failed. The message names the data directory. */
export class StoreError extends RaftKvError {
  constructor(code: 'STORE_CORRUPT' | 'STORE_MISMATCH' | 'STORE_UNAVAILABLE', message: string, options?: { cause?: unknown }) {
    super(code, message);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** A snapshot stream (src/storage/snapshot-format.ts) cannot be decoded. The message says what is wrong and where. */
export class SnapshotFormatError extends RaftKvError {
  constructor(message: string) {
    super('SNAPSHOT_CORRUPT', message);
  }
}
