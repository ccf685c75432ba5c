// An etcd cluster of real processes on 127.0.0.1, the reference system of the benchmarks: `size`
// members bootstrapped statically, on ports the OS reports free (never 2379/2380, which a packaged
// etcd service may hold), each with a fresh data directory under one temporary folder, plain HTTP,
// and etcd's default timings (heartbeat 100 ms, election timeout 1000 ms: the same as kvnode's
// defaults of a 100 ms tick and a 10-tick election timeout). cleanup() stops every member and removes
// the folder; a member still running when this process exits is killed.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { freePorts } from '../../test/support/process-cluster.js';
import { waitFor } from '../../test/support/wait.js';

const execFileP = promisify(execFile);

/** How long the members may take to elect a leader and all report healthy. */
const HEALTHY_TIMEOUT_MS = 30_000;
/** How long stop() waits after SIGTERM before it sends SIGKILL. */
const STOP_TIMEOUT_MS = 5_000;
/** Deadline of one HTTP probe (health, status). */
const PROBE_TIMEOUT_MS = 1_000;
const PROBE_INTERVAL_MS = 50;
/** Lines of each member's output kept to print when something fails. */
const LOG_TAIL_LINES = 100;
const MIN_MAJOR = 3;
const MIN_MINOR = 4;

export interface EtcdClusterOptions {
  /** Number of members, named m1..m{size}. */
  readonly size: number;
  /** Folder to create the temporary cluster folder in (default: the OS temp folder). */
  readonly dataRoot?: string;
}

interface MemberPorts {
  readonly client: number;
  readonly peer: number;
}

/** One run of one member. */
class EtcdMember {
  readonly name: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  running = true;
  readonly outputTail: string[] = [];

  constructor(name: string, bin: string, args: readonly string[]) {
    this.name = name;
    this.child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise<void>((resolve) => {
      this.child.once('close', (code, signal) => {
        this.running = false;
        this.outputTail.push(`[harness] exited: ${signal ?? `code ${code}`}`);
        resolve();
      });
      this.child.once('error', (err) => {
        this.running = false;
        this.outputTail.push(`[harness] spawn failed: ${err.message}`);
        resolve();
      });
    });
    for (const stream of [this.child.stdout!, this.child.stderr!]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        for (const line of chunk.split('\n')) {
          if (line === '') continue;
          this.outputTail.push(line);
          if (this.outputTail.length > LOG_TAIL_LINES) this.outputTail.shift();
        }
      });
    }
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS)));
    const first = await Promise.race([this.exited.then(() => 'exited' as const), timedOut]);
    clearTimeout(timer);
    if (first === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  describe(): string {
    return [`--- etcd ${this.name} (pid ${this.child.pid ?? '?'}, ${this.running ? 'running' : 'exited'}) ---`, ...this.outputTail].join('\n');
  }
}

export class EtcdCluster {
  /** The temporary folder holding every member's data directory; removed by cleanup(). */
  readonly rootDir: string;
  readonly names: readonly string[];
  /** Client address of each member, 127.0.0.1:port, in member order. */
  readonly clientEndpoints: string[];
  private readonly ports: readonly MemberPorts[];
  private readonly bin: string;
  private members: EtcdMember[] = [];
  private readonly onExit = (): void => {
    for (const m of this.members) if (m.running) m.child.kill('SIGKILL');
  };

  private constructor(rootDir: string, bin: string, ports: readonly MemberPorts[]) {
    this.rootDir = rootDir;
    this.bin = bin;
    this.ports = ports;
    this.names = ports.map((_, i) => `m${i + 1}`);
    this.clientEndpoints = ports.map((p) => `127.0.0.1:${p.client}`);
    process.once('exit', this.onExit);
  }

