// One incoming snapshot transfer: the receiving side of an InstallSnapshot call (see
// proto/raft.proto). Chunks are handed to the node's SnapshotSink strictly in order and one at a
// time: the call's reading is paused while a write is pending, so gRPC's own flow control holds the
// sender back and memory stays bounded by a few chunks. Each chunk is acked only once the sink has
// accepted it.

import * as grpc from '@grpc/grpc-js';
import { RaftKvError, type ErrorCode } from '../errors.js';
import type { NodeId, SnapshotMeta } from '../raft/types.js';
import type { TransportLogger } from './logger.js';
import { parseUint64, type SnapshotAckPb, type SnapshotChunkPb } from './peer-service.js';

/**
 * Where an incoming snapshot goes: the node stages it and installs it once complete. The transport
 * calls write() for every chunk in order (an empty snapshot is one empty chunk), never two at once,
 * then finish() once; or abort() when the transfer breaks. Nothing is called after finish() or
 * abort().
 */
export interface SnapshotSink {
  /** Accepts the next chunk; the ack is sent only after this resolves (backpressure). */
  write(chunk: Uint8Array): Promise<void>;
  /** The last chunk was written: verify and install; resolves with what was installed. */
  finish(): Promise<SnapshotMeta>;
  /**
   * The transfer broke (cancel, error, missing `last`, out-of-order seq, peer gone); discard
   * everything. Idempotent. May come while a write() is pending; also comes after a write() that
   * rejected. Never comes once finish() was called: from then on the sink owns the outcome (a
   * failing finish() cleans up by itself).
   */
  abort(reason: Error): void;
}

/**
 * Opens a sink for a snapshot from `from` in the leader's `term`, when its first chunk arrives. Throw
 * a RaftKvError to refuse (a stale term, a transfer the node does not want): the call ends with that
 * error's status and message. Any other exception is a programmer error: it ends the call with
 * INTERNAL and is rethrown asynchronously (crashing the process).
 */
export type SnapshotHandler = (from: NodeId, term: number) => SnapshotSink;

/** What one peer's incoming transfers count. */
export interface SnapshotReceiveCounters {
  /** Transfers installed (final ack sent). */
  receivedTransfers: number;
  /** Chunk data bytes a sink accepted. */
  receivedBytes: number;
  /** Transfers that were accepted and then refused or broken. */
  receiveFailures: number;
}

export type StatusError = Partial<grpc.StatusObject> & { code: grpc.status; details: string };

/**
 * The gRPC status of an error from onSnapshot or a sink, by its code: SNAPSHOT_CORRUPT (a snapshot
 * that fails verification) is DATA_LOSS. Codes not listed (the store's own failures among them) and
 * errors that are not RaftKvErrors are INTERNAL.
 */
const STATUS_BY_CODE: Readonly<Partial<Record<ErrorCode, grpc.status>>> = {
  SNAPSHOT_CORRUPT: grpc.status.DATA_LOSS,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_LEADER: grpc.status.FAILED_PRECONDITION,
  STALE_SEQUENCE: grpc.status.FAILED_PRECONDITION,
  TOO_STALE: grpc.status.FAILED_PRECONDITION,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  NO_QUORUM: grpc.status.UNAVAILABLE,
  STORE_UNAVAILABLE: grpc.status.UNAVAILABLE,
  TIMEOUT: grpc.status.DEADLINE_EXCEEDED,
  TOO_MANY_REQUESTS: grpc.status.RESOURCE_EXHAUSTED,
  UNCOMMITTED_LIMIT: grpc.status.RESOURCE_EXHAUSTED,
};

export function statusOfError(e: unknown): StatusError {
  const details = e instanceof Error ? e.message : String(e);
  const code = e instanceof RaftKvError ? (STATUS_BY_CODE[e.code] ?? grpc.status.INTERNAL) : grpc.status.INTERNAL;
  return { code, details };
}

