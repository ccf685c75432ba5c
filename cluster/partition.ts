// Network partitions of the local cluster: a spec (isolate, split, oneway, bridge) becomes the complete
// list of cut (from, to) links, and that list goes to every node through the test-only FaultInjection
// service (proto/fault.proto), which the script's nodes serve (it starts them with
// --enable-fault-injection). Every node gets the same list and drops what it would send and what it
// receives on a listed link, so exactly the listed links are cut, whatever the direction. The same
// service skews one node's clock rate (`clock`; FaultClients.setClockRate).
//
//   isolate NODE          NODE cut from every other node, both ways (NODE may be `leader`)
//   split G1 G2           two groups cut from each other, both ways; every node in one of them
//   oneway A B            messages from A to B dropped; B to A still flows
//   bridge G1 M G2        G1 and G2 cut from each other, both ways; M (a node or a group) sees both
//
// A group is a comma-separated list of nodes: `1,2`, `node1,node2`. A node is `1`, `node1` or `leader`.

import * as grpc from '@grpc/grpc-js';
import { faultServiceDefinition } from '../src/server/fault-service.js';
import { address, type ClusterState, type Link, type NodeState } from './cluster-state.js';
import { ClusterError } from './errors.js';

export type { Link, PartitionState } from './cluster-state.js';

export const PARTITION_KINDS = ['isolate', 'split', 'oneway', 'bridge'] as const;
export type PartitionKind = (typeof PARTITION_KINDS)[number];

export const PARTITION_USAGE = [
  'isolate NODE       NODE cut from every other node, both ways (NODE: 1, node1, or leader)',
  'split G1 G2        two groups cut from each other, both ways, e.g. split 1,2 3',
  'oneway A B         messages from A to B dropped (B to A still flows), e.g. oneway 1 2',
  'bridge G1 M G2     G1 and G2 cut from each other; M sees both, e.g. bridge 1,2 3 4,5',
];

function usage(message: string): ClusterError {
  return new ClusterError('INVALID_ARGUMENT', message, ['specs:', ...PARTITION_USAGE.map((l) => `  ${l}`)]);
}

/**
 * The cut links of one spec (`args`: the kind, then its operands), with the spec normalized for
 * display. `leaderId` stands for the word `leader` (undefined: the word is refused).
 */
export function parsePartition(args: readonly string[], nodeIds: readonly number[], leaderId?: number): { spec: string; blocked: Link[] } {
  const [kindArg, ...operands] = args;
  const kind = kindArg?.toLowerCase();
  if (kind === undefined || !(PARTITION_KINDS as readonly string[]).includes(kind)) {
    throw usage(kindArg === undefined ? 'partition: give a spec' : `partition: unknown spec "${kindArg}"; use one of ${PARTITION_KINDS.join(', ')}`);
  }
  const want = { isolate: 1, split: 2, oneway: 2, bridge: 3 }[kind as PartitionKind];
  if (operands.length !== want) {
    throw usage(`partition ${kind} takes ${want} argument${want > 1 ? 's' : ''}, got ${operands.length}${operands.length > 0 ? ` (${operands.join(' ')})` : ''}`);
  }
  if (nodeIds.length < 2) throw usage('partition: a 1-node cluster has no links to cut');
  const node = (token: string): number => resolveToken(token, nodeIds, leaderId);
  const group = (token: string): number[] => {
    const ids = token.split(',').map((t) => t.trim()).filter((t) => t !== '').map(node);
    if (ids.length === 0) throw usage(`partition ${kind}: empty group "${token}"`);
    const dup = ids.find((id, i) => ids.indexOf(id) !== i);
    if (dup !== undefined) throw usage(`partition ${kind}: node${dup} appears twice in "${token}"`);
    return ids;
  };
  const single = (token: string): number => {
    if (token.includes(',')) throw usage(`partition ${kind}: "${token}" must be one node, not a group`);
    return node(token);
  };
  const cutBothWays = (a: readonly number[], b: readonly number[]): Link[] => a.flatMap((x) => b.flatMap((y): Link[] => [[x, y], [y, x]]));
  const name = (ids: readonly number[]): string => ids.map((id) => `node${id}`).join(',');

  switch (kind as PartitionKind) {
    case 'isolate': {
      const n = single(operands[0]!);
      return { spec: `isolate node${n}`, blocked: sortLinks(cutBothWays([n], nodeIds.filter((id) => id !== n))) };
    }
    case 'oneway': {
      const a = single(operands[0]!);
      const b = single(operands[1]!);
      if (a === b) throw usage(`partition oneway: A and B must differ (both are node${a})`);
      return { spec: `oneway node${a} node${b}`, blocked: [[a, b]] };
    }
    case 'split': {
      const groups = [group(operands[0]!), group(operands[1]!)];
      checkCover(kind, groups, nodeIds);
      return { spec: `split ${groups.map(name).join(' ')}`, blocked: sortLinks(cutBothWays(groups[0]!, groups[1]!)) };
    }
    case 'bridge': {
      const groups = [group(operands[0]!), group(operands[1]!), group(operands[2]!)];
      checkCover(kind, groups, nodeIds);
      return { spec: `bridge ${groups.map(name).join(' ')}`, blocked: sortLinks(cutBothWays(groups[0]!, groups[2]!)) };
    }
  }
}

