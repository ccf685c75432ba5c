// The outgoing side of one peer: a bounded queue of messages and one long-lived client stream that
// drains it, frame by frame, reconnecting with backoff when the stream breaks.
//
// States:
//   idle        no stream; the next enqueue opens one (streams are opened lazily)
//   connecting  a stream is open but the peer has not accepted it yet (no response headers)
//   connected   the peer accepted the stream; frames are written, one at a time
//   backoff     the last stream failed; a timer opens the next one (if anything is queued by then)
//   closed      close() was called; everything is dropped
//
// Nothing leaves the queue before the peer has accepted the stream, so a refused or failed connection
// loses nothing queued. What is lost when a stream breaks is at most the one frame being written:
// Raft retransmits.

import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../raft/types.js';
import type { Backoff } from './backoff.js';
import { encodeBatch, MAX_BATCH_HEADER_BYTES } from './codec.js';
import {
  METADATA_CLUSTER_ID,
  METADATA_FROM_NODE,
  METADATA_TO_NODE,
  type PeerAck,
  type PeerFrame,
  streamMethod,
} from './peer-service.js';
import { RingQueue } from './ring-queue.js';
import type { TransportLogger } from './logger.js';

export interface PeerLinkOptions {
  readonly localId: NodeId;
  readonly peerId: NodeId;
  readonly address: string;
  readonly clusterId: string;
  readonly credentials: grpc.ChannelCredentials;
  /** Limit on one gRPC message (a PeerFrame), in bytes. */
  readonly maxMessageBytes: number;
  /** Limit on one frame's payload (a codec batch), in bytes: maxMessageBytes minus the frame overhead. */
  readonly maxPayloadBytes: number;
  readonly maxQueueMessages: number;
  readonly maxQueueBytes: number;
  readonly connectTimeoutMs: number;
  readonly closeTimeoutMs: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly backoff: Backoff;
  readonly logger: TransportLogger;
  /** The test-only link filter, checked again as messages leave the queue. */
  readonly allows: (from: NodeId, to: NodeId) => boolean;
}

export type PeerLinkState = 'idle' | 'connecting' | 'connected' | 'backoff' | 'closed';

/** Counts of messages unless the name says frames. */
export interface OutgoingCounters {
  sentMessages: number;
  sentFrames: number;
  connectAttempts: number;
  droppedQueueFull: number;
  droppedOversize: number;
  droppedLinkFilter: number;
  droppedStreamBroken: number;
}

interface Queued {
  readonly message: Message;
  /** encodedMessageBytes(message) */
  readonly bytes: number;
}

/** One stream and the channel under it. A fresh channel per attempt: our backoff, not gRPC's, decides. */
interface Attempt {
  readonly client: grpc.Client;
  readonly call: grpc.ClientWritableStream<PeerFrame>;
  accepted: boolean;
  /** Why we ended the attempt ourselves, which says more than the CANCELLED status it produces. */
  endReason?: string;
}

export class PeerLink {
  readonly counters: OutgoingCounters = {
    sentMessages: 0,
    sentFrames: 0,
    connectAttempts: 0,
    droppedQueueFull: 0,
    droppedOversize: 0,
    droppedLinkFilter: 0,
    droppedStreamBroken: 0,
  };
  private readonly queue: RingQueue<Queued>;
  /** Invariant: the sum of `bytes` over the queue; <= maxQueueBytes. */
  private queuedBytes = 0;
  private state: PeerLinkState = 'idle';
  /** Invariant: defined exactly in states connecting and connected, and while closing. */
  private attempt: Attempt | undefined;
  /** Messages in the frame being written; 0 when no write is in flight. At most one frame is. */
  private writingMessages = 0;
  /** The connect timeout, the backoff delay, or the close timeout: never more than one at a time. */
  private timer: NodeJS.Timeout | undefined;
  private flushImmediate: NodeJS.Immediate | undefined;
  /** Drops because the queue was full since it was last empty; logs once per such episode. */
  private droppingSinceEmpty = false;
  private loggedOversize = false;
  private lastError: string | undefined;
  private closeWaiters: (() => void)[] = [];

