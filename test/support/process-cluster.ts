// Real `kvnode` processes on loopback, for integration tests and benchmarks: ports chosen at run time,
// data directories under one fresh temporary folder, each node's output kept (its last lines) to
// print when something fails, and a promisified gRPC client per node. With `faultInjection`, the nodes
// serve the test-only FaultInjection service and partition()/heal() cut and restore links at run
// time. cleanup() always stops every process it started and removes the folder.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { faultServiceDefinition } from '../../src/server/fault-service.js';
import { kvServiceDefinition } from '../../src/server/kv-proto.js';
import type * as pb from '../../src/server/kv-proto.js';
import { waitFor } from './wait.js';
import { freePorts as pickFreePorts } from '../../cluster/ports.js';

const projectRoot = fileURLToPath(new URL('../..', import.meta.url));
const kvnodeBin = join(projectRoot, 'bin', 'kvnode');

/**
 * Timings for tests: a 20 ms tick with a 10-tick (200-400 ms randomized) election timeout and a
 * heartbeat every 2 ticks, so that the first election and each failover take well under a second
 * instead of the 1-2 s of the defaults (tick 100 ms), which keeps the node tests fast. 200 ms is the
 * shortest election timeout kvnode takes without warning of needless elections; on a busy machine
 * one may still happen, so the tests never assume a leader stays put and retry writes with a session.
 */
export const TEST_TIMING_ARGS: readonly string[] = ['--tick-ms', '20', '--election-timeout-ticks', '10', '--heartbeat-ticks', '2'];

/** Lines of each node's output kept in memory (older lines are dropped). */
const LOG_TAIL_LINES = 200;
/** How long a node may take to start (spawning Node, compiling TypeScript through tsx, opening LevelDB). */
const START_TIMEOUT_MS = 20_000;
/** How long stop() waits after SIGTERM before it sends SIGKILL. */
const STOP_TIMEOUT_MS = 5_000;
const DEFAULT_CALL_TIMEOUT_MS = 5_000;

export interface ProcessClusterOptions {
  /** Number of nodes, ids 1..size. */
  readonly size: number;
  /** Extra kvnode flags for every node (after the timing flags, so they may override them). */
  readonly args?: readonly string[];
  /** Timing flags; TEST_TIMING_ARGS unless given ([] for kvnode's defaults). */
  readonly timingArgs?: readonly string[];
  /** Start the nodes with --enable-fault-injection, for partition() and heal(). */
  readonly faultInjection?: boolean;
}

/** A cut link: messages from `from` to `to` are dropped. */
export type Link = readonly [from: number, to: number];

