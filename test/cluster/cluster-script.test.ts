// The local cluster script (cluster/cluster.ts): its subcommands driven in-process with captured output
// against real kvnode processes on loopback ports chosen by the OS, in a temporary folder; and
// `start --foreground` as a child process, stopped with SIGINT. Every process started here is killed
// in afterAll, whatever happened.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNodeArgs, run, type ClusterIo } from '../../cluster/cluster.js';
import type { NodeReport } from '../../cluster/commands.js';
import { formatLogLine } from '../../cluster/log-format.js';
import { parsePartition } from '../../cluster/partition.js';
import { KvClient, retryUnavailable } from '../support/process-cluster.js';
import { waitFor } from '../support/wait.js';
import { makeSnapshot } from '../cli/snapshot-fixture.js';

const projectRoot = fileURLToPath(new URL('../..', import.meta.url));
/** Fast elections (20 ms ticks, 200-400 ms election timeout) so that starts and failovers are quick. */
const NODE_ARGS = '--tick-ms 20 --election-timeout-ticks 10 --heartbeat-ticks 2';
const WAIT_MS = 15_000;

let root: string;
/** Every cluster folder used, so that afterAll finds every pid. */
const dirs: string[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'raftkv-cluster-script-'));
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const dir of dirs) {
    for (const pid of recordedPids(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  if (root) await rm(root, { recursive: true, force: true });
});

function newDir(name: string): string {
  const dir = join(root, name);
  dirs.push(dir);
  return dir;
}

interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** Runs the script in-process; no signal handling (the test process keeps its own). */
async function cli(...args: string[]): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const io: ClusterIo = {
    out: (s) => void out.push(s),
    err: (s) => void err.push(s),
    palette: { enabled: false },
    trapSignals: () => new AbortController().signal,
  };
  const code = await run(args, io);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args);
  expect(r.code, `${args.join(' ')}\nstdout:\n${r.out}\nstderr:\n${r.err}`).toBe(0);
  return r.out;
}

async function status(dir: string): Promise<NodeReport[]> {
  return (JSON.parse(await ok('status', '--json', '--dir', dir)) as { nodes: NodeReport[] }).nodes;
}

interface StateFile {
  nodes: { id: number; port: number; pid: number | null }[];
  supervisorPid: number | null;
}

function readStateFile(dir: string): StateFile {
  return JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as StateFile;
}

function recordedPids(dir: string): number[] {
  try {
    const s = readStateFile(dir);
    return [...s.nodes.map((n) => n.pid), s.supervisorPid].filter((p): p is number => p !== null);
  } catch {
    return [];
  }
}

/** Whether `pid` is gone (a zombie counts as gone: it no longer runs). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

/** The node every answering node names as leader, once they agree and it says so itself. */
async function waitLeader(dir: string, among: readonly number[]): Promise<number> {
  let leader = 0;
  await waitFor(
    async () => {
      const reports = (await status(dir)).filter((r) => among.includes(r.id));
      const leaders = new Set(reports.map((r) => r.status?.leader ?? -1));
      const [only] = [...leaders];
      if (leaders.size !== 1 || only === undefined || !among.includes(only)) return false;
      if (reports.find((r) => r.id === only)?.status?.role !== 'leader') return false;
      leader = only;
      return true;
    },
    WAIT_MS,
    `nodes ${among.join(', ')} to agree on a leader among them`,
    50,
  );
  return leader;
}

function endpointOf(dir: string, id: number): string {
  const n = readStateFile(dir).nodes.find((x) => x.id === id)!;
  return `127.0.0.1:${n.port}`;
}

async function put(dir: string, via: number, key: string, value: string): Promise<void> {
  const c = new KvClient(endpointOf(dir, via));
  try {
    await retryUnavailable(() => c.put({ key: Buffer.from(key), value: Buffer.from(value) }, { timeoutMs: 2_000 }), WAIT_MS);
  } finally {
    c.close();
  }
}

