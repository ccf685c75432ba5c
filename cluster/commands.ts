// What each subcommand of the cluster script does. The CLI (cluster.ts) parses options and calls these
// with a context: where the cluster lives and where output goes, so tests drive them in-process.

import type { ChildProcess } from 'node:child_process';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { isAbsolute, relative } from 'node:path';
import { restoreSnapshotFile, SnapshotFileError, verifySnapshotFile } from '../src/cli/snapshot-files.js';
import { MAX_CLOCK_RATE } from '../src/server/fault-service.js';
import {
  address,
  dataDir,
  endpoints,
  logFile,
  nodeDir as nodeDirOf,
  newState,
  notClusterDirReason,
  readState,
  recordPid,
  requireState,
  writeState,
  type ClusterState,
  type NodeState,
} from './cluster-state.js';
import { ClusterError } from './errors.js';
import { LogFollower } from './log-follower.js';
import { formatLogLine, logLineTime, prefix, warnText, type Palette } from './log-format.js';
import {
  isSupervisorProcess,
  killProcess,
  livePid,
  logTail,
  processState,
  signal,
  spawnNode,
  stopProcess,
  waitGone,
  waitState,
} from './node-process.js';
import { agreedLeader, callErrorReason, StatusClients, type StatusResponse } from './node-status.js';
import { describeLinks, faultCallFailure, FaultClients, parsePartition, sortLinks, type Link, type PartitionState } from './partition.js';
import { freePorts, isPortFree } from './ports.js';

/** Nodes listen on loopback only. */
export const HOST = '127.0.0.1';
/** How long a node gets to exit after SIGTERM before it gets SIGKILL. */
export const STOP_GRACE_MS = 10_000;
/** Deadline of one Status call. */
const STATUS_TIMEOUT_MS = 1_000;
/** How often to ask the nodes again while waiting for them to answer or elect a leader. */
const READY_POLL_MS = 100;
/** How long a process may take to show the effect of SIGSTOP or SIGCONT. */
const SIGNAL_WAIT_MS = 5_000;
/** Lines of a node's log shown when it failed. */
const LOG_TAIL_LINES = 20;
/** Deadline of one SetLinks call (partition, heal, and giving a restarted or resumed node its links). */
const SET_LINKS_TIMEOUT_MS = 2_000;
/** Deadline of one SetClockRate call (clock). */
const SET_CLOCK_RATE_TIMEOUT_MS = 2_000;

export interface ClusterIo {
  /** Writes one line (or several, joined by newlines) to the standard output. */
  out(text: string): void;
  err(text: string): void;
  readonly palette: Palette;
  /**
   * Asks to handle SIGINT, SIGTERM and SIGHUP from now on: the returned signal aborts (its reason is
   * the signal's name) when one arrives. Only commands that start nodes ask, so that Ctrl-C keeps
   * its usual effect on the others.
   */
  trapSignals(): AbortSignal;
}

export interface ClusterContext {
  readonly io: ClusterIo;
  /** The cluster folder, absolute. */
  readonly dir: string;
  /** How to run this script again for the same folder: "npm run cluster --" plus --dir if needed. */
  hint(command: string): string;
}

export interface StartOptions {
  readonly nodes: number;
  /** 0: ports chosen by the OS. */
  readonly basePort: number;
  readonly foreground: boolean;
  /** Extra kvnode flags; undefined to keep those of an existing cluster (none for a new one). */
  readonly nodeArgs: string[] | undefined;
  readonly timeoutMs: number;
  readonly clean: boolean;
  /** Whether --nodes and --base-port were given (else an existing cluster's size and ports are kept). */
  readonly nodesGiven: boolean;
  readonly basePortGiven: boolean;
}

/** A folder as the user would type it: relative to the working directory when inside it. */
export function showPath(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : p;
}

// ---- start --------------------------------------------------------------------------------------

