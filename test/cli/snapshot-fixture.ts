// Valid snapshot streams for tests of kvctl's snapshot commands and the cluster script's restore,
// made the way a node makes them: a NodeStore in a temporary folder is given committed entries and
// state (KV records encoded as the state machine stores them), and openSnapshot() streams it.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeRecord } from '../../src/kv/record.js';
import type { Entry } from '../../src/raft/types.js';
import { NodeStore, type SnapshotHeader } from '../../src/storage/index.js';

export interface SnapshotSpec {
  /** The cluster the snapshot is taken in. Default "raftkv". */
  readonly clusterId?: string;
  /** KV pairs; pair i is written by entry i + 1. */
  readonly pairs: ReadonlyArray<readonly [key: string, value: string]>;
  /** Session records: client id and an opaque value (the store does not decode them). */
  readonly sessions?: ReadonlyArray<readonly [clientId: string, value: string]>;
  /** The applied index (>= pairs.length, and >= 1). Default pairs.length + 1. */
  readonly index?: number;
  /** The term of every entry. Default 2. */
  readonly term?: number;
  /** Bytes per chunk. Default 1024, so that even a small snapshot spans several chunks. */
  readonly chunkBytes?: number;
}

export interface SnapshotStream {
  readonly header: SnapshotHeader;
  readonly chunks: readonly Uint8Array[];
  /** The whole stream. */
  readonly bytes: Buffer;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

export async function makeSnapshot(spec: SnapshotSpec): Promise<SnapshotStream> {
  const index = spec.index ?? spec.pairs.length + 1;
  const term = spec.term ?? 2;
  if (index < Math.max(1, spec.pairs.length)) throw new RangeError('makeSnapshot: index must cover every pair');
  const dir = await mkdtemp(join(tmpdir(), 'raftkv-snapshot-fixture-'));
  try {
    const store = await NodeStore.open(join(dir, 'data'), { clusterId: spec.clusterId ?? 'raftkv', nodeId: 1 });
    try {
      const entries: Entry[] = [];
      for (let i = 1; i <= index; i++) entries.push({ index: i, term, type: 'noop', data: new Uint8Array(0) });
      await store.persist({ hardState: { term, vote: 1, commit: index }, entries });
      await store.writeState({
        applied: index,
        appliedTerm: term,
        data: spec.pairs.map(([k, v], i) => [enc(k), encodeRecord({ value: enc(v), createIndex: i + 1, modIndex: i + 1, version: 1 })] as const),
        sessions: (spec.sessions ?? []).map(([id, v]) => [enc(id), enc(v)] as const),
        sessionClockMs: 1_000,
      });
      const reader = await store.openSnapshot();
      const chunks: Uint8Array[] = [];
      for await (const c of reader.chunks(spec.chunkBytes ?? 1024)) chunks.push(new Uint8Array(c));
      return { header: reader.header, chunks, bytes: Buffer.concat(chunks) };
    } finally {
      await store.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `bytes` split into chunks of `size`. */
export function split(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, Math.min(bytes.length, at + size)));
  return out;
}

/** A copy of `bytes` with the byte at `at` flipped. */
export function flipByte(bytes: Uint8Array, at: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}