async function get(dir: string, via: number, key: string): Promise<string | undefined> {
  const c = new KvClient(endpointOf(dir, via));
  try {
    const r = await retryUnavailable(() => c.get({ key: Buffer.from(key), read: { consistency: 'LINEARIZABLE' } }, { timeoutMs: 2_000 }), WAIT_MS);
    return r.found ? Buffer.from(r.kv!.value).toString() : undefined;
  } finally {
    c.close();
  }
}

describe('a detached cluster, driven in-process', () => {
  let dir: string;

  beforeAll(() => {
    dir = newDir('main');
  });

  it('start: runs 3 nodes, returns once they answer and have a leader, and prints the endpoints and a kvctl line', async () => {
    const out = await ok('start', '--dir', dir, '--base-port', '0', '--node-args', NODE_ARGS);
    const state = readStateFile(dir);
    expect(state.nodes.map((n) => n.id)).toEqual([1, 2, 3]);
    expect(new Set(state.nodes.map((n) => n.port)).size).toBe(3);
    expect(out).toContain('raftkv cluster ready: 3 nodes');
    expect(out).toContain(`export RAFTKV_ENDPOINTS=${state.nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`);
    expect(out).toContain('bin/kvctl status --cluster');
    for (const n of state.nodes) {
      expect(n.pid).not.toBeNull();
      expect(readFileSync(join(dir, `node${n.id}`, 'kvnode.pid'), 'utf8').trim()).toBe(String(n.pid));
      expect(existsSync(join(dir, `node${n.id}`, 'data'))).toBe(true);
    }
    // It returned after the election: every node answers and names the same leader now.
    const reports = await status(dir);
    expect(reports.map((r) => r.process)).toEqual(['running', 'running', 'running']);
    const leaders = reports.map((r) => r.status?.leader);
    expect(new Set(leaders).size).toBe(1);
    expect(reports.filter((r) => r.status?.role === 'leader')).toHaveLength(1);
    await put(dir, 1, 'greeting', 'hello');
  });

  it('start again: says the cluster is already running and starts nothing', async () => {
    const before = recordedPids(dir);
    const out = await ok('start', '--dir', dir);
    expect(out).toContain('already running');
    expect(recordedPids(dir)).toEqual(before);
  });

  it('status: one row per node with its role, term, leader, commit and applied index', async () => {
    const out = await ok('status', '--dir', dir);
    expect(out).toMatch(/NODE\s+PID\s+PROCESS\s+ADDRESS\s+ROLE\s+TERM\s+LEADER\s+COMMIT\s+APPLIED/);
    for (const id of [1, 2, 3]) expect(out).toMatch(new RegExp(`node${id}\\s+\\d+\\s+running\\s+127\\.0\\.0\\.1:\\d+\\s+(leader|follower)\\s+\\d+\\s+node\\d`));
  });

  it('refuses a NODE that is not a member, naming the ones there are', async () => {
    for (const bad of ['node4', '4', 'nodex', 'follower']) {
      const r = await cli('kill', bad, '--dir', dir);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`unknown node "${bad}"`);
      expect(r.err).toContain('node1, node2, node3');
    }
  });

  it('kill leader: SIGKILLs the leader; the other two elect a new one', async () => {
    const old = await waitLeader(dir, [1, 2, 3]);
    const pid = readStateFile(dir).nodes[old - 1]!.pid!;
    const out = await ok('kill', 'leader', '--dir', dir);
    expect(out).toContain(`node${old} killed (SIGKILL, pid ${pid})`);
    expect(gone(pid)).toBe(true);
    expect(readStateFile(dir).nodes[old - 1]!.pid).toBeNull();
    const rest = [1, 2, 3].filter((id) => id !== old);
    await waitLeader(dir, rest);
    expect((await status(dir))[old - 1]!.process).toBe('down');
    // Killing it again is an error: it is not running.
    const again = await cli('kill', `node${old}`, '--dir', dir);
    expect(again.code).toBe(1);
    expect(again.err).toContain(`node${old} is not running`);
  });

  it('restart: starts a killed node again with its data; restarting a running node replaces its process', async () => {
    const down = (await status(dir)).find((r) => r.process === 'down')!;
    const out = await ok('restart', String(down.id), '--dir', dir);
    expect(out).toContain(`${down.name} restarted`);
    expect(await get(dir, down.id, 'greeting')).toBe('hello');

    const before = readStateFile(dir).nodes[0]!.pid!;
    await ok('restart', 'node1', '--dir', dir);
    const after = readStateFile(dir).nodes[0]!.pid!;
    expect(after).not.toBe(before);
    expect(gone(before)).toBe(true);
    expect(gone(after)).toBe(false);
    await waitLeader(dir, [1, 2, 3]);
  });

  it('pause and resume: SIGSTOP leaves the process there but silent; SIGCONT brings it back', async () => {
    const leader = await waitLeader(dir, [1, 2, 3]);
    const follower = [1, 2, 3].find((id) => id !== leader)!;
    await ok('pause', `node${follower}`, '--dir', dir);
    const paused = (await status(dir))[follower - 1]!;
    expect(paused.process).toBe('paused');
    expect(paused.status).toBeUndefined();
    expect(gone(paused.pid!)).toBe(false);

    await ok('resume', String(follower), '--dir', dir);
    await waitFor(async () => (await status(dir))[follower - 1]!.status !== undefined, WAIT_MS, `node${follower} to answer after resume`, 50);
    expect(await get(dir, follower, 'greeting')).toBe('hello');
  });

  it('stop: stops every node (SIGTERM); start brings the cluster back on the same ports with its data', async () => {
    const pids = recordedPids(dir);
    const ports = readStateFile(dir).nodes.map((n) => n.port);
    const out = await ok('stop', '--dir', dir);
    for (const id of [1, 2, 3]) expect(out).toContain(`node${id} stopped`);
    for (const pid of pids) expect(gone(pid)).toBe(true);
    expect((await status(dir)).map((r) => r.process)).toEqual(['down', 'down', 'down']);
    for (const id of [1, 2, 3]) expect(existsSync(join(dir, `node${id}`, 'kvnode.pid'))).toBe(false);

    await ok('start', '--dir', dir);
    expect(readStateFile(dir).nodes.map((n) => n.port)).toEqual(ports);
    expect(await get(dir, 2, 'greeting')).toBe('hello');
  });

  it('start with another size on an existing cluster folder: refused, pointing at clean', async () => {
    const r = await cli('start', '--dir', dir, '--nodes', '5');
    expect(r.code).toBe(1);
    expect(r.err).toContain('holds a 3-node cluster');
    expect(r.err).toContain('clean');
  });

  it('clean: stops the nodes and deletes the folder', async () => {
    const pids = recordedPids(dir);
    const out = await ok('clean', '--dir', dir);
    expect(out).toContain('Deleted');
    for (const pid of pids) expect(gone(pid)).toBe(true);
    expect(existsSync(dir)).toBe(false);
    const r = await cli('status', '--dir', dir);
    expect(r.code).toBe(1);
    expect(r.err).toContain('no cluster in');
  });
});