  constructor(private readonly o: PeerLinkOptions) {
    this.queue = new RingQueue<Queued>(o.maxQueueMessages);
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  get queuedMessages(): number {
    return this.queue.length;
  }

  get queuedByteCount(): number {
    return this.queuedBytes;
  }

  get lastErrorMessage(): string | undefined {
    return this.lastError;
  }

  /** Queues one message for the peer; never blocks and never throws for an operating condition. */
  enqueue(message: Message, bytes: number): void {
    if (this.state === 'closed') return;
    if (bytes + MAX_BATCH_HEADER_BYTES > this.o.maxPayloadBytes) {
      this.counters.droppedOversize++;
      if (!this.loggedOversize) {
        this.loggedOversize = true;
        this.o.logger.warn(
          `peer ${this.o.peerId}: dropped a ${message.type} message of ${bytes} bytes, larger than a frame ` +
            `(limit maxMessageBytes=${this.o.maxMessageBytes}); further ones are only counted`,
        );
      }
      return;
    }
    // Full: drop the OLDEST. The newest messages carry the highest term and commit index; the oldest
    // are the likeliest to be stale (superseded heartbeats, appends the leader will resend anyway).
    while (this.queue.full || (this.queue.length > 0 && this.queuedBytes + bytes > this.o.maxQueueBytes)) {
      const dropped = this.queue.shift()!;
      this.queuedBytes -= dropped.bytes;
      this.counters.droppedQueueFull++;
      if (!this.droppingSinceEmpty) {
        this.droppingSinceEmpty = true;
        this.o.logger.warn(
          `peer ${this.o.peerId}: send queue full (limits maxQueueMessages=${this.o.maxQueueMessages}, ` +
            `maxQueueBytes=${this.o.maxQueueBytes}); dropping the oldest messages`,
        );
      }
    }
    this.queue.push({ message, bytes });
    this.queuedBytes += bytes;
    if (this.state === 'idle') this.connect();
    else if (this.state === 'connected') this.scheduleFlush();
  }

  close(): Promise<void> {
    if (this.state !== 'closed') {
      this.state = 'closed';
      this.clearTimer();
      if (this.flushImmediate !== undefined) clearImmediate(this.flushImmediate);
      this.flushImmediate = undefined;
      this.queue.clear();
      this.queuedBytes = 0;
      const attempt = this.attempt;
      if (attempt !== undefined) {
        if (attempt.accepted) {
          // A graceful end: the peer answers the half-close with OK. Bounded by closeTimeoutMs.
          attempt.call.end();
          this.timer = setTimeout(() => attempt.call.cancel(), this.o.closeTimeoutMs);
        } else {
          attempt.call.cancel();
        }
      }
    }
    if (this.attempt === undefined) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  private connect(): void {
    this.state = 'connecting';
    this.counters.connectAttempts++;
    const client = new grpc.Client(this.o.address, this.o.credentials, {
      'grpc.max_send_message_length': this.o.maxMessageBytes,
      // Retries would buffer frames inside gRPC, beyond our queue's limits; Raft retries by itself.
      'grpc.enable_retries': 0,
      // No per-message statistics for channelz (nothing reads them).
      'grpc.enable_channelz': 0,
      // A private subchannel, so that no gRPC-level backoff state survives the channel.
      'grpc.use_local_subchannel_pool': 1,
      // A long-lived stream to a peer that vanished without a FIN would otherwise look healthy.
      'grpc.keepalive_time_ms': this.o.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': this.o.keepaliveTimeoutMs,
    });
    const metadata = new grpc.Metadata();
    metadata.set(METADATA_CLUSTER_ID, this.o.clusterId);
    metadata.set(METADATA_FROM_NODE, String(this.o.localId));
    metadata.set(METADATA_TO_NODE, String(this.o.peerId));
    const holder: { attempt?: Attempt } = {};
    const call = client.makeClientStreamRequest<PeerFrame, PeerAck>(
      streamMethod.path,
      streamMethod.requestSerialize,
      streamMethod.responseDeserialize,
      metadata,
      {},
      (err) => {
        if (holder.attempt !== undefined) this.onCallEnd(holder.attempt, err);
      },
    );
    const attempt: Attempt = { client, call, accepted: false };
    holder.attempt = attempt;
    this.attempt = attempt;
    call.on('metadata', () => this.onAccepted(attempt));
    // Status errors reach the callback above; this only keeps a stray stream error from being thrown.
    call.on('error', () => {});
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.attempt !== attempt || attempt.accepted) return;
      attempt.endReason = `not accepted within connectTimeoutMs=${this.o.connectTimeoutMs}`;
      call.cancel();
    }, this.o.connectTimeoutMs);
  }

  private onAccepted(attempt: Attempt): void {
    if (this.attempt !== attempt || this.state !== 'connecting') return;
    attempt.accepted = true;
    this.state = 'connected';
    this.clearTimer();
    this.o.backoff.reset();
    if (this.lastError !== undefined) this.o.logger.info(`peer ${this.o.peerId}: connected to ${this.o.address}`);
    this.lastError = undefined;
    this.flush();
  }

  private onCallEnd(attempt: Attempt, err: grpc.ServiceError | null): void {
    if (this.attempt !== attempt) return;
    this.attempt = undefined;
    this.clearTimer();
    attempt.client.close();
    this.counters.droppedStreamBroken += this.writingMessages;
    this.writingMessages = 0;
    if (this.state === 'closed') {
      for (const resolve of this.closeWaiters.splice(0)) resolve();
      return;
    }
    const reason =
      attempt.endReason ??
      (err === null ? 'the peer ended the stream' : `${grpc.status[err.code] ?? err.code}: ${err.details}`);
    if (reason !== this.lastError) {
      const what = attempt.accepted ? 'stream to' : 'could not open a stream to';
      this.o.logger.warn(`peer ${this.o.peerId}: ${what} ${this.o.address} failed (${reason}); retrying with backoff`);
    }
    this.lastError = reason;
    this.state = 'backoff';
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.state = 'idle';
      if (this.queue.length > 0) this.connect();
    }, this.o.backoff.nextDelayMs());
  }

  /** Coalesces the sends of one turn of the event loop into one frame. */
  private scheduleFlush(): void {
    if (this.flushImmediate !== undefined || this.writingMessages > 0) return;
    this.flushImmediate = setImmediate(() => {
      this.flushImmediate = undefined;
      this.flush();
    });
  }

  /** Writes one frame of queued messages, if connected and no write is in flight. */
  private flush(): void {
    const attempt = this.attempt;
    if (this.state !== 'connected' || attempt === undefined || this.writingMessages > 0) return;
    const batch: Message[] = [];
    let payloadBytes = MAX_BATCH_HEADER_BYTES;
    const allowed = this.o.allows(this.o.localId, this.o.peerId);
    for (let head = this.queue.peek(); head !== undefined; head = this.queue.peek()) {
      // The first message always fits: enqueue refused any that could not fit alone.
      if (payloadBytes + head.bytes > this.o.maxPayloadBytes) break;
      this.queue.shift();
      this.queuedBytes -= head.bytes;
      if (!allowed) {
        this.counters.droppedLinkFilter++;
        continue;
      }
      batch.push(head.message);
      payloadBytes += head.bytes;
    }
    if (this.queue.length === 0) this.droppingSinceEmpty = false;
    if (batch.length === 0) return;
    this.writingMessages = batch.length;
    attempt.call.write({ payload: encodeBatch(batch) }, (err: Error | null | undefined) => {
      if (this.attempt !== attempt) return; // onCallEnd counted the frame as lost
      const n = this.writingMessages;
      this.writingMessages = 0;
      if (err) {
        this.counters.droppedStreamBroken += n;
        return; // the call ends too, and onCallEnd reconnects
      }
      this.counters.sentMessages += n;
      this.counters.sentFrames++;
      this.flush();
    });
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
