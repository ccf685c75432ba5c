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
//   7  a snapshot file or data directory: corrupt, unreadable, exists, not empty (kvctl snapshot)
//   130 interrupted (SIGINT/SIGTERM) while saving a snapshot; nothing was saved

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
  type SnapshotDownload,
} from '../client/index.js';
import {
  cellBytes,
  decodeInput,
  decodeText,
  describeKey,
  EncodingError,
  ENCODINGS,
  fieldLines,
  formatBytes,
  headerJson,
  kvJson,
  OUTPUT_MODES,
  progressLine,
  stateOf,
  statusJson,
  statusText,
  table,
  textBytes,
  type Encoding,
  type OutputMode,
} from './kvctl-format.js';
import { restoreSnapshotFile, SnapshotFileError, SnapshotFileWriter, verifySnapshotFile, type SnapshotFileSummary } from './snapshot-files.js';
import { processIo } from './process-io.js';

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
  SNAPSHOT_FILE: 7,
  INTERRUPTED: 130,
} as const;

/** Limit: bytes of a value read from stdin or a file. */
export const MAX_INPUT_BYTES = 64 * 1024 * 1024;

export interface CliIo {
  readonly stdout: { write(chunk: string | Uint8Array): unknown; readonly isTTY?: boolean };
  /** A terminal (isTTY) gets the progress bar of `snapshot save`. */
  readonly stderr: { write(chunk: string): unknown; readonly isTTY?: boolean };
  readonly stdin: AsyncIterable<string | Uint8Array> & { readonly isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Called once with the exit code when main() ends. */
  readonly exit: (code: number) => void;
  /**
   * Asks to be told of SIGINT/SIGTERM instead of dying of it (only `snapshot save` asks, to remove
   * its partial file); returns the function that stops asking. Absent: signals keep their default.
   */
  readonly onInterrupt?: (handler: () => void) => () => void;
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
  snapshot create   {"endpoint":..,"nodeId":N,"index":N,"term":N,"logStartIndex":N,"entriesCompacted":N,"durationMs":N}
  snapshot save     {"file":..,"endpoint":..,"index":N,"term":N,"clusterId":..,"keys":N,"sessions":N,"bytes":N,"sha256":..}
  snapshot status   {"file":..,"index":N,"term":N,"clusterId":..,"keys":N,"sessions":N,"bytes":N,"sha256":..}
  snapshot restore  {"file":..,"dataDir":..,"clusterId":..,"nodeId":N,"index":N,"term":N,"fromClusterId":..,
                     "keys":N,"sessions":N,"bytes":N,"sha256":..}
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
  6  other server error
  7  snapshot file or data directory: corrupt or truncated, unreadable, exists (no --force), not empty
  130  interrupted while saving a snapshot (nothing was saved)`;

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

  /** The endpoints from --endpoints, else $RAFTKV_ENDPOINTS, else the local cluster. */
  const endpointList = (g: GlobalOptions): string[] => {
    const list = g.endpoints ?? io.env[ENDPOINTS_ENV] ?? DEFAULT_ENDPOINTS.join(',');
    const endpoints = list.split(',').map((e) => e.trim()).filter((e) => e !== '');
    if (endpoints.length === 0) throw new UsageError('--endpoints: no endpoint given');
    for (const e of endpoints) if (!/^.+:\d+$/.test(e)) throw new UsageError(`--endpoints: "${e}" is not host:port`);
    return endpoints;
  };

  /** A client of `only` if given, else of the endpoint list. */
  const withClient = async <T>(cmd: Command, fn: (client: KvClient, g: GlobalOptions) => Promise<T>, only?: string): Promise<T> => {
    const g = globals(cmd);
    const endpoints = only !== undefined ? [only] : endpointList(g);
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

  // ---- snapshot -------------------------------------------------------------------------------

  const snapshot = program
    .command('snapshot')
    .description('snapshots of one node: create, save to a file, verify a file (status), restore a data directory')
    .addHelpText(
      'after',
      `
A node's snapshot is its state machine as stored (KV data, client sessions, applied index). create and
save ask ONE node: --endpoint HOST:PORT, or a single endpoint in --endpoints / $${ENDPOINTS_ENV}.
status and restore work offline, on a file.

save writes FILE.part while it checks every byte of the stream (format, record count, SHA-256 in the
trailer), then fsyncs it and renames it to FILE: FILE appears only whole and verified. On any failure
(a broken or corrupt stream, Ctrl-C) FILE.part is removed and kvctl exits non-zero. --timeout is how
long it waits for data (for the first chunk, and for each next one), not a bound on the transfer.

restore creates a new data directory (missing or empty) for one node from a file. To start a cluster
from a backup, restore EVERY node of the new cluster from the SAME file, then start them all: the nodes
must begin with identical state (a node started empty could otherwise form a majority with another
empty one, and the backup's data would be lost).`,
    );

  /** The one node a snapshot command asks: --endpoint, else the only endpoint given. */
  const oneEndpoint = (given: string | undefined, g: GlobalOptions, what: string): string => {
    if (given !== undefined) {
      if (!/^.+:\d+$/.test(given.trim())) throw new UsageError(`--endpoint: "${given}" is not host:port`);
      return given.trim();
    }
    const list = endpointList(g);
    if (list.length === 1) return list[0]!;
    throw new UsageError(`${what} asks one node: give --endpoint HOST:PORT (the endpoints are ${list.join(',')})`);
  };

  snapshot
    .command('create')
    .description('ask the node at --endpoint to take a snapshot now and compact its log')
    .option('--endpoint <host:port>', 'the node (else the only endpoint of --endpoints)')
    .action(async (opts: { endpoint?: string }, cmd: Command) => {
      const endpoint = oneEndpoint(opts.endpoint, globals(cmd), 'snapshot create');
      await withClient(
        cmd,
        async (client, g) => {
          const r = await client.createSnapshot({ endpoint });
          if (g.output === 'json') {
            json({ endpoint: r.endpoint, nodeId: r.nodeId, index: r.index, term: r.term, logStartIndex: r.logStartIndex, entriesCompacted: r.entriesCompacted, durationMs: r.durationMs });
          } else if (g.output === 'table') {
            out(table([['NODE', 'ENDPOINT', 'INDEX', 'TERM', 'LOG_START', 'COMPACTED', 'DURATION_MS'], [String(r.nodeId), r.endpoint, String(r.index), String(r.term), String(r.logStartIndex), String(r.entriesCompacted), String(r.durationMs)]]));
          } else {
            out(`snapshot taken on node ${r.nodeId} (${r.endpoint})\n`);
            out(
              fieldLines([
                ['index', String(r.index)],
                ['term', String(r.term)],
                ['log start', `${r.logStartIndex} (entries up to it are compacted)`],
                ['entries compacted', String(r.entriesCompacted)],
                ['duration', `${r.durationMs} ms`],
              ]),
            );
          }
        },
        endpoint,
      );
    });

  snapshot
    .command('save')
    .description('stream a snapshot from the node at --endpoint to FILE, verified (FILE.part until then)')
    .argument('<FILE>')
    .option('--endpoint <host:port>', 'the node (else the only endpoint of --endpoints)')
    .option('--force', 'replace FILE if it exists')
    .option('-q, --quiet', 'no progress bar')
    .addOption(new Option('--chunk-bytes <n>', 'bytes per chunk (default: the node\'s, 256 KiB)').argParser(intArg('--chunk-bytes', 1)))
    .action(async (file: string, opts: { endpoint?: string; force?: boolean; quiet?: boolean; chunkBytes?: number }, cmd: Command) => {
      const g = globals(cmd);
      const endpoint = oneEndpoint(opts.endpoint, g, 'snapshot save');
      const writer = await SnapshotFileWriter.create(file, { force: opts.force === true });
      let download: SnapshotDownload | undefined;
      let active: KvClient | undefined;
      let interrupted = false;
      const stopAsking = io.onInterrupt?.(() => {
        interrupted = true;
        // Also while waiting for the first chunk: closing the client ends that wait.
        download?.cancel();
        active?.close();
      });
      const progress = opts.quiet !== true && io.stderr.isTTY === true ? new Progress(io.stderr) : undefined;
      let summary: SnapshotFileSummary;
      try {
        summary = await withClient(
          cmd,
          async (client) => {
            active = client;
            if (interrupted) client.close();
            download = await client.saveSnapshot({ endpoint, ...(g.timeout !== undefined ? { idleTimeoutMs: g.timeout } : {}), ...(opts.chunkBytes !== undefined ? { chunkBytes: opts.chunkBytes } : {}) });
            progress?.start(download.approximateBytes);
            for await (const chunk of download) {
              await writer.write(chunk);
              progress?.update(writer.bytes);
            }
            return writer.commit({ index: download.index, term: download.term });
          },
          endpoint,
        );
      } catch (e) {
        progress?.clear();
        await writer.abort();
        const notSaved = `${file} not written`;
        if (interrupted) throw new SnapshotFileError('INTERRUPTED', `interrupted after ${formatBytes(writer.bytes)}; ${notSaved}`);
        if (e instanceof SnapshotFileError && e.code === 'SNAPSHOT_CORRUPT') {
          throw new SnapshotFileError(e.code, `the snapshot from ${endpoint} failed verification after ${formatBytes(writer.bytes)} (${e.detail}); ${notSaved}`, { cause: e });
        }
        if (e instanceof KvError && e.code !== 'CLOSED') {
          const when = download === undefined ? 'could not start' : `failed after ${formatBytes(writer.bytes)}`;
          throw new KvError(e.code, `the snapshot transfer ${when} (${e.message}); ${notSaved}`, { endpoint: e.endpoint ?? endpoint, grpcCode: e.grpcCode, nodeId: e.nodeId, cause: e });
        }
        throw e;
      } finally {
        stopAsking?.();
      }
      progress?.clear();
      if (g.output === 'json') {
        json({ file, endpoint, ...summaryJson(summary) });
      } else if (g.output === 'table') {
        out(summaryTable(file, summary));
      } else {
        out(`saved a snapshot of ${endpoint} to ${file}\n`);
        out(summaryText(summary));
      }
    });

  snapshot
    .command('status')
    .description('verify a snapshot FILE offline: index, term, cluster of origin, records, size, sha256')
    .argument('<FILE>')
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const summary = await verifySnapshotFile(file);
      if (g.output === 'json') json({ file, ...summaryJson(summary) });
      else if (g.output === 'table') out(summaryTable(file, summary));
      else out(summaryText(summary, [['file', file]]));
    });

  snapshot
    .command('restore')
    .description('create the data directory of one node from a snapshot FILE (offline; DIR missing or empty)')
    .argument('<FILE>')
    .requiredOption('--data-dir <dir>', 'the new data directory (must be missing or empty)')
    .addOption(new Option('--node-id <n>', 'the node it is for (kvnode --id)').argParser(intArg('--node-id', 1)).makeOptionMandatory())
    .addOption(new Option('--cluster-id <id>', 'the cluster it is for (kvnode --cluster-id)').default('raftkv'))
    .action(async (file: string, opts: { dataDir: string; nodeId: number; clusterId: string }, cmd: Command) => {
      const g = globals(cmd);
      if (opts.clusterId === '') throw new UsageError('--cluster-id must not be empty');
      const summary = await restoreSnapshotFile(file, opts.dataDir, { clusterId: opts.clusterId, nodeId: opts.nodeId });
      const s = summaryJson(summary);
      if (g.output === 'json') {
        json({ file, dataDir: opts.dataDir, clusterId: opts.clusterId, nodeId: opts.nodeId, index: s.index, term: s.term, fromClusterId: s.clusterId, keys: s.keys, sessions: s.sessions, bytes: s.bytes, sha256: s.sha256 });
        return;
      }
      out(`restored ${file} into ${opts.dataDir}, for node ${opts.nodeId} of cluster ${JSON.stringify(opts.clusterId)}\n`);
      out(summaryText(summary));
      out(
        `Restore every node of the new cluster from this same file, then start them, e.g.\n` +
          `  kvnode --id ${opts.nodeId} --cluster-id ${opts.clusterId} --data-dir ${opts.dataDir} --members ...\n`,
      );
    });

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