  /** Finds etcd, chooses ports and a temporary folder; starts nothing (see start()). */
  static async create(opts: EtcdClusterOptions): Promise<EtcdCluster> {
    if (!Number.isSafeInteger(opts.size) || opts.size < 1) throw new RangeError(`size must be a positive integer, got ${opts.size}`);
    const bin = await findOnPath('etcd');
    if (bin === undefined) throw new Error('etcd is not on PATH (see ensureEtcdInstalled())');
    const rootDir = await mkdtemp(join(opts.dataRoot ?? tmpdir(), 'etcd-cluster-'));
    try {
      const all = await freePorts(2 * opts.size);
      const ports = Array.from({ length: opts.size }, (_, i) => ({ client: all[2 * i]!, peer: all[2 * i + 1]! }));
      return new EtcdCluster(rootDir, bin, ports);
    } catch (err) {
      await rm(rootDir, { recursive: true, force: true });
      throw err;
    }
  }

  private get initialCluster(): string {
    return this.names.map((n, i) => `${n}=http://127.0.0.1:${this.ports[i]!.peer}`).join(',');
  }

  /** The etcd command line of member `i` (0-based), without the executable. */
  args(i: number): string[] {
    const name = this.names[i];
    const p = this.ports[i];
    if (name === undefined || p === undefined) throw new RangeError(`no member ${i}`);
    const clientUrl = `http://127.0.0.1:${p.client}`;
    const peerUrl = `http://127.0.0.1:${p.peer}`;
    return [
      '--name', name,
      '--data-dir', join(this.rootDir, name),
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', this.initialCluster,
      '--initial-cluster-state', 'new',
      // Unique per cluster, so that members of two runs can never join each other.
      '--initial-cluster-token', `bench-${process.pid}-${this.ports[0]!.peer}`,
      // etcd's defaults, spelled out because the comparison depends on them.
      '--heartbeat-interval', '100',
      '--election-timeout', '1000',
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      '--log-level', 'error',
    ];
  }

