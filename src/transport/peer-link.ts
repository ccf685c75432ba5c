// The outgoing side of one peer: a bounded queue of messages and one long-lived TCP connection that
// drains it, frame by frame, reconnecting with backoff when the connection breaks. The connection
// speaks the raw peer wire (peer-wire.ts) to the port the peer's gRPC server shares.
//
// States:
//   idle        no connection; the next enqueue opens one (connections are opened lazily)
//   connecting  a connection is open but the peer has not accepted it yet (no status back)
//   connected   the peer accepted the connection; frames are written, one at a time
//   backoff     the last connection failed; a timer opens the next one (if anything is queued by then)
//   closed      close() was called; everything is dropped
//
// Nothing leaves the queue before the peer has accepted the connection, so a refused or failed
// connection loses nothing queued. What is lost when a connection breaks is at most the frame being
// written, and what the kernel had not delivered yet: Raft retransmits.

import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../raft/types.js';
import type { Backoff } from './backoff.js';
import { encodeBatch, MAX_BATCH_HEADER_BYTES } from './codec.js';
import { parseHostPort } from './node-listener.js';
import { decodeStatus, encodeHello, frameHeader, PEER_WIRE_VERSION, PeerWireError, REPLY_PREFIX } from './peer-wire.js';
import { RingQueue } from './ring-queue.js';
import type { TransportLogger } from './logger.js';

export interface PeerLinkOptions {
  readonly localId: NodeId;
  readonly peerId: NodeId;
  /** host:port */
  readonly address: string;
  readonly clusterId: string;
  /** Limit on one frame's payload (a codec batch), in bytes. */
  readonly maxPayloadBytes: number;
  /** The configured limit the payload limit derives from, for messages. */
  readonly maxMessageBytes: number;
  readonly maxQueueMessages: number;
  readonly maxQueueBytes: number;
  readonly connectTimeoutMs: number;
  readonly closeTimeoutMs: number;
  /** The peer sends a keepalive this often... */
  readonly keepaliveTimeMs: number;
  /** ...and a connection that brings nothing for keepaliveTimeMs + this is ended. */
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
  /** Keepalives the peer sent on accepted connections. */
  keepalivesReceived: number;
}

interface Queued {
  readonly message: Message;
  /** encodedMessageBytes(message) */
  readonly bytes: number;
}

/** One connection. */
interface Attempt {
  readonly socket: net.Socket;
  accepted: boolean;
  /** We ended it (or it closed): nothing more is written, and a write in flight is lost. */
  dead: boolean;
  /** The reply's prefix (magic and version) has arrived. */
  prefixSeen: boolean;
  /** A frame was written on it. */
  carried?: boolean;
  /** Bytes from the peer not parsed yet. */
  received: Buffer;
  /** Ends the connection when the peer stays silent too long; refreshed by everything it sends. */
  liveness: NodeJS.Timeout | undefined;
  /** Why the attempt ended: our own reason, or the peer's closing status. */
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
    keepalivesReceived: 0,
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
  /** A flush is queued on process.nextTick (a closed link's flush does nothing). */
  private flushScheduled = false;
  /** Drops because the queue was full since it was last empty; logs once per such episode. */
  private droppingSinceEmpty = false;
  private loggedOversize = false;
  private lastError: string | undefined;
  private closeWaiters: (() => void)[] = [];

  private readonly target: { readonly host: string; readonly port: number };

