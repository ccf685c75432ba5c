// Loopback nodes for transport tests: a grpc.Server on 127.0.0.1 (port 0 unless told), a
// PeerTransport on it, and what it received. Everything started here is stopped by stopAll().

import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../../src/raft/types.js';
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

export interface TestServer {
  readonly server: grpc.Server;
  readonly port: number;
  readonly address: string;
}

export interface TestNode {
  readonly id: NodeId;
  readonly transport: PeerTransport;
  readonly received: Message[];
  readonly warnings: string[];
}

export class Harness {
  private readonly servers: grpc.Server[] = [];
  private readonly transports: PeerTransport[] = [];
  private readonly clients: grpc.Client[] = [];

  /** Binds a server (port 0: any free port) with peer options for maxMessageBytes. */
  async bindServer(port = 0, maxMessageBytes?: number): Promise<TestServer> {
    const server = new grpc.Server(peerServerOptions(maxMessageBytes));
    const bound = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    this.servers.push(server);
    return { server, port: bound, address: `127.0.0.1:${bound}` };
  }

  /** A port that was free a moment ago and has nothing listening on it now. */
  async freePort(): Promise<number> {
    const s = await this.bindServer();
    s.server.forceShutdown();
    return s.port;
  }

  /** A transport registered on `server` (if given), recording what it receives and warns. */
  node(
    options: Omit<PeerTransportOptions, 'onMessage' | 'logger' | 'clusterId'> & { clusterId?: string },
    server?: grpc.Server,
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
    if (server !== undefined) transport.addToServer(server);
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
    for (const [id, s] of servers) nodes.set(id, { ...s, ...this.node({ ...extra, nodeId: id, peers }, s.server) });
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

  /** Closes every transport, then every server and client. */
  async stopAll(): Promise<void> {
    await Promise.all(this.transports.splice(0).map((t) => t.close()));
    for (const c of this.clients.splice(0)) c.close();
    for (const s of this.servers.splice(0)) s.forceShutdown();
  }
}

export interface RawStream {
  readonly call: grpc.ClientWritableStream<PeerFrame>;
  /** The call's end: null for OK. */
  readonly status: Promise<grpc.ServiceError | null>;
  /** Resolves when the server sent its headers (accepted the sender). */
  readonly accepted: Promise<void>;
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
