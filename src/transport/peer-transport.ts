// Carries the Raft core's messages between the nodes of a cluster over gRPC: one long-lived client
// stream to each peer for what this node sends (see peer-link.ts), and the RaftPeer service for what
// the peers send to it. Delivery is best effort, like the network Raft assumes: messages may be
// dropped (full queue, oversized, broken stream) and are counted when they are; Raft retransmits.
//
// Wiring it into a node:
//
//   const server = new grpc.Server(peerServerOptions(maxMessageBytes)); // + the client services
//   const transport = new PeerTransport({ nodeId, clusterId, peers, onMessage: (m) => raft.step(m) });
//   transport.addToServer(server);
//   server.bindAsync(listenAddress, credentials, ...);
//   ... transport.send(ready.messages) ... transport.send(ready.messagesAfterPersist) ...
//   await transport.close(); server.tryShutdown(...);   // close first: peer streams are long-lived

import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../raft/types.js';
import { Backoff } from './backoff.js';
import { decodeBatch, encodedMessageBytes, MalformedFrameError } from './codec.js';
import { silentLogger, type TransportLogger } from './logger.js';
import { PeerLink } from './peer-link.js';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  METADATA_CLUSTER_ID,
  METADATA_FROM_NODE,
  METADATA_TO_NODE,
  PEER_FRAME_OVERHEAD_BYTES,
  type PeerAck,
  type PeerFrame,
  peerServiceDefinition,
} from './peer-service.js';

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

/** Whether a message from `from` to `to` may pass. Test-only: see PeerTransport.setLinkFilter. */
export type LinkFilter = (from: NodeId, to: NodeId) => boolean;

export interface PeerTransportOptions {
  /** This node's id (a positive integer). */
  readonly nodeId: NodeId;
  /** Streams from a node that names another cluster id are refused. */
  readonly clusterId: string;
  /** Every peer's address ("host:port"). An entry for nodeId itself is ignored. */
  readonly peers: ReadonlyMap<NodeId, string>;
  /** Limit: bytes of one frame (one gRPC message). Default DEFAULT_MAX_MESSAGE_BYTES (4 MiB). */
  readonly maxMessageBytes?: number;
  /** Limit: messages queued for one peer. Default DEFAULT_MAX_QUEUE_MESSAGES (4096). */
  readonly maxQueueMessages?: number;
  /** Limit: encoded bytes queued for one peer; >= maxMessageBytes. Default 64 MiB. */
  readonly maxQueueBytes?: number;
  /** Reconnect delays grow from about this... Default 100 ms. */
  readonly reconnectBackoffMinMs?: number;
  /** ...to at most this. Default 2000 ms. */
  readonly reconnectBackoffMaxMs?: number;
  /** A stream the peer has not accepted by then is abandoned and retried. Default 5000 ms. */
  readonly connectTimeoutMs?: number;
  /** close() waits this long for each peer to acknowledge the end of a stream. Default 1000 ms. */
  readonly closeTimeoutMs?: number;
  /** gRPC keepalive pings on idle outgoing streams. Defaults 10000 ms and 5000 ms. */
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
  /** Default: insecure (plaintext). */
  readonly channelCredentials?: grpc.ChannelCredentials;
  /** Receives every accepted incoming message; also settable with onMessage(). */
  readonly onMessage?: (message: Message) => void;
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

export interface PeerStats {
  readonly address: string;
  /** An outgoing stream to the peer is open and the peer accepted it. */
  readonly connected: boolean;
  /** The peer has an accepted stream into this node. */
  readonly inboundConnected: boolean;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
  /** Messages handed to gRPC (written to the stream; not a proof of delivery). */
  readonly sentMessages: number;
  readonly sentFrames: number;
  /** Messages delivered to the handler. */
  readonly receivedMessages: number;
  readonly receivedFrames: number;
  /** Incoming frames that did not decode (each ended its stream). */
  readonly malformedFrames: number;
  /** Outgoing streams opened, successful or not. */
  readonly connectAttempts: number;
  readonly dropped: DropCounts;
  /** Why the last outgoing stream failed; cleared when one is accepted. */
  readonly lastError?: string;
}

export interface TransportStats {
  readonly peers: ReadonlyMap<NodeId, PeerStats>;
  /** Messages given to send() for a node that is not a peer. */
  readonly droppedUnknownPeerMessages: number;
  /** Incoming streams refused: wrong cluster, unknown sender, wrong target, bad metadata, closing. */
  readonly refusedStreams: number;
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
}

interface InboundStream {
  readonly peer: Peer;
  readonly call: grpc.ServerReadableStream<PeerFrame, PeerAck>;
  readonly callback: grpc.sendUnaryData<PeerAck>;
  done: boolean;
}

type StatusError = Partial<grpc.StatusObject> & { code: grpc.status; details: string };

export class PeerTransport {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  readonly maxMessageBytes: number;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly logger: TransportLogger;
  private handler: ((message: Message) => void) | undefined;
  private linkFilter: LinkFilter | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private droppedUnknownPeerMessages = 0;
  private readonly loggedUnknownPeers = new Set<NodeId>();
  private refusedStreams = 0;

