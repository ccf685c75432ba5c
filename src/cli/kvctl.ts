// kvctl: the command-line client of raftkv, a thin layer over the client library (src/client/).
// buildProgram() makes the commander program over injectable I/O, so tests drive it in-process with
// captured output; main() runs it and returns the exit code; bin/kvctl is the shim.
//
// Exit codes (also in `kvctl --help`):
//   0  ok
//   1  not found: get of a missing key; cas whose comparison did not hold
//   2  usage error: unknown command or option, missing or malformed argument
//   3  unavailable: no node answered, no leader or no quorum, after the retries the deadline allowed
//   4  invalid argument: the server refused the request (a limit, an empty key, ...)
//   5  timeout: the deadline passed (a write's outcome is then unknown)
//   6  other server error (internal, store, resource exhausted, stale sequence, ...)

import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import {
  DEFAULT_TIMEOUT_MS,
  KvClient,
  KvError,
  type Compare,
  type Consistency,
  type EndpointStatus,
  type KeyRange,
  type KeyValue,
  type NodeStatus,
  type ReadOptions,
} from '../client/index.js';
import {
  cellBytes,
  decodeInput,
  decodeText,
  describeKey,
  EncodingError,
  ENCODINGS,
  headerJson,
  kvJson,
  OUTPUT_MODES,
  stateOf,
  statusJson,
  statusText,
  table,
  textBytes,
  type Encoding,
  type OutputMode,
} from './kvctl-format.js';

/** The local cluster that `npm start` (cluster/) runs. */
export const DEFAULT_ENDPOINTS: readonly string[] = ['127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7003'];
export const ENDPOINTS_ENV = 'RAFTKV_ENDPOINTS';

export const EXIT = {
  OK: 0,
  NOT_FOUND: 1,
  USAGE: 2,
  UNAVAILABLE: 3,
  INVALID_ARGUMENT: 4,
  TIMEOUT: 5,
  SERVER_ERROR: 6,
} as const;

/** Limit: bytes of a value read from stdin or a file. */
export const MAX_INPUT_BYTES = 64 * 1024 * 1024;