export async function startCluster(ctx: ClusterContext, o: StartOptions): Promise<void> {
  const { io, dir } = ctx;
  if (o.clean) await cleanCluster(ctx);
  const reason = notClusterDirReason(dir);
  if (reason !== undefined) throw new ClusterError('NOT_A_CLUSTER_DIR', `${dir} is not a cluster folder: ${reason}. Choose another --dir.`);

  let state = readState(dir);
  if (state !== undefined) {
    checkSameCluster(ctx, state, o);
    if (o.nodeArgs !== undefined) state.nodeArgs = o.nodeArgs;
    const sup = state.supervisorPid;
    if (sup !== null && isSupervisorProcess(sup)) {
      throw new ClusterError('ALREADY_RUNNING', `the cluster in ${showPath(dir)} is running in the foreground (pid ${sup}); stop it there with Ctrl-C, or: ${ctx.hint('stop')}`);
    }
    state.supervisorPid = null;
  } else {
    const ports = o.basePort === 0 ? await freePorts(o.nodes, HOST) : Array.from({ length: o.nodes }, (_, i) => o.basePort + i);
    state = newState(HOST, ports, o.nodeArgs ?? []);
  }
  const running = state.nodes.filter((n) => livePid(dir, n) !== undefined);
  for (const n of state.nodes) if (!running.includes(n)) n.pid = null; // stale pids
  if (running.length === state.nodes.length) {
    if (o.foreground) {
      throw new ClusterError('ALREADY_RUNNING', `the cluster in ${showPath(dir)} is already running in the background; stop it first: ${ctx.hint('stop')}`);
    }
    io.out(`The cluster in ${showPath(dir)} is already running (${running.map((n) => `${n.name} pid ${n.pid}`).join(', ')}).`);
    printUsage(ctx, state, false);
    return;
  }
  if (o.foreground && running.length > 0) {
    throw new ClusterError('ALREADY_RUNNING', `${running.map((n) => n.name).join(', ')} already run(s) in the background; stop the cluster first: ${ctx.hint('stop')}`);
  }
  for (const n of running) io.out(`${n.name} is already running (pid ${n.pid}).`);
  await healBeforeStart(ctx, state, running);

  const toStart = state.nodes.filter((n) => !running.includes(n));
  await checkPortsFree(state, toStart);
  // Only now: a start refused above leaves a new folder unmade (and so free for other options).
  mkdirSync(dir, { recursive: true });
  writeState(dir, state);

  const abort = io.trapSignals();
  // Node names line up; the script's own rare lines ("cluster | ...") may stick out.
  const width = Math.max(...state.nodes.map((n) => n.name.length));
  const follower = o.foreground ? new LogFollower(logLineTime) : undefined;
  if (o.foreground) {
    state.supervisorPid = process.pid;
    writeState(dir, state);
  }
  const children = new Map<number, ChildProcess>();
  let leader: { id: number; term: number };
  try {
    for (const node of toStart) {
      const { child, logOffset } = spawnNode(dir, state, node);
      if (child.pid === undefined) {
        throw new ClusterError('NODE_START_FAILED', `cannot spawn kvnode for ${node.name}`, tailDetails(dir, node));
      }
      children.set(node.id, child);
      recordPid(dir, state, node, child.pid);
      const index = node.id - 1;
      follower?.follow(logFile(dir, node), logOffset, (line) => io.out(prefix(io.palette, node.name, index, width) + formatLogLine(io.palette, line)));
    }
    if (!o.foreground) io.out(`Started ${toStart.map((n) => `${n.name} (pid ${n.pid})`).join(', ')}; waiting for every node to answer and a leader to be elected...`);
    leader = await waitReady(ctx, state, children, o.timeoutMs, abort);
  } catch (e) {
    follower?.stop();
    if (abort.aborted) io.err(`raftkv-cluster: ${String(abort.reason)} while starting: stopping the nodes it started`);
    await stopNodes(ctx, state, toStart, { quiet: !abort.aborted });
    state.supervisorPid = null;
    writeState(dir, state);
    if (abort.aborted && o.foreground) return;
    if (abort.aborted) throw new ClusterError('INTERRUPTED', `interrupted by ${String(abort.reason)}; the nodes it started are stopped`);
    throw e;
  }
  printReady(ctx, state, leader, o.foreground);
  if (!o.foreground) {
    for (const c of children.values()) c.unref();
    return;
  }
  await supervise(ctx, state, children, follower!, abort, width);
}

/**
 * `start` brings every node up with every link up: a partition recorded earlier is cleared, and
 * nodes still running are healed (else the new nodes, cut off, could keep the cluster from agreeing
 * on a leader). `restart NODE` is the way to bring one node back into a partition.
 */
async function healBeforeStart(ctx: ClusterContext, state: ClusterState, running: readonly NodeState[]): Promise<void> {
  const recorded = state.partition;
  if (recorded === undefined || recorded === null) return;
  if (running.length > 0) {
    const r = await giveLinks(ctx, state, running, []);
    for (const f of r.failures) ctx.io.err(`raftkv-cluster: warning: ${f}`);
  }
  state.partition = null;
  writeState(ctx.dir, state);
  ctx.io.out(`The partition (${recorded.specs.join(' + ')}) is cleared: start brings every link up.`);
}

/** An existing cluster is restarted as it was: other --nodes or --base-port values need `clean`. */
function checkSameCluster(ctx: ClusterContext, state: ClusterState, o: StartOptions): void {
  const ports = state.nodes.map((n) => n.port);
  const mismatch =
    (o.nodesGiven && o.nodes !== state.nodes.length) ||
    (o.basePortGiven && o.basePort !== 0 && ports.some((p, i) => p !== o.basePort + i));
  if (mismatch) {
    throw new ClusterError(
      'CLUSTER_MISMATCH',
      `${showPath(ctx.dir)} holds a ${state.nodes.length}-node cluster on ports ${ports.join(', ')}; ` +
        `to start another one there, delete it first (${ctx.hint('clean')}) or pick another --dir`,
    );
  }
}

async function checkPortsFree(state: ClusterState, nodes: readonly NodeState[]): Promise<void> {
  const busy: string[] = [];
  for (const n of nodes) {
    if (n.port < 1 || n.port > 65535) throw new ClusterError('INVALID_ARGUMENT', `port ${n.port} of ${n.name} is not a valid TCP port`);
    if (!(await isPortFree(n.port, state.host))) busy.push(`${address(state, n)} (${n.name})`);
  }
  if (busy.length > 0) {
    throw new ClusterError(
      'PORT_BUSY',
      `port${busy.length > 1 ? 's' : ''} already in use: ${busy.join(', ')}. Is another cluster or program using ${busy.length > 1 ? 'them' : 'it'}? ` +
        'Stop it, or start on other ports (--base-port P, or --base-port 0 for free ones, with a new --dir or after clean).',
    );
  }
}

