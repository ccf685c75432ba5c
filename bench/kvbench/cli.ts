// kvbench: a closed-loop load generator for raftkv and etcd (runner.ts). buildProgram() makes the
// commander program over injectable I/O, so tests drive it in-process; main() runs it and returns
// the exit code; bin/kvbench is the shim.
//
// Exit codes: 0 ok; 1 the run failed (target unreachable, every operation failing, preload failed);
// 2 usage error; 130 interrupted (SIGINT/SIGTERM).

import { randomInt } from 'node:crypto';
import { Command, CommanderError, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { DEFAULT_ENDPOINTS } from '../../src/cli/kvctl.js';
import { formatProgress, formatResult } from './report.js';
import { runBench, type BenchResult, type RunOptions } from './runner.js';
import type { TargetSpec } from './targets.js';
import { defaultWorkload, formatMix, KEY_DISTRIBUTIONS, MAX_CLIENTS, MAX_KEY_PREFIX_BYTES, MAX_KEYS, MAX_VALUE_BYTES, parseMix, READ_CONSISTENCIES, validateWorkload, type WorkloadSpec } from './workload.js';
import { processIo } from '../../src/cli/process-io.js';

export const DEFAULT_ETCD_ENDPOINTS: readonly string[] = ['127.0.0.1:2379'];
/** raftkv: the local cluster that `npm start` runs (cluster/, ports 7001-7003). */
export const DEFAULT_RAFTKV_ENDPOINTS: readonly string[] = DEFAULT_ENDPOINTS;

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, INTERRUPTED: 130 } as const;

export interface CliIo {
  readonly stdout: { write(chunk: string): unknown };
  readonly stderr: { write(chunk: string): unknown };
  /** Called once with the exit code when main() ends. */
  readonly exit: (code: number) => void;
  /** Asks to be told of SIGINT/SIGTERM; returns the function that stops asking. Absent: default handling. */
  readonly onInterrupt?: (handler: () => void) => () => void;
  /** For tests: the benchmark to run (runBench by default). */
  readonly runBench?: (target: TargetSpec, workload: WorkloadSpec, opts: RunOptions) => Promise<BenchResult>;
}

/** A usage error found after parsing (exit 2). */
export class UsageError extends Error {}

export interface RunState {
  exitCode: number;
}

interface Flags {
  readonly system: 'raftkv' | 'etcd';
  readonly endpoints?: string[];
  readonly serverPids?: number[];
  readonly label?: string;
  readonly clients: number;
  readonly duration?: number;
  readonly ops?: number;
  readonly warmup: number;
  readonly keys: number;
  readonly keyDist: WorkloadSpec['keyDistribution'];
  readonly zipfTheta: number;
  readonly valueBytes: number;
  readonly mix: WorkloadSpec['mix'];
  readonly consistency: WorkloadSpec['consistency'];
  readonly preload?: boolean;
  readonly seed?: number;
  readonly keyPrefix: string;
  readonly json?: boolean;
  readonly quiet?: boolean;
}

function intArg(name: string, min: number, max: number = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new CommanderArgError(`${name} must be an integer in [${min}, ${max}], got "${v}"`);
    }
    return n;
  };
}

function secondsArg(name: string, min: number) {
  return (v: string): number => {
    const s = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v.trim()) || !(s >= min) || s > 7 * 24 * 3600) throw new CommanderArgError(`${name} must be a number of seconds >= ${min}, got "${v}"`);
    return s;
  };
}

function endpointsArg(v: string): string[] {
  const list = v.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (list.length === 0) throw new CommanderArgError('--endpoints: no endpoint given');
  for (const e of list) if (!/^[^\s:]+:\d{1,5}$/.test(e)) throw new CommanderArgError(`--endpoints: "${e}" is not host:port`);
  return list;
}

function pidsArg(v: string): number[] {
  const list = v.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (list.length === 0) throw new CommanderArgError('--server-pids: no pid given');
  return list.map((p) => {
    const n = Number(p);
    if (!/^\d+$/.test(p) || !Number.isSafeInteger(n) || n < 1) throw new CommanderArgError(`--server-pids: "${p}" is not a process id`);
    return n;
  });
}

