// The RaftPeer gRPC service (proto/raft.proto), loaded at runtime with @grpc/proto-loader, and the
// constants both ends of a peer stream agree on.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * Where proto/raft.proto is: two levels up from this file when run from source (src/transport/),
 * three when compiled (dist/src/transport/).
 */
export const PEER_PROTO_PATH: string = (() => {
  const candidates = ['../../proto/raft.proto', '../../../proto/raft.proto'].map((rel) =>
    fileURLToPath(new URL(rel, import.meta.url)),
  );
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`proto/raft.proto not found; looked at ${candidates.join(', ')}`);
  return found;
})();

export const PEER_SERVICE_NAME = 'raftkv.peer.v1.RaftPeer';

/** The loaded package definition (also what @grpc/reflection needs to describe the service). */
export const peerPackageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(PEER_PROTO_PATH, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

export const peerServiceDefinition = peerPackageDefinition[PEER_SERVICE_NAME] as grpc.ServiceDefinition;

/** What protobufjs gives and takes for a PeerFrame. */
export interface PeerFrame {
  payload: Buffer;
}

export type PeerAck = Record<string, never>;

export const streamMethod = peerServiceDefinition['Stream'] as grpc.MethodDefinition<PeerFrame, PeerAck>;

/**
 * A SnapshotChunk as protobufjs takes it (numbers) and gives it (uint64 as decimal strings, since the
 * loader uses `longs: String`: see parseUint64).
 */
export interface SnapshotChunkPb {
  term: number | string;
  seq: number | string;
  data: Uint8Array;
  last: boolean;
}

/** A SnapshotAck, as SnapshotChunkPb. */
export interface SnapshotAckPb {
  seq: number | string;
  done: boolean;
  index: number | string;
  term: number | string;
}

export const installSnapshotMethod = peerServiceDefinition['InstallSnapshot'] as grpc.MethodDefinition<
  SnapshotChunkPb,
  SnapshotAckPb
>;

/**
 * A decoded uint64 as a number, or undefined when it is not a non-negative safe integer (never a
 * silently rounded one). Takes the decimal strings protobufjs gives, and numbers.
 */
export function parseUint64(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Bytes a SnapshotChunk adds around its data: term and seq (a tag and a 64-bit varint each, 11 bytes),
 * the data's tag and length (6 bytes below 4 GiB) and `last` (2 bytes), rounded up.
 */
export const SNAPSHOT_CHUNK_OVERHEAD_BYTES = 32;

/** The largest encoded SnapshotAck: a tag and a 64-bit varint for each number, 2 bytes for `done`. */
export const MAX_SNAPSHOT_ACK_BYTES = 3 * 11 + 2;

/** Metadata keys of a Stream or InstallSnapshot call (see proto/raft.proto). */
export const METADATA_CLUSTER_ID = 'raftkv-cluster-id';
export const METADATA_FROM_NODE = 'raftkv-from-node';
export const METADATA_TO_NODE = 'raftkv-to-node';

/**
 * Bytes a PeerFrame adds around its payload: the field tag (1 byte) and the payload length (a varint,
 * at most 5 bytes below 4 GiB). A sender keeps payloads within maxMessageBytes minus this.
 */
export const PEER_FRAME_OVERHEAD_BYTES = 6;

/** Default limit on one peer frame (a raw frame's payload, or one gRPC message), in bytes. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * Server options that make gRPC itself refuse peer frames larger than maxMessageBytes (with
 * RESOURCE_EXHAUSTED, before they are buffered whole). Pass them to `new grpc.Server(...)`. The
 * limit is server-wide: when client traffic shares the server, use the larger of the two limits here;
 * PeerTransport still refuses peer payloads above its own maxMessageBytes.
 */
export function peerServerOptions(maxMessageBytes: number = DEFAULT_MAX_MESSAGE_BYTES): grpc.ServerOptions {
  return { 'grpc.max_receive_message_length': maxMessageBytes };
}
