// Carries the Raft core's messages between the nodes of a cluster: one long-lived TCP connection to
// each peer for what this node sends (raw peer wire, see peer-link.ts and peer-wire.ts), on the port
// the peer's gRPC server shares (node-listener.ts). It accepts the same from its peers, and also a
// peer's gRPC Stream call of the RaftPeer service (what nodes before the raw wire sent). Delivery is
// best effort, like the network Raft assumes: messages may be dropped (full queue, oversized, broken
// connection) and are counted when they are; Raft retransmits.
//
// Wiring it into a node:
//
//   const server = new grpc.Server(peerServerOptions(maxMessageBytes)); // + the client services
//   const listener = new NodeListener({ grpcServer: server });
//   const transport = new PeerTransport({ nodeId, clusterId, peers, onMessage: (m) => raft.step(m) });
//   transport.addToServer(server, listener);
//   await listener.listen(listenAddress);
//   ... transport.send(ready.messages) ... transport.send(ready.messagesAfterPersist) ...
//   await transport.close();            // first: peer connections are long-lived
//   const closed = listener.close(); server.tryShutdown(...); await closed;
//
// Snapshots do not travel on the peer stream (send() refuses a Snap message): the leader's node
// streams one with sendSnapshot() over an InstallSnapshot call of its own, with flow control (see
// snapshot-sender.ts), and the follower's node receives it through the onSnapshot handler's
// SnapshotSink (see snapshot-receiver.ts).

import type * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { LimitError, RaftKvError } from '../errors.js';
import type { Message, NodeId, SnapshotMeta } from '../raft/types.js';
import { Backoff } from './backoff.js';
import { decodeBatch, encodedMessageBytes, MalformedFrameError } from './codec.js';
import { silentLogger, type TransportLogger } from './logger.js';
import type { NodeListener } from './node-listener.js';
import { PeerLink } from './peer-link.js';
import { decodeHello, encodeReply, encodeStatus, FrameDecoder, MAX_CLUSTER_ID_BYTES, MAX_WIRE_NODE_ID, PeerWireError } from './peer-wire.js';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  METADATA_CLUSTER_ID,
  METADATA_FROM_NODE,
  METADATA_TO_NODE,
  PEER_FRAME_OVERHEAD_BYTES,
  type PeerAck,
  type PeerFrame,
  peerServiceDefinition,
  SNAPSHOT_CHUNK_OVERHEAD_BYTES,
  type SnapshotAckPb,
  type SnapshotChunkPb,
} from './peer-service.js';
import {
  linkCutStatus,
  SnapshotReceiver,
  type SnapshotHandler,
  type SnapshotReceiveCounters,
  type StatusError,
} from './snapshot-receiver.js';
import { releaseChunks, SnapshotSender, SnapshotTransferError, type SnapshotSendCounters } from './snapshot-sender.js';

export { DEFAULT_MAX_MESSAGE_BYTES, peerServerOptions } from './peer-service.js';

export const DEFAULT_MAX_QUEUE_MESSAGES = 4096;
export const DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_RECONNECT_BACKOFF_MIN_MS = 100;
export const DEFAULT_RECONNECT_BACKOFF_MAX_MS = 2000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 1000;
export const DEFAULT_KEEPALIVE_TIME_MS = 10_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 5000;
/** The smallest maxMessageBytes accepted: room for a frame with a few small messages. */
export const MIN_MAX_MESSAGE_BYTES = 256;
export const DEFAULT_MAX_SNAPSHOT_CHUNKS_IN_FLIGHT = 4;
/** The default is lowered to fit maxMessageBytes when that is set below about 1 MiB. */
export const DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES = 1024 * 1024;
export const DEFAULT_SNAPSHOT_IDLE_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_SNAPSHOT_TRANSFERS = 2;
const KEEPALIVE = encodeStatus({ code: 0, details: '' });
/**
 * Limit: raw peer connections waiting for their hello (each for at most connectTimeoutMs). A new one
 * beyond it closes the oldest.
 */
export const MAX_PENDING_HELLOS = 64;

/** Whether a message from `from` to `to` may pass. Test-only: see PeerTransport.setLinkFilter. */
export type LinkFilter = (from: NodeId, to: NodeId) => boolean;

