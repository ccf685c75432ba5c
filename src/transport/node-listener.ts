// A node's one TCP port, shared by gRPC and the raw peer stream. Each accepted connection's first
// bytes say which it is: the raw peer stream opens with PEER_WIRE_MAGIC ("RKVP"), an HTTP/2 client
// with its preface ("PRI * HTTP/2.0"). Raw peer connections go to the peer handler (a PeerTransport),
// everything else to the gRPC server through grpc-js's connection injector, with the bytes read so
// far put back first. So clients, peers and grpcurl all use the address in --members.

import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { TransportLogger } from './logger.js';
import { silentLogger } from './logger.js';
import { onGrpcSessions, replaceStreamMap } from './http2-stream-map.js';
import { isPeerWireHead, PEER_WIRE_MAGIC } from './peer-wire.js';

/** Takes a raw peer connection and the bytes already read from it (they start with the magic). */
export type PeerConnectionHandler = (socket: net.Socket, head: Buffer) => void;

export interface NodeListenerOptions {
  /** Gets every connection that is not a raw peer connection. */
  readonly grpcServer: grpc.Server;
  /** A connection that sends fewer than 4 bytes in this long is closed. Default 10,000 ms. */
  readonly firstBytesTimeoutMs?: number;
  /**
   * Limit: connections whose first bytes have not arrived yet. A new one beyond it closes the oldest,
   * so silent connections cannot lock clients and peers out (theirs arrive at once). Default 256.
   */
  readonly maxPendingConnections?: number;
  /**
   * Give each HTTP/2 session an IntKeyMap for its streams in place of Node's Map (see
   * http2-stream-map.ts: far less GC under load). Default true; false leaves Node's Map.
   */
  readonly replaceStreamMaps?: boolean;
  readonly logger?: TransportLogger;
}

export const DEFAULT_FIRST_BYTES_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_PENDING_CONNECTIONS = 256;

/** What the listener closed before sorting, since it started. */
export interface ListenerCounters {
  /** Sent fewer than 4 bytes within firstBytesTimeoutMs. */
  firstBytesTimeouts: number;
  /** Closed to make room under maxPendingConnections. */
  evictedPending: number;
  /** HTTP/2 sessions that got an IntKeyMap for their streams. */
  streamMapsReplaced: number;
  /** HTTP/2 sessions seen whose streams stayed in Node's Map (its internals were not found). */
  streamMapsKept: number;
}

/** "host:port", "[v6]:port": the host (without brackets) and the port; throws RangeError otherwise. */
export function parseHostPort(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new RangeError(`not a host:port address: ${JSON.stringify(address)}`);
  return { host: (m[1] ?? m[2])!, port };
}

export class NodeListener {
  private readonly server: net.Server;
  private readonly injector: grpc.ConnectionInjector;
  private peerHandler: PeerConnectionHandler | undefined;
  /** Connections whose first bytes are awaited. Invariant: size <= maxPendingConnections. */
  private readonly pending = new Set<net.Socket>();
  /** Every open connection this listener accepted, sorted or not. */
  private readonly open = new Set<net.Socket>();
  private readonly firstBytesTimeoutMs: number;
  private readonly maxPendingConnections: number;
  private readonly logger: TransportLogger;
  /** The pending limit was hit since the pending set was last empty: logs once per such episode. */
  private evictingSinceEmpty = false;
  readonly counters: ListenerCounters = { firstBytesTimeouts: 0, evictedPending: 0, streamMapsReplaced: 0, streamMapsKept: 0 };
  /** Logged once: grpc-js's servers or Node's sessions were not as expected; stream maps stay Maps. */
  private loggedKeptStreamMap = false;
  private closed = false;
  /** The bound port, once listen() resolved. */
  port = 0;