/**
 * Waits until every node answers Status and all agree on a leader that reports itself leader. Fails
 * with the node's log when one of `children` exits, and with every silent node's log at the deadline.
 */
async function waitReady(
  ctx: ClusterContext,
  state: ClusterState,
  children: ReadonlyMap<number, ChildProcess>,
  timeoutMs: number,
  abort: AbortSignal,
): Promise<{ id: number; term: number }> {
  const clients = new StatusClients(state);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (abort.aborted) throw new ClusterError('INTERRUPTED', 'interrupted');
      for (const [id, child] of children) {
        if (child.exitCode !== null || child.signalCode !== null) {
          const node = state.nodes[id - 1]!;
          throw new ClusterError('NODE_START_FAILED', `${node.name} failed to start: kvnode ${describeExit(child)}`, tailDetails(ctx.dir, node));
        }
      }
      const statuses = await clients.statusAll(state.nodes, STATUS_TIMEOUT_MS);
      const leader = agreedLeader(state.nodes, statuses);
      if (leader !== undefined) return leader;
      if (Date.now() >= deadline) {
        const silent = state.nodes.filter((n) => statuses.get(n.id) instanceof Error);
        const details = state.nodes.map((n) => `  ${n.name}: ${describeStatus(state, statuses.get(n.id))}`);
        for (const n of silent) details.push(...tailDetails(ctx.dir, n));
        throw new ClusterError(
          silent.length > 0 ? 'NODE_START_FAILED' : 'NO_LEADER',
          silent.length > 0
            ? `${silent.map((n) => n.name).join(', ')} did not answer within ${timeoutMs} ms`
            : `no leader elected within ${timeoutMs} ms`,
          details,
        );
      }
      await sleep(READY_POLL_MS, abort);
    }
  } finally {
    clients.close();
  }
}

/** Foreground: shows the logs until SIGINT/SIGTERM/SIGHUP, reports nodes that exit, then stops all. */
async function supervise(
  ctx: ClusterContext,
  state: ClusterState,
  children: ReadonlyMap<number, ChildProcess>,
  follower: LogFollower,
  abort: AbortSignal,
  width: number,
): Promise<void> {
  const { io, dir } = ctx;
  const say = (text: string): void => io.out(prefix(io.palette, 'cluster', state.nodes.length, width) + text);
  let stopping = false;
  for (const [id, child] of children) {
    const node = state.nodes[id - 1]!;
    const report = (): void => {
      if (stopping) return;
      follower.poll(); // its last words first
      say(warnText(io.palette, `${node.name} (pid ${child.pid}) ${describeExit(child)}; the other nodes keep running. Restart it with: ${ctx.hint(`restart ${node.name}`)}`));
    };
    if (child.exitCode !== null || child.signalCode !== null) report();
    else child.once('exit', report);
  }
  if (!abort.aborted) await new Promise((resolve) => abort.addEventListener('abort', resolve, { once: true }));
  stopping = true;
  say(`${String(abort.reason)}: stopping every node (SIGTERM, SIGKILL after ${STOP_GRACE_MS / 1000} s)`);
  // Another invocation may have restarted nodes meanwhile: cluster.json knows their pids.
  let current: ClusterState = state;
  try {
    current = readState(dir) ?? state;
  } catch {
    // unreadable: use what we know
  }
  await stopNodes(ctx, current, current.nodes, { quiet: true });
  // Our own children too, should cluster.json have lost track of one.
  await Promise.all([...children.values()].filter((c) => c.exitCode === null && c.signalCode === null).map((c) => stopProcess(c.pid!, STOP_GRACE_MS)));
  follower.stop();
  current.supervisorPid = null;
  current.partition = null;
  try {
    writeState(dir, current);
  } catch {
    // the folder may have been deleted (clean): nothing to record
  }
  say('every node stopped');
}

function printReady(ctx: ClusterContext, state: ClusterState, leader: { id: number; term: number }, foreground: boolean): void {
  const { io } = ctx;
  io.out('');
  io.out(`raftkv cluster ready: ${state.nodes.length} node${state.nodes.length > 1 ? 's' : ''}, leader node${leader.id} (term ${leader.term}), in ${showPath(ctx.dir)}`);
  printUsage(ctx, state, foreground);
}

function printUsage(ctx: ClusterContext, state: ClusterState, foreground: boolean): void {
  const { io } = ctx;
  const w = Math.max(...state.nodes.map((n) => address(state, n).length));
  for (const n of state.nodes) {
    io.out(`  ${n.name}  ${address(state, n).padEnd(w)}  pid ${String(n.pid ?? '-').padEnd(7)}  log ${showPath(logFile(ctx.dir, n))}`);
  }
  io.out('Use it with kvctl:');
  io.out(`  export RAFTKV_ENDPOINTS=${endpoints(state)}`);
  io.out('  bin/kvctl status --cluster');
  io.out(foreground ? 'Stop it with Ctrl-C.' : `Status: ${ctx.hint('status')}    stop: ${ctx.hint('stop')}`);
  io.out('');
}

