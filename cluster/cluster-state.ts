// The cluster folder and its state file, cluster.json: what later subcommands read to find the nodes.
//
//   DIR/cluster.json        this file (written atomically: a temporary file, then a rename)
//   DIR/nodeK/data/         node K's LevelDB (kvnode --data-dir)
//   DIR/nodeK/node.log      node K's output, appended across runs
//   DIR/nodeK/kvnode.pid    node K's pid while it runs (for other tools; cluster.json is what we read)

import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterError } from './errors.js';

export const STATE_FILE = 'cluster.json';
/** Marks a cluster.json as ours; `clean` deletes nothing without it. */
export const STATE_KIND = 'raftkv-cluster';
/** Limit: nodes in one local cluster. */
export const MAX_NODES = 9;

export interface NodeState {
  /** Raft member id, 1..N. */
  readonly id: number;
  /** "node" + id: how the CLI and the logs name it. */
  readonly name: string;
  readonly port: number;
  /** Pid of the node's current kvnode process; null when the script knows it is not running. */
  pid: number | null;
}

export interface ClusterState {
  readonly kind: typeof STATE_KIND;
  readonly version: 1;
  readonly host: string;
  /** kvnode --members, the same for every node. */
  readonly members: string;
  readonly nodes: NodeState[];
  /** Extra kvnode flags (--node-args), given to every node on every start. */
  nodeArgs: string[];
  /** Pid of the `start --foreground` process that supervises the nodes, if one runs. */
  supervisorPid: number | null;
  /**
   * The partition the nodes were given (`partition`), null or absent when every link is up. Running
   * nodes hold it in memory only: `restart` and `resume` give it again to their node; `stop` and
   * `start` clear it.
   */
  partition?: PartitionState | null;
}

/** A cut link: messages from `from` to `to` are dropped. */
export type Link = readonly [from: number, to: number];

/** The current partition (see cluster/partition.ts). */
export interface PartitionState {
  /** The specs that made it, normalized ("isolate node1"); more than one after `partition --add`. */
  readonly specs: readonly string[];
  /** Every cut link, sorted, without duplicates. */
  readonly blocked: readonly Link[];
}

export function newState(host: string, ports: readonly number[], nodeArgs: string[]): ClusterState {
  const nodes = ports.map((port, i) => ({ id: i + 1, name: `node${i + 1}`, port, pid: null }));
  return {
    kind: STATE_KIND,
    version: 1,
    host,
    members: nodes.map((n) => `${n.id}=${host}:${n.port}`).join(','),
    nodes,
    nodeArgs,
    supervisorPid: null,
    partition: null,
  };
}

export const nodeDir = (dir: string, node: NodeState): string => join(dir, node.name);
export const dataDir = (dir: string, node: NodeState): string => join(dir, node.name, 'data');
export const logFile = (dir: string, node: NodeState): string => join(dir, node.name, 'node.log');
export const pidFile = (dir: string, node: NodeState): string => join(dir, node.name, 'kvnode.pid');
export const address = (state: ClusterState, node: NodeState): string => `${state.host}:${node.port}`;
export const endpoints = (state: ClusterState): string => state.nodes.map((n) => address(state, n)).join(',');

/** The state in `dir`, or undefined when there is no cluster.json. Throws if the file is not ours. */
export function readState(dir: string): ClusterState | undefined {
  const file = join(dir, STATE_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch (e) {
    throw new ClusterError('NOT_A_CLUSTER_DIR', `${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isState(s)) throw new ClusterError('NOT_A_CLUSTER_DIR', `${file} is not a raftkv cluster state file (kind "${STATE_KIND}", version 1)`);
  return s;
}

/** The state in `dir`; NOT_STARTED when there is none. */
export function requireState(dir: string, hint: string): ClusterState {
  const s = readState(dir);
  if (s === undefined) throw new ClusterError('NOT_STARTED', `no cluster in ${dir} (no ${STATE_FILE}); start one with: ${hint}`);
  return s;
}

export function writeState(dir: string, state: ClusterState): void {
  const file = join(dir, STATE_FILE);
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, file);
}

/** Records a node's pid in cluster.json and its pid file (removing the pid file for null). */
export function recordPid(dir: string, state: ClusterState, node: NodeState, pid: number | null): void {
  node.pid = pid;
  writeState(dir, state);
  if (pid === null) rmSync(pidFile(dir, node), { force: true });
  else writeFileSync(pidFile(dir, node), `${pid}\n`);
}

/**
 * Why `dir` must not be deleted or reused as a cluster folder, or undefined if it may: it must be
 * missing, empty, or hold our cluster.json and nothing but node folders beside it.
 */
export function notClusterDirReason(dir: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (e) {
    return `cannot read it: ${(e as Error).message}`;
  }
  if (entries.length === 0) return undefined;
  if (!entries.includes(STATE_FILE)) return `it is not empty and holds no ${STATE_FILE}`;
  try {
    readState(dir);
  } catch (e) {
    return (e as Error).message;
  }
  const unexpected = entries.filter((e) => e !== STATE_FILE && !e.startsWith(`${STATE_FILE}.tmp-`) && !/^node\d+$/.test(e));
  if (unexpected.length > 0) return `it holds files a cluster folder does not: ${unexpected.slice(0, 5).join(', ')}`;
  return undefined;
}

function isState(s: unknown): s is ClusterState {
  if (typeof s !== 'object' || s === null) return false;
  const o = s as Record<string, unknown>;
  if (o['kind'] !== STATE_KIND || o['version'] !== 1) return false;
  if (typeof o['host'] !== 'string' || typeof o['members'] !== 'string') return false;
  if (!Array.isArray(o['nodeArgs']) || !o['nodeArgs'].every((a) => typeof a === 'string')) return false;
  if (o['supervisorPid'] !== null && !Number.isSafeInteger(o['supervisorPid'])) return false;
  if (o['partition'] !== undefined && o['partition'] !== null && !isPartitionState(o['partition'])) return false;
  const nodes = o['nodes'];
  if (!Array.isArray(nodes) || nodes.length < 1 || nodes.length > MAX_NODES) return false;
  return nodes.every((n: unknown, i) => {
    if (typeof n !== 'object' || n === null) return false;
    const r = n as Record<string, unknown>;
    return (
      r['id'] === i + 1 &&
      r['name'] === `node${i + 1}` &&
      Number.isSafeInteger(r['port']) &&
      (r['pid'] === null || (Number.isSafeInteger(r['pid']) && (r['pid'] as number) > 0))
    );
  });
}

function isPartitionState(p: unknown): p is PartitionState {
  if (typeof p !== 'object' || p === null) return false;
  const o = p as Record<string, unknown>;
  const specs = o['specs'];
  const blocked = o['blocked'];
  return (
    Array.isArray(specs) &&
    specs.every((s) => typeof s === 'string') &&
    Array.isArray(blocked) &&
    blocked.every((l: unknown) => Array.isArray(l) && l.length === 2 && l.every((x: unknown) => Number.isSafeInteger(x) && (x as number) > 0))
  );
}
