// kvnode processes of the cluster: spawning one detached (its own process group, output appended to its
// log file, so it outlives the script), telling whether a recorded pid is still that node, signals,
// and stopping with a deadline. Pids come from cluster.json and may be stale (the machine rebooted,
// the pid was reused), so nothing is signalled before its command line shows it is that node.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readSync, renameSync, statSync, appendFileSync, readFileSync, fstatSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dataDir, logFile, nodeDir, type ClusterState, type NodeState } from './cluster-state.js';

export const PROJECT_ROOT: string = (() => {
  // cluster/*.ts runs from cluster/; the compiled cluster/*.js from dist/cluster/.
  const candidates = ['..', '../..'].map((rel) => fileURLToPath(new URL(rel + '/', import.meta.url)));
  const found = candidates.find((p) => existsSync(`${p}bin/kvnode`) && existsSync(`${p}package.json`));
  if (found === undefined) throw new Error(`bin/kvnode not found; looked in ${candidates.join(', ')}`);
  return found.replace(/\/$/, '');
})();
const KVNODE_BIN = `${PROJECT_ROOT}/bin/kvnode`;

/** Limit: a node.log beyond this size is moved to node.log.1 (replacing it) when the node starts. */
const MAX_LOG_BYTES = 16 * 1024 * 1024;
/** How often to look whether a process has exited while waiting for it. */
const EXIT_POLL_MS = 25;
/** How long to wait for the exit after SIGKILL (which cannot be caught: only a stuck kernel delays it). */
const KILL_WAIT_MS = 5_000;

/** The first line of each run in node.log; logTail() shows only what follows the last one. */
export const RUN_MARKER = '--- raftkv-cluster: starting ';

/**
 * kvnode's command line for a node (after `node`). Nodes of this local dev/test cluster serve the
 * test-only FaultInjection service (--enable-fault-injection), which `partition` and `heal` use:
 * anyone who can reach a node's port can cut its links, so never expose these ports beyond loopback.
 */
export function kvnodeArgs(dir: string, state: ClusterState, node: NodeState): string[] {
  return [
    KVNODE_BIN,
    '--id', String(node.id),
    '--members', state.members,
    '--data-dir', dataDir(dir, node),
    '--enable-fault-injection',
    ...state.nodeArgs,
  ];
}

/**
 * Starts a node's kvnode, detached: own process group (a Ctrl-C in the terminal does not reach it:
 * the script decides when nodes stop), output appended to its node.log. Returns at once; the caller
 * waits for it to answer. Returns the child and the offset in node.log where this run's output begins.
 */
export function spawnNode(dir: string, state: ClusterState, node: NodeState): { child: ChildProcess; logOffset: number } {
  mkdirSync(dataDir(dir, node), { recursive: true });
  const log = logFile(dir, node);
  if (existsSync(log) && statSync(log).size > MAX_LOG_BYTES) renameSync(log, `${log}.1`);
  appendFileSync(log, `${RUN_MARKER}${node.name} at ${new Date().toISOString()} ---\n`);
  const fd = openSync(log, 'a');
  try {
    const logOffset = fstatSync(fd).size;
    const child = spawn(process.execPath, kvnodeArgs(dir, state, node), {
      cwd: nodeDir(dir, node),
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    // A failed spawn emits 'error' (and the pid is undefined); the caller sees no pid.
    child.on('error', (err) => appendFileSync(log, `raftkv-cluster: cannot spawn kvnode: ${err.message}\n`));
    return { child, logOffset };
  } finally {
    closeSync(fd);
  }
}

export type ProcessState = 'running' | 'paused' | 'gone';

/** The state of process `pid` (a zombie counts as gone). */
export function processState(pid: number): ProcessState {
  try {
    process.kill(pid, 0);
  } catch {
    // EPERM: it exists but is not ours, so it is not one of our nodes either.
    return 'gone';
  }
  const letter = stateLetter(pid);
  if (letter === 'Z' || letter === 'X') return 'gone';
  if (letter === 'T' || letter === 't') return 'paused';
  return 'running';
}

function stateLetter(pid: number): string | undefined {
  try {
    // "pid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    // Not Linux (or no /proc): ask ps.
    try {
      return execFileSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()[0];
    } catch {
      return undefined;
    }
  }
}

/** The command line of `pid`, its arguments joined by spaces, or undefined if it cannot be read. */
export function commandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '').join(' ');
  } catch {
    try {
      const line = execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      return line === '' ? undefined : line;
    } catch {
      return undefined;
    }
  }
}

/** Whether `pid` is a live kvnode process serving `node` of the cluster in `dir`. */
export function isNodeProcess(pid: number, dir: string, node: NodeState): boolean {
  if (processState(pid) === 'gone') return false;
  const line = commandLine(pid);
  if (line === undefined) return true; // cannot tell: trust cluster.json
  return `${line} `.includes(` --data-dir ${dataDir(dir, node)} `);
}

/** The recorded pid of `node` if that process still runs as the node, else undefined. */
export function livePid(dir: string, node: NodeState): number | undefined {
  return node.pid !== null && isNodeProcess(node.pid, dir, node) ? node.pid : undefined;
}

/** Whether `pid` is a live `start --foreground` process of this script. */
export function isSupervisorProcess(pid: number): boolean {
  if (pid === process.pid || processState(pid) === 'gone') return false;
  const line = commandLine(pid);
  return line === undefined || (/ start( |$)/.test(line) && `${line} `.includes(' --foreground '));
}

/**
 * Waits (bounded) until `pid` is in state `want`: signals are delivered asynchronously, so a process
 * sent SIGSTOP may still show as running for a moment. Resolves with whether it got there.
 */
export async function waitState(pid: number, want: ProcessState, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (processState(pid) !== want) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, EXIT_POLL_MS));
  }
  return true;
}

/** Resolves once `pid` is gone, or with false after `timeoutMs`. */
export function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  return waitState(pid, 'gone', timeoutMs);
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

/**
 * Stops `pid` cleanly: SIGTERM (and SIGCONT, so that a paused node gets to handle it), then SIGKILL
 * if it has not exited within `graceMs`. Resolves with how it ended.
 */
export async function stopProcess(pid: number, graceMs: number): Promise<'stopped' | 'killed'> {
  signal(pid, 'SIGTERM');
  signal(pid, 'SIGCONT');
  if (await waitGone(pid, graceMs)) return 'stopped';
  await killProcess(pid);
  return 'killed';
}

/** SIGKILL, and waits (bounded) for the process to be gone. */
export async function killProcess(pid: number): Promise<void> {
  signal(pid, 'SIGKILL');
  if (!(await waitGone(pid, KILL_WAIT_MS))) throw new Error(`pid ${pid} still exists ${KILL_WAIT_MS} ms after SIGKILL`);
}

/** The last `maxLines` lines of the node's log from its latest run (a bounded read from the end). */
export function logTail(dir: string, node: NodeState, maxLines = 20): string[] {
  const file = logFile(dir, node);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return [`(no log at ${file})`];
  }
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    let lines = buf.toString('utf8').split('\n');
    if (len < size) lines = lines.slice(1); // the first one is probably cut
    if (lines.at(-1) === '') lines.pop();
    let lastRun = lines.length - 1;
    while (lastRun >= 0 && !lines[lastRun]!.startsWith(RUN_MARKER)) lastRun--;
    if (lastRun >= 0) lines = lines.slice(lastRun + 1);
    return lines.length === 0 ? ['(the log of this run is empty)'] : lines.slice(-maxLines);
  } finally {
    closeSync(fd);
  }
}