export interface PeerTransportOptions {
  /** This node's id (a positive integer). */
  readonly nodeId: NodeId;
  /** Streams from a node that names another cluster id are refused. */
  readonly clusterId: string;
  /** Every peer's address ("host:port"). An entry for nodeId itself is ignored. */
  readonly peers: ReadonlyMap<NodeId, string>;
  /** Limit: bytes of one frame's payload (or one gRPC message). Default DEFAULT_MAX_MESSAGE_BYTES (4 MiB). */
  readonly maxMessageBytes?: number;
  /** Limit: messages queued for one peer. Default DEFAULT_MAX_QUEUE_MESSAGES (4096). */
  readonly maxQueueMessages?: number;
  /** Limit: encoded bytes queued for one peer; >= maxMessageBytes. Default 64 MiB. */
  readonly maxQueueBytes?: number;
  /** Reconnect delays grow from about this... Default 100 ms. */
  readonly reconnectBackoffMinMs?: number;
  /** ...to at most this. Default 2000 ms. */
  readonly reconnectBackoffMaxMs?: number;
  /**
   * A connection the peer has not accepted by then is abandoned and retried; an incoming one that has
   * not sent its hello by then is closed. Default 5000 ms.
   */
  readonly connectTimeoutMs?: number;
  /**
   * close() waits this long for each peer to acknowledge the end of a connection, and an incoming
   * connection this node ended is destroyed after it. Default 1000 ms.
   */
  readonly closeTimeoutMs?: number;
  /**
   * Peer connections: the accepting node sends a keepalive every keepaliveTimeMs, and the sending
   * node ends a connection that brings nothing for keepaliveTimeMs + keepaliveTimeoutMs (every node
   * is assumed to use the same values). Snapshot calls: gRPC keepalive pings. Defaults 10000 ms and
   * 5000 ms.
   */
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
  /** Receives every accepted incoming message; also settable with onMessage(). */
  readonly onMessage?: (message: Message) => void;
  /**
   * Limit: chunks of an outgoing snapshot written and not yet acknowledged (the sender pulls at most
   * one more from its iterable). Default DEFAULT_MAX_SNAPSHOT_CHUNKS_IN_FLIGHT (4).
   */
  readonly maxSnapshotChunksInFlight?: number;
  /**
   * Limit: data bytes of one snapshot chunk, both ways. A larger outgoing chunk is a programmer error;
   * a larger incoming one ends the call with RESOURCE_EXHAUSTED. A chunk must fit in one gRPC message:
   * at most maxMessageBytes - SNAPSHOT_CHUNK_OVERHEAD_BYTES (every node is assumed to use the same
   * maxMessageBytes). Default 1 MiB, or that bound if it is lower.
   */
  readonly maxSnapshotChunkBytes?: number;
  /**
   * A snapshot transfer that makes no progress for this long is ended: the sender cancels it when no
   * ack comes (the receiver's finish() must also complete within it), the receiver ends it when no
   * chunk comes. Default DEFAULT_SNAPSHOT_IDLE_TIMEOUT_MS (30 s).
   */
  readonly snapshotIdleTimeoutMs?: number;
  /** Limit: outgoing snapshot transfers at once, to all peers together. Default 2. */
  readonly maxSnapshotTransfers?: number;
  /**
   * Opens a sink for each incoming snapshot; also settable with onSnapshot(). Without one, snapshot
   * transfers are refused with UNIMPLEMENTED.
   */
  readonly onSnapshot?: SnapshotHandler;
  readonly logger?: TransportLogger;
  /** The jitter source for reconnect delays, a float in [0, 1). Default Math.random. */
  readonly random?: () => number;
}

/** Counts of messages unless the name says frames. */
export interface DropCounts {
  /** Outgoing: the oldest queued message, pushed out by a newer one (queue limits). */
  readonly queueFull: number;
  /** Outgoing: a message that cannot fit in one frame (maxMessageBytes). */
  readonly oversize: number;
  /** Outgoing: the link filter cut this node -> peer. */
  readonly linkFilterOut: number;
  /** Outgoing: the frame being written when the stream broke. */
  readonly streamBroken: number;
  /** Incoming: the link filter cut peer -> this node. */
  readonly linkFilterIn: number;
  /** Incoming: `from` was not the stream's sender or `to` was not this node. */
  readonly misaddressed: number;
  /** Incoming: no onMessage handler was set. */
  readonly noHandler: number;
}

/** One peer's snapshot transfers, both ways. Bytes count chunk data, not framing. */
export interface SnapshotStats {
  /** Outgoing transfers to the peer running now. */
  readonly sending: number;
  /** The peer has an incoming transfer into this node running now (at most one). */
  readonly receiving: boolean;
  /** Outgoing transfers the peer confirmed installed. */
  readonly sentTransfers: number;
  /** Outgoing chunk bytes the peer acknowledged. */
  readonly sentBytes: number;
  /** Outgoing transfers that failed, timed out, were aborted or refused (by a limit too). */
  readonly sendFailures: number;
  /** Incoming transfers installed. */
  readonly receivedTransfers: number;
  /** Incoming chunk bytes a sink accepted. */
  readonly receivedBytes: number;
  /** Incoming transfers that were accepted, then refused or broken. */
  readonly receiveFailures: number;
}

export interface PeerStats {
  readonly address: string;
  /** An outgoing stream to the peer is open and the peer accepted it. */
  readonly connected: boolean;
  /** The peer has an accepted stream into this node. */
  readonly inboundConnected: boolean;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
  /** Messages the kernel took (written to the connection; not a proof of delivery). */
  readonly sentMessages: number;
  readonly sentFrames: number;
  /** Messages delivered to the handler. */
  readonly receivedMessages: number;
  readonly receivedFrames: number;
  /** Incoming frames that did not decode (each ended its stream). */
  readonly malformedFrames: number;
  /** Outgoing connections opened, successful or not. */
  readonly connectAttempts: number;
  /** Keepalives the peer sent on this node's connections to it. */
  readonly keepalivesReceived: number;
  readonly dropped: DropCounts;
  readonly snapshots: SnapshotStats;
  /** Why the last outgoing stream failed; cleared when one is accepted. */
  readonly lastError?: string;
}

export interface TransportStats {
  readonly peers: ReadonlyMap<NodeId, PeerStats>;
  /** Messages given to send() for a node that is not a peer. */
  readonly droppedUnknownPeerMessages: number;
  /**
   * Incoming calls (Stream or InstallSnapshot) and raw peer connections refused before reading any
   * message: wrong cluster, unknown sender, wrong target, bad metadata or hello, no hello in time,
   * too many connections waiting for one, closing, no snapshot handler, link cut.
   */
  readonly refusedStreams: number;
  /** Outgoing snapshot transfers running now, to all peers (limit maxSnapshotTransfers). */
  readonly snapshotTransfers: number;
}

interface IncomingCounters {
  receivedMessages: number;
  receivedFrames: number;
  malformedFrames: number;
  droppedLinkFilter: number;
  droppedMisaddressed: number;
  droppedNoHandler: number;
}

interface Peer {
  readonly id: NodeId;
  readonly address: string;
  readonly link: PeerLink;
  readonly incoming: IncomingCounters;
  /** The peer's accepted stream into this node. Invariant: at most one per peer. */
  inbound: InboundStream | undefined;
  loggedMisaddressed: boolean;
  readonly snapshots: SnapshotSendCounters & SnapshotReceiveCounters;
  /** Outgoing snapshot transfers to the peer that have not settled. */
  readonly snapshotSends: Set<SnapshotSender>;
  /** The peer's incoming snapshot transfer. Invariant: at most one per peer. */
  snapshotReceive: SnapshotReceiver | undefined;
}