function summaryJson(s: SnapshotFileSummary): { index: number; term: number; clusterId: string; keys: number; sessions: number; bytes: number; sha256: string } {
  return { index: s.header.index, term: s.header.term, clusterId: s.header.clusterId, keys: s.keys, sessions: s.sessions, bytes: s.bytes, sha256: s.sha256 };
}

function summaryText(s: SnapshotFileSummary, first: ReadonlyArray<readonly [string, string]> = []): string {
  return fieldLines([
    ...first,
    ['index', String(s.header.index)],
    ['term', String(s.header.term)],
    ['cluster', `${JSON.stringify(s.header.clusterId)} (where the snapshot was taken)`],
    ['keys', String(s.keys)],
    ['sessions', String(s.sessions)],
    ['bytes', `${s.bytes} (${formatBytes(s.bytes)})`],
    ['sha256', s.sha256],
  ]);
}

function summaryTable(file: string, s: SnapshotFileSummary): string {
  return table([
    ['FILE', 'INDEX', 'TERM', 'CLUSTER', 'KEYS', 'SESSIONS', 'BYTES', 'SHA256'],
    [file, String(s.header.index), String(s.header.term), s.header.clusterId, String(s.keys), String(s.sessions), String(s.bytes), s.sha256],
  ]);
}

