// Registers the Maintenance service (proto/maintenance.proto) on a gRPC server: per-node snapshots.
// CreateSnapshot takes one now; SaveSnapshot streams a copy of the node's state machine in the
// checksummed snapshot format, pulling the next chunk from the store only when the previous ones
// have left the process (flow control end to end: a slow client slows the LevelDB read down), and
// stopping the read as soon as the client goes away. Every failure becomes one gRPC status with the
// raftkv code in the trailing metadata (grpc-errors.ts).

import type * as grpc from '@grpc/grpc-js';
import { LimitError, RaftKvError } from '../errors.js';
import type { SnapshotHeader } from '../storage/snapshot-format.js';
import { toServiceError } from './grpc-errors.js';
import { maintenanceServiceDefinition } from './kv-proto.js';
import type * as pb from './kv-proto.js';

/** SaveSnapshot's chunk size when the request says 0. */
export const DEFAULT_SNAPSHOT_CHUNK_BYTES = 256 * 1024;
/** Limit: bytes of data in one SaveSnapshot chunk, whatever the node's message limit allows. */
export const MAX_SNAPSHOT_CHUNK_BYTES = 1024 * 1024;
/** Bytes a SnapshotChunk message adds to its data (tags, lengths, three uint64); a bound, not exact. */
export const SNAPSHOT_CHUNK_OVERHEAD_BYTES = 64;
/**
 * Limit: chunks handed to gRPC and not yet written to the connection. With HTTP/2 flow control
 * behind it, this bounds what one SaveSnapshot holds in memory to a few chunks.
 */
export const MAX_UNFLUSHED_SNAPSHOT_CHUNKS = 2;
/**
 * Limit: how long SaveSnapshot waits for a client that takes no data before it gives up and releases
 * the snapshot (a LevelDB iterator, which pins the files it reads from).
 */
export const DEFAULT_SNAPSHOT_STALL_TIMEOUT_MS = 60_000;

export interface CreatedSnapshot {
  /** The snapshot's position: the applied index when it was taken, and that entry's term. */
  readonly index: number;
  readonly term: number;
  /** The log starts after this index now. */
  readonly logStartIndex: number;
  /** Entries removed from the log by this call. */
  readonly entriesCompacted: number;
  readonly durationMs: number;
}

/** A consistent copy of the node's state machine, being read (see NodeStore.openSnapshot). */
export interface OpenedSnapshot {
  readonly header: SnapshotHeader;
  /** An estimate of the encoded stream's size, for progress reports; 0 when unknown. */
  readonly approximateBytes: number;
  /**
   * The snapshot stream in chunks of chunkBytes (the last may be shorter). Called at most once;
   * finishing or abandoning the loop releases the copy.
   */
  chunks(chunkBytes: number): AsyncGenerator<Uint8Array>;
  /** Releases the copy (idempotent); called after the stream ended, failed or was cancelled. */
  close(): Promise<void>;
}

export interface MaintenanceHandlers {
  readonly nodeId: number;
  /** Takes a snapshot now and compacts the log behind it. */
  createSnapshot(): Promise<CreatedSnapshot>;
  /** Opens a consistent copy of the state machine at its applied index. */
  openSnapshot(): Promise<OpenedSnapshot>;
}

export interface MaintenanceServiceOptions {
  /**
   * Limit: bytes of data per SaveSnapshot chunk (maxSnapshotChunkBytes). Default and at most
   * MAX_SNAPSHOT_CHUNK_BYTES; a node passes less when its gRPC message limit is smaller, e.g.
   * min(MAX_SNAPSHOT_CHUNK_BYTES, maxMessageBytes - SNAPSHOT_CHUNK_OVERHEAD_BYTES).
   */
  readonly maxChunkBytes?: number;
  /** Limit: ms SaveSnapshot waits for a client that takes no data (maxSnapshotStallMs). Default DEFAULT_SNAPSHOT_STALL_TIMEOUT_MS. */
  readonly stallTimeoutMs?: number;
}

/** The chunk size a SaveSnapshot request asks for, checked against the limit. */
export function snapshotChunkBytes(requested: number | undefined, maxChunkBytes: number): number {
  const n = requested ?? 0;
  if (n === 0) return Math.min(DEFAULT_SNAPSHOT_CHUNK_BYTES, maxChunkBytes);
  if (n > maxChunkBytes) throw new LimitError('INVALID_ARGUMENT', 'maxSnapshotChunkBytes', maxChunkBytes, `chunk_bytes is ${n}, over the limit`);
  return n;
}