/** A peer's accepted stream into this node: a raw connection, or a gRPC Stream call. */
interface InboundStream {
  readonly peer: Peer;
  done: boolean;
  /** Ends it toward the peer: null gracefully, a status as an error, undefined when it broke already. */
  readonly finish: (status: StatusError | null | undefined) => void;
}

export class PeerTransport {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  readonly maxMessageBytes: number;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly logger: TransportLogger;
  private handler: ((message: Message) => void) | undefined;
  private snapshotHandler: SnapshotHandler | undefined;
  readonly maxSnapshotChunksInFlight: number;
  readonly maxSnapshotChunkBytes: number;
  readonly snapshotIdleTimeoutMs: number;
  readonly maxSnapshotTransfers: number;
  /** Outgoing snapshot transfers that have not settled. Invariant: size <= maxSnapshotTransfers. */
  private readonly snapshotSends = new Set<SnapshotSender>();
  private readonly credentials: grpc.ChannelCredentials;
  private readonly connectTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly keepaliveTimeMs: number;
  private readonly keepaliveTimeoutMs: number;
  private linkFilter: LinkFilter | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private droppedUnknownPeerMessages = 0;
  private readonly loggedUnknownPeers = new Set<NodeId>();
  private refusedStreams = 0;
  /**
   * Raw connections accepted whose hello has not been read, oldest first, as the function that
   * refuses each. Invariant: size <= MAX_PENDING_HELLOS.
   */
  private readonly helloWaiting = new Set<(status: StatusError) => void>();

  constructor(options: PeerTransportOptions) {
    const o = options;
    const positiveInt = (v: number, what: string, min = 1): number => {
      if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`PeerTransport: ${what} must be an integer >= ${min}, got ${v}`);
      return v;
    };
    this.nodeId = positiveInt(o.nodeId, 'nodeId');
    if (this.nodeId > MAX_WIRE_NODE_ID) throw new RangeError(`PeerTransport: nodeId ${this.nodeId} is over the limit (limit MAX_WIRE_NODE_ID=${MAX_WIRE_NODE_ID})`);
    if (typeof o.clusterId !== 'string' || o.clusterId.length === 0) {
      throw new RangeError('PeerTransport: clusterId must be a non-empty string');
    }
    if (Buffer.byteLength(o.clusterId) > MAX_CLUSTER_ID_BYTES) {
      throw new RangeError(`PeerTransport: clusterId of ${Buffer.byteLength(o.clusterId)} bytes is over the limit (limit MAX_CLUSTER_ID_BYTES=${MAX_CLUSTER_ID_BYTES})`);
    }
    this.clusterId = o.clusterId;
    this.maxMessageBytes = positiveInt(o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, 'maxMessageBytes', MIN_MAX_MESSAGE_BYTES);
    const maxQueueMessages = positiveInt(o.maxQueueMessages ?? DEFAULT_MAX_QUEUE_MESSAGES, 'maxQueueMessages');
    const maxQueueBytes = positiveInt(
      o.maxQueueBytes ?? Math.max(DEFAULT_MAX_QUEUE_BYTES, this.maxMessageBytes),
      'maxQueueBytes (at least maxMessageBytes)',
      this.maxMessageBytes,
    );
    const minMs = o.reconnectBackoffMinMs ?? DEFAULT_RECONNECT_BACKOFF_MIN_MS;
    const maxMs = o.reconnectBackoffMaxMs ?? DEFAULT_RECONNECT_BACKOFF_MAX_MS;
    const random = o.random ?? Math.random;
    const connectTimeoutMs = positiveInt(o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
    const closeTimeoutMs = positiveInt(o.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS, 'closeTimeoutMs');
    const keepaliveTimeMs = positiveInt(o.keepaliveTimeMs ?? DEFAULT_KEEPALIVE_TIME_MS, 'keepaliveTimeMs');
    const keepaliveTimeoutMs = positiveInt(o.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS, 'keepaliveTimeoutMs');
    // Peer traffic is plaintext, like the client API.
    const credentials = grpc.credentials.createInsecure();
    this.logger = o.logger ?? silentLogger;
    this.handler = o.onMessage;
    this.snapshotHandler = o.onSnapshot;
    this.credentials = credentials;
    this.connectTimeoutMs = connectTimeoutMs;
    this.closeTimeoutMs = closeTimeoutMs;
    this.keepaliveTimeMs = keepaliveTimeMs;
    this.keepaliveTimeoutMs = keepaliveTimeoutMs;
    this.maxSnapshotChunksInFlight = positiveInt(
      o.maxSnapshotChunksInFlight ?? DEFAULT_MAX_SNAPSHOT_CHUNKS_IN_FLIGHT,
      'maxSnapshotChunksInFlight',
    );
    const chunkBytesBound = this.maxMessageBytes - SNAPSHOT_CHUNK_OVERHEAD_BYTES;
    this.maxSnapshotChunkBytes = o.maxSnapshotChunkBytes ?? Math.min(DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES, chunkBytesBound);
    if (!Number.isSafeInteger(this.maxSnapshotChunkBytes) || this.maxSnapshotChunkBytes < 1 || this.maxSnapshotChunkBytes > chunkBytesBound) {
      throw new RangeError(
        `PeerTransport: maxSnapshotChunkBytes must be an integer in [1, maxMessageBytes - ${SNAPSHOT_CHUNK_OVERHEAD_BYTES}] ` +
          `= [1, ${chunkBytesBound}] (a chunk must fit in one gRPC message), got ${this.maxSnapshotChunkBytes}`,
      );
    }
    this.snapshotIdleTimeoutMs = positiveInt(o.snapshotIdleTimeoutMs ?? DEFAULT_SNAPSHOT_IDLE_TIMEOUT_MS, 'snapshotIdleTimeoutMs');
    this.maxSnapshotTransfers = positiveInt(o.maxSnapshotTransfers ?? DEFAULT_MAX_SNAPSHOT_TRANSFERS, 'maxSnapshotTransfers');

    for (const [id, address] of o.peers) {
      if (id === this.nodeId) continue;
      positiveInt(id, 'a peer id');
      if (id > MAX_WIRE_NODE_ID) throw new RangeError(`PeerTransport: peer id ${id} is over the limit (limit MAX_WIRE_NODE_ID=${MAX_WIRE_NODE_ID})`);
      if (typeof address !== 'string' || address.length === 0) throw new RangeError(`PeerTransport: peer ${id} has no address`);
      const link = new PeerLink({
        localId: this.nodeId,
        peerId: id,
        address,
        clusterId: this.clusterId,
        maxMessageBytes: this.maxMessageBytes,
        maxPayloadBytes: this.maxMessageBytes - PEER_FRAME_OVERHEAD_BYTES,
        maxQueueMessages,
        maxQueueBytes,
        connectTimeoutMs,
        closeTimeoutMs,
        keepaliveTimeMs,
        keepaliveTimeoutMs,
        backoff: new Backoff({ minMs, maxMs, random }),
        logger: this.logger,
        allows: (from, to) => this.allows(from, to),
      });
      this.peers.set(id, {
        id,
        address,
        link,
        incoming: {
          receivedMessages: 0,
          receivedFrames: 0,
          malformedFrames: 0,
          droppedLinkFilter: 0,
          droppedMisaddressed: 0,
          droppedNoHandler: 0,
        },
        inbound: undefined,
        loggedMisaddressed: false,
        snapshots: {
          sentTransfers: 0,
          sentBytes: 0,
          sendFailures: 0,
          receivedTransfers: 0,
          receivedBytes: 0,
          receiveFailures: 0,
        },
        snapshotSends: new Set(),
        snapshotReceive: undefined,
      });
    }
  }

