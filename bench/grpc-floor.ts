// The floor cost of the gRPC layers raftkv uses: how much CPU per operation gRPC and HTTP/2 take
// by themselves, with nothing behind them, so that raftkv's server CPU per operation (kvbench) can be
// split into "gRPC itself" and "everything else".
//
// Case 1, client API floor. A child Node process serves raftkv's KV service (proto/kv.proto as
// src/server/kv-proto.ts loads it) on a grpc-js server with the options KvNode.start() gives its own
// (src/node/kv-node.ts), whose handlers answer at once: Put with a fixed ResponseHeader, Get with one
// fixed KeyValue of --value-bytes. No Raft, no storage, and not raftkv's handler wrapper
// (src/server/kv-service.ts). This process drives it exactly as kvbench drives a node: through
// kvbench's raftkv target (bench/kvbench/targets.ts), one KvClient per closed-loop worker with
// src/client's channel options (grpc-js shares one connection among them), kvbench's keys and values
// (bench/kvbench/workload.ts). Put, then Get (LINEARIZABLE asked; the server ignores it), each run
// twice: once through grpc-js's call handling, once through the unary fast path that kv-node puts
// ahead of it (src/server/unary-fast-path.ts) with the same answers. Reported: calls/s, client-observed p50 and p99, and the child's CPU per call (utime +
// stime of /proc/PID/stat at the window's start and end), with its main thread's share of it
// (/proc/PID/task/PID/stat).
//
// Case 2, peer message floor. A child receives peer frames that this process sends at a fixed rate
// (--frame-rate frames/s, each payload an encodeBatch of one App message with one entry, sized to
// --frame-bytes), and decodes each payload with the codec (src/transport/codec.ts) and drops it:
//   (a) over a grpc-js client stream of the real RaftPeer Stream method (src/transport/peer-service.ts),
//       with the channel options and metadata PeerLink used before the raw peer wire, to a minimal
//       handler that accepts the stream as PeerTransport does (response headers first) on a server
//       with kv-node's options;
//   (b) over a raw TCP socket (node:net) with the raw peer wire's frames (src/transport/peer-wire.ts:
//       frameHeader to send, FrameDecoder to receive), without its hello and keepalives.
// Both are paced alike: a 1 ms interval timer sends the frames due by then (a credit, so timer
// jitter does not change the rate), each tick's frames written together (TCP: corked for the tick,
// one writev; gRPC: Node's HTTP/2 session sends what one turn of the event loop queued). Reported:
// frames/s sent and received, the receiver's CPU per frame (and its main thread's share), and the
// sender's (this process's process.cpuUsage()).
//
// A fresh child per run (6 in all). A script, not a test: it asserts nothing about speed. Loopback only.
// Run: npx tsx bench/grpc-floor.ts [--clients 64] [--duration 8] [--warmup 2] [--value-bytes 256]
//      [--frame-rate 2000] [--frame-bytes 400] [--json]

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import { availableParallelism, cpus, release, type as osType } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { clockTicks, ownCpuMs, parseStatTicks, readProcessCpuMs } from './kvbench/cpu.js';
import { HdrHistogram } from './kvbench/histogram.js';
import { BenchOpError, openTarget, type Target, type TargetClient } from './kvbench/targets.js';
import { defaultWorkload, MAX_CLIENTS, validateWorkload, workerSource } from './kvbench/workload.js';
import { fmtNum, markdownTable } from './support/compare-table.js';
import { DEFAULT_NODE_CONFIG } from '../src/node/kv-node.js';
import { kvServiceDefinition } from '../src/server/kv-proto.js';
import { fastMethod, installUnaryFastPath, type FastUnaryMethod } from '../src/server/unary-fast-path.js';
import type * as pb from '../src/server/kv-proto.js';
import { batchHeaderBytes, decodeBatch, encodeBatch, encodedMessageBytes } from '../src/transport/codec.js';
import { FrameDecoder, frameHeader } from '../src/transport/peer-wire.js';
import { DEFAULT_KEEPALIVE_TIME_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS } from '../src/transport/peer-transport.js';
import {
  METADATA_CLUSTER_ID,
  METADATA_FROM_NODE,
  METADATA_TO_NODE,
  PEER_FRAME_OVERHEAD_BYTES,
  peerServiceDefinition,
  streamMethod,
  type PeerAck,
  type PeerFrame,
} from '../src/transport/peer-service.js';
import type { Message } from '../src/raft/types.js';

const SCRIPT_PATH = fileURLToPath(import.meta.url);
const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));
const HOST = '127.0.0.1';

/** kv-node's limit on one gRPC message; its server and the peer links use it. */
const MAX_MESSAGE_BYTES = DEFAULT_NODE_CONFIG.maxMessageBytes;
/** Limit on --value-bytes: a Get answer stays far inside MAX_MESSAGE_BYTES. */
const MAX_VALUE_BYTES = 1024 * 1024;
/** Limits on --frame-bytes and --frame-rate. */
const MAX_FRAME_BYTES = 1024 * 1024;
const MAX_FRAME_RATE = 200_000;
const MAX_SECONDS = 600;
/** The pacer's timer interval. */
const TICK_MS = 1;
/** Limit: frames the pacer owes before it skips (counts and forgets) the excess: 100 ms of frames. */
const MAX_BACKLOG_SECONDS = 0.1;
/** How long a child may take to listen (spawning Node and compiling TypeScript through tsx). */
const CHILD_START_TIMEOUT_MS = 20_000;
const CHILD_REPLY_TIMEOUT_MS = 5_000;
/** After its stdin closes a child exits by itself; SIGKILL after this. */
const CHILD_STOP_TIMEOUT_MS = 2_000;
const CONNECT_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 2_000;
/** Identities on the peer stream's metadata and in the messages (as a leader 1 to a follower 2). */
const PEER_CLUSTER_ID = 'grpc-floor';
const PEER_FROM = 1;
const PEER_TO = 2;
const PEER_TERM = 1;
/**
 * The first entry index of the frames. Every index, prevIndex (index - 1) and commit in [2^28, 2^35)
 * is a 5-byte varint, so every frame of a run has the same size.
 */
