// raftkv-cluster: a local cluster of kvnode processes on 127.0.0.1, for trying raftkv out and for
// playing with failures. `npm start` runs `start --foreground`; `npm run cluster -- <command>` the rest.
//
// The subcommands are one table (COMMANDS): a new one is one more entry; nodeCommand() makes those that
// act on one NODE (`1`, `node1` or `leader`).
//
// This is a local dev/test cluster: its nodes run with --enable-fault-injection, so that `partition`
// and `heal` can cut and restore links between them (cluster/partition.ts), and `clock` can skew one
// node's clock rate. They listen on loopback.

import { resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { MAX_NODES, requireState, type ClusterState, type NodeState } from './cluster-state.js';
import {
  cleanCluster,
  healCluster,
  killNode,
  parseClockRate,
  partitionCluster,
  pauseNode,
  printStatus,
  restartNode,
  restoreCluster,
  resolveNode,
  resumeNode,
  setNodeClockRate,
  showPath,
  startCluster,
  stopCluster,
  type ClusterContext,
  type ClusterIo,
  type StartOptions,
} from './commands.js';
import { ClusterError } from './errors.js';
import { colourFor } from './log-format.js';
import { PROJECT_ROOT } from './node-process.js';
import { PARTITION_USAGE } from './partition.js';

export type { ClusterIo };

export const DEFAULT_DIR = resolve(PROJECT_ROOT, '.cluster');
const DEFAULT_NODES = 3;
const DEFAULT_BASE_PORT = 7001;
/** How long `start` and `restart` wait for the nodes to answer (and for a leader) by default. */
const DEFAULT_START_TIMEOUT_MS = 30_000;
/** kvnode flags the script sets itself for each node. */
const RESERVED_NODE_FLAGS = ['--id', '--members', '--data-dir', '--listen'];

/** Exit codes: 0 ok, 1 a ClusterError, 64 bad usage (as kvnode), 70 a bug. */
const EXIT_ERROR = 1;
const EXIT_USAGE = 64;
const EXIT_INTERNAL = 70;

interface CommandSpec {
  readonly name: string;
  /** Positional arguments, in commander's syntax: '<node>', '<nodes...>'. */
  readonly args?: string;
  readonly summary: string;
  readonly options?: () => Option[];
  /** `args` holds the positional arguments (a variadic one flattened in). */
  run(ctx: ClusterContext, args: string[], opts: Record<string, unknown>, cmd: Command): Promise<void>;
}

/** A command acting on one node; the node must exist (NODE resolved before `run`). */
function nodeCommand(
  name: string,
  summary: string,
  run: (ctx: ClusterContext, state: ClusterState, node: NodeState, opts: Record<string, unknown>) => Promise<void>,
  options?: () => Option[],
): CommandSpec {
  return {
    name,
    args: '<node>',
    summary: `${summary} (NODE: 1, node1, leader, or down: the first node not running)`,
    ...(options ? { options } : {}),
    async run(ctx, args, opts) {
      const state = requireState(ctx.dir, ctx.hint('start'));
      const node = await resolveNode(ctx, state, args[0]!);
      await run(ctx, state, node, opts);
    },
  };
}

const timeoutOption = (what: string): Option =>
  new Option('--timeout-ms <ms>', `how long to wait for ${what}`).argParser(int('--timeout-ms', 1)).default(DEFAULT_START_TIMEOUT_MS);

/** The options of `start` (and of `restore`, which starts the cluster), but --clean. */
const startOptions = (): Option[] => [
  new Option('--nodes <n>', `number of nodes (1..${MAX_NODES})`).argParser(int('--nodes', 1, MAX_NODES)).default(DEFAULT_NODES),
  new Option('--base-port <port>', 'port of node1; nodeK gets port+K-1 (0: free ports chosen by the OS)').argParser(int('--base-port', 0, 65535)).default(DEFAULT_BASE_PORT),
  new Option('--foreground', 'stay attached: show the nodes\' logs, stop every node on Ctrl-C'),
  new Option('--node-args <flags>', 'extra kvnode flags for every node, e.g. "--tick-ms 20" (kept for later starts)'),
  timeoutOption('every node to answer and a leader to be elected'),
];

function startOptionValues(o: Record<string, unknown>, cmd: Command): StartOptions {
  return {
    nodes: o['nodes'] as number,
    basePort: o['basePort'] as number,
    foreground: o['foreground'] === true,
    nodeArgs: typeof o['nodeArgs'] === 'string' ? parseNodeArgs(o['nodeArgs']) : undefined,
    timeoutMs: o['timeoutMs'] as number,
    clean: o['clean'] === true,
    nodesGiven: cmd.getOptionValueSource('nodes') === 'cli',
    basePortGiven: cmd.getOptionValueSource('basePort') === 'cli',
  };
}

const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'start',
    summary: 'start the cluster (again, with its data), in the background unless --foreground',
    options: () => [...startOptions(), new Option('--clean', 'delete the cluster\'s data first (as `clean`)')],
    run: (ctx, _args, o, cmd) => startCluster(ctx, startOptionValues(o, cmd)),
  },
  {
    name: 'restore',
    args: '<file>',
    summary:
      'start the cluster from a snapshot file (kvctl snapshot save): verify FILE, stop the cluster if it runs, ' +
      'replace every node\'s data with FILE\'s, start (a new cluster if the folder has none)',
    options: startOptions,
    run: (ctx, args, o, cmd) => restoreCluster(ctx, resolve(args[0]!), startOptionValues(o, cmd)),
  },
  {
    name: 'stop',
    summary: 'stop every node (SIGTERM, SIGKILL after 10 s); the data stays',
    run: (ctx) => stopCluster(ctx),
  },
  {
    name: 'status',
    summary: 'each node: process, address, and role/term/leader/commit/applied/writable from its Status; the partition',
    options: () => [new Option('--json', 'print JSON')],
    run: (ctx, _args, o) => printStatus(ctx, o['json'] === true),
  },
  nodeCommand('kill', 'kill a node with SIGKILL, like a crash', (ctx, state, node) => killNode(ctx, state, node)),
  nodeCommand(
    'restart',
    'stop a node if it runs, and start it again with its data',
    (ctx, state, node, o) => restartNode(ctx, state, node, o['timeoutMs'] as number),
    () => [timeoutOption('the node to answer')],
  ),
  nodeCommand('pause', 'freeze a node (SIGSTOP): alive but silent, like a long GC pause', pauseNode),
  nodeCommand('resume', 'continue a paused node (SIGCONT)', resumeNode),
  {
    name: 'clock',
    args: '<node> <rate>',
    summary:
      'test only: NODE\'s tick clock (elections, heartbeats, leases) runs at RATE times real time (1.05: 5% fast, ' +
      '1: real time), until the node restarts (NODE: 1, node1 or leader)',
    async run(ctx, args) {
      const rate = parseClockRate(args[1]!);
      const state = requireState(ctx.dir, ctx.hint('start'));
      const node = await resolveNode(ctx, state, args[0]!);
      await setNodeClockRate(ctx, state, node, rate);
    },
  },
  {
    name: 'partition',
    args: '<spec...>',
    summary: `cut links between nodes (replacing any partition in place, unless --add): ${PARTITION_USAGE.map((l) => l.split(/\s{2,}/)[0]).join(' | ')}`,
    options: () => [new Option('--add', 'add these cuts to the current partition instead of replacing it')],
    run: (ctx, args, o) => partitionCluster(ctx, args, o['add'] === true),
  },
  {
    name: 'heal',
    summary: 'bring every link between the nodes up again',
    run: (ctx) => healCluster(ctx),
  },
  {
    name: 'clean',
    summary: 'stop every node and delete the cluster folder (only a folder this script made)',
    run: (ctx) => cleanCluster(ctx),
  },
];