  /**
   * Queues messages for their destinations and returns at once. Messages to one peer leave in the
   * order given (a reconnect may rarely reorder them, which Raft tolerates); what cannot be queued is
   * dropped and counted (see DropCounts). Throws RangeError only on a programmer error, and then
   * before queueing anything of the batch: a message whose `from` is not this node, a Snap message
   * (a snapshot never travels on the peer stream: stream it with sendSnapshot()), or a message whose
   * numbers are not safe non-negative integers (this one may leave the batch partly queued).
   */
  send(messages: readonly Message[]): void {
    for (const m of messages) {
      if (m.from !== this.nodeId) {
        throw new RangeError(`PeerTransport.send: message from ${m.from} given to the transport of node ${this.nodeId}`);
      }
      if (m.type === 'Snap') {
        throw new RangeError(
          `PeerTransport.send: a Snap message (to node ${m.to}) never travels on the peer stream; ` +
            `stream the snapshot with sendSnapshot()`,
        );
      }
    }
    if (this.closed) return;
    for (const m of messages) {
      const peer = this.peers.get(m.to);
      if (peer === undefined) {
        this.droppedUnknownPeerMessages++;
        if (!this.loggedUnknownPeers.has(m.to)) {
          this.loggedUnknownPeers.add(m.to);
          this.logger.warn(`dropped a ${m.type} message to node ${m.to}, which is not a peer of node ${this.nodeId}`);
        }
        continue;
      }
      if (!this.allows(this.nodeId, m.to)) {
        peer.link.counters.droppedLinkFilter++;
        continue;
      }
      peer.link.enqueue(m, encodedMessageBytes(m));
    }
  }