export const FIRST_ENTRY_INDEX = 2 ** 28 + 1;

const CHILD_ROLES = ['kv', 'kv-fast', 'peer-grpc', 'peer-tcp'] as const;
type ChildRole = (typeof CHILD_ROLES)[number];

/** The server options KvNode.start() passes to `new grpc.Server` (src/node/kv-node.ts). */
function kvNodeServerOptions(): grpc.ServerOptions {
  return {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.enable_channelz': 0,
  };
}

/** The channel options PeerLink gave each peer stream's client before the raw peer wire (2026-12-05). */
function peerLinkChannelOptions(): grpc.ChannelOptions {
  return {
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.enable_retries': 0,
    'grpc.enable_channelz': 0,
    'grpc.use_local_subchannel_pool': 1,
    'grpc.keepalive_time_ms': DEFAULT_KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': DEFAULT_KEEPALIVE_TIMEOUT_MS,
  };
}

// ---- frames (pure) --------------------------------------------------------------------------------

function appendMessage(index: number, data: Uint8Array): Message {
  return {
    type: 'App',
    from: PEER_FROM,
    to: PEER_TO,
    term: PEER_TERM,
    prevIndex: index - 1,
    prevTerm: PEER_TERM,
    commit: index - 1,
    entries: [{ index, term: PEER_TERM, type: 'normal', data }],
  };
}

/** A peer frame's payload as a leader sends it: a batch of one App message carrying one entry. */
export function appendPayload(index: number, data: Uint8Array): Buffer {
  return encodeBatch([appendMessage(index, data)]);
}

/** Bytes of appendPayload(index, data) for an index in [FIRST_ENTRY_INDEX, 2^35) and data of dataBytes. */
function appendPayloadBytes(dataBytes: number): number {
  return batchHeaderBytes(1) + encodedMessageBytes(appendMessage(FIRST_ENTRY_INDEX, new Uint8Array(dataBytes)));
}

/** The smallest payload appendPayload makes: an entry with no data. */
export const MIN_FRAME_BYTES = appendPayloadBytes(0);

/**
 * The entry data length whose payload is `payloadBytes` long, or one byte shorter where the data
 * length's own varint grows by a byte at that size. Throws RangeError below MIN_FRAME_BYTES.
 */
export function entryDataBytesFor(payloadBytes: number): number {
  if (!Number.isSafeInteger(payloadBytes) || payloadBytes < MIN_FRAME_BYTES) {
    throw new RangeError(`a peer payload is at least ${MIN_FRAME_BYTES} bytes (one App message with an empty entry), got ${payloadBytes}`);
  }
  // appendPayloadBytes(d) = MIN_FRAME_BYTES + d + (varint bytes of d) - 1 >= that start.
  let d = payloadBytes - MIN_FRAME_BYTES;
  while (d > 0 && appendPayloadBytes(d) > payloadBytes) d--;
  return d;
}

/**
 * What the pacer does at one tick: `send` frames now, and `skip` frames it owes beyond maxBacklog
 * (counted and never sent, so a stall cannot be followed by an unbounded burst). `scheduled` is the
 * number of frames sent or skipped so far; frames are due at a steady rateHz from elapsed 0.
 */
export function framesToSend(elapsedMs: number, rateHz: number, scheduled: number, maxBacklog: number): { send: number; skip: number } {
  const owed = Math.floor((elapsedMs * rateHz) / 1000) - scheduled;
  if (owed <= 0) return { send: 0, skip: 0 };
  const skip = Math.max(0, owed - maxBacklog);
  return { send: owed - skip, skip };
}

// ---- the child: servers ---------------------------------------------------------------------------

interface ReceiverCounters {
  frames: number;
  messages: number;
  payloadBytes: number;
  malformed: number;
  streams: number;
}

async function bindGrpc(server: grpc.Server): Promise<number> {
  return new Promise<number>((resolvePort, reject) =>
    server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolvePort(port))),
  );
}

/**
 * The KV service with handlers that answer at once, through grpc-js's call handling or (`fast`) the
 * unary fast path kv-node installs (src/server/unary-fast-path.ts). Returns the port and how to stop.
 */
