// A raftkv node: the Raft core driven by RaftRuntime, its log and data in one LevelDB (NodeStore +
// KvStateMachine), peers over PeerTransport, and the KV API on a gRPC server, all on one port (a
// NodeListener hands raw peer connections to the transport, everything else to gRPC): clients and
// peers share the node's single address.

import { randomInt } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { LimitError, NotLeaderError, RaftKvError } from '../errors.js';
import { encodeCommand, type ApplyResult, type Command, type WriteResult } from '../kv/command.js';
import type { KvRecord } from '../kv/record.js';
import { DEFAULT_CACHE_BYTES, KvStateMachine } from '../kv/state-machine.js';
import { leaseDurationTicks, Raft } from '../raft/raft.js';
import { createRng } from '../raft/rng.js';
import { DEFAULT_MAX_CLOCK_DRIFT, NONE, type NodeId } from '../raft/types.js';
import { kvPackageDefinition, kvServiceDefinition, KV_SERVICE_NAME, maintenancePackageDefinition } from '../server/kv-proto.js';
import type * as pb from '../server/kv-proto.js';
import { addFaultService } from '../server/fault-service.js';
import { addKvService, kvFastMethods, METADATA_FORWARDED, type KvHandlers } from '../server/kv-service.js';
import { installUnaryFastPath, type FastPathCounters } from '../server/unary-fast-path.js';
import { addMaintenanceService, MAX_SNAPSHOT_CHUNK_BYTES } from '../server/maintenance-service.js';
import {
  checkCompare,
  checkKey,
  checkReadOptions,
  checkSession,
  checkValue,
  DEFAULT_REQUEST_LIMITS,
  InvalidArgumentError,
  type ReadRequestOptions,
  type RequestLimits,
} from '../server/validate.js';
import { NodeStore, type SnapshotInstall, type SnapshotReader, type StateWrite } from '../storage/node-store.js';
import { NodeListener, type ListenerCounters } from '../transport/node-listener.js';
import { DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES, PeerTransport } from '../transport/peer-transport.js';
import { peerPackageDefinition, SNAPSHOT_CHUNK_OVERHEAD_BYTES } from '../transport/peer-service.js';
import { createLogger, type Logger, type LogLevel } from './logger.js';
import { DEFAULT_COMMIT_DEFER_MS, RaftRuntime, type SnapshotTaken } from './raft-runtime.js';
import { DEFAULT_SNAPSHOT_CHUNK_BYTES, SnapshotTransfers } from './snapshot-transfers.js';
import { DEFAULT_READS_PER_TURN, ReadPacer } from './read-pacer.js';

export interface KvNodeConfig {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  /** Every member's address (host:port), this node's included; clients and peers share it. */
  readonly members: ReadonlyMap<NodeId, string>;
  /** Where to listen; defaults to this node's member address. */
  readonly listen?: string;
  readonly dataDir: string;
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /**
   * The assumed bound on clock-rate difference between nodes (0.1: 10% fast or slow), which sets the
   * leader lease: leaseDurationTicks(electionTimeoutTicks, maxClockDrift). 1 or more disables leases.
   */
  readonly maxClockDrift: number;
  readonly limits: RequestLimits;
  /** Limit: writes in progress on this node. */
  readonly maxPendingProposals: number;
  /** Limit: reads in progress on this node (waiting for a read index, the applied index, or their turn). */
  readonly maxPendingReads: number;
  /**
   * Reads served per turn of the event loop once their wait is over (0: all at once); the others
   * wait for the next turns, so that the first answers leave while the rest are served. Default
   * DEFAULT_READS_PER_TURN, at most MAX_READS_PER_TURN.
   */
  readonly readsPerTurn?: number;
  /** Limit: bytes of one gRPC message (client or snapshot chunk) and of one peer frame. */
  readonly maxMessageBytes: number;
  /** Limit: bytes of key records cached in memory for reads and applies (0: none). Default 64 MiB. */
  readonly cacheBytes?: number;
  /**
   * How long the write of applies that only committed may wait for the next synced write (0: never
   * wait). Default DEFAULT_APPLY_DEFER_MS.
   */
  readonly applyDeferMs?: number;
  /**
   * How long the leader may hold back a new commit index from a follower that has no new entries to
   * receive, to send it with the next append (0: at once). Default DEFAULT_COMMIT_DEFER_MS.
   */
  readonly commitDeferMs?: number;
  /** Limit: bytes of proposed, uncommitted data on the leader. */
  readonly maxUncommittedBytes: number;
  /** Limit: appends in flight to one follower. */
  readonly maxInflightMessages: number;
  /** Deadline for requests that come without one. */
  readonly defaultTimeoutMs: number;
  /** Take a snapshot (and compact the log) after this many applied entries; 0: not by count. */
  readonly snapshotEntries: number;
  /** ... or after this many bytes of applied entry data; 0: not by size. */
  readonly snapshotBytes: number;
  /** Applied entries kept in the log behind a snapshot for followers that lag a little. */
  readonly compactionMarginEntries: number;
  /**
   * Bytes per chunk of a snapshot transfer (flow control keeps a few in flight). Default:
   * DEFAULT_SNAPSHOT_CHUNK_BYTES, or less to fit in one peer message of maxMessageBytes.
   */
  readonly snapshotChunkBytes?: number;
  readonly logLevel: LogLevel;
  /** Test-only: serve the FaultInjection service (proto/fault.proto) to cut links at run time. */
  readonly faultInjection?: boolean;
  /**
   * Leave Node's Map as each HTTP/2 session's stream table (src/transport/http2-stream-map.ts
   * replaces it, reaching into Node's and grpc-js's internals, because under load V8 promotes every
   * call's objects through it). An escape hatch; default false.
   */
  readonly keepHttp2StreamMaps?: boolean;
  /**
   * Serve the KV methods through grpc-js's own call handling, not the unary fast path
   * (src/server/unary-fast-path.ts takes them from the HTTP/2 streams, reaching into grpc-js's
   * internals, because grpc-js's per-call machinery costs a third of a bare call's CPU). An escape
   * hatch; default false.
   */
  readonly grpcjsKvCalls?: boolean;
}

