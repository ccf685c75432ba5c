// KvClient: the raftkv client library. It talks to a cluster through a list of endpoints, finds the
// leader and remembers it, retries what may succeed elsewhere or later (with exponential backoff and
// full jitter, always within the call's deadline and a bounded number of attempts), and makes writes
// exactly-once with a write session.
//
// Where calls go:
//  - writes and LINEARIZABLE/LEASE reads: to the leader when its address is known (any node would
//    do, as followers forward writes and ReadIndex requests to the leader, but that costs a hop);
//    otherwise to the current endpoint. The leader is learned from every response header, from
//    NOT_LEADER hints ("raftkv-leader-address"), and from Status; its address from Status, hints, and
//    reads answered by that node at one of our endpoints (an address we know works is preferred).
//  - STALE reads: to the current endpoint, which is the first endpoint until it fails. List the
//    nearest node first.
//  - On a failure that may not recur elsewhere (connection refused or reset, no leader yet, node
//    overloaded or too stale), the current endpoint moves on to the next and the call is retried.

import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { kvServiceDefinition, maintenanceServiceDefinition } from '../server/kv-proto.js';
import type * as pb from '../server/kv-proto.js';
import { checkBackoff, DEFAULT_BACKOFF, fullJitterMs, type BackoffOptions } from './backoff.js';
import { checkU64, fromHeader, fromKv, fromStatus, toBuffer, toWireConsistency, u64 } from './convert.js';
import {
  fromCallError,
  InvalidArgumentError,
  isRetryable,
  KvError,
  NotLeaderError,
  ResourceExhaustedError,
  TimeoutError,
  UnavailableError,
} from './errors.js';
import type {
  Bytes,
  CallOptions,
  Compare,
  CompareAndSwapResult,
  DeleteResult,
  EndpointStatus,
  GetResult,
  KeyRange,
  KeyValue,
  LeaderInfo,
  NodeStatus,
  PutResult,
  RangeOptions,
  RangeResult,
  ReadOptions,
  ResponseHeader,
  SaveSnapshotOptions,
  SnapshotCreated,
  SnapshotDownload,
  SnapshotOptions,
  WriteOptions,
} from './types.js';

export const DEFAULT_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_RETRIES = 10;
export const DEFAULT_MAX_QUEUED_WRITES = 1_000;
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Limit: addresses outside `endpoints` (learned from hints and Status) the client opens channels to. */
const MAX_EXTRA_ADDRESSES = 32;
/**
 * A retry is not started with less than this left before the deadline: it could not finish, and it
 * would replace the informative error of the last attempt with a bare DEADLINE_EXCEEDED.
 */
const MIN_RETRY_TIME_MS = 20;
/** At most one background Status (to learn the leader's address) per this interval. */
const TOPOLOGY_REFRESH_INTERVAL_MS = 1_000;

/** Time for the retry loop; a test passes a fake one to check backoff bounds without waiting. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`, or at once when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    }),
};

export interface KvClientOptions {
  /** Addresses (host:port) of some or all nodes. At least one. */
  readonly endpoints: readonly string[];
  /** Default deadline of each call, in ms, over all its attempts. Default 5000. */
  readonly timeoutMs?: number;
  /**
   * The write session's client id; a random UUID by default. Two live clients must never share one
   * (their sequence numbers would collide: writes fail with STALE_SEQUENCE or, worse, one client's
   * write is answered with the other's result). To reuse an id across restarts, also pass a
   * `firstSeq` above any sequence number used before (e.g. a timestamp-based one).
   */
  readonly clientId?: string;
  /** The first write's sequence number. Default 1. */
  readonly firstSeq?: number;
  /** Limit: retries of one call (attempts = 1 + retries), whatever the deadline. Default 10. */
  readonly maxRetries?: number;
  /** Delays between retries: full jitter under min(maxMs, initialMs * 2^retry). Default 50 / 1000 ms. */
  readonly backoff?: Partial<BackoffOptions>;
  /**
   * Read-your-writes and monotonic reads for STALE reads: each STALE read carries min_index = the
   * highest index this client has seen (from writes and reads), so the serving node waits until it
   * has applied that far. A STALE read then never shows a state older than one this client already
   * saw or wrote, at the cost of waiting for a lagging node. Default false.
   */
  readonly session?: boolean;
  /**
   * Limit: ms one attempt may take before the client gives up on that node and tries another (within
   * the call's deadline). Default: no limit below the call's deadline. Set it to leave a hung node
   * behind quickly; keep it above the time a write takes to commit.
   */
  readonly attemptTimeoutMs?: number;
  /** Limit: writes waiting behind the one in progress (see "Writes" on KvClient). Default 1000. */
  readonly maxQueuedWrites?: number;
  /**
   * false: send every call to the configured endpoints only, never to the leader the client learned
   * of; the node asked forwards writes, and serves LINEARIZABLE reads itself (a follower asks the
   * leader for a read index). For tests of each node's own paths, and to spread reads over followers.
   * Default true.
   */
  readonly followLeader?: boolean;
  /** Limit: bytes of one gRPC message in either direction. Default 16 MiB. */
  readonly maxMessageBytes?: number;
  /** Extra gRPC channel options. */
  readonly channelOptions?: grpc.ChannelOptions;
  /** For tests: floats in [0, 1) for the jitter. Math.random by default. */
  readonly random?: () => number;
  /** For tests: the clock of the retry loop. */
  readonly clock?: Clock;
}