  constructor(options: PeerTransportOptions) {
    const o = options;
    const positiveInt = (v: number, what: string, min = 1): number => {
      if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`PeerTransport: ${what} must be an integer >= ${min}, got ${v}`);
      return v;
    };
    this.nodeId = positiveInt(o.nodeId, 'nodeId');
    if (typeof o.clusterId !== 'string' || o.clusterId.length === 0) {
      throw new RangeError('PeerTransport: clusterId must be a non-empty string');
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
    const credentials = o.channelCredentials ?? grpc.credentials.createInsecure();
    this.logger = o.logger ?? silentLogger;
    this.handler = o.onMessage;

    for (const [id, address] of o.peers) {
      if (id === this.nodeId) continue;
      positiveInt(id, 'a peer id');
      if (typeof address !== 'string' || address.length === 0) throw new RangeError(`PeerTransport: peer ${id} has no address`);
      const link = new PeerLink({
        localId: this.nodeId,
        peerId: id,
        address,
        clusterId: this.clusterId,
        credentials,
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
      });
    }
  }

  /**
   * Queues messages for their destinations and returns at once. Messages to one peer leave in the
   * order given (a reconnect may rarely reorder them, which Raft tolerates); what cannot be queued is dropped and counted (see DropCounts). Throws only on a
   * programmer error: a message whose `from` is not this node, or whose numbers are not safe
   * non-negative integers.
   */
  send(messages: readonly Message[]): void {
    if (this.closed) return;
    for (const m of messages) {
      if (m.from !== this.nodeId) {
        throw new RangeError(`PeerTransport.send: message from ${m.from} given to the transport of node ${this.nodeId}`);
      }
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
   */
  setLinkFilter(filter: LinkFilter | undefined): void {
    this.linkFilter = filter;
  }

  /**
   * Registers the RaftPeer service on a server the node owns (which may serve other services on
   * the same port). Create that server with peerServerOptions(maxMessageBytes) so that gRPC itself
   * refuses oversized frames. Call close() before shutting the server down: peer streams are
   * long-lived and server.tryShutdown() would wait for them.
   */
  addToServer(server: grpc.Server): void {
    server.addService(peerServiceDefinition, {
      Stream: (call: grpc.ServerReadableStream<PeerFrame, PeerAck>, callback: grpc.sendUnaryData<PeerAck>) =>
        this.onStream(call, callback),
    });
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
        dropped: {
          queueFull: out.droppedQueueFull,
          oversize: out.droppedOversize,
          linkFilterOut: out.droppedLinkFilter,
          streamBroken: out.droppedStreamBroken,
          linkFilterIn: inc.droppedLinkFilter,
          misaddressed: inc.droppedMisaddressed,
          noHandler: inc.droppedNoHandler,
        },
        ...(lastError !== undefined ? { lastError } : {}),
      });
    }
    return {
      peers,
      droppedUnknownPeerMessages: this.droppedUnknownPeerMessages,
      refusedStreams: this.refusedStreams,
    };
  }

