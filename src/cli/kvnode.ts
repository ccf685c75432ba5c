// kvnode: runs one raftkv node. Flags, or a JSON config file with the same options in camelCase
// (flags win). `kvnode --help` lists every option.

import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { RaftKvError } from '../errors.js';
import { DEFAULT_NODE_CONFIG, KvNode, type KvNodeConfig } from '../node/kv-node.js';
import type { LogLevel } from '../node/logger.js';
import { DEFAULT_CACHE_BYTES } from '../kv/state-machine.js';
import { DEFAULT_APPLY_DEFER_MS, DEFAULT_COMMIT_DEFER_MS, MAX_APPLY_DEFER_MS, MAX_COMMIT_DEFER_MS } from '../node/raft-runtime.js';
import { DEFAULT_SNAPSHOT_CHUNK_BYTES } from '../node/snapshot-transfers.js';
import { DEFAULT_READS_PER_TURN, MAX_READS_PER_TURN } from '../node/read-pacer.js';
import { parseHostPort } from '../transport/node-listener.js';
import { MAX_CLUSTER_ID_BYTES, MAX_WIRE_NODE_ID } from '../transport/peer-wire.js';

function int(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got "${v}"`);
    if (n > max) throw new InvalidArgumentError(`${name} must be <= ${max}, got "${v}"`);
    return n;
  };
}

function ratio(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`--max-clock-drift must be a number >= 0, got "${v}"`);
  return n;
}

/** "1=127.0.0.1:7001,2=127.0.0.1:7002" → Map. */
export function parseMembers(s: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)=(.+:\d+)$/.exec(part);
    if (!m) throw new InvalidArgumentError(`member "${part}" is not ID=HOST:PORT`);
    const id = Number(m[1]);
    if (!Number.isSafeInteger(id) || id < 1 || id > MAX_WIRE_NODE_ID) {
      throw new InvalidArgumentError(`member id in "${part}" must be an integer from 1 to ${MAX_WIRE_NODE_ID} (limit MAX_WIRE_NODE_ID)`);
    }
    try {
      parseHostPort(m[2]!);
    } catch {
      throw new InvalidArgumentError(`member "${part}": ${JSON.stringify(m[2])} is not HOST:PORT (an IPv6 host in brackets, a port up to 65535)`);
    }
    if (out.has(id)) throw new InvalidArgumentError(`member id ${id} appears twice`);
    out.set(id, m[2]!);
  }
  if (out.size === 0) throw new InvalidArgumentError('members: at least one member is required');
  return out;
}

export function buildProgram(): Command {
  const d = DEFAULT_NODE_CONFIG;
  const l = d.limits;
  return new Command('kvnode')
    .description('Run one raftkv node. Clients and peers share the node\'s one address.')
    .addOption(new Option('--config <file>', 'JSON file with any of these options in camelCase (flags override it)'))
    .addOption(new Option('--id <n>', 'this node\'s id (a member id)').argParser(int('--id', 1)))
    .addOption(new Option('--members <list>', 'every member as ID=HOST:PORT, comma-separated, this node included'))
    .addOption(new Option('--cluster-id <name>', 'cluster name; a data directory of another cluster is refused').default('raftkv'))
    .addOption(new Option('--data-dir <dir>', 'where this node keeps its LevelDB'))
    .addOption(new Option('--listen <host:port>', 'address to bind (default: this node\'s member address)'))
    .addOption(new Option('--tick-ms <n>', 'length of one Raft tick').argParser(int('--tick-ms', 1)).default(d.tickMs))
    .addOption(new Option('--election-timeout-ticks <n>', 'minimum election timeout, in ticks (randomized up to twice that)').argParser(int('--election-timeout-ticks', 2)).default(d.electionTimeoutTicks))
    .addOption(new Option('--heartbeat-ticks <n>', 'heartbeat interval, in ticks').argParser(int('--heartbeat-ticks', 1)).default(d.heartbeatIntervalTicks))
    .addOption(new Option('--max-clock-drift <ratio>', 'assumed bound on clock-rate difference between nodes; sets the leader lease (1 disables LEASE reads)').argParser(ratio).default(d.maxClockDrift))
    .addOption(new Option('--max-key-bytes <n>', 'limit: bytes in a key').argParser(int('--max-key-bytes', 1)).default(l.maxKeyBytes))
    .addOption(new Option('--max-value-bytes <n>', 'limit: bytes in a value').argParser(int('--max-value-bytes', 0)).default(l.maxValueBytes))
    .addOption(new Option('--max-range-page <n>', 'limit: pairs in one Range page').argParser(int('--max-range-page', 1)).default(l.maxRangePageSize))
    .addOption(new Option('--max-client-id-bytes <n>', 'limit: bytes in a session client id').argParser(int('--max-client-id-bytes', 1)).default(l.maxClientIdBytes))
    .addOption(new Option('--max-pending-proposals <n>', 'limit: writes in progress on this node').argParser(int('--max-pending-proposals', 1)).default(d.maxPendingProposals))
    .addOption(new Option('--max-pending-reads <n>', 'limit: reads in progress on this node (waiting for a read index, the applied index, or their turn)').argParser(int('--max-pending-reads', 1)).default(d.maxPendingReads))
    .addOption(
      new Option('--reads-per-turn <n>', 'reads served per turn of the event loop once their wait is over; the rest wait for the next turns (0: all at once)')
        .argParser(int('--reads-per-turn', 0, MAX_READS_PER_TURN))
        .default(DEFAULT_READS_PER_TURN),
    )
    .addOption(new Option('--cache-bytes <n>', 'limit: bytes of key records cached in memory for reads and writes (0: no cache)').argParser(int('--cache-bytes', 0)).default(DEFAULT_CACHE_BYTES))
    .addOption(
      new Option('--apply-defer-ms <n>', 'longest wait of an apply for the next synced write (0: never wait)')
        .argParser(int('--apply-defer-ms', 0, MAX_APPLY_DEFER_MS))
        .default(DEFAULT_APPLY_DEFER_MS),
    )
    .addOption(
      new Option('--commit-defer-ms <n>', "longest a leader holds a new commit index back to send it with a follower's next entries (0: at once)")
        .argParser(int('--commit-defer-ms', 0, MAX_COMMIT_DEFER_MS))
        .default(DEFAULT_COMMIT_DEFER_MS),
    )
    .addOption(new Option('--max-message-bytes <n>', 'limit: bytes in one gRPC message or peer frame').argParser(int('--max-message-bytes', 4096)).default(d.maxMessageBytes))
    .addOption(new Option('--max-uncommitted-bytes <n>', 'limit: proposed, uncommitted bytes on the leader').argParser(int('--max-uncommitted-bytes', 1)).default(d.maxUncommittedBytes))
    .addOption(new Option('--max-inflight-messages <n>', 'limit: appends in flight to one follower').argParser(int('--max-inflight-messages', 1)).default(d.maxInflightMessages))
    .addOption(new Option('--default-timeout-ms <n>', 'deadline for requests that come without one').argParser(int('--default-timeout-ms', 1)).default(d.defaultTimeoutMs))
    .addOption(new Option('--snapshot-entries <n>', 'take a snapshot and compact the log after this many applied entries (0: not by count)').argParser(int('--snapshot-entries', 0)).default(d.snapshotEntries))
    .addOption(new Option('--snapshot-bytes <n>', 'take a snapshot after this many bytes of applied entries (0: not by size)').argParser(int('--snapshot-bytes', 0)).default(d.snapshotBytes))
    .addOption(new Option('--compaction-margin-entries <n>', 'applied entries kept in the log behind a snapshot, for followers that lag a little').argParser(int('--compaction-margin-entries', 0)).default(d.compactionMarginEntries))
    .addOption(new Option('--snapshot-chunk-bytes <n>', `limit: bytes per chunk of a snapshot transfer, a few in flight (default ${DEFAULT_SNAPSHOT_CHUNK_BYTES}, less if --max-message-bytes needs)`).argParser(int('--snapshot-chunk-bytes', 1024)))
    .addOption(new Option('--keep-http2-stream-maps', "leave Node's Map as each HTTP/2 session's stream table (replaced by default: far less GC under load)"))
    .addOption(new Option('--grpcjs-kv-calls', "serve KV calls through grpc-js's own call handling instead of the unary fast path (an escape hatch)"))
    .addOption(new Option('--enable-fault-injection', 'test only: serve the FaultInjection service that cuts peer links (cluster partition/heal)'))
    .addOption(new Option('--log-level <level>', 'debug, info, warn or error').choices(['debug', 'info', 'warn', 'error']).default(d.logLevel));
}

/** Merges flags over the config file into a validated node config. */
export function resolveConfig(program: Command): KvNodeConfig {
  const flags = program.opts<Record<string, unknown>>();
  let file: Record<string, unknown> = {};
  if (typeof flags['config'] === 'string') {
    try {
      file = JSON.parse(readFileSync(flags['config'], 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new InvalidArgumentError(`--config ${flags['config']}: ${(e as Error).message}`);
    }
  }
  const pick = <T>(name: string): T | undefined => {
    const src = program.getOptionValueSource(name);
    if (src === 'cli' || file[name] === undefined) return flags[name] as T | undefined;
    return file[name] as T;
  };
  const id = pick<number>('id');
  const membersRaw = pick<string | Record<string, string>>('members');
  const dataDir = pick<string>('dataDir');
  if (id === undefined) throw new InvalidArgumentError('--id is required');
  if (membersRaw === undefined) throw new InvalidArgumentError('--members is required');
  if (dataDir === undefined) throw new InvalidArgumentError('--data-dir is required');
  const members =
    typeof membersRaw === 'string'
      ? parseMembers(membersRaw)
      : parseMembers(Object.entries(membersRaw).map(([k, v]) => `${k}=${v}`).join(','));
  if (!members.has(id)) throw new InvalidArgumentError(`--id ${id} is not among --members`);
  const electionTimeoutTicks = pick<number>('electionTimeoutTicks')!;
  const heartbeatIntervalTicks = pick<number>('heartbeatTicks')!;
  if (heartbeatIntervalTicks >= electionTimeoutTicks) {
    throw new InvalidArgumentError('--heartbeat-ticks must be smaller than --election-timeout-ticks');
  }
  const listen = pick<string>('listen');
  if (listen !== undefined) {
    try {
      parseHostPort(listen);
    } catch {
      throw new InvalidArgumentError(`--listen ${JSON.stringify(listen)} is not HOST:PORT (an IPv6 host in brackets, a port up to 65535)`);
    }
  }
  const clusterId = pick<string>('clusterId')!;
  if (clusterId.length === 0 || Buffer.byteLength(clusterId) > MAX_CLUSTER_ID_BYTES) {
    throw new InvalidArgumentError(`--cluster-id must be 1 to ${MAX_CLUSTER_ID_BYTES} bytes (limit MAX_CLUSTER_ID_BYTES)`);
  }
  return {
    nodeId: id,
    clusterId,
    members,
    ...(listen ? { listen } : {}),
    dataDir,
    tickMs: pick<number>('tickMs')!,
    electionTimeoutTicks,
    heartbeatIntervalTicks,
    maxClockDrift: pick<number>('maxClockDrift')!,
    limits: {
      maxKeyBytes: pick<number>('maxKeyBytes')!,
      maxValueBytes: pick<number>('maxValueBytes')!,
      maxRangePageSize: pick<number>('maxRangePage')!,
      maxClientIdBytes: pick<number>('maxClientIdBytes')!,
    },
    maxPendingProposals: pick<number>('maxPendingProposals')!,
    maxPendingReads: pick<number>('maxPendingReads')!,
    readsPerTurn: pick<number>('readsPerTurn')!,
    maxMessageBytes: pick<number>('maxMessageBytes')!,
    cacheBytes: pick<number>('cacheBytes')!,
    applyDeferMs: pick<number>('applyDeferMs')!,
    commitDeferMs: pick<number>('commitDeferMs')!,
    maxUncommittedBytes: pick<number>('maxUncommittedBytes')!,
    maxInflightMessages: pick<number>('maxInflightMessages')!,
    defaultTimeoutMs: pick<number>('defaultTimeoutMs')!,
    snapshotEntries: pick<number>('snapshotEntries')!,
    snapshotBytes: pick<number>('snapshotBytes')!,
    compactionMarginEntries: pick<number>('compactionMarginEntries')!,
    ...(pick<number>('snapshotChunkBytes') !== undefined ? { snapshotChunkBytes: pick<number>('snapshotChunkBytes')! } : {}),
    logLevel: pick<LogLevel>('logLevel')!,
    faultInjection: pick<boolean>('enableFaultInjection') === true,
    keepHttp2StreamMaps: pick<boolean>('keepHttp2StreamMaps') === true,
    grpcjsKvCalls: pick<boolean>('grpcjsKvCalls') === true,
  };
}

export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram();
  let config: KvNodeConfig;
  try {
    program.parse(argv as string[]);
    config = resolveConfig(program);
  } catch (e) {
    process.stderr.write(`kvnode: ${(e as Error).message}\n`);
    process.exit(64);
  }
  if (config.electionTimeoutTicks * config.tickMs < 200) {
    process.stderr.write('kvnode: warning: an election timeout under 200 ms may cause needless elections\n');
  }
  let node: KvNode;
  try {
    node = new KvNode(config);
  } catch (e) {
    process.stderr.write(`kvnode: ${(e as Error).message}\n`);
    process.exit(64);
  }
  const started = node.start();
  // The signal handlers go in now, not once start() is done: start() logs "started", which
  // supervisors and tests take to mean ready, and a SIGTERM right after that line must stop the node
  // cleanly, not kill it by the default action.
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    node.log.info('stopping', { signal });
    // A signal during start: close once start has finished. If start fails, the catch below reports it.
    started.then(
      () =>
        node.close().then(
          () => process.exit(0),
          (e: unknown) => {
            process.stderr.write(`kvnode: error while stopping: ${(e as Error).message}\n`);
            process.exit(1);
          },
        ),
      () => undefined,
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await started;
  } catch (e) {
    const code = e instanceof RaftKvError ? e.code : 'START_FAILED';
    process.stderr.write(`kvnode: cannot start node ${config.nodeId}: ${code}: ${(e as Error).message}\n`);
    process.exit(e instanceof RaftKvError && e.code.startsWith('STORE_') ? 78 : 1);
  }
}