type Target = 'leader' | 'any';
type Service = 'kv' | 'maintenance';
type UnaryFn = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => grpc.ClientUnaryCall;

/**
 * A client of one raftkv cluster. Safe to share within a process; close() it when done.
 *
 * Writes (put, delete, compareAndSwap) are exactly-once: each carries the session
 * (clientId, seq) with a sequence number that increases per write, and a retry of a write reuses
 * its number, so the cluster applies it once and answers the retry with the first result.
 *
 * One KvClient is one write session, and its writes run one at a time, in call order (later calls
 * wait in a bounded queue). This is required for exactly-once, not a convenience: the server keeps
 * only the last sequence number of each client and its result (src/kv/state-machine.ts). If two
 * writes of one client were in flight at once, seq n+1 could be applied first; a retry of seq n
 * would then be refused with STALE_SEQUENCE although the first attempt of n may or may not have
 * been applied, and its result is no longer kept, so the client could neither report n's outcome nor
 * safely apply it. Serializing writes makes every retry carry the session's latest number, which
 * the server always deduplicates. A bonus: a client's writes are applied in the order it issued them.
 * Reads (and Status) are not queued: any number run concurrently over the same connections. For
 * parallel writes, use several clients (each is its own session).
 *
 * A write that fails with TimeoutError (or any error after it may have reached a node) has an
 * unknown outcome: it may have been applied, once. The next write takes the next sequence number.
 * A retried write is deduplicated only while the server keeps the session: sessions idle for the
 * server's session TTL (10 minutes by default) expire, and the least recently used are evicted
 * beyond its session limit (10,000 by default).
 */
export class KvClient {
  readonly endpoints: readonly string[];
  readonly clientId: string;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly backoff: BackoffOptions;
  readonly sessionReads: boolean;
  private readonly attemptTimeoutMs: number | undefined;
  private readonly maxQueuedWrites: number;
  private readonly followLeader: boolean;
  private readonly channelOptions: grpc.ChannelOptions;
  private readonly random: () => number;
  private readonly clock: Clock;

  /** The sequence number of the next write. Invariant: > every sequence number sent. */
  private nextSeq: number;
  /** The highest index seen in any response header (writes and reads). */
  private highestIndex = 0;
  /** Index into endpoints of the current endpoint: where calls go when the leader is not known. */
  private cursor = 0;
  /** The leader as last learned, in term leaderTerm; 0: unknown. */
  private leaderId = 0;
  private leaderTerm = 0;
  /** Node id → an endpoint at which that node answered a read or Status itself (known to work). */
  private readonly endpointOfNode = new Map<number, string>();
  /** Node id → its client address as the cluster's configuration gives it (Status, hints). */
  private readonly memberAddress = new Map<number, string>();
  /** Addresses outside `endpoints` that refused connections: not chosen as the leader's address again. */
  private readonly unreachable = new Set<string>();
  private lastTopologyRefreshMs = Number.NEGATIVE_INFINITY;
  private readonly channels = new Map<string, grpc.Client>();
  /** Maintenance clients, each over the KV client's channel to the same address. */
  private readonly maintenanceClients = new Map<string, grpc.Client>();
  /** Calls in progress (unary and streaming), cancelled by close(). */
  private readonly inflight = new Set<{ cancel(): void }>();
  /** The tail of the write queue; each write starts when the previous one settled. */
  private writeTail: Promise<unknown> = Promise.resolve();
  /** Writes queued or in progress. Invariant: <= maxQueuedWrites + 1. */
  private pendingWrites = 0;
  private closed = false;
  private readonly abort = new AbortController();

