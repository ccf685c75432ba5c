// One outgoing snapshot transfer: an InstallSnapshot call to one peer (see proto/raft.proto), fed
// from an async iterable of chunks, with a window of chunks written but not yet acknowledged.
//
// Flow control: a chunk is pulled from the iterable only when the window has room, and one chunk is
// held back until the next pull says whether it was the last. So at most maxChunksInFlight + 1
// chunks have been pulled and not acked, and the sender's memory stays bounded by a few chunks
// whatever the snapshot's size.
//
// Each transfer has a channel (and a connection) of its own: a large snapshot then never waits
// behind, nor delays, the peer stream's heartbeats under HTTP/2 flow control.
//
// Whatever ends a transfer early (an abort, a timeout, the peer's refusal, a broken call, the
// transport closing), the call is cancelled and the iterator's return() is called, so that its
// producer can release what it holds (a LevelDB iterator).

import * as grpc from '@grpc/grpc-js';
import { RaftKvError, type ErrorCode } from '../errors.js';
import type { NodeId, SnapshotMeta } from '../raft/types.js';
import type { TransportLogger } from './logger.js';
import {
  installSnapshotMethod,
  MAX_SNAPSHOT_ACK_BYTES,
  METADATA_CLUSTER_ID,
  METADATA_FROM_NODE,
  METADATA_TO_NODE,
  parseUint64,
  SNAPSHOT_CHUNK_OVERHEAD_BYTES,
  type SnapshotAckPb,
  type SnapshotChunkPb,
} from './peer-service.js';

/** Why an outgoing transfer failed. */
export type SnapshotFailureKind =
  /** The caller's signal aborted it (typically: this node stopped leading). */
  | 'aborted'
  /** No ack within the idle timeout, or the call was not accepted within the connect timeout. */
  | 'timeout'
  /** The peer refused or failed it, or gRPC ended the call (connection refused or lost). */
  | 'peer'
  /** This node's transport is closing. */
  | 'closed'
  /** The test-only link filter cut the link. */
  | 'link-cut'
  /** The iterable of chunks threw. */
  | 'source'
  /** The peer broke the protocol (an ack out of order, a final ack too early). */
  | 'protocol';

/**
 * A snapshot transfer that did not complete. Code UNAVAILABLE, except TIMEOUT for a timeout and, for
 * a failing source, the source's own code (INTERNAL unless it threw a RaftKvError).
 */