/** A STALE read on node `via` itself: what that node holds, not what the leader does. */
async function getLocal(dir: string, via: number, key: string): Promise<string | undefined> {
  const c = new KvClient(endpointOf(dir, via));
  try {
    const r = await retryUnavailable(() => c.get({ key: Buffer.from(key), read: { consistency: 'STALE' } }, { timeoutMs: 2_000 }), WAIT_MS);
    return r.found ? Buffer.from(r.kv!.value).toString() : undefined;
  } finally {
    c.close();
  }
}

describe('restore FILE', () => {
  let dir: string;
  let file: string;

  beforeAll(async () => {
    dir = newDir('restore');
    file = join(root, 'backup.snap');
    const snap = await makeSnapshot({ pairs: [['greeting', 'from the backup'], ['config/a', '1']], index: 40, term: 3 });
    writeFileSync(file, snap.bytes);
  });

  afterAll(async () => {
    await cli('clean', '--dir', dir);
  });

  it('makes a new cluster from a snapshot file: every node starts with its data, and takes writes', async () => {
    const out = await ok('restore', file, '--dir', dir, '--base-port', '0', '--node-args', NODE_ARGS);
    expect(out).toMatch(/Verified .*backup\.snap: index 40, term 3, 2 keys, 0 sessions, \d+ bytes, sha256 [0-9a-f]{64} \(taken in cluster "raftkv"\)\./);
    expect(out).toContain('Restored node1, node2, node3 from');
    expect(out).toContain('raftkv cluster ready: 3 nodes');
    for (const id of [1, 2, 3]) expect(await getLocal(dir, id, 'greeting'), `node${id}`).toBe('from the backup');
    await put(dir, 1, 'after', 'the restore');
    expect(await get(dir, 2, 'after')).toBe('the restore');
  });

  it('a bad file is refused before anything is stopped', async () => {
    const pids = recordedPids(dir);
    const bad = join(root, 'bad.snap');
    writeFileSync(bad, readFileSync(file).subarray(0, 30));
    const r = await cli('restore', bad, '--dir', dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^raftkv-cluster: .*bad\.snap: truncated snapshot: .*; nothing was changed$/m);
    for (const pid of pids) expect(gone(pid)).toBe(false);
  });

  it('over a running cluster: stops it, replaces every node\'s data with the file\'s, starts it again', async () => {
    const out = await ok('restore', file, '--dir', dir);
    expect(out).toContain('Stopping the cluster...');
    expect(out).toContain('raftkv cluster ready');
    for (const id of [1, 2, 3]) {
      expect(await getLocal(dir, id, 'config/a'), `node${id}`).toBe('1');
      expect(await getLocal(dir, id, 'after'), `node${id}`).toBeUndefined();
    }
    expect(existsSync(join(dir, 'node1', 'data.restoring'))).toBe(false);
  });
});