export function addMaintenanceService(server: grpc.Server, h: MaintenanceHandlers, opts: MaintenanceServiceOptions = {}): void {
  const maxChunkBytes = opts.maxChunkBytes ?? MAX_SNAPSHOT_CHUNK_BYTES;
  if (!Number.isSafeInteger(maxChunkBytes) || maxChunkBytes < 1 || maxChunkBytes > MAX_SNAPSHOT_CHUNK_BYTES) {
    throw new RangeError(`addMaintenanceService: maxChunkBytes must be in [1, ${MAX_SNAPSHOT_CHUNK_BYTES}], got ${maxChunkBytes}`);
  }
  const stallTimeoutMs = opts.stallTimeoutMs ?? DEFAULT_SNAPSHOT_STALL_TIMEOUT_MS;
  if (!Number.isSafeInteger(stallTimeoutMs) || stallTimeoutMs < 1) throw new RangeError(`addMaintenanceService: stallTimeoutMs must be a positive integer, got ${stallTimeoutMs}`);
  const serviceError = (err: unknown): Partial<grpc.ServiceError> => toServiceError(err, h.nodeId, () => undefined);

  server.addService(maintenanceServiceDefinition, {
    CreateSnapshot: (_call: grpc.ServerUnaryCall<unknown, pb.CreateSnapshotResponse>, callback: grpc.sendUnaryData<pb.CreateSnapshotResponse>) => {
      h.createSnapshot().then(
        (s) =>
          callback(null, {
            index: s.index,
            term: s.term,
            log_start_index: s.logStartIndex,
            entries_compacted: s.entriesCompacted,
            duration_ms: Math.max(0, Math.round(s.durationMs)),
            node_id: h.nodeId,
          }),
        (err: unknown) => callback(serviceError(err)),
      );
    },
    SaveSnapshot: (call: grpc.ServerWritableStream<pb.SaveSnapshotRequest, pb.SnapshotChunkMsg>) => {
      void saveSnapshot(call, h, maxChunkBytes, stallTimeoutMs).catch((err: unknown) => {
        if (!gone(call)) call.emit('error', serviceError(err));
      });
    },
  });
}

/** The client cancelled, its deadline passed, or the connection is gone: nobody reads any more. */
function gone(call: grpc.ServerWritableStream<unknown, unknown>): boolean {
  return call.cancelled || call.destroyed;
}

async function saveSnapshot(
  call: grpc.ServerWritableStream<pb.SaveSnapshotRequest, pb.SnapshotChunkMsg>,
  h: MaintenanceHandlers,
  maxChunkBytes: number,
  stallTimeoutMs: number,
): Promise<void> {
  const chunkBytes = snapshotChunkBytes(call.request?.chunk_bytes, maxChunkBytes);
  if (gone(call)) return;
  const snap = await h.openSnapshot();
  // One waiter at a time: the loop below waits for a flush, a drain, or the end of the call.
  let wake: (() => void) | undefined;
  const wakeUp = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  /** Waits for a wake-up, or at most `ms`. */
  const sleep = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(wakeUp, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  // The client went away: release the snapshot at once (ending a store read in progress), not only
  // once the loop below notices.
  const onGone = (): void => {
    wakeUp();
    void snap.close().catch(() => undefined);
  };
  call.on('cancelled', onGone);
  call.on('close', wakeUp);
  call.on('drain', wakeUp);
  try {
    const { index, term } = snap.header;
    let first = true;
    /** Chunks handed to gRPC whose write callback has not run. Invariant: <= MAX_UNFLUSHED_SNAPSHOT_CHUNKS. */
    let unflushed = 0;
    let needDrain = false;
    // Breaking out of this loop (cancelled) ends the generator, which releases the store's iterator.
    for await (const data of snap.chunks(chunkBytes)) {
      if (gone(call)) break;
      const msg: pb.SnapshotChunkMsg = { data, index, term, approximate_bytes: first ? snap.approximateBytes : 0 };
      first = false;
      unflushed++;
      const ok = call.write(msg, () => {
        unflushed--;
        wakeUp();
      });
      // write() says false when gRPC's own buffer (16 messages) is full; with at most
      // MAX_UNFLUSHED_SNAPSHOT_CHUNKS in it that does not happen, but its word is honoured anyway.
      needDrain ||= !ok;
      // Pull the next chunk only once the earlier ones are on their way (or the call is over). The
      // conditions are re-read after every wake-up, so a wake-up lost while not waiting is harmless.
      const waitStartMs = Date.now();
      while (!gone(call)) {
        if (needDrain && call.writableLength === 0) needDrain = false;
        if (unflushed < MAX_UNFLUSHED_SNAPSHOT_CHUNKS && !needDrain) break;
        const leftMs = waitStartMs + stallTimeoutMs - Date.now();
        if (leftMs <= 0) {
          // Leaving the loop releases the snapshot; the status follows once the client reads again.
          throw new RaftKvError('TIMEOUT', `the client took no snapshot data for ${stallTimeoutMs} ms (limit maxSnapshotStallMs=${stallTimeoutMs})`);
        }
        await sleep(leftMs);
      }
    }
    if (!gone(call)) call.end();
  } finally {
    call.off('cancelled', onGone);
    call.off('close', wakeUp);
    call.off('drain', wakeUp);
    await snap.close();
  }
}