  /** Throws RangeError when the address is not host:port. */
  constructor(private readonly o: PeerLinkOptions) {
    this.queue = new RingQueue<Queued>(o.maxQueueMessages);
    this.target = parseHostPort(o.address);
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
      this.queue.clear();
      this.queuedBytes = 0;
      const attempt = this.attempt;
      if (attempt !== undefined) {
        if (attempt.accepted) {
          // A graceful end: written frames still reach the peer, which closes its side in turn.
          // Bounded by closeTimeoutMs.
          attempt.socket.end();
          this.timer = setTimeout(() => attempt.socket.destroy(), this.o.closeTimeoutMs);
        } else {
          attempt.socket.destroy();
        }
      }
    }
    if (this.attempt === undefined) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  private connect(): void {
    this.state = 'connecting';
    this.counters.connectAttempts++;
    const socket = net.connect({ host: this.target.host, port: this.target.port, noDelay: true });
    const attempt: Attempt = { socket, accepted: false, dead: false, prefixSeen: false, received: Buffer.alloc(0), liveness: undefined };
    this.attempt = attempt;
    socket.on('connect', () => {
      if (this.attempt !== attempt) return;
      socket.write(encodeHello({ from: this.o.localId, to: this.o.peerId, clusterId: this.o.clusterId }));
    });
    socket.on('data', (chunk: Buffer) => this.onData(attempt, chunk));
    socket.on('error', (err: Error) => {
      attempt.endReason ??= err.message;
    });
    // The peer closing its side ends the attempt: it sends nothing but statuses, and a half-open
    // connection is no use to us.
    socket.on('end', () => this.kill(attempt, 'the peer closed the connection'));
    socket.on('close', () => this.onClose(attempt));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.attempt !== attempt || attempt.accepted) return;
      this.kill(attempt, `not accepted within connectTimeoutMs=${this.o.connectTimeoutMs}`);
    }, this.o.connectTimeoutMs);
  }

  /** Ends an attempt at once; a frame being written counts as lost. */
  private kill(attempt: Attempt, reason: string): void {
    attempt.endReason ??= reason;
    attempt.dead = true;
    if (attempt.liveness !== undefined) clearTimeout(attempt.liveness);
    attempt.socket.destroy();
  }

  /** The peer's reply: the prefix, its status (accepted, or why not), keepalives, a closing status. */
  private onData(attempt: Attempt, chunk: Buffer): void {
    if (this.attempt !== attempt || attempt.dead) return;
    attempt.liveness?.refresh();
    attempt.received = attempt.received.length === 0 ? chunk : Buffer.concat([attempt.received, chunk]);
    if (!attempt.prefixSeen) {
      const n = Math.min(attempt.received.length, REPLY_PREFIX.length);
      if (!attempt.received.subarray(0, n).equals(REPLY_PREFIX.subarray(0, n))) {
        return this.kill(
          attempt,
          `the peer at ${this.o.address} does not speak the raw peer wire (version ${PEER_WIRE_VERSION}): a raftkv node ` +
            `from before it (every node of a cluster must run the same version), or not raftkv`,
        );
      }
      if (n < REPLY_PREFIX.length) return;
      attempt.prefixSeen = true;
      attempt.received = attempt.received.subarray(REPLY_PREFIX.length);
    }
    for (;;) {
      let got;
      try {
        got = decodeStatus(attempt.received);
      } catch (e) {
        if (!(e instanceof PeerWireError)) throw e;
        return this.kill(attempt, `the peer sent a malformed status: ${e.message}`);
      }
      if (got === undefined) return;
      attempt.received = attempt.received.subarray(got.bytes);
      const { code, details } = got.status;
      if (code !== 0) return this.kill(attempt, `${grpc.status[code] ?? `status ${code}`}: ${details}`);
      if (!attempt.accepted) this.onAccepted(attempt);
      else this.counters.keepalivesReceived++; // the refresh above was its point
    }
  }

  private onAccepted(attempt: Attempt): void {
    if (this.attempt !== attempt || this.state !== 'connecting') return;
    attempt.accepted = true;
    this.state = 'connected';
    this.clearTimer();
    // The peer sends a keepalive every keepaliveTimeMs: silence for longer than that plus
    // keepaliveTimeoutMs means it vanished without a FIN (a partition, a host down) or hangs.
    const deadMs = this.o.keepaliveTimeMs + this.o.keepaliveTimeoutMs;
    attempt.liveness = setTimeout(() => {
      if (this.attempt === attempt) this.kill(attempt, `nothing from the peer within keepaliveTimeMs + keepaliveTimeoutMs = ${deadMs} ms`);
    }, deadMs);
    if (this.lastError !== undefined) this.o.logger.info(`peer ${this.o.peerId}: connected to ${this.o.address}`);
    this.lastError = undefined;
    this.flush();
  }

  private onClose(attempt: Attempt): void {
    if (this.attempt !== attempt) return;
    this.attempt = undefined;
    attempt.dead = true;
    if (attempt.liveness !== undefined) clearTimeout(attempt.liveness);
    this.clearTimer();
    this.counters.droppedStreamBroken += this.writingMessages;
    this.writingMessages = 0;
    if (this.state === 'closed') {
      for (const resolve of this.closeWaiters.splice(0)) resolve();
      return;
    }
    const reason = attempt.endReason ?? 'the peer closed the connection';
    if (reason !== this.lastError) {
      const what = attempt.accepted ? 'connection to' : 'could not connect to';
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

  /**
   * Coalesces the sends of one synchronous run, or of one drain of the microtask queue, into one
   * frame, and writes it before the event loop polls again. A Ready's messages are sent from the
   * runtime's loop, which runs in the check phase when proposals or reads started it: a setImmediate
   * queued there runs one turn later, after a whole poll phase of other callbacks, so the leader's
   * appends waited that long after its own disk write had been dispatched.
   */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.writingMessages > 0) return;
    this.flushScheduled = true;
    process.nextTick(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Writes one frame of queued messages, if connected and no write is in flight. */
  private flush(): void {
    const attempt = this.attempt;
    if (this.state !== 'connected' || attempt === undefined || attempt.dead || this.writingMessages > 0) return;
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
    const payload = encodeBatch(batch);
    const { socket } = attempt;
    socket.cork();
    socket.write(frameHeader(payload.length));
    socket.write(payload, (err: Error | null | undefined) => {
      if (this.attempt !== attempt) return; // onClose counted the frame as lost
      const n = this.writingMessages;
      this.writingMessages = 0;
      // A socket we destroyed calls back without an error: its frame did not leave either.
      if (err || attempt.dead || socket.destroyed) {
        this.counters.droppedStreamBroken += n;
        return; // the socket closes too, and onClose reconnects
      }
      this.counters.sentMessages += n;
      this.counters.sentFrames++;
      // Only a connection that carried a frame earns a fresh backoff: a peer that accepts and then
      // ends at once is retried at growing delays.
      if (!attempt.carried) {
        attempt.carried = true;
        this.o.backoff.reset();
      }
      this.flush();
    });
    socket.uncork();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