  /**
   * Ends every stream (outgoing ones gracefully, bounded by closeTimeoutMs; incoming ones with
   * UNAVAILABLE), cancels every timer and drops what is queued. Resolves when all outgoing streams
   * have ended. Idempotent. send() does nothing afterwards and new incoming streams are refused.
   */
  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closed = true;
      for (const p of this.peers.values()) {
        if (p.inbound !== undefined) {
          this.endInbound(p.inbound, { code: grpc.status.UNAVAILABLE, details: `node ${this.nodeId} is shutting down` });
        }
      }
      this.closing = Promise.all([...this.peers.values()].map((p) => p.link.close())).then(() => undefined);
    }
    return this.closing;
  }

  private allows(from: NodeId, to: NodeId): boolean {
    return this.linkFilter === undefined || this.linkFilter(from, to);
  }

  // -------------------------------------------------------------------------------------------
  // The receiving side

  private onStream(call: grpc.ServerReadableStream<PeerFrame, PeerAck>, callback: grpc.sendUnaryData<PeerAck>): void {
    const refuse = (code: grpc.status, details: string): void => {
      this.refusedStreams++;
      this.logger.warn(`refused a peer stream from ${call.getPeer()}: ${details}`);
      callback({ code, details });
    };
    if (this.closed) return refuse(grpc.status.UNAVAILABLE, `node ${this.nodeId} is shutting down`);
    const clusterId = singleString(call.metadata, METADATA_CLUSTER_ID);
    const from = parseNodeId(singleString(call.metadata, METADATA_FROM_NODE));
    const to = parseNodeId(singleString(call.metadata, METADATA_TO_NODE));
    if (clusterId === undefined || from === undefined || to === undefined) {
      return refuse(
        grpc.status.INVALID_ARGUMENT,
        `a peer stream needs the metadata ${METADATA_CLUSTER_ID}, ${METADATA_FROM_NODE} and ${METADATA_TO_NODE} ` +
          `(one value each; node ids are positive integers)`,
      );
    }
    if (clusterId !== this.clusterId) {
      return refuse(
        grpc.status.FAILED_PRECONDITION,
        `cluster id mismatch: node ${from} is in cluster "${clusterId}", node ${this.nodeId} is in cluster "${this.clusterId}"`,
      );
    }
    const peer = this.peers.get(from);
    if (peer === undefined) {
      return refuse(grpc.status.PERMISSION_DENIED, `node ${from} is not a peer of node ${this.nodeId} in cluster "${this.clusterId}"`);
    }
    if (to !== this.nodeId) {
      return refuse(
        grpc.status.FAILED_PRECONDITION,
        `node ${from} meant to reach node ${to} but reached node ${this.nodeId}: its address for node ${to} is wrong`,
      );
    }
    if (peer.inbound !== undefined) {
      // A reconnecting peer's old stream may linger (half-open); keep one stream per peer.
      this.endInbound(peer.inbound, { code: grpc.status.ABORTED, details: `superseded by a newer stream from node ${from}` });
    }
    const stream: InboundStream = { peer, call, callback, done: false };
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
    const { peer } = stream;
    const payload: unknown = frame.payload;
    if (!(payload instanceof Uint8Array)) {
      peer.incoming.malformedFrames++;
      return this.endInbound(stream, { code: grpc.status.INVALID_ARGUMENT, details: 'peer frame without a payload' });
    }
    if (payload.length > this.maxMessageBytes) {
      return this.endInbound(stream, {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `peer frame of ${payload.length} bytes (limit maxMessageBytes=${this.maxMessageBytes})`,
      });
    }
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

  /** Ends an incoming stream once: with OK for null, with the status given, or silently (undefined). */
  private endInbound(stream: InboundStream, status: StatusError | null | undefined): void {
    if (stream.done) return;
    stream.done = true;
    if (stream.peer.inbound === stream) stream.peer.inbound = undefined;
    if (status === null) stream.callback(null, {});
    else if (status !== undefined) stream.callback(status);
  }
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