// ---- stop, clean --------------------------------------------------------------------------------

/** Stops the `start --foreground` process of the cluster, if one runs (it then stops the nodes). */
async function stopSupervisor(ctx: ClusterContext, state: ClusterState): Promise<boolean> {
  const sup = state.supervisorPid;
  if (sup === null || !isSupervisorProcess(sup)) return false;
  ctx.io.out(`Stopping the foreground cluster process (pid ${sup})...`);
  signal(sup, 'SIGTERM');
  // It needs at most one grace period per node (in parallel) and a little more.
  if (!(await waitGone(sup, STOP_GRACE_MS + 5_000))) ctx.io.err(`raftkv-cluster: the foreground process (pid ${sup}) did not exit; stopping the nodes directly`);
  return true;
}

export async function stopCluster(ctx: ClusterContext): Promise<void> {
  let state = requireState(ctx.dir, ctx.hint('start'));
  const supervised = await stopSupervisor(ctx, state);
  state = readState(ctx.dir) ?? state;
  const running = state.nodes.filter((n) => livePid(ctx.dir, n) !== undefined);
  if (running.length === 0) {
    ctx.io.out(supervised ? 'It stopped every node.' : `No node of the cluster in ${showPath(ctx.dir)} is running.`);
  }
  await stopNodes(ctx, state, state.nodes, { quiet: false });
  state.supervisorPid = null;
  // The links were cut in the nodes' memory: with the processes gone, so is the partition.
  state.partition = null;
  writeState(ctx.dir, state);
}

/** Stops (SIGTERM, SIGKILL after the grace period) those of `nodes` that run, in parallel. */
async function stopNodes(ctx: ClusterContext, state: ClusterState, nodes: readonly NodeState[], opts: { quiet: boolean }): Promise<void> {
  await Promise.all(
    nodes.map(async (n) => {
      const pid = livePid(ctx.dir, n);
      if (pid !== undefined) {
        const how = await stopProcess(pid, STOP_GRACE_MS);
        if (!opts.quiet) ctx.io.out(how === 'stopped' ? `${n.name} stopped (pid ${pid}).` : `${n.name} (pid ${pid}) did not exit within ${STOP_GRACE_MS} ms of SIGTERM: killed.`);
      }
      if (n.pid !== null) recordPid(ctx.dir, state, n, null);
    }),
  );
}

export async function cleanCluster(ctx: ClusterContext): Promise<void> {
  const { dir, io } = ctx;
  const reason = notClusterDirReason(dir);
  if (reason !== undefined) throw new ClusterError('NOT_A_CLUSTER_DIR', `refusing to delete ${dir}: ${reason}`);
  const state = readState(dir);
  if (state !== undefined) await stopCluster(ctx);
  rmSync(dir, { recursive: true, force: true });
  io.out(state !== undefined ? `Deleted ${showPath(dir)} (every node's data and logs).` : `Nothing to clean: no cluster in ${showPath(dir)}.`);
}

// ---- restore ------------------------------------------------------------------------------------

/** kvnode's --cluster-id when the script's nodes are not given one (--node-args). */
export const DEFAULT_CLUSTER_ID = 'raftkv';
/** Where a node's data directory is created from the snapshot before it replaces the old one. */
const RESTORING_SUFFIX = '.restoring';

/** The cluster id the nodes run with: --cluster-id in --node-args, else kvnode's default. */
export function clusterIdOf(nodeArgs: readonly string[]): string {
  let id = DEFAULT_CLUSTER_ID;
  nodeArgs.forEach((a, i) => {
    if (a === '--cluster-id' && nodeArgs[i + 1] !== undefined) id = nodeArgs[i + 1]!;
    else if (a.startsWith('--cluster-id=')) id = a.slice('--cluster-id='.length);
  });
  return id;
}

/**
 * `restore FILE`: the cluster starts again from a snapshot file (a `kvctl snapshot save` backup).
 * Verifies FILE first (a bad file changes nothing), stops the cluster if it runs, creates every
 * node's data directory from the SAME file (beside the old one, which is replaced only once every
 * node's is ready), then starts the cluster. Without a cluster in the folder, makes one (as start).
 */