function int(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got "${v}"`);
    }
    return n;
  };
}

/** --node-args "--tick-ms 20 --log-level debug" → flags (split on whitespace; no quoting). */
export function parseNodeArgs(s: string): string[] {
  const args = s.split(/\s+/).filter((a) => a !== '');
  for (const a of args) {
    const flag = a.split('=')[0]!;
    if (RESERVED_NODE_FLAGS.includes(flag)) {
      throw new ClusterError('INVALID_ARGUMENT', `--node-args: ${flag} is set by the script for each node; leave it out`);
    }
  }
  return args;
}

function shellQuote(s: string): string {
  return /^[\w./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function buildProgram(io: ClusterIo): Command {
  const program = new Command('raftkv-cluster')
    .description('A local raftkv cluster: kvnode processes on 127.0.0.1, their data and logs in one folder.')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, '')), writeErr: (s) => io.err(s.replace(/\n$/, '')) })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  npm start                                  3 nodes on ports 7001-7003, logs here, Ctrl-C stops them',
        '  npm run cluster -- start                   the same in the background',
        '  npm run cluster -- status',
        '  npm run cluster -- kill leader             then watch another node take over',
        '  npm run cluster -- restart node1',
        '  npm run cluster -- pause 2 / resume 2',
        '  npm run cluster -- partition isolate leader   the old leader turns read-only; the others elect a new one',
        '  npm run cluster -- heal',
        '  npm run cluster -- clock 2 1.05            node2\'s clock runs 5% fast (test only; until it restarts)',
        '  npm run cluster -- stop                    the data stays; `clean` deletes it',
        '  npm run cluster -- restore backup.snap     start again from a backup (bin/kvctl snapshot save backup.snap --endpoint ...)',
        '',
        'Partition specs (a node: 1, node1 or leader; a group: 1,2):',
        ...PARTITION_USAGE.map((l) => `  ${l}`),
        'Every node gets the complete list of cut links (it drops what it sends and receives on them);',
        'nodes run with --enable-fault-injection for this (a local dev/test cluster: loopback only).',
        '`restart` and `resume` put a node back into the partition; `stop` and `start` heal it.',
        '',
        'restore FILE: every node gets the same state from FILE (a node started empty could otherwise form a',
        'majority with another empty one and the backup would be lost), under the cluster id the nodes run',
        'with (--cluster-id in --node-args, else "raftkv"). FILE is verified before anything is stopped.',
      ].join('\n'),
    );
  for (const spec of COMMANDS) {
    const cmd = program.command(spec.args ? `${spec.name} ${spec.args}` : spec.name).description(spec.summary);
    cmd.addOption(new Option('--dir <dir>', `the cluster folder (default: ${showPath(DEFAULT_DIR)} in the repository)`));
    for (const opt of spec.options?.() ?? []) cmd.addOption(opt);
    cmd.action(async (...actionArgs: unknown[]) => {
      const self = actionArgs.at(-1) as Command;
      const opts = self.opts<Record<string, unknown>>();
      const positional = actionArgs.slice(0, -2).flat().map(String);
      const dirGiven = typeof opts['dir'] === 'string';
      const dir = dirGiven ? resolve(opts['dir'] as string) : DEFAULT_DIR;
      const ctx: ClusterContext = {
        io,
        dir,
        hint: (command) => `npm run cluster -- ${command}${dirGiven ? ` --dir ${shellQuote(showPath(dir))}` : ''}`,
      };
      await spec.run(ctx, positional, opts, self);
    });
  }
  return program;
}

/** Runs the script with `args` (without node and the script's path); resolves with the exit code. */
export async function run(args: readonly string[], io: ClusterIo): Promise<number> {
  try {
    await buildProgram(io).parseAsync(args as string[], { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version' ? 0 : EXIT_USAGE;
    }
    if (e instanceof ClusterError) {
      io.err(`raftkv-cluster: ${e.message}`);
      for (const line of e.details) io.err(line);
      return e.code === 'INVALID_ARGUMENT' ? EXIT_USAGE : EXIT_ERROR;
    }
    io.err(`raftkv-cluster: internal error: ${(e as Error).stack ?? String(e)}`);
    return EXIT_INTERNAL;
  }
}

/** The process entry (the shim cluster/raftkv-cluster calls it). */
export async function main(argv: readonly string[] = process.argv): Promise<void> {
  // A closed pipe (`npm start | head`) must not kill the script while nodes run: stop writing instead.
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);
  let controller: AbortController | undefined;
  const io: ClusterIo = {
    out: (text) => void process.stdout.write(text + '\n'),
    err: (text) => void process.stderr.write(text + '\n'),
    palette: colourFor(process.stdout),
    trapSignals() {
      if (controller === undefined) {
        const c = (controller = new AbortController());
        for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => c.abort(sig));
      }
      return controller.signal;
    },
  };
  const code = await run(argv.slice(2), io);
  process.exitCode = code;
  // Everything is closed by now and the process ends by itself; should a handle linger, do not hang.
  setTimeout(() => process.exit(code), 2_000).unref();
}