export interface SnapshotReceiverOptions {
  readonly localId: NodeId;
  readonly peerId: NodeId;
  /** Limit: data bytes of one chunk. */
  readonly maxChunkBytes: number;
  /** No chunk for this long while one is awaited: end the call. */
  readonly idleTimeoutMs: number;
  readonly counters: SnapshotReceiveCounters;
  readonly logger: TransportLogger;
  /** The test-only link filter, both ways. */
  readonly linkOpen: () => boolean;
  /** Asks the node for a sink (the transport's current onSnapshot handler). */
  readonly openSink: SnapshotHandler;
  /** Called once, when the transfer ends either way. */
  readonly onEnd: () => void;
}

export class SnapshotReceiver {
  private sink: SnapshotSink | undefined;
  /** The leader's term, from chunk 0. */
  private term = 0;
  private nextSeq = 0;
  /** A chunk is being handled (the call is paused). */
  private busy = false;
  /** finish() was called: the sink owns the outcome, abort() must not be called. */
  private finishing = false;
  /** The sender half-closed. */
  private senderEnded = false;
  private done = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: SnapshotReceiverOptions,
    private readonly call: grpc.ServerDuplexStream<SnapshotChunkPb, SnapshotAckPb>,
  ) {}

  /** Accepts the call (sends the response headers) and starts reading. */
  start(): void {
    const call = this.call;
    call.sendMetadata(new grpc.Metadata());
    call.on('data', (chunk: SnapshotChunkPb) => this.onData(chunk));
    call.on('end', () => {
      this.senderEnded = true;
      if (!this.busy && !this.finishing) this.endMissingLast();
    });
    call.on('cancelled', () => this.end(undefined, new Error(`node ${this.o.peerId} cancelled the snapshot transfer`)));
    call.on('error', (e: Error) => this.end(undefined, new Error(`the snapshot transfer from node ${this.o.peerId} broke: ${e.message}`)));
    this.armIdleTimer();
  }

  /** Ends the transfer with a (non-OK) status, aborting the sink. */
  fail(status: StatusError): void {
    this.end(status, new Error(status.details));
  }

  private onData(raw: SnapshotChunkPb): void {
    if (this.done) return;
    if (this.busy) {
      // The call is paused while a chunk is handled; a second one here is a bug, not the peer's fault.
      this.fail({ code: grpc.status.INTERNAL, details: 'a snapshot chunk arrived while the previous one was being handled' });
      return;
    }
    this.busy = true;
    this.call.pause();
    this.clearIdleTimer();
    this.onChunk(raw).catch((e: unknown) => {
      this.fail({ code: grpc.status.INTERNAL, details: `failed to handle a snapshot chunk: ${(e as Error)?.message ?? String(e)}` });
      process.nextTick(() => {
        throw e;
      });
    });
  }

  private async onChunk(raw: SnapshotChunkPb): Promise<void> {
    const o = this.o;
    if (!o.linkOpen()) return this.fail(linkCutStatus(o.peerId, o.localId));
    const seq = parseUint64(raw.seq);
    const term = parseUint64(raw.term);
    const data: unknown = raw.data;
    if (seq === undefined || term === undefined || !(data instanceof Uint8Array) || typeof raw.last !== 'boolean') {
      return this.fail({
        code: grpc.status.INVALID_ARGUMENT,
        details: `malformed snapshot chunk (seq ${String(raw.seq)}, term ${String(raw.term)})`,
      });
    }
    if (seq !== this.nextSeq) {
      return this.fail({
        code: grpc.status.INVALID_ARGUMENT,
        details: `snapshot chunk out of order: expected seq ${this.nextSeq}, got ${seq}`,
      });
    }
    if (data.length > o.maxChunkBytes) {
      return this.fail({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `snapshot chunk ${seq} has ${data.length} bytes (limit maxSnapshotChunkBytes=${o.maxChunkBytes})`,
      });
    }
    if (seq === 0) {
      if (term < 1) return this.fail({ code: grpc.status.INVALID_ARGUMENT, details: `snapshot chunk with term ${term}` });
      try {
        this.sink = o.openSink(o.peerId, term);
      } catch (e) {
        if (e instanceof RaftKvError) {
          const status = statusOfError(e);
          o.logger.warn(`refused a snapshot from node ${o.peerId} in term ${term}: ${status.details}`);
          return this.end(status, undefined);
        }
        this.end({ code: grpc.status.INTERNAL, details: `node ${o.localId} failed to open a snapshot sink` }, undefined);
        throw e;
      }
      this.term = term;
    } else if (term !== this.term) {
      return this.fail({
        code: grpc.status.INVALID_ARGUMENT,
        details: `snapshot term changed mid-transfer: chunk 0 had term ${this.term}, chunk ${seq} has ${term}`,
      });
    }
    const sink = this.sink!;
    try {
      await sink.write(data);
    } catch (e) {
      // The sink may hold a partial snapshot: abort() discards it (it is idempotent).
      return this.failSink(e, true);
    }
    if (this.done) return; // broke (and the sink was aborted) while the write was pending
    o.counters.receivedBytes += data.length;
    this.nextSeq++;
    this.call.write({ seq, done: false, index: 0, term: 0 });
    if (!raw.last) {
      this.busy = false;
      if (this.senderEnded) return this.endMissingLast();
      this.armIdleTimer();
      this.call.resume();
      return;
    }
    this.finishing = true;
    let installed: SnapshotMeta;
    try {
      installed = await sink.finish();
    } catch (e) {
      return this.failSink(e, false);
    }
    if (this.done) return; // the sender went away meanwhile; the node installed it anyway
    const index = installed?.index;
    const installedTerm = installed?.term;
    if (!isUint(index) || !isUint(installedTerm)) {
      o.logger.warn(`snapshot from node ${o.peerId}: finish() resolved with ${JSON.stringify(installed)}, not an index and a term`);
      return this.end({ code: grpc.status.INTERNAL, details: `node ${o.localId} installed a snapshot without a valid index and term` }, undefined);
    }
    this.call.write({ seq, done: true, index, term: installedTerm });
    o.counters.receivedTransfers++;
    this.end(null, undefined);
  }

  private failSink(e: unknown, abort: boolean): void {
    if (this.done) return;
    const status = statusOfError(e);
    this.o.logger.warn(`snapshot from node ${this.o.peerId} failed: ${status.details}`);
    this.end(status, abort ? (e instanceof Error ? e : new Error(status.details)) : undefined);
  }

  private endMissingLast(): void {
    this.fail({
      code: grpc.status.INVALID_ARGUMENT,
      details: `the snapshot stream ended without its last chunk (after ${this.nextSeq} chunks)`,
    });
  }

  /**
   * Ends the transfer once: OK (null) after the final ack, with a status, or silently (undefined)
   * when the call is already gone. Aborts the sink with `abortReason` when one is given, a sink is
   * open and finish() was not called.
   */
  private end(status: StatusError | null | undefined, abortReason: Error | undefined): void {
    if (this.done) return;
    this.done = true;
    this.clearIdleTimer();
    if (status !== null) this.o.counters.receiveFailures++;
    const sink = this.sink;
    if (sink !== undefined && !this.finishing && abortReason !== undefined) {
      try {
        sink.abort(abortReason);
      } catch (e) {
        process.nextTick(() => {
          throw e;
        });
      }
    }
    if (status === null) this.call.end();
    else if (status !== undefined && !this.call.cancelled) this.call.emit('error', status);
    this.o.onEnd();
  }

  private armIdleTimer(): void {
    this.clearIdleTimer();
    const ms = this.o.idleTimeoutMs;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      this.fail({ code: grpc.status.DEADLINE_EXCEEDED, details: `no snapshot chunk within snapshotIdleTimeoutMs=${ms}` });
    }, ms);
  }

  private clearIdleTimer(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}

export function linkCutStatus(from: NodeId, to: NodeId): StatusError {
  return { code: grpc.status.UNAVAILABLE, details: `the link ${from} <-> ${to} is cut by the test link filter` };
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