export async function restoreCluster(ctx: ClusterContext, file: string, o: StartOptions): Promise<void> {
  const { io, dir } = ctx;
  const reason = notClusterDirReason(dir);
  if (reason !== undefined) throw new ClusterError('NOT_A_CLUSTER_DIR', `${dir} is not a cluster folder: ${reason}. Choose another --dir.`);
  let summary;
  try {
    summary = await verifySnapshotFile(file);
  } catch (e) {
    if (e instanceof SnapshotFileError) throw new ClusterError('SNAPSHOT_INVALID', `${e.message}; nothing was changed`);
    throw e;
  }
  const h = summary.header;
  io.out(
    `Verified ${file}: index ${h.index}, term ${h.term}, ${summary.keys} keys, ${summary.sessions} sessions, ` +
      `${summary.bytes} bytes, sha256 ${summary.sha256} (taken in cluster "${h.clusterId}").`,
  );

  let state = readState(dir);
  const created = state === undefined;
  if (state !== undefined) {
    checkSameCluster(ctx, state, o);
    const sup = state.supervisorPid;
    const running = (sup !== null && isSupervisorProcess(sup)) || state.nodes.some((n) => livePid(dir, n) !== undefined);
    if (running) {
      io.out('Stopping the cluster...');
      await stopCluster(ctx);
      state = readState(dir) ?? state;
    }
  } else {
    const ports = o.basePort === 0 ? await freePorts(o.nodes, HOST) : Array.from({ length: o.nodes }, (_, i) => o.basePort + i);
    state = newState(HOST, ports, o.nodeArgs ?? []);
    mkdirSync(dir, { recursive: true });
  }
  if (o.nodeArgs !== undefined) state.nodeArgs = o.nodeArgs;
  writeState(dir, state);

  const clusterId = clusterIdOf(state.nodeArgs);
  const staged = state.nodes.map((n) => ({ node: n, dir: dataDir(dir, n) + RESTORING_SUFFIX }));
  try {
    for (const s of staged) {
      rmSync(s.dir, { recursive: true, force: true });
      mkdirSync(nodeDirOf(dir, s.node), { recursive: true });
      await restoreSnapshotFile(file, s.dir, { clusterId, nodeId: s.node.id });
    }
  } catch (e) {
    for (const s of staged) rmSync(s.dir, { recursive: true, force: true });
    const why = e instanceof SnapshotFileError ? `${e.code}: ${e.message}` : (e as Error).message;
    if (created) {
      // The folder was missing or empty: leave it so.
      rmSync(dir, { recursive: true, force: true });
      throw new ClusterError('RESTORE_FAILED', `restoring ${file} failed (${why}); no cluster was made`);
    }
    throw new ClusterError('RESTORE_FAILED', `restoring ${file} failed (${why}); every node keeps its old data. Start it again with: ${ctx.hint('start')}`);
  }
  // Every node's new directory is ready: only now is the old data replaced.
  for (const s of staged) {
    const target = dataDir(dir, s.node);
    rmSync(target, { recursive: true, force: true });
    renameSync(s.dir, target);
  }
  io.out(`Restored ${state.nodes.map((n) => n.name).join(', ')} from ${file} (cluster id "${clusterId}", index ${h.index}, term ${h.term}); starting the cluster...`);
  await startCluster(ctx, { ...o, clean: false, nodeArgs: undefined, nodesGiven: false, basePortGiven: false });
}

// ---- status -------------------------------------------------------------------------------------

export interface NodeReport {
  readonly name: string;
  readonly id: number;
  readonly address: string;
  readonly pid: number | null;
  /** The process: running, paused (SIGSTOP), or down (none). */
  readonly process: 'running' | 'paused' | 'down';
  /** From the Status RPC, when the node answered. */
  readonly status?: {
    readonly role: string;
    readonly term: number;
    readonly leader: number;
    readonly commit: number;
    readonly applied: number;
    readonly lastIndex: number;
    /** Whether the node can get writes committed now; else why not (read-only). */
    readonly writable: boolean;
    readonly readOnlyReason: string;
  };
  /** Why there is no status: "down", "paused", or the failed call's gRPC code. */
  readonly error?: string;
}

/** Every node's process and, for the running ones, its Status. */
export async function collectStatus(ctx: ClusterContext, state: ClusterState): Promise<NodeReport[]> {
  const procs = state.nodes.map((n) => {
    const pid = livePid(ctx.dir, n);
    return { n, pid, process: pid === undefined ? ('down' as const) : processState(pid) === 'paused' ? ('paused' as const) : ('running' as const) };
  });
  const clients = new StatusClients(state);
  try {
    const asked = procs.filter((p) => p.process === 'running').map((p) => p.n);
    const statuses = await clients.statusAll(asked, STATUS_TIMEOUT_MS);
    return procs.map(({ n, pid, process }) => {
      const base = { name: n.name, id: n.id, address: address(state, n), pid: pid ?? null, process };
      const s = statuses.get(n.id);
      if (s === undefined) return { ...base, error: process };
      if (s instanceof Error) return { ...base, error: callErrorReason(s) };
      return {
        ...base,
        status: {
          role: s.role,
          term: Number(s.term),
          leader: Number(s.leader_id),
          commit: Number(s.commit_index),
          applied: Number(s.applied_index),
          lastIndex: Number(s.last_index),
          writable: s.writable,
          readOnlyReason: s.read_only_reason,
        },
      };
    });
  } finally {
    clients.close();
  }
}