export class SnapshotTransferError extends RaftKvError {
  readonly peer: NodeId;
  readonly kind: SnapshotFailureKind;
  /** The gRPC status the call ended with, when it was the peer (or gRPC) that ended it. */
  readonly status: grpc.status | undefined;
  constructor(
    code: ErrorCode,
    peer: NodeId,
    kind: SnapshotFailureKind,
    message: string,
    options?: { status?: grpc.status; cause?: unknown },
  ) {
    super(code, message);
    this.peer = peer;
    this.kind = kind;
    this.status = options?.status;
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** What one peer's outgoing transfers count. */
export interface SnapshotSendCounters {
  /** Transfers the peer confirmed installed (final ack). */
  sentTransfers: number;
  /** Chunk data bytes the peer acknowledged. */
  sentBytes: number;
  /** Transfers that ended any other way, refusals before the call included. */
  sendFailures: number;
}

export interface SnapshotSenderOptions {
  readonly localId: NodeId;
  readonly peerId: NodeId;
  readonly address: string;
  readonly clusterId: string;
  readonly credentials: grpc.ChannelCredentials;
  /** The leader's term, sent in every chunk. */
  readonly term: number;
  /** Limit: chunks written and not yet acknowledged. */
  readonly maxChunksInFlight: number;
  /** Limit: data bytes of one chunk; a larger chunk is a programmer error. */
  readonly maxChunkBytes: number;
  readonly connectTimeoutMs: number;
  /** No ack for this long while one is awaited: cancel. */
  readonly idleTimeoutMs: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly counters: SnapshotSendCounters;
  readonly logger: TransportLogger;
  /** The test-only link filter, both ways: chunks go one way and acks the other. */
  readonly linkOpen: () => boolean;
  /** Called once, when the transfer settles either way. */
  readonly onSettled: () => void;
}

const EMPTY = new Uint8Array(0);

export class SnapshotSender {
  readonly result: Promise<SnapshotMeta>;
  private resolve!: (meta: SnapshotMeta) => void;
  private reject!: (err: Error) => void;
  private settled = false;
  private readonly iterator: AsyncIterator<Uint8Array>;
  /** The iterator finished by itself (done or threw), or we called its return(). */
  private iteratorEnded = false;
  private client: grpc.Client | undefined;
  private call: grpc.ClientDuplexStream<SnapshotChunkPb, SnapshotAckPb> | undefined;
  private callEnded = false;
  /** The call ended with OK / its read side ended: both are needed to say no final ack will come. */
  private okStatus = false;
  private readEnded = false;
  private accepted = false;
  /** Data bytes of the chunks written and not yet acked, oldest first. Invariant: length <= maxChunksInFlight. */
  private readonly inFlightBytes: number[] = [];
  /** The seq the next (non-final) ack must carry. Invariant: nextAckSeq + inFlightBytes.length = chunks written. */
  private nextAckSeq = 0;
  /** The last chunk's seq, once it is written. */
  private lastSeq: number | undefined;
  /** The connect timeout, then the idle timeout. */
  private timer: NodeJS.Timeout | undefined;
  /** Wakes the pump when the window opens or the transfer settles. */
  private wake: (() => void) | undefined;
  private readonly onAbort = (): void => this.fail(this.abortedError());

  constructor(
    private readonly o: SnapshotSenderOptions,
    chunks: AsyncIterable<Uint8Array>,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.result = new Promise<SnapshotMeta>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.iterator = chunks[Symbol.asyncIterator]();
  }

  /** Opens the call and starts pumping chunks. Settles `result` at once if already aborted or cut. */
  start(): void {
    const o = this.o;
    if (this.signal?.aborted) return this.fail(this.abortedError());
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    if (!o.linkOpen()) return this.fail(this.linkCutError());
    const client = new grpc.Client(o.address, o.credentials, {
      'grpc.max_send_message_length': o.maxChunkBytes + SNAPSHOT_CHUNK_OVERHEAD_BYTES,
      'grpc.max_receive_message_length': MAX_SNAPSHOT_ACK_BYTES,
      // Retries would buffer chunks inside gRPC, beyond our window; the leader retries by itself.
      'grpc.enable_retries': 0,
      'grpc.use_local_subchannel_pool': 1,
      'grpc.keepalive_time_ms': o.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs,
    });
    this.client = client;
    const metadata = new grpc.Metadata();
    metadata.set(METADATA_CLUSTER_ID, o.clusterId);
    metadata.set(METADATA_FROM_NODE, String(o.localId));
    metadata.set(METADATA_TO_NODE, String(o.peerId));
    const call = client.makeBidiStreamRequest<SnapshotChunkPb, SnapshotAckPb>(
      installSnapshotMethod.path,
      installSnapshotMethod.requestSerialize,
      installSnapshotMethod.responseDeserialize,
      metadata,
      {},
    );
    this.call = call;
    call.on('metadata', () => this.onAccepted());
    call.on('data', (ack: SnapshotAckPb) => this.onAck(ack));
    call.on('status', (status: grpc.StatusObject) => this.onStatus(status));
    call.on('end', () => {
      this.readEnded = true;
      this.maybeFailWithoutFinalAck();
    });
    // A non-OK status is also emitted as an error; 'status' handles it.
    call.on('error', () => {});
    this.setTimer(o.connectTimeoutMs, () =>
      this.fail(
        this.error('TIMEOUT', 'timeout', `timed out: the call was not accepted within connectTimeoutMs=${o.connectTimeoutMs}`),
      ),
    );
    this.pump().catch((e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))));
  }