  constructor(options: KvClientOptions) {
    const endpoints = [...new Set((options.endpoints ?? []).map((e) => e.trim()).filter((e) => e !== ''))];
    if (endpoints.length === 0) throw new RangeError('KvClient: at least one endpoint is required');
    this.endpoints = endpoints;
    this.clientId = options.clientId ?? randomUUID();
    if (this.clientId === '') throw new RangeError('KvClient: clientId must not be empty');
    this.timeoutMs = positiveInt('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    this.maxRetries = nonNegativeInt('maxRetries', options.maxRetries ?? DEFAULT_MAX_RETRIES);
    this.backoff = checkBackoff({ ...DEFAULT_BACKOFF, ...options.backoff });
    this.sessionReads = options.session ?? false;
    this.attemptTimeoutMs = options.attemptTimeoutMs === undefined ? undefined : positiveInt('attemptTimeoutMs', options.attemptTimeoutMs);
    this.maxQueuedWrites = nonNegativeInt('maxQueuedWrites', options.maxQueuedWrites ?? DEFAULT_MAX_QUEUED_WRITES);
    this.followLeader = options.followLeader ?? true;
    this.nextSeq = positiveInt('firstSeq', options.firstSeq ?? 1);
    const maxMessageBytes = positiveInt('maxMessageBytes', options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
    this.channelOptions = {
      // Per-call statistics for channelz, which nothing here reads: CPU on every call.
      'grpc.enable_channelz': 0,
      'grpc.max_receive_message_length': maxMessageBytes,
      'grpc.max_send_message_length': maxMessageBytes,
      // A node that was down should be usable again soon after it returns, not after gRPC's default
      // reconnect backoff (1 s, growing to 120 s); calls to it meanwhile fail fast and move on.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.min_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
      ...options.channelOptions,
    };
    this.random = options.random ?? Math.random;
    this.clock = options.clock ?? realClock;
  }

  /** The highest index this client has seen in a response (what `session: true` passes as min_index). */
  get lastSeenIndex(): number {
    return this.highestIndex;
  }

  /** The leader as this client currently believes it to be, without asking; undefined if unknown. */
  get knownLeader(): { readonly id: number; readonly address: string | undefined } | undefined {
    return this.leaderId === 0 ? undefined : { id: this.leaderId, address: this.addressOf(this.leaderId) };
  }

  // ---- writes -----------------------------------------------------------------------------------

  /** Sets `key` to `value`. */
  async put(key: Bytes, value: Bytes, opts: WriteOptions = {}): Promise<PutResult> {
    const req = { key: toBuffer(key), value: toBuffer(value), prev_kv: opts.prevKv ?? false };
    const res = await this.write<pb.PutResponse>('Put', req, opts);
    return { header: this.header(res.header), prevKv: fromKv(res.prev_kv) };
  }

  /** Deletes `key`; `deleted` is false if it did not exist. */
  async delete(key: Bytes, opts: WriteOptions = {}): Promise<DeleteResult> {
    const req = { key: toBuffer(key), prev_kv: opts.prevKv ?? false };
    const res = await this.write<pb.DeleteResponse>('Delete', req, opts);
    return { header: this.header(res.header), deleted: res.deleted, prevKv: fromKv(res.prev_kv) };
  }

  /**
   * Sets `key` to `newValue` if `compare` holds, atomically. `succeeded` says whether it did; on
   * failure, `current` is the key's pair as it is (undefined if absent).
   */
  async compareAndSwap(key: Bytes, compare: Compare, newValue: Bytes, opts: CallOptions = {}): Promise<CompareAndSwapResult> {
    const req: Record<string, unknown> = { key: toBuffer(key), value: toBuffer(newValue) };
    if ('expectedValue' in compare) req['expected_value'] = toBuffer(compare.expectedValue);
    else if ('expectedModIndex' in compare) req['expected_mod_index'] = checkU64('expectedModIndex', compare.expectedModIndex, 1);
    else if ('expectAbsent' in compare && compare.expectAbsent === true) req['expect_absent'] = true;
    else throw new KvError('INVALID_ARGUMENT', 'compare must be { expectedValue }, { expectedModIndex } or { expectAbsent: true }');
    const res = await this.write<pb.CompareAndSwapResponse>('CompareAndSwap', req, opts);
    return { header: this.header(res.header), succeeded: res.succeeded, current: fromKv(res.current) };
  }

  // ---- reads ------------------------------------------------------------------------------------

  /** Reads `key` at the consistency asked for (linearizable by default). */
  async get(key: Bytes, opts: ReadOptions = {}): Promise<GetResult> {
    const req = { key: toBuffer(key), read: this.readOptions(opts) };
    const res = await this.read<pb.GetResponse>('Get', req, opts);
    const kv = res.found ? fromKv(res.kv) : undefined;
    // valueString decodes on first use, not on every get: most callers read bytes or nothing.
    return {
      header: this.header(res.header),
      found: res.found,
      kv,
      value: kv?.value,
      get valueString() {
        return kv?.valueString;
      },
    };
  }

  /**
   * One page of a range: keys with a prefix, or in [start, end), in key order. Pass the result's
   * nextPageToken as pageToken for the next page, or use rangePages()/scan().
   */
  async range(range: KeyRange, opts: RangeOptions = {}): Promise<RangeResult> {
    const req: Record<string, unknown> & { read: pb.ReadOptionsMsg } = {
      limit: opts.limit === undefined ? 0 : checkUint32('limit', opts.limit),
      keys_only: opts.keysOnly ?? false,
      page_token: opts.pageToken === undefined ? Buffer.alloc(0) : toBuffer(opts.pageToken),
      read: this.readOptions(opts),
    };
    if ('prefix' in range) req['prefix'] = toBuffer(range.prefix);
    else {
      req['start'] = toBuffer(range.start);
      if (range.end !== undefined) req['end'] = toBuffer(range.end);
    }
    const res = await this.read<pb.RangeResponse>('Range', req, opts);
    const kvs = (res.kvs ?? []).map((kv) => fromKv(kv)!);
    const token = res.next_page_token;
    return { header: this.header(res.header), kvs, more: res.more, nextPageToken: res.more && token && token.length > 0 ? token : undefined };
  }

  /**
   * Every page of a range, one call (with its own deadline) per page. The pages are separate reads:
   * together they are not one snapshot (a write between two pages shows in the later one only).
   */
  async *rangePages(range: KeyRange, opts: Omit<RangeOptions, 'pageToken'> = {}): AsyncGenerator<RangeResult, void, undefined> {
    let pageToken: Uint8Array | undefined;
    for (;;) {
      const page = await this.range(range, pageToken === undefined ? opts : { ...opts, pageToken });
      yield page;
      if (!page.more || page.nextPageToken === undefined) return;
      pageToken = page.nextPageToken;
    }
  }

  /** Every pair of a range, page by page (see rangePages). */
  async *scan(range: KeyRange, opts: Omit<RangeOptions, 'pageToken'> = {}): AsyncGenerator<KeyValue, void, undefined> {
    for await (const page of this.rangePages(range, opts)) yield* page.kvs;
  }

  // ---- cluster ----------------------------------------------------------------------------------

  /**
   * The status of one node: of `endpoint` if given (one attempt, no retry), else of the first
   * endpoint that answers (with retries).
   */
  async status(endpoint?: string, opts: CallOptions = {}): Promise<NodeStatus> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    if (endpoint !== undefined) {
      this.checkOpen();
      try {
        return this.noteStatus(endpoint, await this.call<pb.StatusResponse>('Status', endpoint, {}, this.clock.now() + timeoutMs));
      } catch (e) {
        throw this.closed ? closedError() : fromCallError(e, endpoint);
      }
    }
    return this.withRetries('any', this.clock.now() + timeoutMs, async (ep, deadline) =>
      this.noteStatus(ep, await this.call<pb.StatusResponse>('Status', ep, {}, deadline)),
    );
  }

  /**
   * The status of every node: each endpoint, plus members that the answers name and no endpoint
   * reached (by their configured address). One attempt each, in parallel; a node that does not
   * answer has `error` instead of `status`.
   */
  async clusterStatus(opts: CallOptions = {}): Promise<EndpointStatus[]> {
    const deadline = this.clock.now() + (opts.timeoutMs ?? this.timeoutMs);
    const ask = async (endpoint: string): Promise<EndpointStatus> => {
      try {
        const timeoutMs = Math.max(1, deadline - this.clock.now());
        return { endpoint, status: await this.status(endpoint, { timeoutMs }) };
      } catch (e) {
        return { endpoint, error: e instanceof KvError ? e : fromCallError(e, endpoint) };
      }
    };
    const rows = await Promise.all(this.endpoints.map(ask));
    const answered = new Set(rows.flatMap((r) => (r.status ? [r.status.nodeId] : [])));
    const asked = new Set(this.endpoints);
    const extra = new Map<number, string>();
    for (const r of rows) {
      for (const m of r.status?.members ?? []) {
        if (!answered.has(m.id) && !asked.has(m.clientAddress) && m.clientAddress !== '') extra.set(m.id, m.clientAddress);
      }
    }
    const more = await Promise.all([...extra.values()].slice(0, MAX_EXTRA_ADDRESSES).map(ask));
    return [...rows, ...more];
  }

  /**
   * The current leader, confirmed by the leader itself (a node that reports role "leader"); follows
   * the hints of the nodes asked. Throws UnavailableError if none is found within the deadline.
   */
  async leader(opts: CallOptions = {}): Promise<LeaderInfo> {
    const deadline = this.clock.now() + (opts.timeoutMs ?? this.timeoutMs);
    return this.withRetries('leader', deadline, async (ep, attemptDeadline) => {
      const s = this.noteStatus(ep, await this.call<pb.StatusResponse>('Status', ep, {}, attemptDeadline));
      if (s.role === 'leader' && s.leaderId === s.nodeId) return { id: s.nodeId, address: s.leaderAddress || ep, term: s.term };
      const msg = s.leaderId === 0 ? 'no leader is known: an election is in progress or a majority is unreachable' : `not the leader; the leader is node ${s.leaderId}`;
      throw new NotLeaderError(msg, s.leaderId, s.leaderId === 0 ? undefined : this.addressOf(s.leaderId), { endpoint: ep, nodeId: s.nodeId });
    });
  }

  // ---- snapshots (per node) ---------------------------------------------------------------------

  /**
   * Asks ONE node to take a snapshot now and compact its log behind it (whatever its automatic
   * triggers say). One attempt, no retry: a snapshot is of the node asked, so another node would not
   * do. `opts.endpoint` names it; it may be omitted only when the client has exactly one endpoint.
   */
  async createSnapshot(opts: SnapshotOptions = {}): Promise<SnapshotCreated> {
    this.checkOpen();
    const endpoint = this.snapshotEndpoint(opts.endpoint);
    const deadline = this.clock.now() + (opts.timeoutMs ?? this.timeoutMs);
    let res: pb.CreateSnapshotResponse;
    try {
      res = await this.call<pb.CreateSnapshotResponse>('CreateSnapshot', endpoint, {}, deadline, 'maintenance');
    } catch (e) {
      throw this.closed ? closedError() : fromCallError(e, endpoint);
    }
    return {
      endpoint,
      nodeId: res.node_id,
      index: u64('index', res.index),
      term: u64('term', res.term),
      logStartIndex: u64('log_start_index', res.log_start_index),
      entriesCompacted: u64('entries_compacted', res.entries_compacted),
      durationMs: u64('duration_ms', res.duration_ms),
    };
  }

  /**
   * Starts streaming a copy of ONE node's snapshot (its state machine at its applied index). Resolves
   * once the first chunk has arrived, with the snapshot's index, term and approximate size; iterate
   * the result for the bytes. See SnapshotDownload: the bytes are not verified here.
   */
  async saveSnapshot(opts: SaveSnapshotOptions = {}): Promise<SnapshotDownload> {
    this.checkOpen();
    const endpoint = this.snapshotEndpoint(opts.endpoint);
    const chunkBytes = opts.chunkBytes === undefined ? 0 : checkUint32('chunkBytes', opts.chunkBytes);
    const idleTimeoutMs = positiveInt('idleTimeoutMs', opts.idleTimeoutMs ?? this.timeoutMs);
    const deadline = opts.timeoutMs === undefined ? Number.POSITIVE_INFINITY : this.clock.now() + positiveInt('timeoutMs', opts.timeoutMs);
    const client = this.maintenanceClient(endpoint);
    const call = client.makeServerStreamRequest<pb.SaveSnapshotRequest, pb.SnapshotChunkMsg>(
      '/raftkv.maintenance.v1.Maintenance/SaveSnapshot',
      (req) => maintenanceServiceDefinition['SaveSnapshot']!.requestSerialize(req),
      (buf) => maintenanceServiceDefinition['SaveSnapshot']!.responseDeserialize(buf) as pb.SnapshotChunkMsg,
      { chunk_bytes: chunkBytes },
      new grpc.Metadata(),
      { deadline },
    );
    this.inflight.add(call);
    const messages = call[Symbol.asyncIterator]() as AsyncIterator<pb.SnapshotChunkMsg>;
    let idledOut = false;
    let cancelled = false;
    let done = false;
    const finish = (): void => {
      done = true;
      this.inflight.delete(call);
    };
    const cancel = (): void => {
      if (done) return;
      cancelled = true;
      finish();
      call.cancel();
    };
    /** The next message, or undefined at the end; a KvError on failure (the call is then over). */
    const next = async (): Promise<pb.SnapshotChunkMsg | undefined> => {
      const timer = setTimeout(() => {
        idledOut = true;
        call.cancel();
      }, idleTimeoutMs);
      try {
        const r = await messages.next();
        if (r.done === true) {
          finish();
          return undefined;
        }
        return r.value;
      } catch (e) {
        finish();
        if (this.closed) throw closedError();
        if (idledOut) {
          throw new TimeoutError('TIMEOUT', `no snapshot data from ${endpoint} for ${idleTimeoutMs} ms (limit idleTimeoutMs=${idleTimeoutMs})`, { endpoint, cause: e });
        }
        if (cancelled) throw new KvError('CANCELLED', 'the snapshot transfer was cancelled', { endpoint, cause: e });
        throw fromCallError(e, endpoint);
      } finally {
        clearTimeout(timer);
      }
    };

    const first = await next();
    if (first === undefined) throw new KvError('PROTOCOL', `${endpoint} ended the snapshot stream without sending any data`, { endpoint });
    let index: number;
    let term: number;
    let approximateBytes: number;
    try {
      index = u64('index', first.index);
      term = u64('term', first.term);
      approximateBytes = u64('approximate_bytes', first.approximate_bytes);
    } catch (e) {
      cancel();
      throw e;
    }
    let iterated = false;
    const chunks = async function* (): AsyncGenerator<Uint8Array, void, undefined> {
      try {
        let msg: pb.SnapshotChunkMsg | undefined = first;
        while (msg !== undefined) {
          if (u64('index', msg.index) !== index || u64('term', msg.term) !== term) {
            throw new KvError('PROTOCOL', `${endpoint} changed the snapshot's position midway: ${msg.index}/${msg.term} after ${index}/${term}`, { endpoint });
          }
          if (msg.data.length > 0) yield msg.data;
          msg = await next();
        }
      } finally {
        // Left early (break, or an error of ours): the node stops reading.
        cancel();
      }
    };
    return {
      endpoint,
      index,
      term,
      approximateBytes,
      cancel,
      [Symbol.asyncIterator]: () => {
        if (iterated) throw new Error('SnapshotDownload: may be iterated only once');
        iterated = true;
        return chunks();
      },
    };
  }

  /** The one node a snapshot call goes to. */
  private snapshotEndpoint(given: string | undefined): string {
    if (given !== undefined) {
      const e = given.trim();
      if (e === '') throw new InvalidArgumentError('INVALID_ARGUMENT', 'endpoint must not be empty');
      return e;
    }
    if (this.endpoints.length === 1) return this.endpoints[0]!;
    throw new InvalidArgumentError(
      'INVALID_ARGUMENT',
      `a snapshot is of one node: name it with the endpoint option (this client has ${this.endpoints.length} endpoints)`,
    );
  }

  /** Closes every connection. Calls in progress fail with code CLOSED; later calls too. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    for (const call of this.inflight) call.cancel();
    this.inflight.clear();
    for (const ch of this.channels.values()) ch.close();
    this.channels.clear();
    this.maintenanceClients.clear();
  }

  // ---- internals --------------------------------------------------------------------------------

  private readOptions(opts: ReadOptions): pb.ReadOptionsMsg {
    const consistency = opts.consistency ?? 'linearizable';
    const wire = toWireConsistency(consistency);
    let minIndex = opts.minIndex === undefined ? 0 : checkU64('minIndex', opts.minIndex);
    // min_index applies to STALE reads only (the server refuses it on the others, which need none).
    if (this.sessionReads && consistency === 'stale') minIndex = Math.max(minIndex, this.highestIndex);
    const maxStalenessMs = opts.maxStalenessMs === undefined ? 0 : checkU64('maxStalenessMs', opts.maxStalenessMs);
    return { consistency: wire, min_index: minIndex, max_staleness_ms: maxStalenessMs };
  }

  private read<Res>(method: string, req: { read: pb.ReadOptionsMsg }, opts: ReadOptions): Promise<Res> {
    const target: Target = req.read.consistency === 'STALE' ? 'any' : 'leader';
    const deadline = this.clock.now() + (opts.timeoutMs ?? this.timeoutMs);
    return this.withRetries(target, deadline, async (ep, attemptDeadline) => {
      const res = await this.call<Res & { header: pb.ResponseHeader }>(method, ep, req, attemptDeadline);
      // A read is answered by the node asked (never forwarded), so this is where that node is.
      this.noteNodeAt(res.header, ep);
      return res;
    });
  }

  /** Queues a write; when its turn comes, gives it the next sequence number and sends it (with retries). */
  private write<Res extends { header: pb.ResponseHeader }>(method: string, req: Record<string, unknown>, opts: CallOptions): Promise<Res> {
    this.checkOpen();
    if (this.pendingWrites > this.maxQueuedWrites) {
      return Promise.reject(
        new ResourceExhaustedError('TOO_MANY_REQUESTS', `too many writes queued on this client (limit maxQueuedWrites=${this.maxQueuedWrites})`),
      );
    }
    // The deadline runs from the call, so time spent queued counts.
    const deadline = this.clock.now() + (opts.timeoutMs ?? this.timeoutMs);
    this.pendingWrites++;
    const run = async (): Promise<Res> => {
      try {
        this.checkOpen();
        if (this.clock.now() >= deadline) throw new TimeoutError('TIMEOUT', 'the deadline passed while the write waited for earlier writes of this client; it was not sent');
        if (!Number.isSafeInteger(this.nextSeq)) throw new KvError('INTERNAL', 'the session sequence number is exhausted; use a new client');
        const session: pb.WriteSessionMsg = { client_id: this.clientId, seq: this.nextSeq++ };
        const full = { ...req, session };
        // Every attempt sends the same session and seq: the server applies the write once.
        return await this.withRetries('leader', deadline, (ep, attemptDeadline) => this.call<Res>(method, ep, full, attemptDeadline));
      } finally {
        this.pendingWrites--;
      }
    };
    const p = this.writeTail.then(run, run);
    this.writeTail = p.catch(() => undefined);
    return p;
  }

  /**
   * Runs `attempt` until it succeeds, on the target's endpoint, moving on after a retryable error.
   * Bounds: the deadline (no retry unless MIN_RETRY_TIME_MS are left after its backoff), and maxRetries.
   */
  private async withRetries<T>(target: Target, deadline: number, attempt: (endpoint: string, deadline: number) => Promise<T>): Promise<T> {
    let hinted: string | undefined;
    let hintsFollowed = 0;
    let backoffRetries = 0;
    for (let n = 1; ; n++) {
      this.checkOpen();
      const endpoint = hinted ?? this.pick(target);
      hinted = undefined;
      const now = this.clock.now();
      const attemptDeadline = this.attemptTimeoutMs === undefined ? deadline : Math.min(deadline, now + this.attemptTimeoutMs);
      let err: KvError;
      try {
        return await attempt(endpoint, attemptDeadline);
      } catch (e) {
        if (this.closed) throw closedError();
        err = fromCallError(e, endpoint);
      }
      err.attempts = n;
      this.noteFailure(endpoint, err);
      if (!isRetryable(err) || n > this.maxRetries) throw err;
      let delayMs: number;
      const hint = err instanceof NotLeaderError ? this.hintAddress(err) : undefined;
      if (this.followLeader && hint !== undefined && hint !== endpoint && hintsFollowed < this.endpoints.length) {
        // A fresh hint is followed at once; a chain of hints longer than the cluster means the
        // nodes disagree (an election), so backoff takes over.
        hinted = hint;
        hintsFollowed++;
        delayMs = 0;
      } else {
        delayMs = fullJitterMs(backoffRetries++, this.backoff, this.random);
      }
      if (this.clock.now() + delayMs + MIN_RETRY_TIME_MS >= deadline) throw err;
      if (delayMs > 0) await this.clock.sleep(delayMs, this.abort.signal);
    }
  }

  private pick(target: Target): string {
    if (target === 'leader' && this.followLeader && this.leaderId !== 0) {
      const addr = this.addressOf(this.leaderId);
      if (addr !== undefined) return addr;
    }
    return this.endpoints[this.cursor % this.endpoints.length]!;
  }

  /** Where to reach node `id`: an endpoint it answered at, else its configured address if reachable. */
  private addressOf(id: number): string | undefined {
    const ep = this.endpointOfNode.get(id);
    if (ep !== undefined) return ep;
    const addr = this.memberAddress.get(id);
    return addr !== undefined && !this.unreachable.has(addr) ? addr : undefined;
  }

  private hintAddress(err: NotLeaderError): string | undefined {
    if (err.leaderId === 0) return undefined;
    return this.addressOf(err.leaderId);
  }

  private noteFailure(endpoint: string, err: KvError): void {
    if (err instanceof NotLeaderError) {
      if (err.leaderId !== 0 && err.leaderAddress) this.learnMember(err.leaderId, err.leaderAddress);
      this.setLeader(err.leaderId, this.leaderTerm);
    } else if ((err.code === 'UNAVAILABLE' || err.code === 'NO_QUORUM' || err.code === 'TIMEOUT') && this.leaderId !== 0 && this.addressOf(this.leaderId) === endpoint) {
      // The node we took for the leader is down, hung or lost its quorum: find the leader anew.
      this.leaderId = 0;
    }
    const connectionFailed = err.code === 'UNAVAILABLE' && err.nodeId === 0;
    if (connectionFailed && !this.endpoints.includes(endpoint)) this.unreachable.add(endpoint);
    if (isRetryable(err) && this.endpoints[this.cursor % this.endpoints.length] === endpoint) {
      this.cursor = (this.cursor + 1) % this.endpoints.length;
    }
  }

  private learnMember(id: number, address: string): void {
    if (id === 0 || address === '') return;
    if (!this.memberAddress.has(id) && this.memberAddress.size >= MAX_EXTRA_ADDRESSES + this.endpoints.length) return;
    if (this.memberAddress.get(id) !== address) this.unreachable.delete(address);
    this.memberAddress.set(id, address);
  }

  private setLeader(id: number, term: number): void {
    if (term < this.leaderTerm) return;
    this.leaderTerm = term;
    this.leaderId = id;
  }

  /** Learns from a response header: the highest index, and the leader (by term). */
  private header(h: pb.ResponseHeader | null | undefined): ResponseHeader {
    const header = fromHeader(h);
    if (header.index > this.highestIndex) this.highestIndex = header.index;
    if (header.term >= this.leaderTerm) {
      this.setLeader(header.leaderId, header.term);
      if (header.leaderId !== 0 && this.addressOf(header.leaderId) === undefined) this.maybeRefreshTopology();
    }
    return header;
  }

  /** A read's header names the node that answered at `endpoint`. */
  private noteNodeAt(h: pb.ResponseHeader | null | undefined, endpoint: string): void {
    const nodeId = Number(h?.node_id ?? 0);
    if (Number.isSafeInteger(nodeId) && nodeId > 0 && this.endpoints.includes(endpoint)) this.endpointOfNode.set(nodeId, endpoint);
  }

  private noteStatus(endpoint: string, res: pb.StatusResponse): NodeStatus {
    const s = fromStatus(endpoint, res);
    if (this.endpoints.includes(endpoint)) this.endpointOfNode.set(s.nodeId, endpoint);
    for (const m of s.members) this.learnMember(m.id, m.clientAddress);
    if (s.leaderId !== 0 && s.leaderAddress !== '') this.learnMember(s.leaderId, s.leaderAddress);
    this.setLeader(s.leaderId, s.term);
    return s;
  }

  /**
   * The leader is known by id but not by address: ask an endpoint's Status in the background (at
   * most one at a time, once per interval) to learn the members' addresses. Never delays a call.
   */
  private maybeRefreshTopology(): void {
    const now = this.clock.now();
    if (this.closed || now - this.lastTopologyRefreshMs < TOPOLOGY_REFRESH_INTERVAL_MS) return;
    this.lastTopologyRefreshMs = now;
    const endpoint = this.endpoints[this.cursor % this.endpoints.length]!;
    this.call<pb.StatusResponse>('Status', endpoint, {}, now + Math.min(this.timeoutMs, TOPOLOGY_REFRESH_INTERVAL_MS)).then(
      (res) => {
        if (!this.closed) this.noteStatus(endpoint, res);
      },
      () => undefined,
    );
  }

  private channel(address: string): grpc.Client {
    let ch = this.channels.get(address);
    if (ch === undefined) {
      const Ctor = grpc.makeGenericClientConstructor(kvServiceDefinition, 'KV');
      ch = new Ctor(address, grpc.credentials.createInsecure(), this.channelOptions);
      this.channels.set(address, ch);
    }
    return ch;
  }

  /** The Maintenance client of `address`: the same connection as its KV client. */
  private maintenanceClient(address: string): grpc.Client {
    let c = this.maintenanceClients.get(address);
    if (c === undefined) {
      const Ctor = grpc.makeGenericClientConstructor(maintenanceServiceDefinition, 'Maintenance');
      c = new Ctor(address, grpc.credentials.createInsecure(), { channelOverride: this.channel(address).getChannel() });
      this.maintenanceClients.set(address, c);
    }
    return c;
  }

  /** One gRPC call to one address, with a deadline; cancelled by close(). */
  private call<Res>(method: string, address: string, req: unknown, deadline: number, service: Service = 'kv'): Promise<Res> {
    this.checkOpen();
    const ch = service === 'kv' ? this.channel(address) : this.maintenanceClient(address);
    const fn = (ch as unknown as Record<string, UnaryFn>)[method];
    if (fn === undefined) throw new Error(`KvClient: no method ${method}`);
    return new Promise<Res>((resolve, reject) => {
      const call = fn.call(ch, req, new grpc.Metadata(), { deadline }, (err, res) => {
        this.inflight.delete(call);
        if (err === null) resolve(res as Res);
        else if (err.code === grpc.status.DEADLINE_EXCEEDED && ch.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY) {
          // The deadline passed while there was no connection to send the call on: the node is
          // unreachable, and the call never reached it.
          reject(new UnavailableError('UNAVAILABLE', `no connection to ${address} before the deadline (${err.details})`, { endpoint: address, grpcCode: err.code, cause: err }));
        } else reject(err);
      });
      this.inflight.add(call);
    });
  }

  private checkOpen(): void {
    if (this.closed) throw closedError();
  }
}

function closedError(): KvError {
  return new KvError('CLOSED', 'the client was closed');
}

function positiveInt(name: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`KvClient: ${name} must be a positive integer, got ${n}`);
  return n;
}

function nonNegativeInt(name: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`KvClient: ${name} must be a non-negative integer, got ${n}`);
  return n;
}

function checkUint32(name: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > 0xffff_ffff) throw new KvError('INVALID_ARGUMENT', `${name} must be an integer in [0, 2^32 - 1], got ${n}`);
  return n;
}