async function serveKv(valueBytes: number, fast: boolean): Promise<{ port: number; close: () => void }> {
  const server = new grpc.Server(kvNodeServerOptions());
  let address = '';
  const header: pb.ResponseHeader = { index: 1, node_id: 1, term: 1, leader_id: 1, consistency: 'CONSISTENCY_UNSPECIFIED', staleness_ms: 0 };
  const putResponse: pb.PutResponse = { header, prev_kv: null };
  const getResponse: pb.GetResponse = {
    header: { ...header, consistency: 'LINEARIZABLE' },
    found: true,
    kv: { key: Buffer.from('kvbench/0'), value: Buffer.alloc(valueBytes, 0x76), create_index: 1, mod_index: 1, version: 1 },
  };
  // Status makes the client take this node for the leader (kvbench's target asks it once; each
  // KvClient may ask once more to learn the leader's address), in the warm-up.
  const status = (): pb.StatusResponse => ({
    node_id: 1,
    role: 'leader',
    term: 1,
    leader_id: 1,
    leader_address: address,
    commit_index: 1,
    applied_index: 1,
    last_index: 1,
    members: [{ id: 1, client_address: address, peer_address: '', match_index: 1 }],
    writable: true,
    read_only_reason: '',
    ms_since_leader_contact: 0,
    cluster_id: PEER_CLUSTER_ID,
    log_start_index: 0,
    last_snapshot_index: 0,
    last_snapshot_unix_ms: 0,
    snapshots_sent: 0,
    snapshots_installed: 0,
    snapshot_transfers_failed: 0,
    snapshot_transfers_to: [],
  });
  // The other methods are left out: grpc-js answers them UNIMPLEMENTED.
  server.addService(kvServiceDefinition, {
    Put: (_call: grpc.ServerUnaryCall<pb.PutRequest, pb.PutResponse>, callback: grpc.sendUnaryData<pb.PutResponse>) => callback(null, putResponse),
    Get: (_call: grpc.ServerUnaryCall<pb.GetRequest, pb.GetResponse>, callback: grpc.sendUnaryData<pb.GetResponse>) => callback(null, getResponse),
    Status: (_call: grpc.ServerUnaryCall<unknown, pb.StatusResponse>, callback: grpc.sendUnaryData<pb.StatusResponse>) => callback(null, status()),
  });
  const port = await bindGrpc(server);
  address = `${HOST}:${port}`;
  if (fast) {
    const answers: Record<string, () => unknown> = { Put: () => putResponse, Get: () => getResponse, Status: status };
    const methods = new Map<string, FastUnaryMethod>();
    for (const [name, answer] of Object.entries(answers)) {
      methods.set(kvServiceDefinition[name]!.path, fastMethod(kvServiceDefinition[name]!, async () => answer()));
    }
    const installed = installUnaryFastPath(server, methods, {
      maxReceiveMessageBytes: MAX_MESSAGE_BYTES,
      maxSendMessageBytes: MAX_MESSAGE_BYTES,
      limitName: 'MAX_MESSAGE_BYTES',
      statusOf: (err) => ({ code: grpc.status.INTERNAL, details: String(err) }),
    });
    if (installed === undefined) throw new Error('the unary fast path could not be installed on this grpc-js');
  }
  return { port, close: () => server.forceShutdown() };
}

function decodeInto(counters: ReceiverCounters, payload: Uint8Array): void {
  try {
    counters.messages += decodeBatch(payload).length;
    counters.frames++;
    counters.payloadBytes += payload.length;
  } catch {
    counters.malformed++;
  }
}

/** The RaftPeer service whose Stream accepts, decodes each frame's payload, and drops it. */
async function servePeerGrpc(counters: ReceiverCounters): Promise<{ port: number; close: () => void }> {
  const server = new grpc.Server(kvNodeServerOptions());
  server.addService(peerServiceDefinition, {
    Stream: (call: grpc.ServerReadableStream<PeerFrame, PeerAck>, callback: grpc.sendUnaryData<PeerAck>) => {
      counters.streams++;
      // As PeerTransport.onStream: the sender waits for these headers before it writes.
      call.sendMetadata(new grpc.Metadata());
      call.on('data', (frame: PeerFrame) => decodeInto(counters, frame.payload));
      call.on('end', () => callback(null, {}));
      call.on('error', () => {});
    },
  });
  const port = await bindGrpc(server);
  return { port, close: () => server.forceShutdown() };
}

/** A TCP server reading peer-wire frames, decoding each payload and dropping it. */
async function servePeerTcp(counters: ReceiverCounters): Promise<{ port: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    counters.streams++;
    sockets.add(socket);
    socket.setNoDelay(true);
    // The peer wire's own frame decoder, as PeerTransport uses it.
    const frames = new FrameDecoder(MAX_MESSAGE_BYTES);
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const payload of frames.push(chunk)) decodeInto(counters, payload);
      } catch {
        counters.malformed++;
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolveListen());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * The child's side. It serves, prints {"event":"listening","port":N} on stdout, answers each "stats"
 * line on stdin with the receiver counters, and exits when stdin closes (the parent is done or gone).
 */
async function runChild(role: ChildRole, valueBytes: number): Promise<void> {
  const counters: ReceiverCounters = { frames: 0, messages: 0, payloadBytes: 0, malformed: 0, streams: 0 };
  const served = role === 'kv' || role === 'kv-fast' ? await serveKv(valueBytes, role === 'kv-fast') : role === 'peer-grpc' ? await servePeerGrpc(counters) : await servePeerTcp(counters);
  const say = (o: object): void => {
    process.stdout.write(`${JSON.stringify(o)}\n`);
  };
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === 'stats') say({ event: 'stats', ...counters });
  });
  lines.on('close', () => {
    served.close();
    process.exit(0);
  });
  say({ event: 'listening', port: served.port });
}

// ---- the parent: children -------------------------------------------------------------------------

/** Every child still running, killed on any exit of this process. */
const liveChildren = new Set<ChildProcess>();

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

type ChildLine = { readonly event: string } & Record<string, unknown>;

type ReceiverStats = Readonly<ReceiverCounters>;

/** One child server process, this script run with --serve. */
class ChildServer {
  private readonly waiters: Array<{ readonly event: string; readonly resolve: (l: ChildLine) => void; readonly reject: (e: Error) => void }> = [];
  private exitStatus: string | undefined;
  private readonly exited: Promise<void>;
  port = 0;

