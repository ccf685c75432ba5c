// One gRPC status per error code, and the metadata that carries the code (and a leader hint) to
// clients in any language.

import * as grpc from '@grpc/grpc-js';
import { NotLeaderError, RaftKvError, type ErrorCode } from '../errors.js';

export const METADATA_CODE = 'raftkv-code';
export const METADATA_LEADER_ID = 'raftkv-leader-id';
export const METADATA_LEADER_ADDRESS = 'raftkv-leader-address';
export const METADATA_NODE_ID = 'raftkv-node-id';

const statusOf: Record<ErrorCode, grpc.status> = {
  NOT_LEADER: grpc.status.UNAVAILABLE,
  NO_QUORUM: grpc.status.UNAVAILABLE,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  TIMEOUT: grpc.status.DEADLINE_EXCEEDED,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  UNCOMMITTED_LIMIT: grpc.status.RESOURCE_EXHAUSTED,
  TOO_MANY_REQUESTS: grpc.status.RESOURCE_EXHAUSTED,
  TOO_STALE: grpc.status.UNAVAILABLE,
  STALE_SEQUENCE: grpc.status.FAILED_PRECONDITION,
  INTERNAL: grpc.status.INTERNAL,
  STORE_CORRUPT: grpc.status.INTERNAL,
  STORE_MISMATCH: grpc.status.INTERNAL,
  STORE_UNAVAILABLE: grpc.status.INTERNAL,
  SNAPSHOT_CORRUPT: grpc.status.DATA_LOSS,
};

export function grpcStatusOf(code: ErrorCode): grpc.status {
  return statusOf[code] ?? grpc.status.UNKNOWN;
}

/** A ServiceError for `err`, with its code (and leader hint) in the trailing metadata. */
export function toServiceError(err: unknown, nodeId: number, leaderAddress: (id: number) => string | undefined): Partial<grpc.ServiceError> {
  // An error relayed from the leader keeps its status and metadata.
  if (isServiceError(err)) return err;
  const metadata = new grpc.Metadata();
  metadata.set(METADATA_NODE_ID, String(nodeId));
  if (err instanceof RaftKvError) {
    metadata.set(METADATA_CODE, err.code);
    if (err instanceof NotLeaderError && err.leader !== 0) {
      metadata.set(METADATA_LEADER_ID, String(err.leader));
      const addr = leaderAddress(err.leader);
      if (addr) metadata.set(METADATA_LEADER_ADDRESS, addr);
    }
    return { code: grpcStatusOf(err.code), details: `${err.code}: ${err.message}`, metadata };
  }
  metadata.set(METADATA_CODE, 'INTERNAL');
  return { code: grpc.status.INTERNAL, details: `INTERNAL: ${(err as Error)?.message ?? String(err)}`, metadata };
}

export function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'number' && 'metadata' in err;
}