  /**
   * Streams a snapshot to `to` over an InstallSnapshot call of its own, in chunks pulled from `chunks`
   * as the flow-control window allows (at most maxSnapshotChunksInFlight written and not acked, plus
   * one held back to learn whether it is the last), and resolves with the index and term the peer
   * says it installed. `term` is this leader's term, sent in every chunk. Each chunk is held until
   * after the next pull, so the producer must yield a fresh buffer each time, never reuse one.
   *
   * Rejects, never throws:
   *  - LimitError (TOO_MANY_REQUESTS), at once, when maxSnapshotTransfers transfers are running;
   *  - SnapshotTransferError (a RaftKvError) on any other failure: code UNAVAILABLE for a refusal or
   *    failure of the peer (with its status and message), a broken or refused call, a cut link, a
   *    closing transport, or an abort through `opts.signal` (the message says "aborted"); TIMEOUT
   *    when no ack comes for snapshotIdleTimeoutMs or the call is not accepted within
   *    connectTimeoutMs; the source's code (else INTERNAL) when `chunks` throws;
   *  - RangeError on a programmer error: `to` not a peer, `term` not a positive safe integer, a
   *    chunk that is not a Uint8Array or is larger than maxSnapshotChunkBytes.
   * Whatever ends a transfer early, the call is cancelled and the iterator taken from `chunks` gets
   * return() (not awaited), unless it finished by itself: even a transfer refused at once takes
   * an iterator and returns it, so a producer never leaks what it opened.
   *
   * The peer keeps one incoming transfer per sender: a second transfer to the same peer ends the
   * first one (which rejects with the peer's ABORTED). The test link filter refuses a transfer
   * across a cut link, in either direction, and setLinkFilter() breaks a running one.
   */
  sendSnapshot(
    to: NodeId,
    term: number,
    chunks: AsyncIterable<Uint8Array>,
    opts: { signal?: AbortSignal } = {},
  ): Promise<SnapshotMeta> {
    const peer = this.peers.get(to);
    const refuse = (err: Error): Promise<SnapshotMeta> => {
      releaseChunks(chunks, this.logger);
      if (peer !== undefined) peer.snapshots.sendFailures++;
      return Promise.reject(err);
    };
    if (typeof (chunks as Partial<AsyncIterable<Uint8Array>> | null | undefined)?.[Symbol.asyncIterator] !== 'function') {
      return Promise.reject(new RangeError('PeerTransport.sendSnapshot: chunks must be an AsyncIterable<Uint8Array>'));
    }
    if (peer === undefined) {
      return refuse(new RangeError(`PeerTransport.sendSnapshot: node ${to} is not a peer of node ${this.nodeId}`));
    }
    if (!Number.isSafeInteger(term) || term < 1) {
      return refuse(new RangeError(`PeerTransport.sendSnapshot: term must be a positive safe integer, got ${term}`));
    }
    const failed = (kind: 'closed' | 'aborted' | 'link-cut', what: string): Promise<SnapshotMeta> =>
      refuse(new SnapshotTransferError('UNAVAILABLE', to, kind, `snapshot transfer to node ${to} ${what}`));
    if (this.closed) return failed('closed', `failed: node ${this.nodeId}'s transport is closed`);
    if (opts.signal?.aborted === true) {
      const reason: unknown = opts.signal.reason;
      return failed('aborted', `aborted: ${reason instanceof Error ? reason.message : String(reason)}`);
    }
    if (!this.linkOpen(to)) return failed('link-cut', `failed: ${linkCutStatus(this.nodeId, to).details}`);
    if (this.snapshotSends.size >= this.maxSnapshotTransfers) {
      return refuse(
        new LimitError(
          'TOO_MANY_REQUESTS',
          'maxSnapshotTransfers',
          this.maxSnapshotTransfers,
          `snapshot transfer to node ${to} refused: ${this.snapshotSends.size} snapshot transfers are running`,
        ),
      );
    }
    let sender: SnapshotSender;
    try {
      sender = new SnapshotSender(
        {
          localId: this.nodeId,
          peerId: to,
          address: peer.address,
          clusterId: this.clusterId,
          credentials: this.credentials,
          term,
          maxChunksInFlight: this.maxSnapshotChunksInFlight,
          maxChunkBytes: this.maxSnapshotChunkBytes,
          connectTimeoutMs: this.connectTimeoutMs,
          idleTimeoutMs: this.snapshotIdleTimeoutMs,
          keepaliveTimeMs: this.keepaliveTimeMs,
          keepaliveTimeoutMs: this.keepaliveTimeoutMs,
          counters: peer.snapshots,
          logger: this.logger,
          linkOpen: () => this.linkOpen(to),
          onSettled: () => {
            this.snapshotSends.delete(sender);
            peer.snapshotSends.delete(sender);
          },
        },
        chunks,
        opts.signal,
      );
    } catch (e) {
      // chunks[Symbol.asyncIterator]() threw: the caller's iterable is broken.
      peer.snapshots.sendFailures++;
      return Promise.reject(e);
    }
    this.snapshotSends.add(sender);
    peer.snapshotSends.add(sender);
    sender.start();
    return sender.result;
  }

  /**
   * Sets the receiver of incoming snapshots (replacing any earlier one); see SnapshotHandler and
   * SnapshotSink. Transfers already running keep their sinks.
   */
  onSnapshot(handler: SnapshotHandler): void {
    this.snapshotHandler = handler;
  }

  /**
   * Sets the receiver of incoming messages (replacing any earlier one). It is called synchronously,
   * once per message, in the order the sender sent them. It must not throw: an exception is taken for
   * a programmer error, ends the stream and is rethrown asynchronously (crashing the process).
   */
  onMessage(handler: (message: Message) => void): void {
    this.handler = handler;
  }

  /**
   * TEST-ONLY fault injection: while set, a message from `from` to `to` passes only if the filter
   * returns true. It is checked on the sending side (in send() and again as messages leave the
   * queue) and on the receiving side (before delivery), so giving every transport of a cluster the
   * same filter cuts exactly the links it names, in the direction it names. Dropped messages are
   * counted as linkFilterOut / linkFilterIn. Streams stay open. Pass undefined to heal all links.
   *
   * A snapshot transfer needs both directions (chunks one way, acks the other): a link cut either
   * way refuses new transfers over it and breaks running ones, at once and on every chunk and ack.
   */
  setLinkFilter(filter: LinkFilter | undefined): void {
    this.linkFilter = filter;
    for (const p of this.peers.values()) {
      if (this.linkOpen(p.id)) continue;
      const cut = linkCutStatus(this.nodeId, p.id);
      for (const s of [...p.snapshotSends]) {
        s.fail(new SnapshotTransferError('UNAVAILABLE', p.id, 'link-cut', `snapshot transfer to node ${p.id} failed: ${cut.details}`));
      }
      p.snapshotReceive?.fail(cut);
    }
  }

  /**
   * Registers the RaftPeer service on a server the node owns (which may serve other services on
   * the same port), and takes the raw peer connections of `listener` (the node's port, shared with
   * that server). Create the server with peerServerOptions(maxMessageBytes) so that gRPC itself
   * refuses oversized frames. Call close() before shutting the server down: peer streams are
   * long-lived and server.tryShutdown() would wait for them.
   */
  addToServer(server: grpc.Server, listener?: NodeListener): void {
    server.addService(peerServiceDefinition, {
      Stream: (call: grpc.ServerReadableStream<PeerFrame, PeerAck>, callback: grpc.sendUnaryData<PeerAck>) =>
        this.onStream(call, callback),
      InstallSnapshot: (call: grpc.ServerDuplexStream<SnapshotChunkPb, SnapshotAckPb>) => this.onInstallSnapshot(call),
    });
    listener?.setPeerHandler((socket, head) => this.acceptConnection(socket, head));
  }

