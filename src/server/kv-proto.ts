// proto/kv.proto, loaded at run time, and the shapes protobufjs gives and takes for it (with the
// loader options below: snake_case fields, 64-bit integers as decimal strings, enums as names,
// bytes as Buffers, and the name of the set field of a oneof in a virtual field).

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** proto/NAME, from src/server/ or from the compiled dist/src/server/. */
function protoPath(name: string): string {
  const candidates = [`../../proto/${name}`, `../../../proto/${name}`].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`proto/${name} not found; looked at ${candidates.join(', ')}`);
  return found;
}

export const KV_PROTO_PATH: string = protoPath('kv.proto');

export const KV_SERVICE_NAME = 'raftkv.v1.KV';

export const kvLoaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

export const kvPackageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(KV_PROTO_PATH, kvLoaderOptions);
export const kvServiceDefinition = kvPackageDefinition[KV_SERVICE_NAME] as grpc.ServiceDefinition;

export type ConsistencyName = 'CONSISTENCY_UNSPECIFIED' | 'LINEARIZABLE' | 'LEASE' | 'STALE';
/** Wire integers: decimal strings on decode; numbers or strings on encode. */
export type U64 = string | number;

export interface ResponseHeader {
  index: U64;
  node_id: U64;
  term: U64;
  leader_id: U64;
  consistency: ConsistencyName;
  staleness_ms: U64;
}

export interface KeyValueMsg {
  key: Uint8Array;
  value: Uint8Array;
  create_index: U64;
  mod_index: U64;
  version: U64;
}

export interface WriteSessionMsg {
  client_id: string;
  seq: U64;
}

export interface ReadOptionsMsg {
  consistency: ConsistencyName | number;
  min_index: U64;
  max_staleness_ms: U64;
}

export interface PutRequest {
  key: Buffer;
  value: Buffer;
  session: WriteSessionMsg | null;
  prev_kv: boolean;
}
export interface PutResponse {
  header: ResponseHeader;
  prev_kv?: KeyValueMsg | null;
}

export interface GetRequest {
  key: Buffer;
  read: ReadOptionsMsg | null;
}
export interface GetResponse {
  header: ResponseHeader;
  found: boolean;
  kv?: KeyValueMsg | null;
}

export interface DeleteRequest {
  key: Buffer;
  session: WriteSessionMsg | null;
  prev_kv: boolean;
}
export interface DeleteResponse {
  header: ResponseHeader;
  deleted: boolean;
  prev_kv?: KeyValueMsg | null;
}

export interface RangeRequest {
  prefix: Buffer;
  start: Buffer;
  end: Buffer;
  limit: number;
  keys_only: boolean;
  page_token: Buffer;
  read: ReadOptionsMsg | null;
}
export interface RangeResponse {
  header: ResponseHeader;
  kvs: KeyValueMsg[];
  more: boolean;
  next_page_token: Uint8Array;
}

export interface CompareAndSwapRequest {
  key: Buffer;
  compare?: 'expected_value' | 'expected_mod_index' | 'expect_absent';
  expected_value?: Buffer;
  expected_mod_index?: U64;
  expect_absent?: boolean;
  value: Buffer;
  session: WriteSessionMsg | null;
}
export interface CompareAndSwapResponse {
  header: ResponseHeader;
  succeeded: boolean;
  current?: KeyValueMsg | null;
}

export interface MemberMsg {
  id: U64;
  client_address: string;
  peer_address: string;
  match_index: U64;
}

export interface StatusResponse {
  node_id: U64;
  role: string;
  term: U64;
  leader_id: U64;
  leader_address: string;
  commit_index: U64;
  applied_index: U64;
  last_index: U64;
  members: MemberMsg[];
  writable: boolean;
  read_only_reason: string;
  ms_since_leader_contact: U64;
  cluster_id: string;
  log_start_index: U64;
  last_snapshot_index: U64;
  last_snapshot_unix_ms: U64;
  snapshots_sent: U64;
  snapshots_installed: U64;
  snapshot_transfers_failed: U64;
  snapshot_transfers_to: U64[];
}

// ---- proto/maintenance.proto: per-node snapshots (src/server/maintenance-service.ts) -------------
// Loaded here, with the same options, so that the client reaches it through this one module.

export const MAINTENANCE_PROTO_PATH: string = protoPath('maintenance.proto');
export const MAINTENANCE_SERVICE_NAME = 'raftkv.maintenance.v1.Maintenance';
export const maintenancePackageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(MAINTENANCE_PROTO_PATH, kvLoaderOptions);
export const maintenanceServiceDefinition = maintenancePackageDefinition[MAINTENANCE_SERVICE_NAME] as grpc.ServiceDefinition;

export interface CreateSnapshotResponse {
  index: U64;
  term: U64;
  log_start_index: U64;
  entries_compacted: U64;
  duration_ms: U64;
  node_id: number;
}

export interface SaveSnapshotRequest {
  chunk_bytes: number;
}

export interface SnapshotChunkMsg {
  data: Uint8Array;
  index: U64;
  term: U64;
  approximate_bytes: U64;
}
