// Asking nodes for their Status over gRPC (the KV service's Status RPC: role, term, leader, commit and
// applied index), with a deadline on every call.

import * as grpc from '@grpc/grpc-js';
import { kvServiceDefinition, type StatusResponse } from '../src/server/kv-proto.js';
import { address, type ClusterState, type NodeState } from './cluster-state.js';

export type { StatusResponse };

type StatusFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: StatusResponse) => void,
) => grpc.ClientUnaryCall;

const KvClientCtor = grpc.makeGenericClientConstructor(kvServiceDefinition, 'KV');

/** One Status client per node; close() when done (an open channel keeps the process alive). */
export class StatusClients {
  private readonly clients = new Map<number, grpc.Client>();

  constructor(private readonly state: ClusterState) {}

  /** The node's Status, or the error (gRPC's: UNAVAILABLE while it does not listen) within `timeoutMs`. */
  status(node: NodeState, timeoutMs: number): Promise<StatusResponse> {
    let client = this.clients.get(node.id);
    if (client === undefined) {
      client = new KvClientCtor(address(this.state, node), grpc.credentials.createInsecure(), {
        // Nodes come and go under these clients: reconnect quickly, not after gRPC's 1 s backoff.
        'grpc.initial_reconnect_backoff_ms': 50,
        'grpc.min_reconnect_backoff_ms': 50,
        'grpc.max_reconnect_backoff_ms': 250,
      });
      this.clients.set(node.id, client);
    }
    const fn = (client as unknown as { Status: StatusFn }).Status;
    return new Promise((resolve, reject) => {
      fn.call(client, {}, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res!)));
    });
  }

  /** Status of each of `nodes`, in parallel; an error in place of a node that did not answer. */
  async statusAll(nodes: readonly NodeState[], timeoutMs: number): Promise<Map<number, StatusResponse | Error>> {
    const results = await Promise.all(
      nodes.map((n) => this.status(n, timeoutMs).then((r): [number, StatusResponse | Error] => [n.id, r], (e: Error): [number, StatusResponse | Error] => [n.id, e])),
    );
    return new Map(results);
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/** A short reason for a failed Status call: "UNAVAILABLE", "DEADLINE_EXCEEDED", ... */
export function callErrorReason(e: Error): string {
  const code = (e as Partial<grpc.ServiceError>).code;
  return typeof code === 'number' ? (grpc.status[code] ?? String(code)) : e.message;
}

/**
 * The leader every answering node agrees on, or undefined. Requires every node in `nodes` to answer,
 * to report the same non-zero leader_id, and that node to report itself leader.
 */
export function agreedLeader(nodes: readonly NodeState[], statuses: ReadonlyMap<number, StatusResponse | Error>): { id: number; term: number } | undefined {
  let leader: number | undefined;
  for (const n of nodes) {
    const s = statuses.get(n.id);
    if (s === undefined || s instanceof Error) return undefined;
    const id = Number(s.leader_id);
    if (id === 0 || (leader !== undefined && id !== leader)) return undefined;
    leader = id;
  }
  if (leader === undefined) return undefined;
  const ls = statuses.get(leader);
  if (ls === undefined || ls instanceof Error || ls.role !== 'leader') return undefined;
  return { id: leader, term: Number(ls.term) };
}