  stats(): TransportStats {
    const peers = new Map<NodeId, PeerStats>();
    for (const p of this.peers.values()) {
      const out = p.link.counters;
      const inc = p.incoming;
      const lastError = p.link.lastErrorMessage;
      peers.set(p.id, {
        address: p.address,
        connected: p.link.connected,
        inboundConnected: p.inbound !== undefined,
        queuedMessages: p.link.queuedMessages,
        queuedBytes: p.link.queuedByteCount,
        sentMessages: out.sentMessages,
        sentFrames: out.sentFrames,
        receivedMessages: inc.receivedMessages,
        receivedFrames: inc.receivedFrames,
        malformedFrames: inc.malformedFrames,
        connectAttempts: out.connectAttempts,
        keepalivesReceived: out.keepalivesReceived,
        dropped: {
          queueFull: out.droppedQueueFull,
          oversize: out.droppedOversize,
          linkFilterOut: out.droppedLinkFilter,
          streamBroken: out.droppedStreamBroken,
          linkFilterIn: inc.droppedLinkFilter,
          misaddressed: inc.droppedMisaddressed,
          noHandler: inc.droppedNoHandler,
        },
        snapshots: {
          sending: p.snapshotSends.size,
          receiving: p.snapshotReceive !== undefined,
          ...p.snapshots,
        },
        ...(lastError !== undefined ? { lastError } : {}),
      });
    }
    return {
      peers,
      droppedUnknownPeerMessages: this.droppedUnknownPeerMessages,
      refusedStreams: this.refusedStreams,
      snapshotTransfers: this.snapshotSends.size,
    };
  }