  /** Ends the transfer with `err` (cancelling the call, returning the iterator), unless it has settled. */
  fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.clearTimer();
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.call !== undefined && !this.callEnded) this.call.cancel();
    this.client?.close();
    this.closeIterator();
    this.o.counters.sendFailures++;
    this.wakePump();
    this.reject(err);
    this.o.onSettled();
  }

  /** Writes chunks as the window allows, one held back until the next pull says whether it is last. */
  private async pump(): Promise<void> {
    await this.until(() => this.accepted);
    let held: Uint8Array | undefined;
    let seq = 0;
    for (;;) {
      await this.until(() => this.inFlightBytes.length < this.o.maxChunksInFlight);
      if (this.settled) return;
      let next: IteratorResult<Uint8Array>;
      try {
        next = await this.iterator.next();
      } catch (e) {
        this.iteratorEnded = true;
        const code = e instanceof RaftKvError ? e.code : 'INTERNAL';
        return this.fail(this.error(code, 'source', `failed: the snapshot source failed: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
      }
      if (next.done === true) this.iteratorEnded = true;
      if (this.settled) return; // fail() returned the iterator; the value is dropped
      if (next.done === true) {
        this.write(seq, held ?? EMPTY, true);
        return;
      }
      const chunk: unknown = next.value;
      const pulled = held === undefined ? seq : seq + 1;
      if (!(chunk instanceof Uint8Array)) {
        return this.fail(new RangeError(`PeerTransport.sendSnapshot: chunk ${pulled} is not a Uint8Array`));
      }
      if (chunk.length > this.o.maxChunkBytes) {
        return this.fail(
          new RangeError(
            `PeerTransport.sendSnapshot: chunk ${pulled} has ${chunk.length} bytes ` +
              `(limit maxSnapshotChunkBytes=${this.o.maxChunkBytes})`,
          ),
        );
      }
      if (held !== undefined && !this.write(seq++, held, false)) return;
      held = chunk;
    }
  }

  /** Writes one chunk; false (and failed) when the link filter cut the link. */
  private write(seq: number, data: Uint8Array, last: boolean): boolean {
    const call = this.call;
    if (call === undefined || this.settled) return false;
    if (!this.o.linkOpen()) {
      this.fail(this.linkCutError());
      return false;
    }
    this.inFlightBytes.push(data.length);
    if (this.inFlightBytes.length === 1) this.armIdleTimer();
    call.write({ term: this.o.term, seq, data, last });
    if (last) {
      this.lastSeq = seq;
      call.end();
    }
    return true;
  }

  private onAccepted(): void {
    if (this.settled || this.accepted) return;
    this.accepted = true;
    this.clearTimer();
    this.wakePump();
  }

  private onAck(ack: SnapshotAckPb): void {
    if (this.settled) return;
    if (!this.o.linkOpen()) return this.fail(this.linkCutError());
    const seq = parseUint64(ack.seq);
    if (!ack.done) {
      const bytes = this.inFlightBytes[0];
      if (seq !== this.nextAckSeq || bytes === undefined) {
        return this.fail(this.protocolError(`an ack for chunk ${String(ack.seq)}, expected one for chunk ${this.nextAckSeq}`));
      }
      this.inFlightBytes.shift();
      this.nextAckSeq++;
      this.o.counters.sentBytes += bytes;
      // Still awaiting something (an ack, or the final ack after the last chunk): a fresh idle period.
      if (this.inFlightBytes.length > 0 || this.lastSeq !== undefined) this.armIdleTimer();
      else this.clearTimer();
      this.wakePump();
      return;
    }
    if (this.lastSeq === undefined || this.inFlightBytes.length > 0 || seq !== this.lastSeq) {
      return this.fail(this.protocolError(`a final ack (seq ${String(ack.seq)}) before every chunk was acknowledged`));
    }
    const index = parseUint64(ack.index);
    const term = parseUint64(ack.term);
    if (index === undefined || term === undefined) {
      return this.fail(this.protocolError(`a final ack with index ${String(ack.index)} and term ${String(ack.term)}`));
    }
    this.settled = true;
    this.clearTimer();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.o.counters.sentTransfers++;
    // Closing the channel lets the call run to its end (the peer ends it with OK after its final ack).
    this.client?.close();
    this.resolve({ index, term });
    this.o.onSettled();
  }

  private onStatus(status: grpc.StatusObject): void {
    this.callEnded = true;
    this.client?.close();
    if (this.settled) return;
    if (status.code === grpc.status.OK) {
      // gRPC may emit the status before acks still buffered in the stream: wait for its end.
      this.okStatus = true;
      return this.maybeFailWithoutFinalAck();
    }
    this.fail(
      this.error('UNAVAILABLE', 'peer', `failed: ${grpc.status[status.code] ?? status.code}: ${status.details}`, {
        status: status.code,
      }),
    );
  }

  private maybeFailWithoutFinalAck(): void {
    if (this.okStatus && this.readEnded) this.fail(this.protocolError('the peer ended the call without a final ack'));
  }

  /** Resolves once cond() holds or the transfer settled. Only the pump waits, so one waiter at most. */
  private until(cond: () => boolean): Promise<void> {
    if (this.settled || cond()) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = () => {
        if (!this.settled && !cond()) return;
        this.wake = undefined;
        resolve();
      };
    });
  }

  private wakePump(): void {
    this.wake?.();
  }

  private closeIterator(): void {
    if (this.iteratorEnded) return;
    this.iteratorEnded = true;
    const warn = (e: unknown): void =>
      this.o.logger.warn(`snapshot to node ${this.o.peerId}: the chunk iterator's return() failed: ${(e as Error)?.message ?? String(e)}`);
    try {
      // Not awaited: an async generator busy in next() runs return() only after it; the transfer
      // has settled either way.
      this.iterator.return?.()?.then(undefined, warn);
    } catch (e) {
      warn(e);
    }
  }

  private armIdleTimer(): void {
    const ms = this.o.idleTimeoutMs;
    this.setTimer(ms, () => this.fail(this.error('TIMEOUT', 'timeout', `timed out: no acknowledgement within snapshotIdleTimeoutMs=${ms}`)));
  }

  private setTimer(ms: number, onTimeout: () => void): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      onTimeout();
    }, ms);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private error(
    code: ErrorCode,
    kind: SnapshotFailureKind,
    what: string,
    options?: { status?: grpc.status; cause?: unknown },
  ): SnapshotTransferError {
    return new SnapshotTransferError(code, this.o.peerId, kind, `snapshot transfer to node ${this.o.peerId} ${what}`, options);
  }

  private abortedError(): SnapshotTransferError {
    const reason: unknown = this.signal?.reason;
    const why = reason instanceof Error ? reason.message : String(reason);
    return this.error('UNAVAILABLE', 'aborted', `aborted: ${why}`, { cause: reason });
  }

  private linkCutError(): SnapshotTransferError {
    return this.error('UNAVAILABLE', 'link-cut', `failed: the link ${this.o.localId} <-> ${this.o.peerId} is cut by the test link filter`);
  }

  private protocolError(detail: string): SnapshotTransferError {
    return this.error('UNAVAILABLE', 'protocol', `failed: protocol error: ${detail}`);
  }
}

/**
 * Ends an iterable that a transfer refused before starting: takes its iterator and returns it at
 * once, so that a producer that opened something when its iterator was made can release it.
 */
export function releaseChunks(chunks: AsyncIterable<Uint8Array>, logger: TransportLogger): void {
  const warn = (e: unknown): void => logger.warn(`a refused snapshot's chunk iterator failed to close: ${(e as Error)?.message ?? String(e)}`);
  try {
    chunks[Symbol.asyncIterator]().return?.()?.then(undefined, warn);
  } catch (e) {
    warn(e);
  }
}