export async function printStatus(ctx: ClusterContext, json: boolean): Promise<void> {
  const state = requireState(ctx.dir, ctx.hint('start'));
  const reports = await collectStatus(ctx, state);
  const partition = state.partition ?? null;
  if (json) {
    ctx.io.out(JSON.stringify({ dir: ctx.dir, endpoints: endpoints(state), partition, nodes: reports }, null, 2));
    return;
  }
  const sup = state.supervisorPid;
  ctx.io.out(`Cluster in ${showPath(ctx.dir)}${sup !== null && isSupervisorProcess(sup) ? ` (running in the foreground, pid ${sup})` : ''}:`);
  const rows = [['NODE', 'PID', 'PROCESS', 'ADDRESS', 'ROLE', 'TERM', 'LEADER', 'COMMIT', 'APPLIED', 'STATE']];
  for (const r of reports) {
    const s = r.status;
    rows.push([
      r.name,
      String(r.pid ?? '-'),
      r.process,
      r.address,
      s ? s.role : r.process === 'running' ? `not answering (${r.error})` : '-',
      s ? String(s.term) : '',
      s ? (s.leader === 0 ? 'none' : `node${s.leader}`) : '',
      s ? String(s.commit) : '',
      s ? String(s.applied) : '',
      s ? (s.writable ? 'writable' : 'read-only') : '',
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  for (const row of rows) ctx.io.out(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd());
  if (partition === null) {
    ctx.io.out('Partition: none (every link is up)');
  } else {
    ctx.io.out(`Partition: ${partition.specs.join(' + ')}`);
    ctx.io.out(`  cut: ${describeLinks(partition.blocked)}`);
    ctx.io.out(`  heal with: ${ctx.hint('heal')}`);
  }
  for (const r of reports) {
    if (r.status && !r.status.writable) ctx.io.out(`${r.name} is read-only: ${r.status.readOnlyReason || 'no reason given'}`);
  }
}

// ---- one node -----------------------------------------------------------------------------------

/**
 * NODE as typed: `2`, `node2`, `leader` (the node that says it leads, with the highest term), or
 * `down` (the first node whose process is not running: `restart down` after `kill leader`).
 */
export async function resolveNode(ctx: ClusterContext, state: ClusterState, arg: string): Promise<NodeState> {
  const a = arg.trim().toLowerCase();
  if (a === 'leader') return findLeader(ctx, state);
  if (a === 'down') {
    const down = (await collectStatus(ctx, state)).find((r) => r.process === 'down');
    const node = down && state.nodes.find((n) => n.name === down.name);
    if (node === undefined) throw new ClusterError('UNKNOWN_NODE', 'no node is down');
    return node;
  }
  const m = /^(?:node)?(\d+)$/.exec(a);
  const node = m ? state.nodes.find((n) => n.id === Number(m[1])) : undefined;
  if (node === undefined) {
    throw new ClusterError('UNKNOWN_NODE', `unknown node "${arg}": this cluster has ${state.nodes.map((n) => n.name).join(', ')} (also 1..${state.nodes.length}, "leader" or "down")`);
  }
  return node;
}

async function findLeader(ctx: ClusterContext, state: ClusterState): Promise<NodeState> {
  const reports = await collectStatus(ctx, state);
  let best: NodeReport | undefined;
  for (const r of reports) {
    if (r.status?.role === 'leader' && (best === undefined || r.status.term > best.status!.term)) best = r;
  }
  if (best === undefined) {
    throw new ClusterError(
      'NO_LEADER',
      'no node is leader right now',
      reports.map((r) => `  ${r.name}: ${r.status ? `${r.status.role}, term ${r.status.term}` : r.error}`),
    );
  }
  return state.nodes[best.id - 1]!;
}

function requirePid(ctx: ClusterContext, node: NodeState): number {
  const pid = livePid(ctx.dir, node);
  if (pid === undefined) throw new ClusterError('NOT_RUNNING', `${node.name} is not running (start it with: ${ctx.hint(`restart ${node.name}`)})`);
  return pid;
}

export async function killNode(ctx: ClusterContext, state: ClusterState, node: NodeState): Promise<void> {
  const pid = requirePid(ctx, node);
  await killProcess(pid);
  recordPid(ctx.dir, state, node, null);
  ctx.io.out(`${node.name} killed (SIGKILL, pid ${pid}). Start it again with: ${ctx.hint(`restart ${node.name}`)}`);
}

export async function restartNode(ctx: ClusterContext, state: ClusterState, node: NodeState, timeoutMs: number): Promise<void> {
  const old = livePid(ctx.dir, node);
  if (old !== undefined) {
    const how = await stopProcess(old, STOP_GRACE_MS);
    ctx.io.out(how === 'stopped' ? `${node.name} stopped (pid ${old}).` : `${node.name} (pid ${old}) did not exit after SIGTERM: killed.`);
  }
  recordPid(ctx.dir, state, node, null);
  await checkPortsFree(state, [node]);
  const { child } = spawnNode(ctx.dir, state, node);
  if (child.pid === undefined) throw new ClusterError('NODE_START_FAILED', `cannot spawn kvnode for ${node.name}`, tailDetails(ctx.dir, node));
  recordPid(ctx.dir, state, node, child.pid);
  const clients = new StatusClients(state);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        recordPid(ctx.dir, state, node, null);
        throw new ClusterError('NODE_START_FAILED', `${node.name} failed to start: kvnode ${describeExit(child)}`, tailDetails(ctx.dir, node));
      }
      const s = await clients.status(node, STATUS_TIMEOUT_MS).catch((e: Error) => e);
      if (!(s instanceof Error)) break;
      if (Date.now() >= deadline) {
        throw new ClusterError('NODE_START_FAILED', `${node.name} (pid ${child.pid}) did not answer within ${timeoutMs} ms (${callErrorReason(s)}); it is left running`, tailDetails(ctx.dir, node));
      }
      await sleep(READY_POLL_MS);
    }
  } finally {
    clients.close();
    child.unref();
  }
  ctx.io.out(`${node.name} restarted (pid ${child.pid}) on ${address(state, node)}, with its data.`);
  await rejoinPartition(ctx, state, node, 'restarted');
}