export const DEFAULT_NODE_CONFIG = {
  tickMs: 100,
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  maxClockDrift: DEFAULT_MAX_CLOCK_DRIFT,
  limits: DEFAULT_REQUEST_LIMITS,
  maxPendingProposals: 10_000,
  maxPendingReads: 10_000,
  maxMessageBytes: 4 * 1024 * 1024,
  maxUncommittedBytes: 64 * 1024 * 1024,
  maxInflightMessages: 256,
  defaultTimeoutMs: 5_000,
  snapshotEntries: 10_000,
  snapshotBytes: 64 * 1024 * 1024,
  compactionMarginEntries: 5_000,
  logLevel: 'info' as LogLevel,
};

/**
 * Limit: leader messages a follower keeps to measure its STALE reads' staleness by. Only those whose
 * commit index is above the applied index, and one below, are kept, so a handful is the rule.
 */
const MAX_LEADER_CONTACTS = 256;
/** Bytes an entry and its peer frame add around a command's key, values and client id (generous). */
const ENTRY_OVERHEAD_BYTES = 1024;

export class KvNode {
  readonly config: KvNodeConfig;
  readonly log: Logger;
  private store!: NodeStore;
  private sm!: KvStateMachine;
  private raft!: Raft;
  private runtime!: RaftRuntime<ApplyResult, SnapshotInstall, StateWrite>;
  private snapshots!: SnapshotTransfers;
  private readonly snapshotChunkBytes: number;
  /** Paces the reads whose wait is over (see KvNodeConfig.readsPerTurn). */
  private readonly readPacer: ReadPacer;
  private transport!: PeerTransport;
  private server!: grpc.Server;
  private listener: NodeListener | undefined;
  /** The unary fast path's counters, when it is installed. */
  private fastPath: FastPathCounters | undefined;
  private health!: HealthImplementation;
  private port = 0;
  /**
   * Wall-clock time this node last heard from a leader: an append or heartbeat of its term or later,
   * or, once it stops leading, its own last contact with a majority. 0: never.
   */
  private lastLeaderContactMs = 0;
  /**
   * What a follower's STALE reads measure their staleness by: the leader messages it received
   * (appends and heartbeats of its term or later, and its own last contact with a majority when it
   * stops leading), as the wall-clock time and the commit index the message carried. A state that
   * holds every entry up to that commit index holds everything the sender had committed when it sent
   * the message. Oldest first; both fields increase along the list (a message whose commit is at or
   * below an earlier one's makes that one useless). At most MAX_LEADER_CONTACTS.
   */
  private leaderContacts: { readonly ms: number; readonly commit: number }[] = [];
  /** Wall-clock time start() began; the first election timeout after it is the first election's. */
  private startedAtMs = 0;
  /** When each peer last sent this node a message, and that message's term (a leader's contact). */
  private readonly peerContact = new Map<NodeId, { readonly term: number; readonly ms: number }>();
  /** The term this node leads in; 0 when it does not lead. */
  private leaderTerm = 0;
  private readonly leaderWaiters = new Set<() => void>();
  private readonly forwardClients = new Map<NodeId, grpc.Client>();
  private closing: Promise<void> | undefined;
  private readonly fatal: (err: unknown) => void;

