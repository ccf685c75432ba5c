// Loopback nodes for transport tests: a grpc.Server behind a NodeListener on 127.0.0.1 (port 0 unless
// told), a PeerTransport on both, and what it received. Everything started here is stopped by stopAll().

import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../../src/raft/types.js';
import { NodeListener, parseHostPort } from '../../src/transport/node-listener.js';
import { PeerTransport, peerServerOptions, type PeerTransportOptions } from '../../src/transport/peer-transport.js';
import {
  installSnapshotMethod,
  METADATA_CLUSTER_ID,
  METADATA_FROM_NODE,
  METADATA_TO_NODE,
  type PeerAck,
  type PeerFrame,
  type SnapshotAckPb,
  type SnapshotChunkPb,
  streamMethod,
} from '../../src/transport/peer-service.js';
import { decodeStatus, encodeHello, frameHeader, REPLY_PREFIX, type Hello, type WireStatus } from '../../src/transport/peer-wire.js';
import { waitFor } from '../support/wait.js';

export interface TestServer {
  readonly server: grpc.Server;
  readonly listener: NodeListener;
  readonly port: number;
  readonly address: string;
  /** Stops the port at once: the listener, the gRPC server and every connection on them. */
  kill(): Promise<void>;
}

export interface TestNode {
  readonly id: NodeId;
  readonly transport: PeerTransport;
  readonly received: Message[];
  readonly warnings: string[];
}

export class Harness {
  private readonly servers: TestServer[] = [];
  private readonly transports: PeerTransport[] = [];
  private readonly clients: grpc.Client[] = [];
  private readonly sockets: net.Socket[] = [];

  /** Binds a server (port 0: any free port) with peer options for maxMessageBytes. */
  async bindServer(port = 0, maxMessageBytes?: number): Promise<TestServer> {
    const server = new grpc.Server(peerServerOptions(maxMessageBytes));
    const listener = new NodeListener({ grpcServer: server });
    const bound = await listener.listen(`127.0.0.1:${port}`);
    const kill = async (): Promise<void> => {
      const closed = listener.close(0);
      server.forceShutdown();
      await closed;
    };
    const s: TestServer = { server, listener, port: bound, address: `127.0.0.1:${bound}`, kill };
    this.servers.push(s);
    return s;
  }

  /** A port that was free a moment ago and has nothing listening on it now. */
  async freePort(): Promise<number> {
    const s = await this.bindServer();
    await s.kill();
    return s.port;
  }

  /** A transport registered on `server` (if given), recording what it receives and warns. */
  node(
    options: Omit<PeerTransportOptions, 'onMessage' | 'logger' | 'clusterId'> & { clusterId?: string },
    server?: TestServer,
  ): TestNode {
    const received: Message[] = [];
    const warnings: string[] = [];
    const transport = new PeerTransport({
      reconnectBackoffMinMs: 10,
      reconnectBackoffMaxMs: 100,
      ...options,
      clusterId: options.clusterId ?? 'test-cluster',
      onMessage: (m) => received.push(m),
      logger: { info: () => {}, warn: (w) => warnings.push(w) },
    });
    this.transports.push(transport);
    if (server !== undefined) transport.addToServer(server.server, server.listener);
    return { id: options.nodeId, transport, received, warnings };
  }

  /** Servers for each id, then transports that know each other's addresses. */
  async cluster(
    ids: readonly NodeId[],
    extra: Partial<Omit<PeerTransportOptions, 'nodeId' | 'peers'>> = {},
  ): Promise<Map<NodeId, TestNode & TestServer>> {
    const servers = new Map<NodeId, TestServer>();
    for (const id of ids) servers.set(id, await this.bindServer(0, extra.maxMessageBytes));
    const peers = new Map([...servers].map(([id, s]) => [id, s.address]));
    const nodes = new Map<NodeId, TestNode & TestServer>();
    for (const [id, s] of servers) nodes.set(id, { ...s, ...this.node({ ...extra, nodeId: id, peers }, s) });
    return nodes;
  }

  /** A bare client stream to `address`, for sending what a PeerTransport never would. */
  rawStream(address: string, metadata: Record<string, string>): RawStream {
    const client = new grpc.Client(address, grpc.credentials.createInsecure());
    this.clients.push(client);
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    let call!: grpc.ClientWritableStream<PeerFrame>;
    const status = new Promise<grpc.ServiceError | null>((resolve) => {
      call = client.makeClientStreamRequest<PeerFrame, PeerAck>(
        streamMethod.path,
        streamMethod.requestSerialize,
        streamMethod.responseDeserialize,
        md,
        {},
        (err) => resolve(err),
      );
    });
    call.on('error', () => {});
    const accepted = new Promise<void>((resolve) => call.on('metadata', () => resolve()));
    return { call, status, accepted };
  }