  /** Starts every member and waits until each reports {"health":"true"} (which needs a leader). */
  async start(): Promise<void> {
    if (this.members.some((m) => m.running)) throw new Error('etcd cluster is already running');
    this.members = this.names.map((name, i) => new EtcdMember(name, this.bin, this.args(i)));
    try {
      await waitFor(
        async () => {
          const dead = this.members.find((m) => !m.running);
          if (dead !== undefined) throw new Error(`etcd ${dead.name} exited during start-up`);
          const healthy = await Promise.all(this.clientEndpoints.map((e) => isHealthy(e)));
          return healthy.every(Boolean);
        },
        HEALTHY_TIMEOUT_MS,
        `all ${this.names.length} etcd members to report healthy`,
        PROBE_INTERVAL_MS,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.describe()}`);
    }
  }

  /** Process ids of the running members. */
  pids(): number[] {
    return this.members.filter((m) => m.running && m.child.pid !== undefined).map((m) => m.child.pid!);
  }

  /** The process id of the running member serving `endpoint` (one of clientEndpoints). */
  pidOf(endpoint: string): number | undefined {
    const m = this.members[this.clientEndpoints.indexOf(endpoint)];
    return m !== undefined && m.running ? m.child.pid : undefined;
  }

  /** The client endpoint of the member that reports itself leader (waits for one, with a deadline). */
  async leaderEndpoint(timeoutMs = 10_000): Promise<string> {
    let leader: string | undefined;
    await waitFor(
      async () => {
        for (const e of this.clientEndpoints) {
          const s = await memberStatus(e);
          if (s !== undefined && s.leader !== '' && s.leader === s.memberId) {
            leader = e;
            return true;
          }
        }
        return false;
      },
      timeoutMs,
      'an etcd member that reports itself leader',
      PROBE_INTERVAL_MS,
    );
    return leader!;
  }

  /** SIGTERM to every member (SIGKILL after a deadline); waits for the exits. Keeps the data. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => m.stop()));
  }

  /** Stops every member and removes the temporary folder. Safe to call twice. */
  async cleanup(): Promise<void> {
    try {
      await this.stop();
    } finally {
      process.removeListener('exit', this.onExit);
      await rm(this.rootDir, { recursive: true, force: true });
    }
  }

  /** Every member's kept output, for a failure report. */
  describe(): string {
    return this.members.map((m) => m.describe()).join('\n');
  }
}

async function getJson(url: string, init: RequestInit = {}): Promise<unknown> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    if (!res.ok) return undefined;
    return (await res.json()) as unknown;
  } catch {
    return undefined;
  }
}

/** Whether the member at `endpoint` answers /health with {"health":"true"}. */
async function isHealthy(endpoint: string): Promise<boolean> {
  const body = await getJson(`http://${endpoint}/health`);
  return typeof body === 'object' && body !== null && (body as { health?: unknown }).health === 'true';
}

/**
 * A member's own id and its leader's, from the v3 JSON gateway's Maintenance.Status. The ids are
 * uint64s, which the gateway writes as decimal strings: compared as strings, never as numbers.
 */
async function memberStatus(endpoint: string): Promise<{ memberId: string; leader: string } | undefined> {
  const body = await getJson(`http://${endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}' });
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as { header?: { member_id?: unknown }; leader?: unknown };
  return { memberId: String(b.header?.member_id ?? ''), leader: String(b.leader ?? '') };
}

/** The first executable named `name` in PATH's folders. */
async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** The version `etcd --version` prints ("etcd Version: 3.4.23"). */
export async function etcdVersion(bin: string): Promise<string> {
  const { stdout } = await execFileP(bin, ['--version'], { timeout: 10_000 });
  const m = /etcd Version:\s*(\S+)/.exec(stdout);
  if (m === null) throw new Error(`could not read a version from \`${bin} --version\`: ${stdout.trim()}`);
  return m[1]!;
}

/** Whether `version` (like "3.4.23") is 3.4 or later. */
export function isSupportedEtcdVersion(version: string): boolean {
  const m = /^v?(\d+)\.(\d+)/.exec(version);
  if (m === null) return false;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return major > MIN_MAJOR || (major === MIN_MAJOR && minor >= MIN_MINOR);
}

/**
 * Makes sure an etcd 3.4 or later is on PATH: if none is, installs Debian's etcd-server package with
 * apt-get (through sudo when not root and sudo exists), saying what it runs. Throws a clear error if
 * it cannot, or if the etcd found is older than 3.4.
 */
export async function ensureEtcdInstalled(): Promise<{ path: string; version: string }> {
  let bin = await findOnPath('etcd');
  if (bin === undefined) {
    const isRoot = process.getuid?.() === 0;
    const sudo = isRoot ? undefined : await findOnPath('sudo');
    if (!isRoot && sudo === undefined) {
      throw new Error('etcd is not on PATH, and installing it needs root (no sudo found): run `apt-get install -y etcd-server` as root');
    }
    const cmd = [...(sudo !== undefined ? [sudo] : []), 'apt-get', 'install', '-y', 'etcd-server'];
    console.error(`etcd not found on PATH; running: ${cmd.join(' ')}`);
    await new Promise<void>((resolve, reject) => {
      const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
      child.once('error', (err) => reject(new Error(`${cmd.join(' ')} failed to start: ${err.message}`)));
      child.once('close', (code, signal) =>
        code === 0 ? resolve() : reject(new Error(`${cmd.join(' ')} failed (${signal ?? `exit code ${code}`}); install etcd 3.4+ by hand`)),
      );
    });
    bin = await findOnPath('etcd');
    if (bin === undefined) throw new Error('apt-get installed etcd-server, but there is still no etcd on PATH');
  }
  const version = await etcdVersion(bin);
  if (!isSupportedEtcdVersion(version)) {
    throw new Error(`${bin} is etcd ${version}; the benchmarks need etcd ${MIN_MAJOR}.${MIN_MINOR} or later`);
  }
  return { path: bin, version };
}