  constructor(config: KvNodeConfig, opts: { onFatal?: (err: unknown) => void } = {}) {
    if (!config.members.has(config.nodeId)) throw new RangeError(`members must include this node (${config.nodeId})`);
    // Every entry must fit in one peer message, or a follower could never receive it and the log
    // would be stuck behind it.
    const l = config.limits;
    const largestEntry = l.maxKeyBytes + 2 * l.maxValueBytes + l.maxClientIdBytes + ENTRY_OVERHEAD_BYTES;
    if (largestEntry > config.maxMessageBytes) {
      throw new RangeError(
        `maxMessageBytes=${config.maxMessageBytes} is too small for the largest write: maxKeyBytes=${l.maxKeyBytes} + ` +
          `2 x maxValueBytes=${l.maxValueBytes} (a compare-and-swap carries two values) + maxClientIdBytes=${l.maxClientIdBytes} ` +
          `+ ${ENTRY_OVERHEAD_BYTES} bytes of framing need ${largestEntry}`,
      );
    }
    const maxChunk = Math.min(DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES, config.maxMessageBytes - SNAPSHOT_CHUNK_OVERHEAD_BYTES);
    this.snapshotChunkBytes = config.snapshotChunkBytes ?? Math.min(DEFAULT_SNAPSHOT_CHUNK_BYTES, maxChunk);
    if (!Number.isSafeInteger(this.snapshotChunkBytes) || this.snapshotChunkBytes < 1 || this.snapshotChunkBytes > maxChunk) {
      throw new RangeError(
        `snapshotChunkBytes=${config.snapshotChunkBytes} must be in [1, ${maxChunk}] (a chunk fits in one peer message: ` +
          `maxMessageBytes=${config.maxMessageBytes} less ${SNAPSHOT_CHUNK_OVERHEAD_BYTES} bytes of framing, and at most ${DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES})`,
      );
    }
    this.readPacer = new ReadPacer(config.readsPerTurn ?? DEFAULT_READS_PER_TURN, config.maxPendingReads);
    this.config = config;
    this.log = createLogger({ node: config.nodeId }, config.logLevel);
    this.fatal = opts.onFatal ?? ((err) => {
      this.log.error('exiting after a fatal error', { error: String(err) });
      process.exit(70);
    });
  }

  /**
   * What the node's port listener counted since start: connections it closed before sorting them,
   * and HTTP/2 sessions whose stream table it replaced or had to leave as Node's Map. Undefined
   * before start().
   */
  get listenerCounters(): Readonly<ListenerCounters> | undefined {
    return this.listener?.counters;
  }

  /**
   * KV calls the unary fast path served, and those of its methods it left to grpc-js, since start.
   * Undefined before start(), with grpcjsKvCalls, or when the fast path could not be installed.
   */
  get fastPathCounters(): Readonly<FastPathCounters> | undefined {
    return this.fastPath;
  }

  /** The port the server bound (useful with port 0). */
  get boundPort(): number {
    return this.port;
  }