export async function pauseNode(ctx: ClusterContext, _state: ClusterState, node: NodeState): Promise<void> {
  const pid = requirePid(ctx, node);
  if (processState(pid) === 'paused') {
    ctx.io.out(`${node.name} is already paused (pid ${pid}).`);
    return;
  }
  signal(pid, 'SIGSTOP');
  if (!(await waitState(pid, 'paused', SIGNAL_WAIT_MS))) {
    throw new ClusterError('TIMEOUT', `${node.name} (pid ${pid}) does not show as stopped ${SIGNAL_WAIT_MS} ms after SIGSTOP`);
  }
  ctx.io.out(`${node.name} paused (SIGSTOP, pid ${pid}): it neither answers nor sends until resumed. Resume it with: ${ctx.hint(`resume ${node.name}`)}`);
}

export async function resumeNode(ctx: ClusterContext, state: ClusterState, node: NodeState): Promise<void> {
  const pid = requirePid(ctx, node);
  if (processState(pid) !== 'paused') {
    ctx.io.out(`${node.name} is not paused (pid ${pid}).`);
    return;
  }
  signal(pid, 'SIGCONT');
  if (!(await waitState(pid, 'running', SIGNAL_WAIT_MS))) {
    throw new ClusterError('TIMEOUT', `${node.name} (pid ${pid}) does not show as running ${SIGNAL_WAIT_MS} ms after SIGCONT`);
  }
  ctx.io.out(`${node.name} resumed (SIGCONT, pid ${pid}).`);
  await rejoinPartition(ctx, state, node, 'resumed');
}

// ---- clock --------------------------------------------------------------------------------------

/** RATE of `clock NODE RATE` as typed: a plain decimal (`1.05`, `.5`, `2`), > 0 and <= MAX_CLOCK_RATE. */
export function parseClockRate(arg: string): number {
  const rate = Number(arg);
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(arg.trim()) || !(rate > 0 && rate <= MAX_CLOCK_RATE)) {
    throw new ClusterError('INVALID_ARGUMENT', `clock: RATE must be a number > 0 and <= ${MAX_CLOCK_RATE} (1 = real time, 1.05 = 5% fast), got "${arg}"`);
  }
  return rate;
}

/**
 * `clock NODE RATE` (test only): NODE's tick clock (elections, heartbeats, leases) runs at RATE times
 * real time from now on (FaultInjection.SetClockRate). The node holds it in memory: a restart puts it
 * back to real time, and the script does not record it.
 */
export async function setNodeClockRate(ctx: ClusterContext, state: ClusterState, node: NodeState, rate: number): Promise<void> {
  const pid = requirePid(ctx, node);
  if (processState(pid) === 'paused') {
    throw new ClusterError('NOT_RUNNING', `${node.name} is paused (pid ${pid}) and cannot take a clock rate; resume it first: ${ctx.hint(`resume ${node.name}`)}`);
  }
  const faults = new FaultClients(state);
  try {
    await faults.setClockRate(node, rate, SET_CLOCK_RATE_TIMEOUT_MS);
  } catch (e) {
    throw new ClusterError('FAULT_INJECTION_FAILED', `clock: ${faultCallFailure(node, 'SetClockRate', e as Error, ctx.hint(`restart ${node.name}`))}`);
  } finally {
    faults.close();
  }
  const skewPercent = +(Math.abs(rate - 1) * 100).toPrecision(6);
  const how = rate === 1 ? 'real time' : `${rate}x real time (${skewPercent}% ${rate > 1 ? 'fast' : 'slow'})`;
  ctx.io.out(`${node.name}'s clock runs at ${how} until it restarts.${rate === 1 ? '' : ` Back to real time with: ${ctx.hint(`clock ${node.name} 1`)}`}`);
}

// ---- partition, heal -----------------------------------------------------------------------------

/** What giveLinks did: the nodes that took the list, those skipped, and why each failure failed. */
interface GiveLinksResult {
  readonly applied: readonly NodeState[];
  readonly skipped: ReadonlyArray<{ readonly node: NodeState; readonly why: 'down' | 'paused' }>;
  readonly failures: readonly string[];
}

/**
 * Gives each of `nodes` that runs the complete list of cut links (SetLinks; [] heals), in parallel.
 * Down and paused nodes are skipped: `restart` and `resume` give them the recorded list.
 */