function mixArg(v: string): WorkloadSpec['mix'] {
  try {
    return parseMix(v);
  } catch (e) {
    throw new CommanderArgError(`--${(e as Error).message}`);
  }
}

function thetaArg(v: string): number {
  const t = Number(v);
  if (v.trim() === '' || !(t > 0 && t < 1)) throw new CommanderArgError(`--zipf-theta must be a number in (0, 1), got "${v}"`);
  return t;
}

function prefixArg(v: string): string {
  if (Buffer.byteLength(v) > MAX_KEY_PREFIX_BYTES) throw new CommanderArgError(`--key-prefix must be at most ${MAX_KEY_PREFIX_BYTES} bytes`);
  return v;
}

const HELP_EPILOG = `
Each client is a closed loop: it sends its next operation when the previous one returns. All calls
go to the leader (found at start). cas is a conditional write on the key's last-modification index
as the client last saw it (raftkv compareAndSwap expectedModIndex; etcd Txn compare MOD == rev);
keys the client has not seen are expected absent. etcd has no lease reads: --consistency lease is
served linearizable there (reported as consistencyServed).

Output: the result block on stdout (--json: the result as one JSON document); a progress line per
second on stderr unless --quiet. Server CPU per operation needs --server-pids (same machine).

Exit codes: 0 ok, 1 the run failed, 2 usage error, 130 interrupted.

Examples:
  kvbench --clients 32 --duration 30 --mix put=50,get=50 --key-dist zipf
  kvbench --system etcd --endpoints 127.0.0.1:2379 --mix get=90,cas=10 --preload --json`;