  async start(): Promise<void> {
    const c = this.config;
    const commitDeferMs = c.commitDeferMs ?? DEFAULT_COMMIT_DEFER_MS;
    const t0 = performance.now();
    this.store = await NodeStore.open(c.dataDir, { clusterId: c.clusterId, nodeId: c.nodeId });
    try {
      this.sm = await KvStateMachine.open(this.store, { cacheBytes: c.cacheBytes ?? DEFAULT_CACHE_BYTES });
      const initial = this.store.initialState();
      // Restart cost: opening LevelDB and reading back the log after the snapshot point and the
      // session table; it grows with the log since the last snapshot, not with the history.
      const loadMs = Math.round(performance.now() - t0);
      this.raft = new Raft({
        id: c.nodeId,
        peers: [...c.members.keys()],
        electionTimeoutTicks: c.electionTimeoutTicks,
        heartbeatIntervalTicks: c.heartbeatIntervalTicks,
        maxUncommittedBytes: c.maxUncommittedBytes,
        maxInflightMessages: c.maxInflightMessages,
        leaseTicks: c.maxClockDrift >= 1 ? 0 : leaseDurationTicks(c.electionTimeoutTicks, c.maxClockDrift),
        maxAppendBytes: Math.min(1024 * 1024, Math.floor(c.maxMessageBytes / 4)),
        deferCommitBroadcast: commitDeferMs > 0,
        rng: createRng(randomInt(2 ** 32)),
        initial,
      });
      this.transport = new PeerTransport({
        nodeId: c.nodeId,
        clusterId: c.clusterId,
        peers: new Map(c.members),
        maxMessageBytes: c.maxMessageBytes,
        maxSnapshotChunkBytes: Math.min(DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES, c.maxMessageBytes - SNAPSHOT_CHUNK_OVERHEAD_BYTES),
        onSnapshot: (from, term) => this.snapshots.open(from, term),
        onMessage: (m) => {
          const now = Date.now();
          if ((m.type === 'App' || m.type === 'Heartbeat') && m.term >= this.raft.term) {
            this.lastLeaderContactMs = now;
            this.noteLeaderContact(now, m.commit);
          }
          this.peerContact.set(m.from, { term: m.term, ms: now });
          this.runtime.step(m);
        },
        logger: { info: (msg) => this.log.info('transport', { msg }), warn: (msg) => this.log.warn('transport', { msg }) },
      });
      this.runtime = new RaftRuntime<ApplyResult, SnapshotInstall, StateWrite>({
        raft: this.raft,
        store: this.store,
        stateMachine: this.sm,
        transport: this.transport,
        snapshots: { send: (m) => this.snapshots.send(m) },
        snapshotPolicy: {
          snapshotEntries: c.snapshotEntries,
          snapshotBytes: c.snapshotBytes,
          compactionMarginEntries: c.compactionMarginEntries,
        },
        tickMs: c.tickMs,
        ...(c.applyDeferMs !== undefined ? { applyDeferMs: c.applyDeferMs } : {}),
        commitDeferMs,
        electionTimeoutTicks: c.electionTimeoutTicks,
        maxPendingProposals: c.maxPendingProposals,
        maxPendingReads: c.maxPendingReads,
        logger: this.log,
        onFatal: this.fatal,
        onSoftState: (s) => {
          this.log.info('role', { role: s.role, leader: s.leader, term: this.raft.term });
          if (s.role !== 'leader') this.snapshots.abortOutgoing('this node stopped leading');
          if (s.role === 'leader') {
            this.leaderTerm = this.raft.term;
          } else if (this.leaderTerm !== 0) {
            // Its state was current as long as a majority still followed it: staleness counts from then.
            const quorumMs = this.quorumContactMs(this.leaderTerm);
            this.lastLeaderContactMs = Math.max(this.lastLeaderContactMs, quorumMs);
            if (quorumMs > 0) this.noteLeaderContact(quorumMs, this.raft.commitIndex);
            this.leaderTerm = 0;
          }
          if (s.leader !== NONE) {
            for (const w of this.leaderWaiters) w();
            this.leaderWaiters.clear();
          }
        },
      });
      this.snapshots = new SnapshotTransfers({
        clusterId: c.clusterId,
        store: this.store,
        runtime: this.runtime as RaftRuntime<unknown, SnapshotInstall>,
        send: (to, term, chunks, opts) => this.transport.sendSnapshot(to, term, chunks, opts),
        currentTerm: () => this.raft.term,
        chunkBytes: this.snapshotChunkBytes,
        limits: { maxKeyBytes: Math.max(c.limits.maxKeyBytes, c.limits.maxClientIdBytes), maxValueBytes: c.maxMessageBytes },
        log: this.log,
      });
      this.server = new grpc.Server({
        'grpc.max_receive_message_length': c.maxMessageBytes,
        'grpc.max_send_message_length': c.maxMessageBytes,
        // channelz keeps per-call statistics for an admin service this node does not serve: CPU spent
        // on every call for nothing.
        'grpc.enable_channelz': 0,
      });
      const handlers = this.handlers();
      addKvService(this.server, handlers);
      addMaintenanceService(
        this.server,
        {
          nodeId: c.nodeId,
          createSnapshot: () => this.createSnapshot(),
          openSnapshot: async () => {
            const approximateBytes = await this.store.approximateStateBytes();
            const reader = await this.openSnapshot();
            return { header: reader.header, approximateBytes, chunks: (n) => reader.chunks(n), close: () => reader.close() };
          },
        },
        { maxChunkBytes: Math.min(MAX_SNAPSHOT_CHUNK_BYTES, c.maxMessageBytes - SNAPSHOT_CHUNK_OVERHEAD_BYTES) },
      );
      if (c.faultInjection) {
        addFaultService(
          this.server,
          (links) => this.setBlockedLinks(links),
          (rate) => this.setClockRate(rate),
        );
        this.log.warn('fault injection enabled (test only)');
      }
      this.listener = new NodeListener({
        grpcServer: this.server,
        replaceStreamMaps: c.keepHttp2StreamMaps !== true,
        logger: { info: (msg) => this.log.info('listener', { msg }), warn: (msg) => this.log.warn('listener', { msg }) },
      });
      if (c.grpcjsKvCalls !== true) {
        const { methods, statusOf } = kvFastMethods(handlers);
        this.fastPath = installUnaryFastPath(this.server, methods, {
          maxReceiveMessageBytes: c.maxMessageBytes,
          maxSendMessageBytes: c.maxMessageBytes,
          limitName: '--max-message-bytes',
          statusOf,
        });
        if (this.fastPath === undefined) {
          this.log.warn('listener', {
            msg: `the unary fast path is not installed (grpc-js's internals are not as expected, or its server uses what the fast path would bypass): KV calls go through grpc-js's call handling (see src/server/unary-fast-path.ts)`,
          });
        }
      }
      this.transport.addToServer(this.server, this.listener);
      this.health = new HealthImplementation({ '': 'SERVING', [KV_SERVICE_NAME]: 'SERVING' });
      this.health.addToServer(this.server);
      new ReflectionService({ ...kvPackageDefinition, ...maintenancePackageDefinition, ...peerPackageDefinition }).addToServer(this.server);
      const listen = c.listen ?? c.members.get(c.nodeId)!;
      // One port for clients and peers: the listener hands HTTP/2 connections to the gRPC server.
      this.port = await this.listener.listen(listen);
      this.startedAtMs = Date.now();
      this.runtime.start();
      this.log.info('started', {
        listen: `${listen.replace(/:\d+$/, '')}:${this.port}`,
        term: initial.hardState.term,
        snapshotIndex: initial.snapshot?.index ?? 0,
        lastIndex: (initial.snapshot?.index ?? 0) + initial.entries.length,
        applied: initial.applied,
        loadMs,
        startMs: Math.round(performance.now() - t0),
        members: Object.fromEntries(c.members),
      });
    } catch (e) {
      await this.store.close().catch(() => undefined);
      throw e;
    }
  }