async function giveLinks(ctx: ClusterContext, state: ClusterState, nodes: readonly NodeState[], links: readonly Link[]): Promise<GiveLinksResult> {
  const skipped: Array<{ node: NodeState; why: 'down' | 'paused' }> = [];
  const targets: NodeState[] = [];
  for (const n of nodes) {
    const pid = livePid(ctx.dir, n);
    if (pid === undefined) skipped.push({ node: n, why: 'down' });
    else if (processState(pid) === 'paused') skipped.push({ node: n, why: 'paused' });
    else targets.push(n);
  }
  const faults = new FaultClients(state);
  try {
    const results = await Promise.all(targets.map((n) => faults.setLinks(n, links, SET_LINKS_TIMEOUT_MS).then(() => undefined, (e: Error) => e)));
    const failures = targets.flatMap((n, i) => {
      const e = results[i];
      return e === undefined ? [] : [faultCallFailure(n, 'SetLinks', e, ctx.hint(`restart ${n.name}`))];
    });
    return { applied: targets.filter((_, i) => results[i] === undefined), skipped, failures };
  } finally {
    faults.close();
  }
}

function throwIfFailed(r: GiveLinksResult, what: string): void {
  if (r.failures.length === 0) return;
  throw new ClusterError('FAULT_INJECTION_FAILED', `${what}: ${r.failures.length} running node${r.failures.length > 1 ? 's' : ''} did not take the new links`, r.failures.map((f) => `  ${f}`));
}

/**
 * `partition SPEC...`: cuts links. The new partition replaces the current one, or with `add` joins
 * it. It is recorded in cluster.json first, so that should a node fail to take it, `status` shows
 * what was asked for and `heal` undoes it everywhere.
 */
export async function partitionCluster(ctx: ClusterContext, args: readonly string[], add: boolean): Promise<void> {
  const { io } = ctx;
  const state = requireState(ctx.dir, ctx.hint('start'));
  const namesLeader = args.slice(1).some((a) => a.split(',').some((t) => t.trim().toLowerCase() === 'leader'));
  const leaderId = namesLeader ? (await findLeader(ctx, state)).id : undefined;
  const { spec, blocked } = parsePartition(args, state.nodes.map((n) => n.id), leaderId);
  const current = state.partition ?? null;
  const next: PartitionState =
    add && current !== null ? { specs: [...current.specs, spec], blocked: sortLinks([...current.blocked, ...blocked]) } : { specs: [spec], blocked };
  state.partition = next;
  writeState(ctx.dir, state);
  const r = await giveLinks(ctx, state, state.nodes, next.blocked);
  throwIfFailed(r, 'partition');
  io.out(`Partition: ${next.specs.join(' + ')}${add && current !== null ? '' : current !== null ? ` (replaces ${current.specs.join(' + ')})` : ''}`);
  io.out(`  cut: ${describeLinks(next.blocked)}`);
  for (const s of r.skipped) io.out(`  ${s.node.name} is ${s.why}: it gets these links when ${s.why === 'down' ? 'restarted' : 'resumed'}`);
  io.out(`Heal with: ${ctx.hint('heal')}`);
}

/** `heal`: every link up again on every running node (also when no partition is recorded). */
export async function healCluster(ctx: ClusterContext): Promise<void> {
  const state = requireState(ctx.dir, ctx.hint('start'));
  const had = state.partition ?? null;
  state.partition = null;
  writeState(ctx.dir, state);
  const r = await giveLinks(ctx, state, state.nodes, []);
  throwIfFailed(r, 'heal');
  ctx.io.out(had !== null ? `Healed: every link is up again (was: ${had.specs.join(' + ')}).` : 'No partition was recorded; every running node was told to heal anyway: every link is up.');
}

/** A node back from a restart or a pause gets the recorded partition (a paused one may hold an older list). */
async function rejoinPartition(ctx: ClusterContext, state: ClusterState, node: NodeState, how: 'restarted' | 'resumed'): Promise<void> {
  const links = state.partition?.blocked ?? [];
  // A restarted node starts with every link up: nothing to tell it unless a partition is recorded.
  if (links.length === 0 && how === 'restarted') return;
  const r = await giveLinks(ctx, state, [node], links);
  if (links.length === 0) {
    for (const f of r.failures) ctx.io.err(`raftkv-cluster: warning: ${f}`);
    return;
  }
  throwIfFailed(r, `${node.name} ${how}, but the partition`);
  if (r.applied.length > 0) ctx.io.out(`${node.name} is in the partition again (${state.partition!.specs.join(' + ')}).`);
}

// ---- helpers ------------------------------------------------------------------------------------

function describeExit(child: ChildProcess): string {
  return child.signalCode !== null ? `was killed by ${child.signalCode}` : `exited with code ${child.exitCode}`;
}

function describeStatus(state: ClusterState, s: StatusResponse | Error | undefined): string {
  if (s === undefined) return 'not asked';
  if (s instanceof Error) return `no answer (${callErrorReason(s)})`;
  const leader = Number(s.leader_id);
  return `${s.role}, term ${s.term}, leader ${leader === 0 ? 'none' : (state.nodes[leader - 1]?.name ?? leader)}`;
}

function tailDetails(dir: string, node: NodeState): string[] {
  return [`last lines of ${showPath(logFile(dir, node))}:`, ...logTail(dir, node, LOG_TAIL_LINES).map((l) => `  ${l}`)];
}

/** Waits `ms` (less if `abort` fires). */
function sleep(ms: number, abort?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    abort?.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      abort?.removeEventListener('abort', done);
      resolve();
    }
  });
}