export function buildProgram(io: CliIo, state: RunState = { exitCode: EXIT.OK }): Command {
  const program = new Command('kvbench')
    .description('Closed-loop load generator for raftkv and etcd: throughput, latency percentiles, CPU per operation.')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, write) => write(`kvbench: USAGE: ${s.replace(/^error: /, '')}`),
    })
    .showHelpAfterError('(run kvbench --help for usage)')
    .addOption(new Option('--system <name>', 'the system to drive').choices(['raftkv', 'etcd']).default('raftkv'))
    .addOption(new Option('--endpoints <list>', `comma-separated host:port (default: raftkv ${DEFAULT_RAFTKV_ENDPOINTS.join(',')}, etcd ${DEFAULT_ETCD_ENDPOINTS.join(',')})`).argParser(endpointsArg))
    .addOption(new Option('--server-pids <list>', 'comma-separated pids of the server processes, for server CPU per op').argParser(pidsArg))
    .addOption(new Option('--label <text>', 'a name for the report'))
    .addOption(new Option('--clients <n>', 'closed-loop clients').argParser(intArg('--clients', 1, MAX_CLIENTS)).default(16))
    .addOption(new Option('--duration <s>', 'length of the measured window in seconds (default 10)').argParser(secondsArg('--duration', 0.001)).conflicts('ops'))
    .addOption(new Option('--ops <n>', 'operations in the measured window, instead of --duration').argParser(intArg('--ops', 1)))
    .addOption(new Option('--warmup <s>', 'seconds of unrecorded load before the window').argParser(secondsArg('--warmup', 0)).default(1))
    .addOption(new Option('--keys <n>', 'size of the key space').argParser(intArg('--keys', 1, MAX_KEYS)).default(10_000))
    .addOption(new Option('--key-dist <dist>', 'key distribution').choices(KEY_DISTRIBUTIONS).default('uniform'))
    .addOption(new Option('--zipf-theta <theta>', 'zipf skew, in (0, 1)').argParser(thetaArg).default(0.99))
    .addOption(new Option('--value-bytes <n>', 'bytes per value').argParser(intArg('--value-bytes', 0, MAX_VALUE_BYTES)).default(256))
    .addOption(new Option('--mix <weights>', 'operation weights: put, get, cas (e.g. put=50,get=50)').argParser(mixArg).default(parseMix('put=1'), 'put=1'))
    .addOption(new Option('--consistency <level>', 'read consistency').choices(READ_CONSISTENCIES).default('linearizable'))
    .addOption(new Option('--preload', 'put every key once before the run (not measured)'))
    .addOption(new Option('--seed <n>', 'seed of the key and operation choices (default: random, printed)').argParser(intArg('--seed', 0, 0xffff_ffff)))
    .addOption(new Option('--key-prefix <prefix>', 'prefix of every key').argParser(prefixArg).default('kvbench/'))
    .addOption(new Option('--json', 'print only the result, as JSON, on stdout'))
    .addOption(new Option('--quiet', 'no progress on stderr'))
    .addHelpText('after', HELP_EPILOG)
    .action(async (flags: Flags) => {
      const seed = flags.seed ?? randomInt(0, 2 ** 32);
      const workload = validateWorkload(
        defaultWorkload({
          clients: flags.clients,
          ...(flags.ops !== undefined ? { ops: flags.ops } : { durationMs: Math.max(1, Math.round((flags.duration ?? 10) * 1000)) }),
          warmupMs: Math.round(flags.warmup * 1000),
          keys: flags.keys,
          keyDistribution: flags.keyDist,
          zipfTheta: flags.zipfTheta,
          keyPrefix: flags.keyPrefix,
          valueBytes: flags.valueBytes,
          mix: flags.mix,
          consistency: flags.consistency,
          preload: flags.preload === true,
          seed,
        }),
      );
      const target: TargetSpec = {
        system: flags.system,
        endpoints: flags.endpoints ?? [...(flags.system === 'etcd' ? DEFAULT_ETCD_ENDPOINTS : DEFAULT_RAFTKV_ENDPOINTS)],
        ...(flags.serverPids !== undefined ? { serverPids: flags.serverPids } : {}),
        ...(flags.label !== undefined ? { label: flags.label } : {}),
      };
      const say = (s: string): void => {
        if (flags.quiet !== true) io.stderr.write(`${s}\n`);
      };
      const bound = workload.ops !== undefined ? `${workload.ops} ops` : `${(workload.durationMs ?? 0) / 1000} s`;
      say(
        `kvbench: ${target.system} ${target.endpoints.join(',')}: ${workload.clients} clients, ${workload.keys} keys ${workload.keyDistribution}, ` +
          `mix ${formatMix(workload.mix)}, ${bound}, seed ${seed}${workload.preload ? ', preloading' : ''}`,
      );

      const abort = new AbortController();
      let interrupted = false;
      const stopAsking = io.onInterrupt?.(() => {
        interrupted = true;
        abort.abort(new Error('interrupted'));
      });
      try {
        const result = await (io.runBench ?? runBench)(target, workload, {
          signal: abort.signal,
          ...(flags.quiet === true ? {} : { onProgress: (p) => say(formatProgress(p)) }),
        });
        io.stdout.write(flags.json === true ? `${JSON.stringify(result)}\n` : `${formatResult(result)}\n`);
        state.exitCode = EXIT.OK;
      } catch (e) {
        if (interrupted) {
          io.stderr.write('kvbench: interrupted\n');
          state.exitCode = EXIT.INTERRUPTED;
          return;
        }
        throw e;
      } finally {
        stopAsking?.();
      }
    });
  return program;
}

export async function main(argv: readonly string[] = process.argv, ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = {
    ...processIo(),
    ...ioOverrides,
  };
  const state: RunState = { exitCode: EXIT.OK };
  let code: number;
  try {
    await buildProgram(io, state).parseAsync(argv as string[]);
    code = state.exitCode;
  } catch (e) {
    code = reportError(e, io);
  }
  io.exit(code);
  return code;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

function reportError(e: unknown, io: CliIo): number {
  if (e instanceof CommanderError) {
    // Help ends with code 0; commander has already printed any usage error.
    return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (e instanceof UsageError || e instanceof RangeError) {
    io.stderr.write(`kvbench: USAGE: ${oneLine(e.message)}\n`);
    return EXIT.USAGE;
  }
  const code = typeof (e as { code?: unknown })?.code === 'string' ? `${(e as { code: string }).code}: ` : '';
  io.stderr.write(`kvbench: ${code}${oneLine((e as Error)?.message ?? String(e))}\n`);
  return EXIT.FAILED;
}