  /** Stops accepting requests, lets in-flight batches finish, and closes LevelDB cleanly. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.health?.setStatus('', 'NOT_SERVING');
      this.health?.setStatus(KV_SERVICE_NAME, 'NOT_SERVING');
      this.snapshots?.abortOutgoing('the node is shutting down');
      await this.runtime?.stop();
      await this.transport?.close();
      for (const client of this.forwardClients.values()) client.close();
      const listenerClosed = this.listener?.close();
      await new Promise<void>((resolve) => {
        if (!this.server) return resolve();
        const timer = setTimeout(() => {
          this.server.forceShutdown();
          resolve();
        }, 2000);
        this.server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await listenerClosed;
      await this.store?.close();
      this.log.info('stopped');
    })();
    return this.closing;
  }

  /** Test-only: drops peer messages on the given (from, to) links, both sending and receiving. */
  setBlockedLinks(links: ReadonlyArray<readonly [NodeId, NodeId]>): void {
    const blocked = new Set(links.map(([f, t]) => `${f}>${t}`));
    this.transport.setLinkFilter(blocked.size === 0 ? undefined : (from, to) => !blocked.has(`${from}>${to}`));
    this.log.info('links', { blocked: [...blocked] });
  }

  /** Test only: this node's tick clock runs at `rate` times real time from now on (not persisted). */
  setClockRate(rate: number): void {
    this.runtime.setClockRate(rate);
    this.log.info('clock', { rate });
  }

  /** Starts an election now (used by tests and tools). */
  campaign(): void {
    this.runtime.campaign();
  }

  /** Takes a snapshot of this node's state now and compacts its log (kvctl snapshot create). */
  createSnapshot(): Promise<SnapshotTaken> {
    return this.runtime.requestSnapshot();
  }

  /** A consistent copy of this node's state machine, streamed in the snapshot format (backups). */
  openSnapshot(): Promise<SnapshotReader> {
    return this.store.openSnapshot();
  }

  // ---- requests -------------------------------------------------------------------------------

  private header(index: number, consistency: pb.ConsistencyName = 'CONSISTENCY_UNSPECIFIED', stalenessMs = 0): pb.ResponseHeader {
    return {
      index,
      node_id: this.config.nodeId,
      term: this.raft.term,
      leader_id: this.raft.leader,
      consistency,
      staleness_ms: stalenessMs,
    };
  }

  private handlers(): KvHandlers {
    const l = this.config.limits;
    return {
      nodeId: this.config.nodeId,
      defaultTimeoutMs: this.config.defaultTimeoutMs,
      leaderAddress: (id) => this.config.members.get(id),
      put: async (req, ctx) => {
        const key = checkKey('key', req.key, l);
        const value = checkValue('value', req.value, l);
        const session = checkSession(req.session, l);
        const prevKv = req.prev_kv ? true : undefined;
        const cmd = (proposedAtMs: number): Command => ({ op: 'put', key, proposedAtMs, clientId: session.clientId, seq: session.seq, value, prevKv });
        return this.write('Put', req, ctx, cmd, (r) => {
          if (r.kind !== 'put') throw unexpected(r);
          return { header: this.header(r.index), prev_kv: req.prev_kv && r.prev ? kvMsg(key, r.prev) : null };
        });
      },
      delete: async (req, ctx) => {
        const key = checkKey('key', req.key, l);
        const session = checkSession(req.session, l);
        const prevKv = req.prev_kv ? true : undefined;
        const cmd = (proposedAtMs: number): Command => ({ op: 'delete', key, proposedAtMs, clientId: session.clientId, seq: session.seq, prevKv });
        return this.write('Delete', req, ctx, cmd, (r) => {
          if (r.kind !== 'delete') throw unexpected(r);
          return { header: this.header(r.index), deleted: r.deleted, prev_kv: req.prev_kv && r.prev ? kvMsg(key, r.prev) : null };
        });
      },
      compareAndSwap: async (req, ctx) => {
        const key = checkKey('key', req.key, l);
        const compare = checkCompare(req, l);
        const value = checkValue('value', req.value, l);
        const session = checkSession(req.session, l);
        const cmd = (proposedAtMs: number): Command => ({ op: 'cas', key, proposedAtMs, clientId: session.clientId, seq: session.seq, compare, value });
        return this.write('CompareAndSwap', req, ctx, cmd, (r) => {
          if (r.kind !== 'cas') throw unexpected(r);
          return { header: this.header(r.index), succeeded: r.succeeded, current: r.current ? kvMsg(key, r.current) : null };
        });
      },
      get: async (req, ctx) => {
        const key = checkKey('key', req.key, l);
        const read = checkReadOptions(req.read);
        const served = await this.readBarrier(read, ctx.deadlineMs);
        const rec = await this.sm.get(key);
        // The index is read after the data, so it is never below the state the answer reflects.
        return { header: { ...served, index: this.runtime.visibleIndexBound }, found: rec !== undefined, kv: rec ? kvMsg(key, rec) : null };
      },
      range: async (req, ctx) => {
        const read = checkReadOptions(req.read);
        const prefix = checkKey('prefix', req.prefix, l, true);
        const start = checkKey('start', req.start, l, true);
        const end = checkKey('end', req.end, l, true);
        const after = checkKey('page_token', req.page_token, l, true);
        if (prefix.length > 0 && (start.length > 0 || end.length > 0)) {
          throw new InvalidArgumentError('prefix', 'give either prefix or start/end, not both');
        }
        if (end.length > 0 && Buffer.compare(Buffer.from(start), Buffer.from(end)) >= 0) {
          throw new InvalidArgumentError('end', 'must be greater than start');
        }
        const limit = req.limit === 0 ? l.maxRangePageSize : req.limit;
        if (limit > l.maxRangePageSize) {
          throw new InvalidArgumentError('limit', `${limit} is over the limit (limit maxRangePageSize=${l.maxRangePageSize})`);
        }
        const served = await this.readBarrier(read, ctx.deadlineMs);
        const range = prefix.length > 0 ? { prefix } : end.length > 0 ? { start, end } : { start };
        const res = await this.sm.range(range, {
          limit,
          keysOnly: req.keys_only,
          maxBytes: Math.floor(this.config.maxMessageBytes / 2),
          ...(after.length > 0 ? { after } : {}),
        });
        return {
          header: { ...served, index: this.runtime.visibleIndexBound },
          kvs: res.items.map((it) => (it.record ? kvMsg(it.key, it.record) : { key: it.key, value: new Uint8Array(0), create_index: 0, mod_index: 0, version: 0 })),
          more: res.more,
          next_page_token: res.nextToken ?? new Uint8Array(0),
        };
      },
      status: async () => this.status(),
    };
  }