export interface CliIo {
  readonly stdout: { write(chunk: string | Uint8Array): unknown; readonly isTTY?: boolean };
  readonly stderr: { write(chunk: string): unknown };
  readonly stdin: AsyncIterable<string | Uint8Array> & { readonly isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Called once with the exit code when main() ends. */
  readonly exit: (code: number) => void;
}

/** A usage error found after parsing (exit 2). */
export class UsageError extends Error {}

/** The result of a run that the actions set. */
export interface RunState {
  exitCode: number;
}

interface GlobalOptions {
  readonly endpoints?: string;
  readonly timeout?: number;
  readonly output: OutputMode;
  readonly encoding: Encoding;
  readonly keyEncoding: Encoding;
}

interface ReadFlags {
  readonly consistency?: Consistency;
  readonly minIndex?: number;
  readonly maxStalenessMs?: number;
}

const HELP_EPILOG = `
Endpoints: --endpoints, else $${ENDPOINTS_ENV}, else ${DEFAULT_ENDPOINTS.join(',')} (the local cluster).
Writes go to the leader (found and followed automatically); each is applied exactly once even if
retried. A value starting with "-" must follow "--": kvctl put KEY -- -5

Values (--encoding) and keys (--key-encoding): raw (default), hex or base64. The encoding applies to
VALUE/KEY arguments, to values read from stdin or --file (raw: the bytes as they are), and to what is
printed. Text output of raw values is the exact bytes, with a newline added only when stdout is a
terminal; hex and base64 end with a newline. range prints KEY<TAB>VALUE per line: use --encoding
base64 (or -o json) when values may hold newlines. Tables show raw bytes that are not printable
UTF-8 as 0x-hex and cut long cells.

JSON output (--output json): one JSON document on stdout.
  get     {"found":true,"key":..,"keyEncoding":..,"value":..,"valueEncoding":..,"createIndex":N,
           "modIndex":N,"version":N,"header":H}   or {"found":false,"key":..,"keyEncoding":..,"header":H}
  put     {"header":H}          del  {"deleted":bool,"header":H}
  cas     {"succeeded":bool,"current":KV|null,"header":H}
  range   {"kvs":[KV,...],"count":N,"more":bool,"header":H}   (H: of the last page; streamed, so an
          error midway leaves it unfinished, with a non-zero exit code)
  status  {"endpoint":..,"nodeId":N,"role":..,"term":N,"leaderId":N,"commitIndex":N,...}
  status --cluster  {"nodes":[{"endpoint":..,"ok":true,...status,"lag":N} | {"endpoint":..,"ok":false,"error":{"code":..,"message":..}}]}
  leader  {"id":N,"address":..,"term":N}
  KV = {"key","keyEncoding","value","valueEncoding","createIndex","modIndex","version"};
  H  = {"index","nodeId","term","leaderId","consistency","stalenessMs"};
  keyEncoding/valueEncoding: "utf8" (raw, valid UTF-8), "base64" (raw otherwise, or asked), "hex".

Errors: one line on stderr, "kvctl: CODE: message (endpoint)".
Exit codes:
  0  ok
  1  not found (get of a missing key), or cas whose comparison did not hold
  2  usage error
  3  unavailable: no node, leader or quorum reachable within the deadline
  4  invalid argument (refused by the server)
  5  timeout (a write's outcome is then unknown)
  6  other server error`;

function intArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new CommanderArgError(`${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
}

export function buildProgram(io: CliIo, state: RunState = { exitCode: 0 }): Command {
  const program = new Command('kvctl')
    .description('Command-line client of raftkv, a Raft-replicated key-value store.')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, write) => write(`kvctl: USAGE: ${s.replace(/^error: /, '')}`),
    })
    .showHelpAfterError('(run kvctl --help for usage)')
    .addOption(new Option('--endpoints <list>', `comma-separated host:port of the nodes (env ${ENDPOINTS_ENV})`))
    .addOption(new Option('--timeout <ms>', `deadline of each call, over all its retries (default ${DEFAULT_TIMEOUT_MS})`).argParser(intArg('--timeout', 1)))
    .addOption(new Option('-o, --output <mode>', 'text, json or table').choices(OUTPUT_MODES).default('text'))
    .addOption(new Option('--encoding <enc>', 'how values are written and printed: raw, hex or base64').choices(ENCODINGS).default('raw'))
    .addOption(new Option('--key-encoding <enc>', 'how keys are written and printed: raw, hex or base64').choices(ENCODINGS).default('raw'))
    .addHelpText('after', HELP_EPILOG);

  const globals = (cmd: Command): GlobalOptions => cmd.optsWithGlobals<GlobalOptions>();

  const withClient = async <T>(cmd: Command, fn: (client: KvClient, g: GlobalOptions) => Promise<T>): Promise<T> => {
    const g = globals(cmd);
    const list = g.endpoints ?? io.env[ENDPOINTS_ENV] ?? DEFAULT_ENDPOINTS.join(',');
    const endpoints = list.split(',').map((e) => e.trim()).filter((e) => e !== '');
    if (endpoints.length === 0) throw new UsageError('--endpoints: no endpoint given');
    for (const e of endpoints) if (!/^.+:\d+$/.test(e)) throw new UsageError(`--endpoints: "${e}" is not host:port`);
    const client = new KvClient({ endpoints, ...(g.timeout !== undefined ? { timeoutMs: g.timeout } : {}) });
    try {
      return await fn(client, g);
    } finally {
      client.close();
    }
  };

  const key = (text: string, g: GlobalOptions, what = 'KEY'): Uint8Array => decodeText(text, g.keyEncoding, what);

  const out = (s: string | Uint8Array): void => {
    io.stdout.write(s);
  };
  const json = (doc: unknown): void => out(`${JSON.stringify(doc)}\n`);
  /** A "not found"-class outcome: exit 1 and one line on stderr. */
  const miss = (code: string, message: string): void => {
    state.exitCode = EXIT.NOT_FOUND;
    io.stderr.write(`kvctl: ${code}: ${message}\n`);
  };

  const readOptions = (flags: ReadFlags): ReadOptions => {
    const staleOnly = flags.minIndex !== undefined || flags.maxStalenessMs !== undefined;
    if (staleOnly && flags.consistency !== undefined && flags.consistency !== 'stale') {
      throw new UsageError('--min-index and --max-staleness-ms apply to --consistency stale only');
    }
    return {
      // --min-index / --max-staleness-ms alone imply a stale read.
      consistency: flags.consistency ?? (staleOnly ? 'stale' : 'linearizable'),
      ...(flags.minIndex !== undefined ? { minIndex: flags.minIndex } : {}),
      ...(flags.maxStalenessMs !== undefined ? { maxStalenessMs: flags.maxStalenessMs } : {}),
    };
  };
  const readFlagOptions = (cmd: Command): Command =>
    cmd
      .addOption(new Option('--consistency <level>', 'linearizable (default), lease or stale').choices(['linearizable', 'lease', 'stale']))
      .addOption(new Option('--min-index <n>', 'stale reads: wait until the node has applied this index').argParser(intArg('--min-index', 0)))
      .addOption(new Option('--max-staleness-ms <ms>', 'stale reads: refuse if the node has not heard from a leader within this time').argParser(intArg('--max-staleness-ms', 0)));

  /** A value from an argument, "-" (stdin), --file, or stdin when absent and stdin is not a terminal. */
  const valueOf = async (arg: string | undefined, file: string | undefined, g: GlobalOptions, what: string): Promise<Uint8Array> => {
    if (file !== undefined) {
      if (arg !== undefined) throw new UsageError(`give ${what} or --file, not both`);
      let bytes: Buffer;
      try {
        bytes = await readFile(file);
      } catch (e) {
        throw new UsageError(`--file ${file}: ${(e as Error).message}`);
      }
      if (bytes.length > MAX_INPUT_BYTES) throw new UsageError(`--file ${file} is over ${MAX_INPUT_BYTES} bytes`);
      return decodeInput(bytes, g.encoding, `the contents of ${file}`);
    }
    if (arg === '-' || (arg === undefined && io.stdin.isTTY !== true)) {
      return decodeInput(await readAll(io.stdin, MAX_INPUT_BYTES), g.encoding, 'stdin');
    }
    if (arg === undefined) throw new UsageError(`${what} is required (or --file, or a value on stdin)`);
    return decodeText(arg, g.encoding, what);
  };

  program
    .command('put')
    .description('set KEY to VALUE (from the argument, --file, or stdin when VALUE is "-" or absent)')
    .argument('<KEY>')
    .argument('[VALUE]')
    .option('--file <path>', 'read the value from this file')
    .action(async (k: string, v: string | undefined, opts: { file?: string }, cmd: Command) =>
      withClient(cmd, async (client, g) => {
        const value = await valueOf(v, opts.file, g, 'VALUE');
        const res = await client.put(key(k, g), value);
        if (g.output === 'json') json({ header: headerJson(res.header) });
        else out('OK\n');
      }),
    );

  readFlagOptions(
    program
      .command('get')
      .description('print the value of KEY (exit 1 if it does not exist)')
      .argument('<KEY>'),
  ).action(async (k: string, flags: ReadFlags, cmd: Command) =>
    withClient(cmd, async (client, g) => {
      const keyBytes = key(k, g);
      const res = await client.get(keyBytes, readOptions(flags));
      const kv = res.kv;
      if (g.output === 'json') {
        if (kv) json({ found: true, ...kvJson(kv, g.keyEncoding, g.encoding), header: headerJson(res.header) });
        else json({ found: false, ...kvJson({ key: keyBytes } as KeyValue, g.keyEncoding, g.encoding, true), header: headerJson(res.header) });
      } else if (kv && g.output === 'table') {
        out(table([['KEY', 'VALUE', 'VERSION', 'CREATE_INDEX', 'MOD_INDEX'], [cellBytes(kv.key, g.keyEncoding), cellBytes(kv.value, g.encoding), String(kv.version), String(kv.createIndex), String(kv.modIndex)]]));
      } else if (kv) {
        out(textBytes(kv.value, g.encoding));
        if (g.encoding !== 'raw' || io.stdout.isTTY === true) out('\n');
      }
      if (!kv) miss('NOT_FOUND', `key ${describeKey(keyBytes, g.keyEncoding)} does not exist (node ${res.header.nodeId}, index ${res.header.index})`);
    }),
  );

  program
    .command('del')
    .alias('delete')
    .description('delete KEY (deleting a missing key succeeds; it prints "not found")')
    .argument('<KEY>')
    .action(async (k: string, _opts: unknown, cmd: Command) =>
      withClient(cmd, async (client, g) => {
        const res = await client.delete(key(k, g));
        if (g.output === 'json') json({ deleted: res.deleted, header: headerJson(res.header) });
        else out(res.deleted ? 'deleted\n' : 'not found\n');
      }),
    );

  readFlagOptions(
    program
      .command('range')
      .alias('scan')
      .description('list keys in order: all, --prefix P, or --from K [--to K) (pages automatically)')
      .option('--prefix <prefix>', 'keys starting with this')
      .option('--from <key>', 'keys from this one (inclusive)')
      .option('--to <key>', 'keys before this one (exclusive)')
      .addOption(new Option('--limit <n>', 'at most this many pairs in all').argParser(intArg('--limit', 1)))
      .option('--keys-only', 'print keys only'),
  ).action(
    async (flags: ReadFlags & { prefix?: string; from?: string; to?: string; limit?: number; keysOnly?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, g) => {
        if (flags.prefix !== undefined && (flags.from !== undefined || flags.to !== undefined)) {
          throw new UsageError('give --prefix or --from/--to, not both');
        }
        const range: KeyRange =
          flags.prefix !== undefined
            ? { prefix: key(flags.prefix, g, '--prefix') }
            : { start: flags.from !== undefined ? key(flags.from, g, '--from') : new Uint8Array(0), ...(flags.to !== undefined ? { end: key(flags.to, g, '--to') } : {}) };
        await printRange(client, range, { ...readOptions(flags), keysOnly: flags.keysOnly ?? false }, flags.limit, g);
      }),
  );

  program
    .command('cas')
    .description('compare-and-swap: set KEY to NEW if it holds EXPECTED (exit 1 if not)')
    .usage('KEY EXPECTED NEW | KEY --create NEW | KEY --mod-index N NEW')
    .argument('<KEY>')
    .argument('<ARGS...>', 'EXPECTED NEW, or NEW with --create / --mod-index ("-" reads it from stdin)')
    .option('--create', 'succeed only if KEY does not exist (create if absent)')
    .addOption(new Option('--mod-index <n>', 'succeed only if KEY was last modified at index N').argParser(intArg('--mod-index', 1)))
    .action(async (k: string, args: string[], opts: { create?: boolean; modIndex?: number }, cmd: Command) =>
      withClient(cmd, async (client, g) => {
        if (opts.create && opts.modIndex !== undefined) throw new UsageError('give --create or --mod-index, not both');
        const byFlag = opts.create === true || opts.modIndex !== undefined;
        const want = byFlag ? 1 : 2;
        if (args.length !== want) {
          throw new UsageError(byFlag ? `cas KEY ${opts.create ? '--create' : '--mod-index N'} NEW takes one value, got ${args.length}` : `cas KEY EXPECTED NEW takes two values, got ${args.length}`);
        }
        if (args.filter((a) => a === '-').length > 1) throw new UsageError('only one of EXPECTED and NEW may be "-" (stdin)');
        let compare: Compare;
        if (opts.create) compare = { expectAbsent: true };
        else if (opts.modIndex !== undefined) compare = { expectedModIndex: opts.modIndex };
        else compare = { expectedValue: await valueOf(args[0], undefined, g, 'EXPECTED') };
        const newValue = await valueOf(args[want - 1], undefined, g, 'NEW');
        const keyBytes = key(k, g);
        const res = await client.compareAndSwap(keyBytes, compare, newValue);
        if (g.output === 'json') {
          json({ succeeded: res.succeeded, current: res.current ? kvJson(res.current, g.keyEncoding, g.encoding) : null, header: headerJson(res.header) });
        } else if (res.succeeded) {
          out('OK\n');
        }
        if (!res.succeeded) {
          const now = res.current ? `it is at mod index ${res.current.modIndex}, version ${res.current.version}` : 'it does not exist';
          miss('COMPARE_FAILED', `key ${describeKey(keyBytes, g.keyEncoding)}: the comparison did not hold; ${now}`);
        }
      }),
    );

  program
    .command('status')
    .description('status of one node (ENDPOINT, else the first that answers), or of every node with --cluster')
    .argument('[ENDPOINT]')
    .option('--cluster', 'every node: role, term, leader, commit and applied index, lag, writable')
    .action(async (endpoint: string | undefined, opts: { cluster?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, g) => {
        if (opts.cluster) {
          if (endpoint !== undefined) throw new UsageError('give ENDPOINT or --cluster, not both');
          const rows = await client.clusterStatus();
          printCluster(rows, g);
          if (rows.every((r) => r.error !== undefined)) {
            const first = rows[0]!.error!;
            throw first;
          }
          return;
        }
        const s = await client.status(endpoint);
        if (g.output === 'json') json(statusJson(s));
        else if (g.output === 'table') printCluster([{ endpoint: s.endpoint, status: s }], g);
        else out(statusText(s));
      }),
    );

  program
    .command('leader')
    .description('print the current leader (id, address, term)')
    .action(async (_opts: unknown, cmd: Command) =>
      withClient(cmd, async (client, g) => {
        const l = await client.leader();
        if (g.output === 'json') json({ id: l.id, address: l.address, term: l.term });
        else if (g.output === 'table') out(table([['ID', 'ADDRESS', 'TERM'], [String(l.id), l.address, String(l.term)]]));
        else out(`${l.id} ${l.address} term ${l.term}\n`);
      }),
    );

  /** Streams text and JSON page by page; a table needs every row first. */
  const printRange = async (
    client: KvClient,
    range: KeyRange,
    opts: ReadOptions & { keysOnly: boolean },
    limit: number | undefined,
    g: GlobalOptions,
  ): Promise<void> => {
    const rows: string[][] = [opts.keysOnly ? ['KEY'] : ['KEY', 'VALUE', 'VERSION', 'MOD_INDEX']];
    let count = 0;
    let more = false;
    let header: ReturnType<typeof headerJson> | undefined;
    if (g.output === 'json') out('{"kvs":[');
    // Pages of the server's size; --limit cuts the last one here (the server's page limit may be
    // below --limit, so it is not passed as the page size).
    for await (const page of client.rangePages(range, opts)) {
      header = headerJson(page.header);
      let kvs = page.kvs;
      if (limit !== undefined && count + kvs.length >= limit) {
        more = page.more || count + kvs.length > limit;
        kvs = kvs.slice(0, limit - count);
      } else {
        more = page.more;
      }
      for (const kv of kvs) {
        if (g.output === 'json') out(`${count > 0 ? ',' : ''}${JSON.stringify(kvJson(kv, g.keyEncoding, g.encoding, opts.keysOnly))}`);
        else if (g.output === 'table') rows.push(opts.keysOnly ? [cellBytes(kv.key, g.keyEncoding)] : [cellBytes(kv.key, g.keyEncoding), cellBytes(kv.value, g.encoding), String(kv.version), String(kv.modIndex)]);
        else {
          out(textBytes(kv.key, g.keyEncoding));
          if (!opts.keysOnly) {
            out('\t');
            out(textBytes(kv.value, g.encoding));
          }
          out('\n');
        }
        count++;
      }
      if (limit !== undefined && count >= limit) break;
    }
    if (g.output === 'json') out(`],"count":${count},"more":${more},"header":${JSON.stringify(header ?? null)}}\n`);
    else if (g.output === 'table') out(table(rows));
  };

  const printCluster = (rows: readonly EndpointStatus[], g: GlobalOptions): void => {
    const ok = rows.flatMap((r) => (r.status ? [r.status] : []));
    const leader = ok.find((s) => s.role === 'leader');
    const lagOf = (s: NodeStatus): number => Math.max(0, (leader ? leader.lastIndex : s.commitIndex) - s.appliedIndex);
    if (g.output === 'json') {
      json({
        nodes: rows.map((r) =>
          r.status
            ? { ok: true, ...statusJson(r.status), lag: lagOf(r.status) }
            : { endpoint: r.endpoint, ok: false, error: { code: r.error.code, message: r.error.message } },
        ),
      });
      return;
    }
    const body = rows.map((r) => {
      const s = r.status;
      if (!s) return ['-', r.endpoint, '-', '-', '-', '-', '-', '-', `unreachable: ${r.error.code}: ${r.error.message}`];
      return [String(s.nodeId), s.endpoint, s.role, String(s.term), s.leaderId === 0 ? '-' : String(s.leaderId), String(s.commitIndex), String(s.appliedIndex), String(lagOf(s)), stateOf(s)];
    });
    out(table([['ID', 'ADDRESS', 'ROLE', 'TERM', 'LEADER', 'COMMIT', 'APPLIED', 'LAG', 'STATE'], ...body]));
  };

  return program;
}

async function readAll(stream: AsyncIterable<string | Uint8Array>, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk);
    total += b.length;
    if (total > maxBytes) throw new UsageError(`stdin is over ${maxBytes} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** The exit code of a KvError. */