/** Minimum time between two redraws of the progress bar. */
const PROGRESS_REDRAW_MS = 100;

/** A one-line progress bar on a terminal, redrawn in place (\r) at most every PROGRESS_REDRAW_MS. */
class Progress {
  private total = 0;
  private startMs = 0;
  private lastDrawMs = Number.NEGATIVE_INFINITY;
  private drawn = false;

  constructor(private readonly tty: { write(chunk: string): unknown }) {}

  start(approximateTotal: number): void {
    this.total = approximateTotal;
    this.startMs = Date.now();
    this.update(0);
  }

  update(bytes: number): void {
    const now = Date.now();
    if (now - this.lastDrawMs < PROGRESS_REDRAW_MS) return;
    this.lastDrawMs = now;
    const seconds = Math.max(0.001, (now - this.startMs) / 1000);
    this.tty.write(`\r${progressLine(bytes, this.total, bytes / seconds)}\u001b[K`);
    this.drawn = true;
  }

  /** Erases the bar, so that what follows starts on a clean line. */
  clear(): void {
    if (this.drawn) this.tty.write('\r\u001b[K');
    this.drawn = false;
  }
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
    ...processIo(),
    stdin: process.stdin,
    env: process.env,
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
  if (e instanceof SnapshotFileError) {
    io.stderr.write(`kvctl: ${e.code}: ${oneLine(e.message)}\n`);
    return e.code === 'INTERRUPTED' ? EXIT.INTERRUPTED : EXIT.SNAPSHOT_FILE;
  }
  io.stderr.write(`kvctl: INTERNAL: ${oneLine((e as Error)?.message ?? String(e))}\n`);
  return EXIT.SERVER_ERROR;
}