  /** Proposes on the leader, or forwards to it; waits for a leader for a bounded time. */
  private async write<Req, Res>(
    method: string,
    req: Req,
    ctx: { deadlineMs: number; forwarded: boolean },
    /** The command, given the wall clock at its proposal (a literal of one shape: no spreads on this path). */
    cmd: (proposedAtMs: number) => Command,
    toResponse: (r: ApplyResult) => Res,
  ): Promise<Res> {
    // Awaited only when there is something to wait for: the common case costs no promise.
    if (this.raft.leader === NONE) await this.waitForLeader(ctx.deadlineMs, 'write');
    this.requireQuorum('write');
    if (this.raft.role !== 'leader') {
      if (ctx.forwarded) throw new NotLeaderError(this.raft.leader);
      return this.forward<Req, Res>(method, req, ctx.deadlineMs);
    }
    const data = encodeCommand(cmd(Date.now()));
    const { result } = await this.runtime.propose(data, Math.max(1, ctx.deadlineMs - Date.now()));
    if (result.kind === 'error') {
      throw new RaftKvError(result.code === 'STALE_SEQUENCE' ? 'STALE_SEQUENCE' : 'INVALID_ARGUMENT', result.message);
    }
    return toResponse(result);
  }

  private electionTimeoutMs(): number {
    return this.config.electionTimeoutTicks * this.config.tickMs;
  }

  /** Why this node cannot get writes committed or confirm strong reads now, if it cannot. */
  private readOnlyReason(): string | undefined {
    if (this.raft.hasQuorumContact()) return undefined;
    if (this.raft.role === 'leader') {
      return `this leader has not heard from a majority of the cluster within the election timeout (${this.electionTimeoutMs()} ms)`;
    }
    const since = this.stalenessMs();
    const ago = since === Number.MAX_SAFE_INTEGER ? 'since it started' : `for ${since} ms`;
    return `this node has not heard from a leader ${ago} (election timeout ${this.electionTimeoutMs()} ms)`;
  }

  /** Fails fast, instead of at the caller's deadline, when no majority can be reached from here. */
  private requireQuorum(what: 'write' | 'read'): void {
    const reason = this.readOnlyReason();
    if (reason === undefined) return;
    throw new RaftKvError(
      'NO_QUORUM',
      `${what} refused: the cluster is read-only from this node: ${reason}; STALE reads still work`,
    );
  }