  constructor(o: NodeListenerOptions) {
    this.injector = o.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.firstBytesTimeoutMs = o.firstBytesTimeoutMs ?? DEFAULT_FIRST_BYTES_TIMEOUT_MS;
    this.maxPendingConnections = o.maxPendingConnections ?? DEFAULT_MAX_PENDING_CONNECTIONS;
    this.logger = o.logger ?? silentLogger;
    if (o.replaceStreamMaps ?? true) {
      if (!onGrpcSessions(o.grpcServer, (session) => this.onSession(session))) this.warnStreamMapsKept();
    }
    this.server = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
  }

  /** Where raw peer connections go; without one they are closed. */
  setPeerHandler(handler: PeerConnectionHandler | undefined): void {
    this.peerHandler = handler;
  }

  /** Binds `address` (host:port; port 0 picks a free one) and resolves with the port. */
  listen(address: string): Promise<number> {
    const { host, port } = parseHostPort(address);
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host, port, exclusive: true }, () => {
        this.server.off('error', onError);
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve(this.port);
      });
    });
  }

  /**
   * Stops accepting and closes connections still being sorted at once. Connections already handed
   * over belong to the gRPC server (its shutdown ends them) or to the peer handler; whatever of them
   * is still open after graceMs is destroyed. Resolves when every connection is closed.
   */
  close(graceMs = 2000): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const s of this.pending) s.destroy();
      this.pending.clear();
      this.closedPromise = new Promise((resolve) => this.server.close(() => resolve()));
      if (this.open.size > 0) {
        setTimeout(() => {
          for (const s of this.open) s.destroy();
        }, graceMs).unref();
      }
    }
    return this.closedPromise ?? Promise.resolve();
  }

  private closedPromise: Promise<void> | undefined;

  private onConnection(socket: net.Socket): void {
    if (this.closed) return void socket.destroy();
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    if (this.pending.size >= this.maxPendingConnections) {
      // A Set iterates in insertion order: the first is the oldest.
      const oldest = this.pending.values().next().value!;
      this.pending.delete(oldest);
      oldest.destroy();
      this.counters.evictedPending++;
      if (!this.evictingSinceEmpty) {
        this.evictingSinceEmpty = true;
        this.logger.warn(
          `${this.maxPendingConnections} connections have not sent their first bytes (limit ` +
            `maxPendingConnections=${this.maxPendingConnections}); closing the oldest to make room, ` +
            `logged again only after they drain (count: counters.evictedPending)`,
        );
      }
    }
    this.pending.add(socket);
    const chunks: Buffer[] = [];
    let bytes = 0;
    const done = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onClose);
      this.pending.delete(socket);
      if (this.pending.size === 0) this.evictingSinceEmpty = false;
    };
    const onClose = (): void => done();
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      bytes += chunk.length;
      if (bytes < PEER_WIRE_MAGIC.length) return;
      done();
      socket.pause();
      const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);
      if (isPeerWireHead(head)) {
        const handler = this.peerHandler;
        if (handler === undefined) return void socket.destroy();
        handler(socket, head);
      } else {
        // HTTP/2 reads what is buffered in the socket before its handle, so nothing is lost.
        socket.unshift(head);
        this.injector.injectConnection(socket);
      }
    };
    const timer = setTimeout(() => {
      done();
      this.counters.firstBytesTimeouts++;
      socket.destroy();
    }, this.firstBytesTimeoutMs);
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onClose);
  }

  private onSession(session: object): void {
    if (replaceStreamMap(session)) this.counters.streamMapsReplaced++;
    else {
      this.counters.streamMapsKept++;
      this.warnStreamMapsKept();
    }
  }

  private warnStreamMapsKept(): void {
    if (this.loggedKeptStreamMap) return;
    this.loggedKeptStreamMap = true;
    this.logger.warn(
      `this grpc-js or Node (${process.version}) does not keep HTTP/2 sessions or their streams where expected: ` +
        `streams stay in Node's Map (more GC under load; see src/transport/http2-stream-map.ts)`,
    );
  }
}