  /** A bare InstallSnapshot call to `address`, for sending what a PeerTransport never would. */
  rawSnapshot(address: string, metadata: Record<string, string>): RawSnapshotCall {
    const client = new grpc.Client(address, grpc.credentials.createInsecure());
    this.clients.push(client);
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    const call = client.makeBidiStreamRequest<SnapshotChunkPb, SnapshotAckPb>(
      installSnapshotMethod.path,
      installSnapshotMethod.requestSerialize,
      installSnapshotMethod.responseDeserialize,
      md,
      {},
    );
    const acks: SnapshotAckPb[] = [];
    call.on('data', (ack: SnapshotAckPb) => acks.push(ack));
    call.on('error', () => {});
    // gRPC emits the status as soon as it has it, possibly before acks still buffered in the stream;
    // the read side's end comes after them.
    const ended = new Promise<void>((resolve) => call.on('end', () => resolve()));
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve)).then(async (s) => {
      await ended;
      return s;
    });
    const accepted = new Promise<void>((resolve) => call.on('metadata', () => resolve()));
    return { call, acks, status, accepted };
  }

  /**
   * A bare raw peer connection to `address` (see peer-wire.ts), for sending what a PeerLink never
   * would. Writes `first` at once: a hello, or any bytes. Nothing else is sent unless the test does.
   */
  rawPeer(address: string, first?: Hello | Uint8Array): RawPeer {
    const { host, port } = parseHostPort(address);
    const socket = net.connect({ host, port, noDelay: true });
    this.sockets.push(socket);
    const peer = new RawPeer(socket);
    if (first !== undefined) socket.write(first instanceof Uint8Array ? first : encodeHello(first));
    return peer;
  }

  /** Closes every transport, then every server, client and raw connection. */
  async stopAll(): Promise<void> {
    await Promise.all(this.transports.splice(0).map((t) => t.close()));
    for (const c of this.clients.splice(0)) c.close();
    for (const s of this.sockets.splice(0)) s.destroy();
    await Promise.all(this.servers.splice(0).map((s) => s.kill()));
  }
}

export interface RawStream {
  readonly call: grpc.ClientWritableStream<PeerFrame>;
  /** The call's end: null for OK. */
  readonly status: Promise<grpc.ServiceError | null>;
  /** Resolves when the server sent its headers (accepted the sender). */
  readonly accepted: Promise<void>;
}

/** The client end of a raw peer connection: what the server sent back, and when it ended. */
export class RawPeer {
  /** The statuses the server sent, in order: the first accepts (code 0) or refuses the connection. */
  readonly statuses: WireStatus[] = [];
  /** Resolves when the server ends its side with a FIN (not when the connection is reset). */
  readonly ended: Promise<void>;
  /** Resolves when the socket is closed, however that happened. */
  readonly closed: Promise<void>;
  /** The socket's error, if any (a reset shows here). */
  error: Error | undefined;
  /** Bytes the server sent that are not (yet) a whole status. */
  private pending: Buffer = Buffer.alloc(0);
  private prefixSeen = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      if (!this.prefixSeen) {
        // The reply opens with the magic and the version, before its first status.
        if (this.pending.length < REPLY_PREFIX.length) return;
        if (!this.pending.subarray(0, REPLY_PREFIX.length).equals(REPLY_PREFIX)) {
          throw new Error(`the reply does not open with RKVP and the version: ${this.pending.toString('hex')}`);
        }
        this.prefixSeen = true;
        this.pending = this.pending.subarray(REPLY_PREFIX.length);
      }
      for (let got = decodeStatus(this.pending); got !== undefined; got = decodeStatus(this.pending)) {
        this.statuses.push(got.status);
        this.pending = this.pending.subarray(got.bytes);
      }
    });
    socket.on('error', (err) => {
      this.error = err;
    });
    this.ended = new Promise((resolve) => socket.once('end', () => resolve()));
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Resolves with status number `n` (0: the accept or refusal), or rejects after timeoutMs. */
  async status(n = 0, timeoutMs = 5000): Promise<WireStatus> {
    await waitFor(() => this.statuses.length > n, timeoutMs, `status #${n} from the server`);
    return this.statuses[n]!;
  }

  /** Writes each payload as one frame (length prefix and payload), all in one write. */
  sendFrames(...payloads: Uint8Array[]): void {
    this.socket.write(Buffer.concat(payloads.flatMap((p) => [frameHeader(p.length), p])));
  }
}

export interface RawSnapshotCall {
  readonly call: grpc.ClientDuplexStream<SnapshotChunkPb, SnapshotAckPb>;
  /** Acks received so far (uint64 fields as decimal strings). */
  readonly acks: SnapshotAckPb[];
  /** The call's status, once every ack before it was received. */
  readonly status: Promise<grpc.StatusObject>;
  /** Resolves when the server sent its headers (accepted the sender). */
  readonly accepted: Promise<void>;
}

export function peerMetadata(clusterId: string, from: NodeId, to: NodeId): Record<string, string> {
  return { [METADATA_CLUSTER_ID]: clusterId, [METADATA_FROM_NODE]: String(from), [METADATA_TO_NODE]: String(to) };
}

export function heartbeat(from: NodeId, to: NodeId, commit: number): Message {
  return { type: 'Heartbeat', from, to, term: 1, commit, context: 0 };
}

export function append(from: NodeId, to: NodeId, index: number, dataBytes: number): Message {
  const data = new Uint8Array(dataBytes).fill(index % 256);
  return {
    type: 'App',
    from,
    to,
    term: 1,
    prevIndex: index - 1,
    prevTerm: 1,
    commit: 0,
    entries: [{ index, term: 1, type: 'normal', data }],
  };
}