  /**
   * Waits until some leader is known, at most until the deadline or one election timeout. A node that
   * has heard from no leader for an election timeout already is read-only and refuses at once (except
   * in its first election timeout after start, when the first election may simply not be over). Less
   * one tick: the core counts whole ticks, so it may time out up to one tick early by the wall clock.
   */
  private async waitForLeader(deadlineMs: number, what: 'write' | 'read'): Promise<void> {
    if (this.raft.leader !== NONE) return;
    const silentMs = Date.now() - Math.max(this.lastLeaderContactMs, this.startedAtMs);
    if (silentMs >= this.electionTimeoutMs() - this.config.tickMs) this.requireQuorum(what);
    const boundMs = Math.min(deadlineMs - Date.now(), this.electionTimeoutMs());
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.leaderWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, boundMs));
      this.leaderWaiters.add(done);
    });
    if (this.raft.leader === NONE) {
      throw new RaftKvError(
        'NO_QUORUM',
        `no leader is known after ${this.electionTimeoutMs()} ms: an election is in progress or a majority of the cluster is unreachable; STALE reads still work`,
      );
    }
  }

  private forward<Req, Res>(method: string, req: Req, deadlineMs: number): Promise<Res> {
    const leader = this.raft.leader;
    let client = this.forwardClients.get(leader);
    if (!client) {
      const addr = this.config.members.get(leader);
      if (!addr) throw new NotLeaderError(leader);
      const Ctor = grpc.makeGenericClientConstructor(kvServiceDefinition, 'KV');
      client = new Ctor(addr, grpc.credentials.createInsecure(), {
        'grpc.enable_channelz': 0,
        'grpc.max_receive_message_length': this.config.maxMessageBytes,
        'grpc.max_send_message_length': this.config.maxMessageBytes,
        // This channel keeps reconnecting while its node is down, with gRPC's default backoff (1 s,
        // growing to 120 s), and fails calls until the next attempt. Bounded by an election
        // timeout, so that once that node is back and leads again, forwarding to it works within
        // about an election timeout, not minutes later.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': Math.max(100, this.config.tickMs * this.config.electionTimeoutTicks),
      });
      this.forwardClients.set(leader, client);
    }
    const md = new grpc.Metadata();
    md.set(METADATA_FORWARDED, String(this.config.nodeId));
    const fn = (client as unknown as Record<string, (r: Req, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: Res) => void) => void>)[method]!;
    return new Promise<Res>((resolve, reject) =>
      fn.call(client, req, md, { deadline: deadlineMs }, (err, res) => (err ? reject(err) : resolve(res))),
    );
  }

  /**
   * Waits until a read in the given mode may be served here, and returns the header to serve it
   * with (its consistency is the mode actually used):
   *  - LINEARIZABLE: ReadIndex (a follower asks the leader), then wait to apply up to it;
   *  - LEASE: on a leader whose lease holds, its commit index without a round trip; otherwise (lease
   *    lapsed, or asked of a follower) served as LINEARIZABLE;
   *  - STALE: at once from local state (after min_index, if given), unless staler than
   *    max_staleness_ms.
   * A read may also wait a turn or more of the event loop (readsPerTurn): a STALE read when it
   * arrives, before its checks, the others after their wait, before the header is made. One limit,
   * maxPendingReads, covers a read from here to its serving.
   */
  private async readBarrier(read: ReadRequestOptions, deadlineMs: number): Promise<pb.ResponseHeader> {
    const timeout = (): number => Math.max(1, deadlineMs - Date.now());
    const max = this.config.maxPendingReads;
    if (this.runtime.pendingReadCount() + this.readPacer.waitingCount >= max) {
      throw new LimitError('TOO_MANY_REQUESTS', 'maxPendingReads', max, 'too many reads in progress on this node');
    }
    if (read.consistency === 'STALE') await this.readPacer.turn(deadlineMs);
    if (read.consistency === 'STALE' && this.raft.role !== 'leader') {
      // As stale as the state at the index it would be served at: once the entries this node knows
      // to be committed are applied, or now.
      const now = Date.now();
      const freshMs = this.freshAsOfMs(this.raft.commitIndex);
      const reachable = freshMs === 0 ? Number.MAX_SAFE_INTEGER : Math.max(0, now - freshMs);
      if (read.maxStalenessMs > 0 && reachable > read.maxStalenessMs) {
        const contactMs = this.lastLeaderContactMs;
        const ago =
          contactMs === 0
            ? 'has not heard from a leader since it started'
            : freshMs === contactMs
              ? `last heard from a leader ${reachable} ms ago`
              : `last heard from a leader ${Math.max(0, now - contactMs)} ms ago, but is catching up: it holds the state of ${freshMs === 0 ? 'before it started' : `${reachable} ms ago`}`;
        throw new RaftKvError('TOO_STALE', `this node ${ago}, more than max_staleness_ms=${read.maxStalenessMs}`);
      }
      let minIndex = read.minIndex;
      // Applies not yet visible (a deferred write, or not yet made) would take the read past its
      // bound: it waits for them.
      if (read.maxStalenessMs > 0 && this.stalenessAt(this.runtime.appliedIndex) > read.maxStalenessMs) {
        minIndex = Math.max(minIndex, this.raft.commitIndex);
      }
      if (minIndex > 0) await this.runtime.waitApplied(minIndex, timeout());
      const applied = this.runtime.appliedIndex;
      return this.header(applied, 'STALE', this.stalenessAt(applied));
    }
    if (read.consistency === 'STALE') {
      const staleness = this.stalenessMs();
      if (read.maxStalenessMs > 0 && staleness > read.maxStalenessMs) {
        const ago = staleness === Number.MAX_SAFE_INTEGER ? 'has not heard from a leader since it started' : `last heard from a leader ${staleness} ms ago`;
        throw new RaftKvError('TOO_STALE', `this node ${ago}, more than max_staleness_ms=${read.maxStalenessMs}`);
      }
      let minIndex = read.minIndex;
      // Applies whose write is deferred would take the read past its bound: it waits for them.
      if (read.maxStalenessMs > 0 && staleness + this.runtime.applyLagMs > read.maxStalenessMs) {
        minIndex = Math.max(minIndex, this.raft.appliedIndex);
      }
      if (minIndex > 0) await this.runtime.waitApplied(minIndex, timeout());
      return this.header(this.runtime.appliedIndex, 'STALE', this.readStalenessMs());
    }
    if (this.raft.leader === NONE) await this.waitForLeader(deadlineMs, 'read');
    this.requireQuorum('read');
    if (read.consistency === 'LEASE') {
      // The lease is measured in ticks: make sure none are missing after an event-loop stall.
      this.runtime.catchUpTicks();
      const leaseIndex = this.raft.leaseReadIndex();
      if (leaseIndex !== undefined) {
        await this.runtime.waitApplied(leaseIndex, timeout());
        await this.readPacer.turn(deadlineMs);
        return this.header(this.runtime.appliedIndex, 'LEASE');
      }
    }
    const index = await this.runtime.readIndex(timeout());
    await this.runtime.waitApplied(index, timeout());
    await this.readPacer.turn(deadlineMs);
    return this.header(this.runtime.appliedIndex, 'LINEARIZABLE');
  }

  /**
   * How stale a STALE read served now by a leader may be: since its last contact with a majority
   * (0 while it has one), plus the time committed entries have waited for their apply's deferred write.
   */
  private readStalenessMs(): number {
    const s = this.stalenessMs();
    return s === Number.MAX_SAFE_INTEGER ? s : s + this.runtime.applyLagMs;
  }

  /**
   * Follower: how stale the state that holds every entry up to `index` is, in ms: since the latest
   * leader message whose commit index is at most `index` (the state holds all that its sender had
   * committed when it sent it). A message that told this node of a commit it has not applied yet
   * does not count: a commit held back by the leader (commitDeferMs) or an apply whose write waits
   * (applyDeferMs) shows here. Number.MAX_SAFE_INTEGER when there is no such message.
   */
  private stalenessAt(index: number): number {
    const ms = this.freshAsOfMs(index);
    return ms === 0 ? Number.MAX_SAFE_INTEGER : Math.max(0, Date.now() - ms);
  }

  /** The wall-clock time of the latest leader message whose commit index is at most `index`; 0: none. */
  private freshAsOfMs(index: number): number {
    const c = this.leaderContacts;
    for (let k = c.length - 1; k >= 0; k--) {
      const e = c[k]!;
      if (e.commit <= index) return e.ms;
    }
    return 0;
  }

  /** Records a leader message (see leaderContacts). */
  private noteLeaderContact(ms: number, commit: number): void {
    const c = this.leaderContacts;
    const last = c[c.length - 1];
    // Out of time order (a step-down's quorum contact older than a message since): not recorded.
    if (last !== undefined && ms < last.ms) return;
    while (c.length > 0 && c[c.length - 1]!.commit >= commit) c.pop();
    c.push({ ms, commit });
    // Of the messages at or below the applied index, only the latest can be an answer from now on.
    const applied = this.runtime.appliedIndex;
    let k = 0;
    while (k + 1 < c.length && c[k + 1]!.commit <= applied) k++;
    if (k > 0) c.splice(0, k);
    // Past the limit, one in the middle goes: the answers it gave become older ones, never newer.
    if (c.length > MAX_LEADER_CONTACTS) c.splice(1, 1);
  }

  /**
   * Milliseconds since this node last heard from a leader: 0 on a leader in contact with a majority;
   * on a leader that has lost that contact, since its last contact with a majority.
   * Number.MAX_SAFE_INTEGER when it never heard from one.
   */
  private stalenessMs(): number {
    let since = this.lastLeaderContactMs;
    if (this.raft.role === 'leader') {
      if (this.raft.hasQuorumContact()) return 0;
      since = this.quorumContactMs(this.raft.term);
    }
    if (since === 0) return Number.MAX_SAFE_INTEGER;
    return Math.max(0, Date.now() - since);
  }

  /**
   * As leader in `term`: the last time a majority, this node included, had sent it a message in that
   * term (the majority-th most recent contact); 0 if never.
   */
  private quorumContactMs(term: number): number {
    const now = Date.now();
    const times = [...this.config.members.keys()]
      .map((id) => {
        if (id === this.config.nodeId) return now;
        const c = this.peerContact.get(id);
        return c !== undefined && c.term === term ? c.ms : 0;
      })
      .sort((a, b) => b - a);
    return times[Math.floor(times.length / 2)] ?? 0;
  }

  status(): pb.StatusResponse {
    const s = this.raft.status();
    const leaderKnown = s.leader !== NONE;
    return {
      node_id: s.id,
      role: s.role,
      term: s.term,
      leader_id: s.leader,
      leader_address: leaderKnown ? (this.config.members.get(s.leader) ?? '') : '',
      commit_index: s.commitIndex,
      // What reads see: the core may be ahead by applies whose write is deferred (RaftRuntime).
      applied_index: this.runtime.appliedIndex,
      last_index: s.lastIndex,
      members: [...this.config.members].map(([id, addr]) => ({
        id,
        client_address: addr,
        peer_address: addr,
        match_index: id === s.id ? s.lastIndex : (s.progress?.get(id)?.match ?? 0),
      })),
      writable: s.quorumContact,
      read_only_reason: this.readOnlyReason() ?? '',
      ms_since_leader_contact: this.stalenessMs(),
      cluster_id: this.config.clusterId,
      log_start_index: s.snapshotIndex,
      last_snapshot_index: this.runtime.lastSnapshotTaken?.index ?? 0,
      last_snapshot_unix_ms: this.runtime.lastSnapshotTaken?.atMs ?? 0,
      snapshots_sent: this.snapshots.counters.sent,
      snapshots_installed: this.snapshots.counters.received,
      snapshot_transfers_failed: this.snapshots.counters.sendFailures + this.snapshots.counters.receiveFailures,
      snapshot_transfers_to: this.snapshots.outgoingTo,
    };
  }
}

function kvMsg(key: Uint8Array, r: KvRecord): pb.KeyValueMsg {
  return { key, value: r.value, create_index: r.createIndex, mod_index: r.modIndex, version: r.version };
}

function unexpected(r: ApplyResult | WriteResult): Error {
  return new RaftKvError('INTERNAL', `unexpected apply result of kind ${r.kind}`);
}