describe('partition and heal', () => {
  let dir: string;
  /** The node the first test isolates. */
  let isolated = 0;

  beforeAll(async () => {
    dir = newDir('partition');
    await ok('start', '--dir', dir, '--base-port', '0', '--node-args', NODE_ARGS);
  });

  afterAll(async () => {
    await cli('clean', '--dir', dir);
  });

  const partitionOf = (): { specs: string[]; blocked: Array<[number, number]> } | null | undefined =>
    (JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as { partition?: { specs: string[]; blocked: Array<[number, number]> } | null }).partition;

  async function report(id: number): Promise<NodeReport> {
    return (await status(dir)).find((r) => r.id === id)!;
  }

  it('the nodes run with --enable-fault-injection (a local dev/test cluster)', () => {
    for (const n of readStateFile(dir).nodes) {
      const cmdline = readFileSync(`/proc/${n.pid}/cmdline`, 'utf8').split('\0');
      expect(cmdline).toContain('--enable-fault-injection');
    }
  });

  it('isolate leader: the old leader turns read-only, the others elect a leader and take writes; status shows the partition', async () => {
    const old = await waitLeader(dir, [1, 2, 3]);
    const rest = [1, 2, 3].filter((id) => id !== old);
    isolated = old;
    const out = await ok('partition', 'isolate', 'leader', '--dir', dir);
    const blocked = rest.flatMap((o) => [[old, o], [o, old]]).sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
    expect(out).toContain(`Partition: isolate node${old}`);
    expect(out).toContain(`cut: ${blocked.map(([f, t]) => `node${f}→node${t}`).join(', ')}`);
    expect(out).toContain('Heal with: npm run cluster -- heal --dir');
    expect(partitionOf()).toEqual({ specs: [`isolate node${old}`], blocked });

    await waitFor(async () => (await report(old)).status?.writable === false, WAIT_MS, `node${old} to turn read-only`, 50);
    await waitLeader(dir, rest);
    await put(dir, rest[0]!, 'cut', 'while-isolated');

    const text = await ok('status', '--dir', dir);
    expect(text).toMatch(/\sSTATE\n/);
    expect(text).toMatch(new RegExp(`node${old}\\s.*\\sread-only\\n`));
    expect(text).toContain(`Partition: isolate node${old}`);
    // Said by the old leader until it steps down (check-quorum), then as a follower without a leader.
    expect(text).toMatch(new RegExp(`node${old} is read-only: this (leader has not heard from a majority|node has not heard from a leader for \\d+ ms)`));
    const doc = JSON.parse(await ok('status', '--json', '--dir', dir)) as { partition: unknown };
    expect(doc.partition).toEqual(partitionOf());
  });

  it('restart puts the node back into the partition; heal brings every link up and the node catches up by itself', async () => {
    const cut = isolated;
    expect(cut).not.toBe(0);
    const out = await ok('restart', String(cut), '--dir', dir);
    expect(out).toContain(`node${cut} is in the partition again (isolate node${cut})`);
    // Still cut off: it turns read-only again rather than joining.
    await waitFor(async () => (await report(cut)).status?.writable === false, WAIT_MS, `node${cut} to be read-only after its restart`, 50);

    const healed = await ok('heal', '--dir', dir);
    expect(healed).toContain(`Healed: every link is up again (was: isolate node${cut})`);
    expect(partitionOf()).toBeNull();
    await waitFor(async () => (await report(cut)).status?.writable === true, WAIT_MS, `node${cut} to be writable again`, 50);
    expect(await get(dir, cut, 'cut')).toBe('while-isolated');
    expect(await ok('status', '--dir', dir)).toContain('Partition: none (every link is up)');
  });

  it('split, oneway and bridge cut exactly their links; --add joins a partition; bad specs are usage errors', async () => {
    expect(await ok('partition', 'split', '1', '2,3', '--dir', dir)).toContain('cut: node1→node2, node1→node3, node2→node1, node3→node1');
    const added = await ok('partition', 'oneway', 'node2', 'node3', '--add', '--dir', dir);
    expect(added).toContain('Partition: split node1 node2,node3 + oneway node2 node3');
    expect(partitionOf()!.blocked).toEqual([[1, 2], [1, 3], [2, 1], [2, 3], [3, 1]]);
    const replaced = await ok('partition', 'bridge', '1', '2', '3', '--dir', dir);
    expect(replaced).toContain('Partition: bridge node1 node2 node3 (replaces split node1 node2,node3 + oneway node2 node3)');
    expect(partitionOf()).toEqual({ specs: ['bridge node1 node2 node3'], blocked: [[1, 3], [3, 1]] });

    for (const [args, message] of [
      [['split', '1', '2'], 'node3 is in no group'],
      [['split', '1,2', '2,3'], 'node2 is in two groups'],
      [['oneway', '1', '1'], 'A and B must differ'],
      [['oneway', '1,2', '3'], 'must be one node, not a group'],
      [['bridge', '1', '2'], 'takes 3 arguments, got 2'],
      [['cut', '1'], 'unknown spec "cut"'],
    ] as const) {
      const r = await cli('partition', ...args, '--dir', dir);
      expect(r.code, args.join(' ')).toBe(64);
      expect(r.err).toContain(message);
      expect(r.err).toContain('isolate NODE');
    }
    const unknown = await cli('partition', 'isolate', 'node7', '--dir', dir);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('unknown node "node7"');
    // A refused spec changes nothing.
    expect(partitionOf()!.specs).toEqual(['bridge node1 node2 node3']);
  });

  it('stop clears the partition: the nodes held it in memory; start brings every link up', async () => {
    await ok('stop', '--dir', dir);
    expect(partitionOf()).toBeNull();
    await ok('start', '--dir', dir);
    expect(await ok('status', '--dir', dir)).toContain('Partition: none');
  });

  it('clock NODE RATE: the node\'s tick clock runs at RATE (it logs the change); bad rates are usage errors', async () => {
    /** The rates node `id` logged a `clock` event for, in order. */
    const loggedRates = (id: number): number[] =>
      readFileSync(join(dir, `node${id}`, 'node.log'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"event":"clock"'))
        .map((l) => (JSON.parse(l) as { rate: number }).rate);

    const out = await ok('clock', '2', '1.05', '--dir', dir);
    expect(out).toContain('node2\'s clock runs at 1.05x real time (5% fast) until it restarts.');
    expect(out).toContain('Back to real time with: npm run cluster -- clock node2 1 --dir');
    await waitFor(() => loggedRates(2).at(-1) === 1.05, WAIT_MS, 'node2 to log its clock rate 1.05', 20);

    const leader = await waitLeader(dir, [1, 2, 3]);
    expect(await ok('clock', 'leader', '1', '--dir', dir)).toContain(`node${leader}'s clock runs at real time until it restarts.`);
    await waitFor(() => loggedRates(leader).at(-1) === 1, WAIT_MS, `node${leader} to log its clock rate 1`, 20);
    await ok('clock', 'node2', '1', '--dir', dir);

    for (const bad of ['0', '11', 'fast', '1.05x', '-1']) {
      const r = await cli('clock', '1', bad, '--dir', dir);
      expect(r.code, bad).toBe(64);
      expect(r.err).toContain(`clock: RATE must be a number > 0 and <= 10 (1 = real time, 1.05 = 5% fast), got "${bad}"`);
    }
    const unknown = await cli('clock', 'node7', '1', '--dir', dir);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('unknown node "node7"');
  });
});

describe('partition specs', () => {
  const ids = [1, 2, 3, 4, 5];
  it('become the complete list of cut links', () => {
    expect(parsePartition(['isolate', '2'], [1, 2, 3])).toEqual({ spec: 'isolate node2', blocked: [[1, 2], [2, 1], [2, 3], [3, 2]] });
    expect(parsePartition(['isolate', 'leader'], [1, 2, 3], 3).spec).toBe('isolate node3');
    expect(parsePartition(['oneway', 'node4', '5'], ids)).toEqual({ spec: 'oneway node4 node5', blocked: [[4, 5]] });
    expect(parsePartition(['split', '1,2', '3,4,5'], ids).blocked).toHaveLength(12);
    const bridge = parsePartition(['bridge', '1,2', '3', '4,5'], ids);
    expect(bridge.spec).toBe('bridge node1,node2 node3 node4,node5');
    expect(bridge.blocked).toEqual([[1, 4], [1, 5], [2, 4], [2, 5], [4, 1], [4, 2], [5, 1], [5, 2]]);
  });

  it('refuse what they cannot mean', () => {
    expect(() => parsePartition(['isolate', 'leader'], [1, 2, 3])).toThrow(/"leader" is not known/);
    expect(() => parsePartition(['isolate', '1'], [1])).toThrow(/1-node cluster/);
    expect(() => parsePartition(['split', '1,1', '2,3'], [1, 2, 3])).toThrow(/node1 appears twice/);
    expect(() => parsePartition(['bridge', '1', '2', '3'], ids)).toThrow(/node4, node5 are in no group/);
    expect(() => parsePartition([], ids)).toThrow(/give a spec/);
  });
});

describe('clear errors', () => {
  it('clean refuses a folder that is not a cluster folder, and deletes nothing', async () => {
    const dir = newDir('not-a-cluster');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'precious.txt'), 'keep me');
    const r = await cli('clean', '--dir', dir);
    expect(r.code).toBe(1);
    expect(r.err).toContain('refusing to delete');
    expect(readFileSync(join(dir, 'precious.txt'), 'utf8')).toBe('keep me');
    // Nor does start use it.
    const s = await cli('start', '--dir', dir, '--base-port', '0');
    expect(s.code).toBe(1);
    expect(s.err).toContain('is not a cluster folder');
  });

  it('a busy port: refused before anything starts, naming the port and the node', async () => {
    const server: Server = await new Promise((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => resolve(s));
    });
    try {
      const port = (server.address() as { port: number }).port;
      const dir = newDir('busy');
      const r = await cli('start', '--dir', dir, '--base-port', String(port), '--nodes', '1');
      expect(r.code).toBe(1);
      expect(r.err).toContain(`127.0.0.1:${port} (node1)`);
      expect(r.err).toContain('in use');
      expect(existsSync(dir)).toBe(false);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('a node that fails to start: reported with the last lines of its log, and nothing left running', async () => {
    const dir = newDir('failing');
    const r = await cli('start', '--dir', dir, '--base-port', '0', '--nodes', '1', '--node-args', '--max-message-bytes 1');
    expect(r.code).toBe(1);
    expect(r.err).toContain('node1 failed to start: kvnode exited with code');
    expect(r.err).toContain('--max-message-bytes must be an integer');
    expect(recordedPids(dir)).toEqual([]);
  });

  it('--node-args may not set what the script sets per node; bad numbers are usage errors', async () => {
    expect(() => parseNodeArgs('--tick-ms 20 --data-dir /x')).toThrow(/--data-dir is set by the script/);
    expect(parseNodeArgs('  --tick-ms   20 ')).toEqual(['--tick-ms', '20']);
    expect((await cli('start', '--nodes', '0', '--dir', newDir('usage'))).code).toBe(64);
  });

  it('formats kvnode JSON log lines for people, and leaves other lines alone', () => {
    const line = JSON.stringify({ time: '2026-01-01T12:00:01.123Z', level: 'info', node: 1, event: 'role', role: 'leader', leader: 1, term: 2 });
    expect(formatLogLine({ enabled: false }, line)).toMatch(/^\d\d:\d\d:01\.123 info  role role=leader leader=1 term=2$/);
    const warn = JSON.stringify({ time: 'x', level: 'warn', node: 2, event: 'transport', msg: 'peer 1: failed' });
    expect(formatLogLine({ enabled: false }, warn)).toBe('x warn  transport msg="peer 1: failed"');
    expect(formatLogLine({ enabled: false }, 'kvnode: warning: plain text')).toBe('kvnode: warning: plain text');
    expect(formatLogLine({ enabled: true }, line)).toContain('\u001b[');
  });
});

describe('start --foreground (what npm start runs)', () => {
  it('shows every node\'s log prefixed with its name, reports a node that dies, and stops all on SIGINT with exit 0', async () => {
    const dir = newDir('foreground');
    const child = spawn(
      process.execPath,
      [join(projectRoot, 'cluster', 'raftkv-cluster'), 'start', '--foreground', '--dir', dir, '--base-port', '0', '--node-args', NODE_ARGS],
      { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const running = (): boolean => child.exitCode === null && child.signalCode === null;
    const why = (what: string): string => `${what}\nstdout:\n${out}\nstderr:\n${err}`;

    await waitFor(() => out.includes('raftkv cluster ready') || !running(), 30_000, why('the ready line'), 20);
    expect(running(), why('the script exited')).toBe(true);
    expect(out).toMatch(/^node[123] +\| \d\d:\d\d:\d\d\.\d{3} info  started listen=127\.0\.0\.1:\d+/m);
    await waitFor(() => /^node[123] +\| \S+ info  role role=leader/m.test(out), WAIT_MS, why('the leader\'s role line'), 20);
    const state = readStateFile(dir);
    expect(state.supervisorPid).toBe(child.pid);
    const pids = state.nodes.map((n) => n.pid!);

    // A node dying under it is reported; the others keep running.
    process.kill(pids[2]!, 'SIGKILL');
    await waitFor(() => out.includes('node3 (pid'), WAIT_MS, why('the report of node3\'s death'), 20);
    expect(out).toMatch(/node3 \(pid \d+\) was killed by SIGKILL; the other nodes keep running/);
    expect(gone(pids[0]!) || gone(pids[1]!)).toBe(false);

    child.kill('SIGINT');
    const exit = await exited;
    expect(exit, why('exit status')).toEqual({ code: 0, signal: null });
    for (const pid of pids) expect(gone(pid), `kvnode pid ${pid} left running`).toBe(true);
    expect(out).toContain('every node stopped');
    expect(readStateFile(dir).supervisorPid).toBeNull();
  });
});