export function exitCodeOf(e: KvError): number {
  switch (e.code) {
    case 'NOT_LEADER':
    case 'NO_QUORUM':
    case 'UNAVAILABLE':
    case 'TOO_STALE':
      return EXIT.UNAVAILABLE;
    case 'INVALID_ARGUMENT':
      return EXIT.INVALID_ARGUMENT;
    case 'TIMEOUT':
      return EXIT.TIMEOUT;
    default:
      return EXIT.SERVER_ERROR;
  }
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** Runs kvctl with `argv` (as process.argv: node, script, args...); returns the exit code, also passed to io.exit. */
export async function main(argv: readonly string[] = process.argv, ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    // Not process.exit(): that could cut off output still being written to a pipe.
    exit: (code) => {
      process.exitCode = code;
    },
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

function reportError(e: unknown, io: CliIo): number {
  if (e instanceof CommanderError) {
    // Help and version end with code 0; commander has already printed any usage error.
    return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (e instanceof UsageError || e instanceof EncodingError || e instanceof RangeError) {
    io.stderr.write(`kvctl: USAGE: ${oneLine(e.message)}\n`);
    return EXIT.USAGE;
  }
  if (e instanceof KvError) {
    io.stderr.write(`kvctl: ${e.code}: ${oneLine(e.message)}${e.endpoint ? ` (${e.endpoint})` : ''}\n`);
    return exitCodeOf(e);
  }
  io.stderr.write(`kvctl: INTERNAL: ${oneLine((e as Error)?.message ?? String(e))}\n`);
  return EXIT.SERVER_ERROR;
}