  /**
   * Ends every stream (outgoing ones gracefully, bounded by closeTimeoutMs; incoming ones with
   * UNAVAILABLE), cancels every timer and drops what is queued. Outgoing snapshot transfers are
   * cancelled and reject; incoming ones end with UNAVAILABLE and their sinks are aborted. Resolves
   * when all outgoing streams have ended. Idempotent. send() does nothing afterwards, sendSnapshot()
   * rejects, and new incoming calls are refused.
   */
  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closed = true;
      const shuttingDown = { code: grpc.status.UNAVAILABLE, details: `node ${this.nodeId} is shutting down` };
      for (const p of this.peers.values()) {
        if (p.inbound !== undefined) this.endInbound(p.inbound, shuttingDown);
        p.snapshotReceive?.fail(shuttingDown);
        for (const s of [...p.snapshotSends]) {
          s.fail(new SnapshotTransferError('UNAVAILABLE', p.id, 'closed', `snapshot transfer to node ${p.id} failed: node ${this.nodeId}'s transport is closing`));
        }
      }
      this.closing = Promise.all([...this.peers.values()].map((p) => p.link.close())).then(() => undefined);
    }
    return this.closing;
  }

  private allows(from: NodeId, to: NodeId): boolean {
    return this.linkFilter === undefined || this.linkFilter(from, to);
  }

  /** Both directions between this node and `peer` pass the link filter (what a snapshot transfer needs). */
  private linkOpen(peer: NodeId): boolean {
    return this.allows(this.nodeId, peer) && this.allows(peer, this.nodeId);
  }

  // -------------------------------------------------------------------------------------------
  // The receiving side

  /** The peer a Stream or InstallSnapshot call comes from, or the status that refuses the call. */
  private checkCaller(metadata: grpc.Metadata): Peer | StatusError {
    if (this.closed) return { code: grpc.status.UNAVAILABLE, details: `node ${this.nodeId} is shutting down` };
    const clusterId = singleString(metadata, METADATA_CLUSTER_ID);
    const from = parseNodeId(singleString(metadata, METADATA_FROM_NODE));
    const to = parseNodeId(singleString(metadata, METADATA_TO_NODE));
    if (clusterId === undefined || from === undefined || to === undefined) {
      return {
        code: grpc.status.INVALID_ARGUMENT,
        details:
          `a peer call needs the metadata ${METADATA_CLUSTER_ID}, ${METADATA_FROM_NODE} and ${METADATA_TO_NODE} ` +
          `(one value each; node ids are positive integers)`,
      };
    }
    return this.checkPeer(clusterId, from, to);
  }

  /** The peer `from` if it may send to this node, or the status that refuses it. */
  private checkPeer(clusterId: string, from: NodeId, to: NodeId): Peer | StatusError {
    if (this.closed) return { code: grpc.status.UNAVAILABLE, details: `node ${this.nodeId} is shutting down` };
    if (clusterId !== this.clusterId) {
      return {
        code: grpc.status.FAILED_PRECONDITION,
        details: `cluster id mismatch: node ${from} is in cluster "${clusterId}", node ${this.nodeId} is in cluster "${this.clusterId}"`,
      };
    }
    const peer = this.peers.get(from);
    if (peer === undefined) {
      return { code: grpc.status.PERMISSION_DENIED, details: `node ${from} is not a peer of node ${this.nodeId} in cluster "${this.clusterId}"` };
    }
    if (to !== this.nodeId) {
      return {
        code: grpc.status.FAILED_PRECONDITION,
        details: `node ${from} meant to reach node ${to} but reached node ${this.nodeId}: its address for node ${to} is wrong`,
      };
    }
    return peer;
  }

  private onStream(call: grpc.ServerReadableStream<PeerFrame, PeerAck>, callback: grpc.sendUnaryData<PeerAck>): void {
    const peer = this.checkCaller(call.metadata);
    if (!isPeer(peer)) {
      this.refusedStreams++;
      this.logger.warn(`refused a peer stream from ${call.getPeer()}: ${peer.details}`);
      return callback(peer);
    }
    if (peer.inbound !== undefined) {
      // A reconnecting peer's old stream may linger (half-open); keep one stream per peer.
      this.endInbound(peer.inbound, { code: grpc.status.ABORTED, details: `superseded by a newer stream from node ${peer.id}` });
    }
    const stream: InboundStream = {
      peer,
      done: false,
      finish: (status) => {
        if (status === null) callback(null, {});
        else if (status !== undefined) callback(status);
      },
    };
    peer.inbound = stream;
    // The sender waits for these headers before it writes anything: they say "accepted".
    call.sendMetadata(new grpc.Metadata());
    call.on('data', (frame: PeerFrame) => this.onFrame(stream, frame));
    call.on('end', () => this.endInbound(stream, null));
    call.on('error', () => this.endInbound(stream, undefined));
    call.on('cancelled', () => this.endInbound(stream, undefined));
  }

  private onFrame(stream: InboundStream, frame: PeerFrame): void {
    if (stream.done) return;
    const payload: unknown = frame.payload;
    if (!(payload instanceof Uint8Array)) {
      stream.peer.incoming.malformedFrames++;
      return this.endInbound(stream, { code: grpc.status.INVALID_ARGUMENT, details: 'peer frame without a payload' });
    }
    if (payload.length > this.maxMessageBytes) {
      return this.endInbound(stream, {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `peer frame of ${payload.length} bytes (limit maxMessageBytes=${this.maxMessageBytes})`,
      });
    }
    this.onPayload(stream, payload);
  }

  /**
   * A raw peer connection, from NodeListener: `head` holds its first bytes. It must send its hello
   * within connectTimeoutMs; it is then refused with a status, or accepted with status 0, after which
   * its frames go where a Stream call's do.
   */
  acceptConnection(socket: net.Socket, head: Buffer): void {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    /** Bytes of the hello so far. */
    let received: Buffer = Buffer.alloc(0);
    let stream: InboundStream | undefined;
    let decoder: FrameDecoder | undefined;
    const refuse = (status: StatusError): void => {
      this.refusedStreams++;
      this.logger.warn(`refused a peer connection from ${remote}: ${status.details}`);
      endSocket(status);
    };
    /** The reply's first status carries its prefix: it tells the sender it reached this wire. */
    let replied = false;
    let keepalive: NodeJS.Timeout | undefined;
    let ended = false;
    /** Stops the hello timer and the keepalives, and leaves the hello queue. */
    const stopTimers = (): void => {
      clearTimeout(helloTimer);
      if (keepalive !== undefined) clearInterval(keepalive);
      this.helloWaiting.delete(refuse);
    };
    const endSocket = (status: StatusError | null | undefined): void => {
      ended = true;
      stopTimers();
      socket.off('data', onData);
      if (status === undefined || socket.destroyed) return void socket.destroy();
      // The peer closes its side when it reads the status (or the end); do not wait on it forever.
      if (status === null) socket.end();
      else socket.end(replied ? encodeStatus(status) : encodeReply(status));
      replied = true;
      setTimeout(() => socket.destroy(), this.closeTimeoutMs).unref();
    };
    const onData = (chunk: Buffer): void => {
      if (stream !== undefined) {
        if (stream.done) return;
        let payloads: readonly Buffer[];
        let tooLong: PeerWireError | undefined;
        try {
          payloads = decoder!.push(chunk);
        } catch (e) {
          if (!(e instanceof PeerWireError)) throw e;
          payloads = e.payloadsBefore;
          tooLong = e;
        }
        for (const p of payloads) {
          if (stream.done) return;
          // A payload that shares its socket read with other frames is copied: the log holds entry
          // data as views of it, which would keep the whole read (up to 64 KiB) alive.
          this.onPayload(stream, p.byteLength === p.buffer.byteLength ? p : new Uint8Array(p));
        }
        if (tooLong !== undefined) this.endInbound(stream, { code: grpc.status.RESOURCE_EXHAUSTED, details: tooLong.message });
        return;
      }
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      let got;
      try {
        got = decodeHello(received);
      } catch (e) {
        if (!(e instanceof PeerWireError)) throw e;
        return refuse({ code: grpc.status.INVALID_ARGUMENT, details: e.message });
      }
      if (got === undefined) return; // decodeHello refuses a hello longer than its limit
      clearTimeout(helloTimer);
      this.helloWaiting.delete(refuse);
      const peer = this.checkPeer(got.hello.clusterId, got.hello.from, got.hello.to);
      if (!isPeer(peer)) return refuse(peer);
      if (peer.inbound !== undefined) {
        // A reconnecting peer's old connection may linger (half-open); keep one per peer.
        this.endInbound(peer.inbound, { code: grpc.status.ABORTED, details: `superseded by a newer connection from node ${peer.id}` });
      }
      stream = { peer, done: false, finish: endSocket };
      peer.inbound = stream;
      decoder = new FrameDecoder(this.maxMessageBytes);
      socket.write(encodeReply({ code: 0, details: '' }));
      replied = true;
      // Proof of life for the sender, which ends a connection that stays silent too long.
      keepalive = setInterval(() => socket.write(KEEPALIVE), this.keepaliveTimeMs);
      keepalive.unref();
      const rest = received.subarray(got.bytes);
      received = Buffer.alloc(0);
      if (rest.length > 0) onData(rest);
    };
    const helloTimer = setTimeout(
      () => refuse({ code: grpc.status.DEADLINE_EXCEEDED, details: `no hello within connectTimeoutMs=${this.connectTimeoutMs}` }),
      this.connectTimeoutMs,
    );
    socket.setNoDelay(true);
    // A sender that vanished without a FIN is found by TCP keepalive probes (it sends nothing for
    // long only when it has nothing to say), or replaced when it reconnects.
    socket.setKeepAlive(true, this.keepaliveTimeMs);
    socket.on('error', () => {}); // 'close' follows
    socket.on('close', () => {
      stopTimers();
      if (stream !== undefined) this.endInbound(stream, undefined);
    });
    socket.on('end', () => {
      if (stream === undefined) return void socket.destroy();
      if (stream.done) return;
      if (decoder!.inFrame) {
        // A sender that died mid-write looks like this: the kernel closes its connections.
        stream.peer.incoming.malformedFrames++;
        this.logger.warn(`peer ${stream.peer.id}: its connection ended inside a frame; ending it`);
        return this.endInbound(stream, { code: grpc.status.INVALID_ARGUMENT, details: 'the connection ended inside a frame' });
      }
      // The sender ended gracefully: frames before its end were all delivered.
      this.endInbound(stream, null);
    });
    if (this.closed) return refuse({ code: grpc.status.UNAVAILABLE, details: `node ${this.nodeId} is shutting down` });
    socket.on('data', onData);
    onData(head);
    if (stream === undefined && !ended) {
      // The hello is not all in yet (a real peer sends it with its first bytes, so this is rare).
      if (this.helloWaiting.size >= MAX_PENDING_HELLOS) {
        // The oldest goes, so that stalled connections cannot lock peers out.
        const oldest = this.helloWaiting.values().next().value!;
        this.helloWaiting.delete(oldest);
        oldest({
          code: grpc.status.RESOURCE_EXHAUSTED,
          details: `closed to make room: ${MAX_PENDING_HELLOS} peer connections were waiting for their hello (limit MAX_PENDING_HELLOS=${MAX_PENDING_HELLOS})`,
        });
      }
      this.helloWaiting.add(refuse);
    }
    socket.resume();
  }

  /** One frame's payload from a peer's stream: decodes it and hands its messages to the handler. */
  private onPayload(stream: InboundStream, payload: Uint8Array): void {
    const { peer } = stream;
    let messages: Message[];
    try {
      messages = decodeBatch(payload);
    } catch (e) {
      if (!(e instanceof MalformedFrameError)) throw e;
      peer.incoming.malformedFrames++;
      this.logger.warn(`peer ${peer.id}: ${e.message}; ending its stream`);
      return this.endInbound(stream, { code: grpc.status.INVALID_ARGUMENT, details: e.message });
    }
    peer.incoming.receivedFrames++;
    for (const m of messages) {
      if (stream.done) return; // the handler closed the transport
      if (m.from !== peer.id || m.to !== this.nodeId) {
        peer.incoming.droppedMisaddressed++;
        if (!peer.loggedMisaddressed) {
          peer.loggedMisaddressed = true;
          this.logger.warn(`peer ${peer.id}: dropped a ${m.type} message from ${m.from} to ${m.to} on its stream to node ${this.nodeId}`);
        }
        continue;
      }
      if (!this.allows(m.from, m.to)) {
        peer.incoming.droppedLinkFilter++;
        continue;
      }
      const handler = this.handler;
      if (handler === undefined) {
        peer.incoming.droppedNoHandler++;
        continue;
      }
      peer.incoming.receivedMessages++;
      try {
        handler(m);
      } catch (e) {
        this.endInbound(stream, { code: grpc.status.INTERNAL, details: `node ${this.nodeId} failed to handle a message` });
        // Out of gRPC's event handlers, so that it crashes the process rather than gRPC's state.
        process.nextTick(() => {
          throw e;
        });
        return;
      }
    }
  }

  private onInstallSnapshot(call: grpc.ServerDuplexStream<SnapshotChunkPb, SnapshotAckPb>): void {
    // Refusing sends a trailers-only response: the sender learns why before writing anything.
    const refuse = (status: StatusError): void => {
      this.refusedStreams++;
      this.logger.warn(`refused a snapshot transfer from ${call.getPeer()}: ${status.details}`);
      call.emit('error', status); // grpc-js turns an emitted error into the call's status
    };
    const peer = this.checkCaller(call.metadata);
    if (!isPeer(peer)) return refuse(peer);
    if (this.snapshotHandler === undefined) {
      return refuse({ code: grpc.status.UNIMPLEMENTED, details: `node ${this.nodeId} does not accept snapshots: it has no onSnapshot handler` });
    }
    if (!this.linkOpen(peer.id)) return refuse(linkCutStatus(peer.id, this.nodeId));
    // A sender that restarted a transfer has given up on the older one: keep one per sender.
    peer.snapshotReceive?.fail({ code: grpc.status.ABORTED, details: `superseded by a newer snapshot transfer from node ${peer.id}` });
    const receiver: SnapshotReceiver = new SnapshotReceiver(
      {
        localId: this.nodeId,
        peerId: peer.id,
        maxChunkBytes: this.maxSnapshotChunkBytes,
        idleTimeoutMs: this.snapshotIdleTimeoutMs,
        counters: peer.snapshots,
        logger: this.logger,
        linkOpen: () => this.linkOpen(peer.id),
        openSink: (from, term) => {
          const handler = this.snapshotHandler;
          if (handler === undefined) throw new RaftKvError('UNAVAILABLE', `node ${this.nodeId} has no onSnapshot handler`);
          return handler(from, term);
        },
        onEnd: () => {
          if (peer.snapshotReceive === receiver) peer.snapshotReceive = undefined;
        },
      },
      call,
    );
    peer.snapshotReceive = receiver;
    receiver.start();
  }

  /** Ends an incoming stream once: with OK for null, with the status given, or silently (undefined). */
  private endInbound(stream: InboundStream, status: StatusError | null | undefined): void {
    if (stream.done) return;
    stream.done = true;
    if (stream.peer.inbound === stream) stream.peer.inbound = undefined;
    stream.finish(status);
  }
}

function isPeer(v: Peer | StatusError): v is Peer {
  return 'link' in v;
}

function singleString(metadata: grpc.Metadata, key: string): string | undefined {
  const values = metadata.get(key);
  const v = values.length === 1 ? values[0] : undefined;
  return typeof v === 'string' ? v : undefined;
}

function parseNodeId(s: string | undefined): NodeId | undefined {
  if (s === undefined || !/^[1-9][0-9]{0,15}$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}