  private constructor(
    readonly role: ChildRole,
    readonly args: readonly string[],
    private readonly child: ChildProcess,
  ) {
    liveChildren.add(child);
    this.exited = new Promise<void>((resolveExit) => {
      const onGone = (why: string): void => {
        liveChildren.delete(child);
        this.exitStatus ??= why;
        for (const w of this.waiters.splice(0)) w.reject(new Error(`the ${role} child (pid ${child.pid ?? '?'}) ${this.exitStatus}`));
        resolveExit();
      };
      child.once('exit', (code, signal) => onGone(signal !== null ? `was killed by ${signal}` : `exited with code ${code}`));
      child.once('error', (err) => onGone(`failed: ${err.message}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let parsed: ChildLine;
      try {
        parsed = JSON.parse(line) as ChildLine;
      } catch {
        process.stderr.write(`[${role} child] ${line}\n`);
        return;
      }
      const at = this.waiters.findIndex((w) => w.event === parsed.event);
      if (at >= 0) this.waiters.splice(at, 1)[0]!.resolve(parsed);
    });
    child.stdin!.on('error', () => {});
  }

  /** The child's command line, for the report. */
  get command(): string {
    return `node --import tsx bench/grpc-floor.ts ${this.args.join(' ')}`;
  }

  get pid(): number {
    return this.child.pid!;
  }

  static async start(role: ChildRole, extraArgs: readonly string[] = []): Promise<ChildServer> {
    const args = ['--serve', role, ...extraArgs];
    // stderr is shared: a child's crash shows up in this script's error output.
    const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT_PATH, ...args], { cwd: PROJECT_ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
    const c = new ChildServer(role, args, child);
    try {
      const ready = await withTimeout(c.next('listening'), CHILD_START_TIMEOUT_MS, `the ${role} child to listen`);
      c.port = Number(ready['port']);
      if (!Number.isSafeInteger(c.port) || c.port <= 0) throw new Error(`the ${role} child reported port ${String(ready['port'])}`);
      return c;
    } catch (e) {
      await c.stop();
      throw e;
    }
  }

  private next(event: string): Promise<ChildLine> {
    if (this.exitStatus !== undefined) return Promise.reject(new Error(`the ${this.role} child ${this.exitStatus}`));
    return new Promise<ChildLine>((resolveLine, reject) => this.waiters.push({ event, resolve: resolveLine, reject }));
  }

  async stats(): Promise<ReceiverStats> {
    const reply = this.next('stats');
    this.child.stdin!.write('stats\n');
    const s = await withTimeout(reply, CHILD_REPLY_TIMEOUT_MS, `the ${this.role} child's counters`);
    const n = (k: string): number => Number(s[k]);
    return { frames: n('frames'), messages: n('messages'), payloadBytes: n('payloadBytes'), malformed: n('malformed'), streams: n('streams') };
  }

  /** Closes the child's stdin (it exits by itself); SIGKILL if it has not exited in time. Bounded. */
  async stop(): Promise<void> {
    if (this.exitStatus !== undefined) return;
    this.child.stdin!.end();
    const gone = await withTimeout(this.exited, CHILD_STOP_TIMEOUT_MS, 'the child to exit').then(
      () => true,
      () => false,
    );
    if (gone) return;
    this.child.kill('SIGKILL');
    await withTimeout(this.exited, CHILD_STOP_TIMEOUT_MS, 'the child to exit after SIGKILL').catch(() => undefined);
  }
}

/** CPU time of `tid` of process `pid` (/proc/PID/task/TID/stat), in ms. */
function readThreadCpuMs(pid: number, tid: number): number {
  return (parseStatTicks(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')) * 1000) / clockTicks();
}

interface CpuSample {
  readonly atMs: number;
  /** The child, all threads. */
  readonly childMs: number;
  /** The child's main thread (the event loop: JavaScript, HTTP/2 and socket work). */
  readonly childMainMs: number;
  /** This process (process.cpuUsage()). */
  readonly ownMs: number;
}

function sampleCpuNow(childPid: number): CpuSample {
  return { atMs: performance.now(), childMs: readProcessCpuMs(childPid), childMainMs: readThreadCpuMs(childPid, childPid), ownMs: ownCpuMs() };
}

interface CpuDelta {
  readonly elapsedMs: number;
  readonly childMs: number;
  readonly childMainMs: number;
  readonly ownMs: number;
}

function cpuDelta(a: CpuSample, b: CpuSample): CpuDelta {
  return { elapsedMs: b.atMs - a.atMs, childMs: b.childMs - a.childMs, childMainMs: b.childMainMs - a.childMainMs, ownMs: b.ownMs - a.ownMs };
}

/** ±µs per operation of a CPU time read twice from /proc in clock ticks. */
function procResolutionUs(ops: number): number {
  return ops > 0 ? (1e6 / clockTicks()) / ops : Number.NaN;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- case 1: client API floor ---------------------------------------------------------------------

interface Params {
  readonly clients: number;
  readonly durationS: number;
  readonly warmupS: number;
  readonly valueBytes: number;
  readonly frameRate: number;
  readonly frameBytes: number;
}

interface ApiResult {
  readonly rpc: 'Put' | 'Get';
  /** How the server handled the calls: grpc-js's call handling, or kv-node's unary fast path. */
  readonly path: 'grpc-js' | 'fast path';
  readonly child: string;
  readonly calls: number;
  readonly elapsedMs: number;
  readonly callsPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly meanUs: number;
  readonly errors: Record<string, number>;
  readonly serverCpuMs: number;
  readonly serverCpuUsPerCall: number;
  readonly serverMainThreadCpuUsPerCall: number;
  /** The main thread's part of the server's CPU, 0..1. */
  readonly serverMainThreadShare: number;
  /** The server's CPU over the window, in cores (1 = one core busy all the time). */
  readonly serverCores: number;
  readonly clientCpuUsPerCall: number;
  readonly clientCores: number;
  /** ± on the server's µs per call from the /proc clock-tick resolution. */
  readonly serverCpuResolutionUs: number;
}

async function runApiCase(rpc: 'Put' | 'Get', fast: boolean, p: Params): Promise<ApiResult> {
  const w = validateWorkload(
    defaultWorkload({
      clients: p.clients,
      valueBytes: p.valueBytes,
      mix: rpc === 'Put' ? { put: 1, get: 0, cas: 0 } : { put: 0, get: 1, cas: 0 },
      warmupMs: Math.round(p.warmupS * 1000),
      durationMs: Math.round(p.durationS * 1000),
    }),
  );
  const child = await ChildServer.start(fast ? 'kv-fast' : 'kv', ['--value-bytes', String(p.valueBytes)]);
  let target: Target | undefined;
  const clients: TargetClient[] = [];
  const timers: NodeJS.Timeout[] = [];
  try {
    progress(`case 1 ${rpc} (${fast ? 'fast path' : 'grpc-js'}): child pid ${child.pid} on port ${child.port}; ${p.clients} clients, ${p.warmupS} s warm-up, ${p.durationS} s measured`);
    target = await openTarget({ system: 'raftkv', endpoints: [`${HOST}:${child.port}`] });
    const sources = Array.from({ length: w.clients }, (_, i) => workerSource(w, i));
    for (let i = 0; i < w.clients; i++) clients.push(target.client(i));

    let phase: 'warmup' | 'measure' | 'stopped' = 'warmup';
    let start: CpuSample | undefined;
    const latency = new HdrHistogram();
    const errors: Record<string, number> = {};
    timers.push(
      setTimeout(() => {
        start = sampleCpuNow(child.pid);
        phase = 'measure';
        timers.push(setTimeout(() => (phase = 'stopped'), w.durationMs));
      }, w.warmupMs),
    );
    const worker = async (i: number): Promise<void> => {
      const src = sources[i]!;
      const client = clients[i]!;
      while (phase !== 'stopped') {
        const startedIn = phase;
        const key = src.keys.key(src.nextKey.next());
        const t0 = performance.now();
        try {
          if (rpc === 'Put') await client.put(key, src.value);
          else await client.get(key, w.consistency);
          if (startedIn === 'measure') latency.record((performance.now() - t0) * 1000);
        } catch (e) {
          if (!(e instanceof BenchOpError)) {
            phase = 'stopped';
            throw e;
          }
          if (startedIn === 'measure') errors[e.code] = (errors[e.code] ?? 0) + 1;
          // A client-side refusal comes back without I/O: let the timers that end the run fire.
          await new Promise<void>((r) => setImmediate(r));
        }
      }
    };
    // The window ends when every call started in it has returned (as kvbench's).
    await Promise.all(sources.map((_, i) => worker(i)));
    const end = sampleCpuNow(child.pid);
    if (start === undefined) throw new Error('the measured window never started');
    const d = cpuDelta(start, end);
    const calls = latency.count;
    const perCall = (ms: number): number => (calls > 0 ? (ms * 1000) / calls : Number.NaN);
    return {
      rpc,
      path: fast ? 'fast path' : 'grpc-js',
      child: child.command,
      calls,
      elapsedMs: d.elapsedMs,
      callsPerSec: (calls * 1000) / d.elapsedMs,
      p50Us: latency.percentile(50),
      p99Us: latency.percentile(99),
      meanUs: latency.mean,
      errors,
      serverCpuMs: d.childMs,
      serverCpuUsPerCall: perCall(d.childMs),
      serverMainThreadCpuUsPerCall: perCall(d.childMainMs),
      serverMainThreadShare: d.childMs > 0 ? d.childMainMs / d.childMs : Number.NaN,
      serverCores: d.childMs / d.elapsedMs,
      clientCpuUsPerCall: perCall(d.ownMs),
      clientCores: d.ownMs / d.elapsedMs,
      serverCpuResolutionUs: procResolutionUs(calls),
    };
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const c of clients) c.close();
    target?.close();
    await child.stop();
  }
}

// ---- case 2: peer message floor -------------------------------------------------------------------

/** Where the pacer writes frame payloads. */
interface FrameSink {
  /** Sends one payload; false when the transport asks to wait for onceDrain. */
  write(payload: Buffer): boolean;
  onceDrain(fn: () => void): void;
  /** A tick's frames are written between these two. */
  beginTick(): void;
  endTick(): void;
  /** Why the transport broke, if it did. */
  broken(): string | undefined;
  close(): Promise<void>;
}

/** A client stream of RaftPeer.Stream, opened as PeerLink opened one, accepted before use. */
async function openGrpcSink(port: number): Promise<FrameSink> {
  const client = new grpc.Client(`${HOST}:${port}`, grpc.credentials.createInsecure(), peerLinkChannelOptions());
  const metadata = new grpc.Metadata();
  metadata.set(METADATA_CLUSTER_ID, PEER_CLUSTER_ID);
  metadata.set(METADATA_FROM_NODE, String(PEER_FROM));
  metadata.set(METADATA_TO_NODE, String(PEER_TO));
  let endedWith: string | undefined;
  let onEnd: () => void = () => undefined;
  const ended = new Promise<void>((r) => (onEnd = r));
  const call = client.makeClientStreamRequest<PeerFrame, PeerAck>(streamMethod.path, streamMethod.requestSerialize, streamMethod.responseDeserialize, metadata, {}, (err) => {
    endedWith = err === null ? 'the receiver ended the stream' : `${grpc.status[err.code] ?? err.code}: ${err.details}`;
    onEnd();
  });
  call.on('error', () => {});
  let closing = false;
  try {
    await withTimeout(
      Promise.race([
        new Promise<void>((r) => call.once('metadata', () => r())),
        ended.then(() => Promise.reject(new Error(`the peer stream was not accepted: ${endedWith}`))),
      ]),
      CONNECT_TIMEOUT_MS,
      'the peer stream to be accepted',
    );
  } catch (e) {
    call.cancel();
    client.close();
    throw e;
  }
  return {
    write: (payload) => call.write({ payload }),
    onceDrain: (fn) => call.once('drain', fn),
    beginTick: () => undefined,
    endTick: () => undefined,
    broken: () => (closing ? undefined : endedWith),
    async close() {
      closing = true;
      call.end();
      await withTimeout(ended, CLOSE_TIMEOUT_MS, 'the peer stream to end').catch(() => call.cancel());
      client.close();
    },
  };
}

/** A TCP connection carrying peer-wire frames. */
async function openTcpSink(port: number): Promise<FrameSink> {
  const socket = net.connect({ host: HOST, port });
  // As gRPC's own sockets: no Nagle delay.
  socket.setNoDelay(true);
  let brokenWith: string | undefined;
  let closing = false;
  socket.on('error', (err) => (brokenWith ??= err.message));
  socket.on('close', () => (brokenWith ??= 'the receiver closed the connection'));
  try {
    await withTimeout(
      new Promise<void>((r, reject) => {
        socket.once('connect', () => r());
        socket.once('error', reject);
      }),
      CONNECT_TIMEOUT_MS,
      'the TCP connection',
    );
  } catch (e) {
    socket.destroy();
    throw e;
  }
  return {
    write(payload) {
      // As PeerLink writes a frame: its length prefix, then the payload, corked together per tick.
      socket.write(frameHeader(payload.length));
      return socket.write(payload);
    },
    onceDrain: (fn) => socket.once('drain', fn),
    beginTick: () => socket.cork(),
    endTick: () => socket.uncork(),
    broken: () => (closing ? undefined : brokenWith),
    async close() {
      closing = true;
      const closed = new Promise<void>((r) => (socket.destroyed ? r() : socket.once('close', () => r())));
      socket.end();
      await withTimeout(closed, CLOSE_TIMEOUT_MS, 'the TCP connection to close').catch(() => undefined);
      socket.destroy();
    },
  };
}

/** Sends frames at a steady rate (see framesToSend), honouring the transport's backpressure. */
class Pacer {
  /** Frames written. */
  sent = 0;
  /** Frames owed beyond the backlog limit, never sent. */
  skipped = 0;
  private timer: NodeJS.Timeout | undefined;
  private waitingForDrain = false;
  private t0 = 0;
  private readonly maxBacklog: number;

  constructor(
    private readonly rateHz: number,
    private readonly sink: FrameSink,
    private readonly nextPayload: () => Buffer,
  ) {
    this.maxBacklog = Math.max(1, Math.ceil(rateHz * MAX_BACKLOG_SECONDS));
  }

  start(): void {
    this.t0 = performance.now();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const { send, skip } = framesToSend(performance.now() - this.t0, this.rateHz, this.sent + this.skipped, this.maxBacklog);
    this.skipped += skip;
    if (send === 0 || this.waitingForDrain) return;
    this.sink.beginTick();
    try {
      for (let i = 0; i < send; i++) {
        this.sent++;
        if (!this.sink.write(this.nextPayload())) {
          this.waitingForDrain = true;
          this.sink.onceDrain(() => (this.waitingForDrain = false));
          break;
        }
      }
    } finally {
      this.sink.endTick();
    }
  }
}

interface PeerResult {
  readonly transport: 'grpc-stream' | 'tcp';
  readonly child: string;
  readonly payloadBytes: number;
  readonly elapsedMs: number;
  readonly framesSent: number;
  readonly framesReceived: number;
  readonly messagesDecoded: number;
  readonly sentPerSec: number;
  readonly receivedPerSec: number;
  readonly skippedFrames: number;
  readonly malformedFrames: number;
  readonly receiverCpuMs: number;
  readonly receiverCpuUsPerFrame: number;
  readonly receiverMainThreadCpuUsPerFrame: number;
  readonly receiverMainThreadShare: number;
  readonly receiverCores: number;
  readonly senderCpuUsPerFrame: number;
  readonly senderCores: number;
  readonly receiverCpuResolutionUs: number;
}

async function runPeerCase(transport: 'grpc-stream' | 'tcp', p: Params): Promise<PeerResult> {
  const child = await ChildServer.start(transport === 'tcp' ? 'peer-tcp' : 'peer-grpc');
  let sink: FrameSink | undefined;
  let pacer: Pacer | undefined;
  try {
    progress(`case 2 ${transport}: child pid ${child.pid} on port ${child.port}; ${p.frameRate} frames/s, ${p.warmupS} s warm-up, ${p.durationS} s measured`);
    sink = transport === 'tcp' ? await openTcpSink(child.port) : await openGrpcSink(child.port);
    const data = Buffer.alloc(entryDataBytesFor(p.frameBytes), 0x61);
    let index = FIRST_ENTRY_INDEX;
    const payloadBytes = appendPayload(index, data).length;
    pacer = new Pacer(p.frameRate, sink, () => appendPayload(index++, data));
    pacer.start();
    await sleep(p.warmupS * 1000);
    const r0 = await child.stats();
    const c0 = sampleCpuNow(child.pid);
    const sent0 = pacer.sent;
    const skipped0 = pacer.skipped;
    await sleep(p.durationS * 1000);
    const r1 = await child.stats();
    const c1 = sampleCpuNow(child.pid);
    const sent1 = pacer.sent;
    const skipped1 = pacer.skipped;
    pacer.stop();
    const broken = sink.broken();
    if (broken !== undefined) throw new Error(`the ${transport} transport broke during the run: ${broken}`);
    const d = cpuDelta(c0, c1);
    const framesSent = sent1 - sent0;
    const framesReceived = r1.frames - r0.frames;
    const perFrame = (ms: number, n: number): number => (n > 0 ? (ms * 1000) / n : Number.NaN);
    return {
      transport,
      child: child.command,
      payloadBytes,
      elapsedMs: d.elapsedMs,
      framesSent,
      framesReceived,
      messagesDecoded: r1.messages - r0.messages,
      sentPerSec: (framesSent * 1000) / d.elapsedMs,
      receivedPerSec: (framesReceived * 1000) / d.elapsedMs,
      skippedFrames: skipped1 - skipped0,
      malformedFrames: r1.malformed,
      receiverCpuMs: d.childMs,
      receiverCpuUsPerFrame: perFrame(d.childMs, framesReceived),
      receiverMainThreadCpuUsPerFrame: perFrame(d.childMainMs, framesReceived),
      receiverMainThreadShare: d.childMs > 0 ? d.childMainMs / d.childMs : Number.NaN,
      receiverCores: d.childMs / d.elapsedMs,
      senderCpuUsPerFrame: perFrame(d.ownMs, framesSent),
      senderCores: d.ownMs / d.elapsedMs,
      receiverCpuResolutionUs: procResolutionUs(framesReceived),
    };
  } finally {
    pacer?.stop();
    await sink?.close();
    await child.stop();
  }
}

// ---- report ---------------------------------------------------------------------------------------

/** A progress line on stderr (stdout carries only the report). */
function progress(line: string): void {
  process.stderr.write(`grpc-floor: ${line}\n`);
}

function grpcJsVersion(): string {
  try {
    return String((createRequire(import.meta.url)('@grpc/grpc-js/package.json') as { version: unknown }).version);
  } catch {
    return 'unknown';
  }
}

function machine(): Record<string, string | number> {
  return {
    cpu: cpus()[0]?.model ?? 'unknown CPU',
    nproc: availableParallelism(),
    os: `${osType()} ${release()}`,
    node: process.version,
    grpcJs: grpcJsVersion(),
    clockTicksPerSec: clockTicks(),
  };
}

const ms = (us: number): string => fmtNum(us / 1000);
const pct = (share: number): string => (Number.isFinite(share) ? `${Math.round(share * 100)}%` : '–');

function formatErrors(errors: Record<string, number>): string {
  const e = Object.entries(errors);
  return e.length === 0 ? '0' : e.map(([code, n]) => `${code} ${n}`).join(', ');
}

function formatReport(command: string, p: Params, api: readonly ApiResult[], peer: readonly PeerResult[]): string {
  const m = machine();
  const out: string[] = [];
  out.push(`command: ${command}`);
  out.push(`parameters: --clients ${p.clients} --duration ${p.durationS} --warmup ${p.warmupS} --value-bytes ${p.valueBytes} --frame-rate ${p.frameRate} --frame-bytes ${p.frameBytes}`);
  out.push(`machine: ${m['cpu']}, nproc ${m['nproc']}, ${m['os']}, Node ${m['node']}, @grpc/grpc-js ${m['grpcJs']}`);
  out.push(`each run: a fresh child process, ${p.warmupS} s warm-up, then ${p.durationS} s measured; all on ${HOST}; CPU from /proc in 1/${m['clockTicksPerSec']} s ticks`);
  out.push('');
  out.push(`Case 1: client API floor. raftkv's KV service on kv-node's server options, handlers answering at once`);
  out.push(`(Put: a fixed header; Get: one fixed ${p.valueBytes} B KeyValue); no Raft, no storage. Driven by ${p.clients} closed-loop`);
  out.push(`KvClients as kvbench's raftkv target makes them, ${p.valueBytes} B values. CPU per call is the server child's.`);
  out.push(`path: grpc-js is grpc-js's own call handling; fast path is the unary fast path kv-node puts ahead of it`);
  out.push(`(src/server/unary-fast-path.ts), serving the same handlers straight from the HTTP/2 streams.`);
  for (const r of api) out.push(`child (${r.rpc}, ${r.path}): ${r.child}`);
  out.push('');
  out.push(
    markdownTable(
      ['rpc', 'path', 'calls/s', 'p50 ms', 'p99 ms', 'server CPU µs/call', 'main thread µs/call', 'main share', 'server cores', 'client CPU µs/call', 'errors'],
      api.map((r) => [
        r.rpc,
        r.path,
        fmtNum(r.callsPerSec),
        ms(r.p50Us),
        ms(r.p99Us),
        `${fmtNum(r.serverCpuUsPerCall)} ±${fmtNum(r.serverCpuResolutionUs)}`,
        fmtNum(r.serverMainThreadCpuUsPerCall),
        pct(r.serverMainThreadShare),
        fmtNum(r.serverCores),
        fmtNum(r.clientCpuUsPerCall),
        formatErrors(r.errors),
      ]),
    ),
  );
  out.push('');
  const payload = peer[0]?.payloadBytes ?? p.frameBytes;
  out.push(`Case 2: peer message floor. ${fmtNum(p.frameRate)} frames/s from this process, each a ${payload} B payload (encodeBatch of one App`);
  out.push(`message with one entry), decoded by the receiving child and dropped; paced by a ${TICK_MS} ms timer, each tick's frames written together.`);
  out.push(`grpc-stream: RaftPeer.Stream with the channel options and metadata peers used before the raw wire; tcp: node:net with the raw peer wire's frames.`);
  for (const r of peer) out.push(`child (${r.transport}): ${r.child}`);
  out.push('');
  out.push(
    markdownTable(
      ['transport', 'frames/s sent', 'frames/s received', 'receiver CPU µs/frame', 'main thread µs/frame', 'main share', 'receiver cores', 'sender CPU µs/frame', 'skipped'],
      peer.map((r) => [
        r.transport,
        fmtNum(r.sentPerSec),
        fmtNum(r.receivedPerSec),
        `${fmtNum(r.receiverCpuUsPerFrame)} ±${fmtNum(r.receiverCpuResolutionUs)}`,
        fmtNum(r.receiverMainThreadCpuUsPerFrame),
        pct(r.receiverMainThreadShare),
        fmtNum(r.receiverCores),
        fmtNum(r.senderCpuUsPerFrame),
        String(r.skippedFrames),
      ]),
    ),
  );
  const malformed = peer.filter((r) => r.malformedFrames > 0);
  if (malformed.length > 0) out.push(`MALFORMED frames at the receiver: ${malformed.map((r) => `${r.transport} ${r.malformedFrames}`).join(', ')}`);
  out.push('');
  out.push('± is the /proc clock-tick resolution of the figure; "main share" is the main thread\'s part of the process\'s CPU.');
  return out.join('\n');
}

// ---- command line ---------------------------------------------------------------------------------

function intArg(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got "${v}"`);
    return n;
  };
}

function secondsArg(name: string, min: number, exclusiveMin: boolean) {
  return (v: string): number => {
    const s = Number(v);
    const low = exclusiveMin ? s > min : s >= min;
    if (!/^\d+(\.\d+)?$/.test(v.trim()) || !low || s > MAX_SECONDS) throw new InvalidArgumentError(`${name} must be a number of seconds ${exclusiveMin ? '>' : '>='} ${min} and <= ${MAX_SECONDS}, got "${v}"`);
    return s;
  };
}

interface Flags {
  readonly clients: number;
  readonly duration: number;
  readonly warmup: number;
  readonly valueBytes: number;
  readonly frameRate: number;
  readonly frameBytes: number;
  readonly json?: boolean;
  readonly serve?: ChildRole;
}

function buildProgram(): Command {
  return new Command('grpc-floor')
    .description("The floor CPU cost of raftkv's gRPC layers: its KV service and its peer stream with nothing behind them, against raw TCP.")
    .exitOverride()
    .addOption(new Option('--clients <n>', 'closed-loop clients in case 1').argParser(intArg('--clients', 1, MAX_CLIENTS)).default(64))
    .addOption(new Option('--duration <s>', 'measured seconds per run').argParser(secondsArg('--duration', 0, true)).default(8))
    .addOption(new Option('--warmup <s>', 'unmeasured seconds before each window').argParser(secondsArg('--warmup', 0, false)).default(2))
    .addOption(new Option('--value-bytes <n>', 'bytes of each Put value and of the Get answer').argParser(intArg('--value-bytes', 0, MAX_VALUE_BYTES)).default(256))
    .addOption(new Option('--frame-rate <n>', 'peer frames per second in case 2').argParser(intArg('--frame-rate', 1, MAX_FRAME_RATE)).default(2000))
    .addOption(new Option('--frame-bytes <n>', 'bytes of each peer frame payload').argParser(intArg('--frame-bytes', MIN_FRAME_BYTES, Math.min(MAX_FRAME_BYTES, MAX_MESSAGE_BYTES - PEER_FRAME_OVERHEAD_BYTES))).default(400))
    .addOption(new Option('--json', 'print one JSON object on stdout instead of the text report'))
    .addOption(new Option('--serve <role>', 'internal: run as the child server').choices(CHILD_ROLES).hideHelp())
    .addHelpText(
      'after',
      `
Runs four measurements one after the other, each in a fresh child process: Put, Get, the gRPC peer
stream, raw TCP; about 4 x (warm-up + duration) seconds plus child start-up. Progress on stderr; the
report (or with --json one JSON object) on stdout. Asserts nothing.

Run: npx tsx bench/grpc-floor.ts [options]`,
    );
}

async function runParent(flags: Flags, args: readonly string[]): Promise<void> {
  const p: Params = {
    clients: flags.clients,
    durationS: flags.duration,
    warmupS: flags.warmup,
    valueBytes: flags.valueBytes,
    frameRate: flags.frameRate,
    frameBytes: flags.frameBytes,
  };
  const command = `npx tsx bench/grpc-floor.ts${args.length > 0 ? ' ' + args.join(' ') : ''}`;
  const api: ApiResult[] = [];
  const peer: PeerResult[] = [];
  for (const rpc of ['Put', 'Get'] as const) {
    for (const fast of [false, true]) api.push(await runApiCase(rpc, fast, p));
  }
  peer.push(await runPeerCase('grpc-stream', p));
  peer.push(await runPeerCase('tcp', p));
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify({ command, parameters: p, machine: machine(), clientApi: api, peerMessages: peer })}\n`);
  } else {
    process.stdout.write(`${formatReport(command, p, api, peer)}\n`);
  }
}

async function main(argv: readonly string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = buildProgram().parse(argv as string[]).opts<Flags>();
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
  if (flags.serve !== undefined) {
    await runChild(flags.serve, flags.valueBytes);
    return -1; // keeps serving until its stdin closes
  }
  const onSignal = (): void => {
    process.stderr.write('grpc-floor: interrupted; stopping the children\n');
    for (const c of liveChildren) c.kill('SIGKILL');
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.on('exit', () => {
    for (const c of liveChildren) c.kill('SIGKILL');
  });
  try {
    await runParent(flags, argv.slice(2));
    return 0;
  } catch (e) {
    process.stderr.write(`grpc-floor failed: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

// Run only as a script (the test imports the pure helpers above).
if (process.argv[1] !== undefined && resolve(process.argv[1]) === SCRIPT_PATH) {
  const code = await main(process.argv);
  // Exit at once: grpc-js keeps timers (keepalive, idle) that would hold the event loop a while.
  if (code >= 0) process.exit(code);
}