/** The links that cut `id` off from every other node of `ids`, both ways. */
export function isolationLinks(id: number, ids: readonly number[]): Link[] {
  return ids.filter((o) => o !== id).flatMap((o): Link[] => [[id, o], [o, id]]);
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Picks `n` distinct free loopback ports (the cluster script's picker, on 127.0.0.1). */
export function freePorts(n: number): Promise<number[]> {
  return pickFreePorts(n, '127.0.0.1');
}

/** One kvnode process (one run of it: restart() makes a new one for the same node). */
export class NodeProcess {
  readonly id: number;
  readonly child: ChildProcess;
  /** Resolves when the process has exited and its output has been read. */
  readonly exited: Promise<ExitStatus>;
  /** Set once the process has exited. */
  exitStatus: ExitStatus | undefined;
  /** Set once the node logged that it serves on its port. */
  started = false;
  /** The last lines of stderr (where kvnode logs), oldest first. */
  readonly stderrTail: string[] = [];
  /** The last lines of stdout. */
  readonly stdoutTail: string[] = [];

  constructor(id: number, args: readonly string[]) {
    this.id = id;
    this.child = spawn(process.execPath, [kvnodeBin, ...args], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise<ExitStatus>((resolve) => {
      // 'close', not 'exit': it comes after stdout and stderr are drained, so the tails are complete.
      this.child.once('close', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      });
      // A spawn failure emits 'error' and maybe no 'close'.
      this.child.once('error', (err) => {
        this.stderrTail.push(`[harness] spawn failed: ${err.message}`);
        this.exitStatus ??= { code: null, signal: null };
        resolve(this.exitStatus);
      });
    });
    collectLines(this.child.stdout!, this.stdoutTail, () => undefined);
    collectLines(this.child.stderr!, this.stderrTail, (line) => {
      if (!this.started && line.startsWith('{') && line.includes('"event":"started"')) this.started = true;
    });
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** stderr as one string (the kept lines). */
  get stderr(): string {
    return this.stderrTail.join('\n');
  }

  /** Waits until the node serves, or throws (with its output) if it exits or takes too long. */
  async waitStarted(timeoutMs = START_TIMEOUT_MS): Promise<void> {
    try {
      await waitFor(() => this.started || !this.running, timeoutMs, `node ${this.id} to start`, 20);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${this.describe()}`);
    }
    if (!this.started) throw new Error(`node ${this.id} exited before it started (${formatExit(this.exitStatus)})\n${this.describe()}`);
  }

  /** Sends `signal` and waits for the exit; SIGKILL if it has not exited within the deadline. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = STOP_TIMEOUT_MS): Promise<ExitStatus> {
    if (!this.running) return this.exitStatus!;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const first = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (first !== 'timeout') return first;
    this.stderrTail.push(`[harness] no exit ${timeoutMs} ms after ${signal}; sending SIGKILL`);
    this.child.kill('SIGKILL');
    return this.exited;
  }

  describe(): string {
    const lines = [`--- node ${this.id} (pid ${this.child.pid ?? '?'}, ${this.running ? 'running' : formatExit(this.exitStatus)}) ---`];
    if (this.stdoutTail.length > 0) lines.push('[stdout]', ...this.stdoutTail, '[stderr]');
    lines.push(...this.stderrTail);
    return lines.join('\n');
  }
}

function formatExit(s: ExitStatus | undefined): string {
  if (s === undefined) return 'running';
  return s.signal !== null ? `killed by ${s.signal}` : `exit code ${s.code}`;
}

function collectLines(stream: NodeJS.ReadableStream, tail: string[], onLine: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      onLine(line);
      tail.push(line);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
    }
  });
  stream.on('end', () => {
    if (partial !== '') {
      onLine(partial);
      tail.push(partial);
    }
  });
}

// ---- client -------------------------------------------------------------------------------------

/** A call's options: a deadline (always; DEFAULT_CALL_TIMEOUT_MS unless given) and metadata. */
export interface CallOpts {
  readonly timeoutMs?: number;
  readonly metadata?: grpc.Metadata;
}

/**
 * Requests are loose on purpose: tests send partial and malformed messages (numbers for enums,
 * strings for uint64s) to see what the node does with them.
 */
type Loose<T> = { [K in keyof T]?: unknown };

/** The KV service of one node, promisified; every call has a deadline. Errors are grpc.ServiceError. */
export class KvClient {
  readonly address: string;
  readonly raw: grpc.Client;

  constructor(address: string, channelOptions: grpc.ChannelOptions = {}) {
    this.address = address;
    const Ctor = grpc.makeGenericClientConstructor(kvServiceDefinition, 'KV');
    this.raw = new Ctor(address, grpc.credentials.createInsecure(), {
      // Nodes are killed and restarted under this client: reconnect quickly, not after gRPC's
      // default 1 s (growing to 120 s) backoff.
      'grpc.initial_reconnect_backoff_ms': 50,
      'grpc.min_reconnect_backoff_ms': 50,
      'grpc.max_reconnect_backoff_ms': 250,
      ...channelOptions,
    });
  }

  put(req: Loose<pb.PutRequest>, opts?: CallOpts): Promise<pb.PutResponse> {
    return this.call('Put', req, opts);
  }
  get(req: Loose<pb.GetRequest>, opts?: CallOpts): Promise<pb.GetResponse> {
    return this.call('Get', req, opts);
  }
  delete(req: Loose<pb.DeleteRequest>, opts?: CallOpts): Promise<pb.DeleteResponse> {
    return this.call('Delete', req, opts);
  }
  range(req: Loose<pb.RangeRequest>, opts?: CallOpts): Promise<pb.RangeResponse> {
    return this.call('Range', req, opts);
  }
  compareAndSwap(req: Loose<pb.CompareAndSwapRequest>, opts?: CallOpts): Promise<pb.CompareAndSwapResponse> {
    return this.call('CompareAndSwap', req, opts);
  }
  status(opts?: CallOpts): Promise<pb.StatusResponse> {
    return this.call('Status', {}, opts);
  }

  close(): void {
    this.raw.close();
  }

  private call<Res>(method: string, req: unknown, opts: CallOpts = {}): Promise<Res> {
    const fn = (this.raw as unknown as Record<string, UnaryFn<Res>>)[method];
    if (fn === undefined) throw new Error(`KvClient: no method ${method}`);
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS);
    return new Promise<Res>((resolve, reject) =>
      fn.call(this.raw, req, opts.metadata ?? new grpc.Metadata(), { deadline }, (err, res) => (err ? reject(err) : resolve(res!))),
    );
  }
}

type UnaryFn<Res> = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

export function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number' && 'metadata' in err;
}

/**
 * Calls `fn` until it succeeds, retrying (every `intervalMs`) while it fails with UNAVAILABLE or
 * DEADLINE_EXCEEDED, which an election in progress or a dead leader cause; any other error, or the
 * deadline, ends it. Only for idempotent calls: reads, and writes that carry a session.
 */
export async function retryUnavailable<T>(fn: () => Promise<T>, timeoutMs = 10_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const retriable = isServiceError(err) && (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED);
      if (!retriable || Date.now() + intervalMs >= deadline) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** The raftkv code of a failed call (trailing metadata "raftkv-code"), if any. */
export function raftkvCode(err: unknown): string | undefined {
  if (!isServiceError(err)) return undefined;
  const v = err.metadata.get('raftkv-code')[0];
  return v === undefined ? undefined : String(v);
}

// ---- the cluster --------------------------------------------------------------------------------

export class ProcessCluster {
  /** The temporary folder holding every node's data directory; removed by cleanup(). */
  readonly rootDir: string;
  readonly ids: readonly number[];
  /** id → 127.0.0.1:port */
  readonly addresses: ReadonlyMap<number, string>;
  private readonly opts: ProcessClusterOptions;
  private readonly procs = new Map<number, NodeProcess>();
  /** Every process ever started, so cleanup() misses none (also those replaced by a restart). */
  private readonly all: NodeProcess[] = [];
  private readonly clients = new Map<number, KvClient>();
  private readonly faultClients = new Map<number, grpc.Client>();
  private readonly onExit = (): void => {
    // Last resort if the test process exits without cleanup(): do not leave nodes running.
    for (const p of this.all) if (p.running) p.child.kill('SIGKILL');
  };

  private constructor(rootDir: string, ports: readonly number[], opts: ProcessClusterOptions) {
    this.rootDir = rootDir;
    this.opts = opts;
    this.ids = ports.map((_, i) => i + 1);
    this.addresses = new Map(ports.map((p, i) => [i + 1, `127.0.0.1:${p}`]));
    process.once('exit', this.onExit);
  }

  /** Chooses ports and a temporary folder; starts nothing (see start()). */
  static async create(opts: ProcessClusterOptions): Promise<ProcessCluster> {
    if (!Number.isSafeInteger(opts.size) || opts.size < 1) throw new RangeError(`size must be a positive integer, got ${opts.size}`);
    const rootDir = await mkdtemp(join(tmpdir(), 'raftkv-cluster-'));
    try {
      return new ProcessCluster(rootDir, await freePorts(opts.size), opts);
    } catch (err) {
      await rm(rootDir, { recursive: true, force: true });
      throw err;
    }
  }

  get membersArg(): string {
    return [...this.addresses].map(([id, addr]) => `${id}=${addr}`).join(',');
  }

  dataDir(id: number): string {
    return join(this.rootDir, `node-${id}`);
  }

  /** The kvnode command line of a node (without the executable). */
  args(id: number, extra: readonly string[] = []): string[] {
    return [
      '--id', String(id),
      '--members', this.membersArg,
      '--data-dir', this.dataDir(id),
      ...(this.opts.timingArgs ?? TEST_TIMING_ARGS),
      ...(this.opts.faultInjection ? ['--enable-fault-injection'] : []),
      ...(this.opts.args ?? []),
      ...extra,
    ];
  }

  /** Starts every node that is not running, and waits until each serves. */
  async start(): Promise<void> {
    const starting = this.ids.filter((id) => !this.procs.get(id)?.running).map((id) => this.spawn(id));
    await Promise.all(starting.map((p) => p.waitStarted()));
  }

  /**
   * Spawns one node (which must not be running) without waiting for it to serve; `extra` flags
   * come last and override the cluster's.
   */
  spawn(id: number, extra: readonly string[] = []): NodeProcess {
    this.checkId(id);
    if (this.procs.get(id)?.running) throw new Error(`node ${id} is already running`);
    const p = new NodeProcess(id, this.args(id, extra));
    this.procs.set(id, p);
    this.all.push(p);
    return p;
  }

  /** The current (or last) process of a node. */
  node(id: number): NodeProcess {
    const p = this.procs.get(id);
    if (p === undefined) throw new Error(`node ${id} was never started`);
    return p;
  }

  isRunning(id: number): boolean {
    return this.procs.get(id)?.running ?? false;
  }

  runningIds(): number[] {
    return this.ids.filter((id) => this.isRunning(id));
  }

  /** SIGKILL: no chance to clean up, like a crash or `kill -9`. */
  async kill(id: number): Promise<ExitStatus> {
    return this.node(id).stop('SIGKILL');
  }

  /** SIGTERM to one node; SIGKILL after the deadline. Resolves with how it exited. */
  async stopNode(id: number, timeoutMs = STOP_TIMEOUT_MS): Promise<ExitStatus> {
    return this.node(id).stop('SIGTERM', timeoutMs);
  }

  /** Stops the node if it runs (SIGTERM), starts it again on the same port and data, waits until it serves. */
  async restart(id: number, extra: readonly string[] = []): Promise<NodeProcess> {
    if (this.isRunning(id)) await this.stopNode(id);
    const p = this.spawn(id, extra);
    await p.waitStarted();
    return p;
  }

  /** SIGTERM to every running node, waits for their exits (SIGKILL after the deadline). */
  async stop(timeoutMs = STOP_TIMEOUT_MS): Promise<Map<number, ExitStatus>> {
    const running = [...this.procs].filter(([, p]) => p.running);
    const statuses = await Promise.all(running.map(async ([id, p]) => [id, await p.stop('SIGTERM', timeoutMs)] as const));
    return new Map(statuses);
  }

  /** Stops everything, closes the clients, removes the temporary folder. Safe to call twice. */
  async cleanup(): Promise<void> {
    try {
      for (const c of [...this.clients.values(), ...this.faultClients.values()]) c.close();
      this.clients.clear();
      this.faultClients.clear();
      await Promise.all(this.all.filter((p) => p.running).map((p) => p.stop('SIGTERM')));
    } finally {
      process.removeListener('exit', this.onExit);
      await rm(this.rootDir, { recursive: true, force: true });
    }
  }

  /** A client of one node (one per node, kept across restarts: the channel reconnects). */
  client(id: number): KvClient {
    this.checkId(id);
    let c = this.clients.get(id);
    if (c === undefined) {
      c = new KvClient(this.addresses.get(id)!);
      this.clients.set(id, c);
    }
    return c;
  }

  /**
   * Waits until every running node in `among` (default: all running nodes) names the same leader,
   * in the same term, and that leader itself reports role "leader". Returns the leader's id.
   */
  async waitForLeader(timeoutMs = 10_000, among: readonly number[] = this.runningIds()): Promise<number> {
    let leader = 0;
    const attempt = waitFor(
      async () => {
        const statuses = await Promise.all(among.map((id) => this.client(id).status({ timeoutMs: 1_000 }).catch(() => undefined)));
        if (statuses.some((s) => s === undefined)) return false;
        const ss = statuses as pb.StatusResponse[];
        const first = ss[0]!;
        const l = Number(first.leader_id);
        if (l === 0 || !ss.every((s) => Number(s.leader_id) === l && s.term === first.term)) return false;
        if (!among.includes(l)) return false;
        const own = ss[among.indexOf(l)]!;
        if (own.role !== 'leader') return false;
        leader = l;
        return true;
      },
      timeoutMs,
      `one leader agreed on by nodes ${among.join(', ')}`,
      20,
    );
    try {
      await attempt;
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${this.describe()}`);
    }
    return leader;
  }

  /**
   * Cuts exactly `links` (the complete list: it replaces any earlier one) by giving the same list to
   * every running node (FaultInjection.SetLinks; needs `faultInjection`). Each node drops what it
   * sends and what it receives on a listed link. Resolves once every running node has taken it.
   */
  async partition(links: readonly Link[]): Promise<void> {
    const ids = this.runningIds();
    const results = await Promise.allSettled(ids.map((id) => this.setLinks(id, links)));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`node ${ids[i]}: ${(r.reason as Error).message}`] : []));
    if (failed.length > 0) throw new Error(`SetLinks failed on ${failed.join('; ')}`);
  }

  /** Every link up again on every running node. */
  heal(): Promise<void> {
    return this.partition([]);
  }

  /** SetLinks on one node. */
  setLinks(id: number, links: readonly Link[], timeoutMs = 2_000): Promise<void> {
    this.checkId(id);
    if (!this.opts.faultInjection) throw new Error('setLinks: create the cluster with faultInjection: true');
    let c = this.faultClients.get(id);
    if (c === undefined) {
      const Ctor = grpc.makeGenericClientConstructor(faultServiceDefinition, 'FaultInjection');
      c = new Ctor(this.addresses.get(id)!, grpc.credentials.createInsecure());
      this.faultClients.set(id, c);
    }
    const fn = (c as unknown as { SetLinks: UnaryFn<unknown> }).SetLinks;
    const req = { blocked: links.map(([from, to]) => ({ from: String(from), to: String(to) })) };
    return new Promise<void>((resolve, reject) =>
      fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Every node's kept output, for a failure report. */
  describe(): string {
    return [...this.procs.values()].map((p) => p.describe()).join('\n');
  }

  private checkId(id: number): void {
    if (!this.addresses.has(id)) throw new RangeError(`no node ${id} in this cluster (ids ${this.ids.join(', ')})`);
  }
}
