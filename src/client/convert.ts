// Conversions between the wire shapes (src/server/kv-proto.ts: uint64 as decimal strings, enums as
// names, bytes as Buffers) and the client's (numbers, Consistency, Uint8Array).

import type * as pb from '../server/kv-proto.js';
import { KvError } from './errors.js';
import { KeyValue, type Bytes, type Consistency, type Member, type NodeStatus, type ResponseHeader } from './types.js';

/** Bytes as a Buffer for the wire, without copying a Uint8Array. */
export function toBuffer(b: Bytes): Buffer {
  if (typeof b === 'string') return Buffer.from(b, 'utf8');
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** A wire uint64 as an exact number; throws KvError PROTOCOL beyond 2^53 - 1 (never rounds). */
export function u64(field: string, v: pb.U64 | null | undefined): number {
  if (v === undefined || v === null || v === '') return 0;
  const n = typeof v === 'number' ? v : /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new KvError('PROTOCOL', `response field ${field} is ${String(v)}, not an integer in [0, 2^53 - 1]`);
  }
  return n;
}

/** Checks a number the caller gives for a uint64 field. */
export function checkU64(field: string, n: number, min = 0): number {
  if (!Number.isSafeInteger(n) || n < min) {
    throw new KvError('INVALID_ARGUMENT', `${field} must be an integer in [${min}, 2^53 - 1], got ${n}`);
  }
  return n;
}

const consistencyOf: Readonly<Record<string, Consistency>> = { LINEARIZABLE: 'linearizable', LEASE: 'lease', STALE: 'stale' };
const wireConsistency: Readonly<Record<Consistency, pb.ConsistencyName>> = { linearizable: 'LINEARIZABLE', lease: 'LEASE', stale: 'STALE' };

export function toWireConsistency(c: Consistency): pb.ConsistencyName {
  const w = wireConsistency[c];
  if (w === undefined) throw new KvError('INVALID_ARGUMENT', `consistency must be linearizable, lease or stale, got ${String(c)}`);
  return w;
}

export function fromHeader(h: pb.ResponseHeader | null | undefined): ResponseHeader {
  return {
    index: u64('header.index', h?.index),
    nodeId: u64('header.node_id', h?.node_id),
    term: u64('header.term', h?.term),
    leaderId: u64('header.leader_id', h?.leader_id),
    consistency: consistencyOf[h?.consistency ?? ''] ?? null,
    stalenessMs: u64('header.staleness_ms', h?.staleness_ms),
  };
}

function bytes(b: Uint8Array | null | undefined): Uint8Array {
  return b ?? new Uint8Array(0);
}

export function fromKv(kv: pb.KeyValueMsg | null | undefined): KeyValue | undefined {
  if (kv === null || kv === undefined) return undefined;
  return new KeyValue(bytes(kv.key), bytes(kv.value), u64('kv.create_index', kv.create_index), u64('kv.mod_index', kv.mod_index), u64('kv.version', kv.version));
}

export function fromStatus(endpoint: string, s: pb.StatusResponse): NodeStatus {
  const members: Member[] = (s.members ?? []).map((m) => ({
    id: u64('members.id', m.id),
    clientAddress: m.client_address,
    peerAddress: m.peer_address,
    matchIndex: u64('members.match_index', m.match_index),
  }));
  return {
    endpoint,
    nodeId: u64('node_id', s.node_id),
    role: s.role,
    term: u64('term', s.term),
    leaderId: u64('leader_id', s.leader_id),
    leaderAddress: s.leader_address,
    commitIndex: u64('commit_index', s.commit_index),
    appliedIndex: u64('applied_index', s.applied_index),
    lastIndex: u64('last_index', s.last_index),
    members,
    writable: s.writable,
    readOnlyReason: s.read_only_reason,
    msSinceLeaderContact: u64('ms_since_leader_contact', s.ms_since_leader_contact),
    clusterId: s.cluster_id,
    snapshots: {
      logStartIndex: u64('log_start_index', s.log_start_index ?? 0),
      lastSnapshotIndex: u64('last_snapshot_index', s.last_snapshot_index ?? 0),
      lastSnapshotUnixMs: u64('last_snapshot_unix_ms', s.last_snapshot_unix_ms ?? 0),
      sent: u64('snapshots_sent', s.snapshots_sent ?? 0),
      installed: u64('snapshots_installed', s.snapshots_installed ?? 0),
      failed: u64('snapshot_transfers_failed', s.snapshot_transfers_failed ?? 0),
      sendingTo: (s.snapshot_transfers_to ?? []).map((id) => u64('snapshot_transfers_to', id)),
    },
  };
}