function resolveToken(token: string, nodeIds: readonly number[], leaderId: number | undefined): number {
  const t = token.trim().toLowerCase();
  if (t === 'leader') {
    if (leaderId === undefined) throw usage('partition: "leader" is not known here');
    return leaderId;
  }
  const m = /^(?:node)?(\d+)$/.exec(t);
  const id = m ? Number(m[1]) : NaN;
  if (!nodeIds.includes(id)) {
    throw new ClusterError('UNKNOWN_NODE', `unknown node "${token}": this cluster has ${nodeIds.map((n) => `node${n}`).join(', ')} (also 1..${nodeIds.length}, or "leader")`);
  }
  return id;
}

/** Groups must not overlap and must hold every node between them (else what the rest sees is a guess). */
function checkCover(kind: string, groups: readonly (readonly number[])[], nodeIds: readonly number[]): void {
  const seen = new Map<number, number>();
  groups.forEach((g, gi) =>
    g.forEach((id) => {
      if (seen.has(id)) throw usage(`partition ${kind}: node${id} is in two groups`);
      seen.set(id, gi);
    }),
  );
  const missing = nodeIds.filter((id) => !seen.has(id));
  if (missing.length > 0) {
    throw usage(`partition ${kind}: ${missing.map((id) => `node${id}`).join(', ')} ${missing.length > 1 ? 'are' : 'is'} in no group; every node must be in exactly one`);
  }
}

/** Links sorted by (from, to), without duplicates. */
export function sortLinks(links: readonly Link[]): Link[] {
  const seen = new Set<string>();
  const out: Link[] = [];
  for (const [f, t] of links) {
    const k = `${f}>${t}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push([f, t]);
    }
  }
  return out.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

/** "node1→node2, node2→node1" */
export function describeLinks(links: readonly Link[]): string {
  return links.map(([f, t]) => `node${f}→node${t}`).join(', ');
}

// ---- FaultInjection calls -----------------------------------------------------------------------

type FaultRpc = 'SetLinks' | 'SetClockRate';

type FaultRpcFn = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;

const FaultClientCtor = grpc.makeGenericClientConstructor(faultServiceDefinition, 'FaultInjection');

/** One FaultInjection client per node; close() when done. */
export class FaultClients {
  private readonly clients = new Map<number, grpc.Client>();

  constructor(private readonly state: ClusterState) {}

  /** Gives `node` the complete list of cut links (an empty list heals it), within `timeoutMs`. */
  setLinks(node: NodeState, links: readonly Link[], timeoutMs: number): Promise<void> {
    const req = { blocked: links.map(([from, to]) => ({ from: String(from), to: String(to) })) };
    return this.call(node, 'SetLinks', req, timeoutMs);
  }

  /** Test only: `node`'s tick clock runs at `rate` times real time from now on, until it restarts. */
  setClockRate(node: NodeState, rate: number, timeoutMs: number): Promise<void> {
    return this.call(node, 'SetClockRate', { rate }, timeoutMs);
  }

  private call(node: NodeState, rpc: FaultRpc, req: object, timeoutMs: number): Promise<void> {
    let client = this.clients.get(node.id);
    if (client === undefined) {
      client = new FaultClientCtor(address(this.state, node), grpc.credentials.createInsecure());
      this.clients.set(node.id, client);
    }
    const fn = (client as unknown as Record<FaultRpc, FaultRpcFn>)[rpc];
    return new Promise((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err) => (err ? reject(err) : resolve()));
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/**
 * Why a FaultInjection call (`rpc`) failed on a node, for people: UNIMPLEMENTED means no
 * --enable-fault-injection, or a node older than the RPC.
 */
export function faultCallFailure(node: NodeState, rpc: FaultRpc, err: Error, restartHint: string): string {
  const code = (err as Partial<grpc.ServiceError>).code;
  if (code === grpc.status.UNIMPLEMENTED) {
    return `${node.name} does not serve FaultInjection.${rpc}: it runs without --enable-fault-injection, or an older kvnode (started by an older version of this script?); restart it: ${restartHint}`;
  }
  const name = typeof code === 'number' ? (grpc.status[code] ?? String(code)) : 'error';
  return `${node.name}: ${rpc} failed: ${name}: ${(err as Partial<grpc.ServiceError>).details ?? err.message}`;
}
