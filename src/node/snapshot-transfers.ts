// The node's two ends of InstallSnapshot (Raft §7), between the core, the store and the transport.
//
// Leader: when the core asks for a snapshot to be streamed to a follower (a Snap message), a
// consistent copy of the state machine is read through one LevelDB iterator (NodeStore.openSnapshot)
// and streamed with PeerTransport.sendSnapshot, whose flow control keeps a few chunks in memory
// whatever the snapshot's size. The outcome goes back to the core (reportSnapshot); a transfer is
// aborted when this node stops leading.
//
// Follower: chunks are decoded as they arrive and their records written into a staging generation
// of the store, invisible to reads. Once the stream's checksum is verified, the runtime steps the
// snapshot into the core and installs it with the next Ready, in one atomic write; a transfer that
// breaks (crash, leader change, corrupt stream) leaves the old state untouched, and the staging is
// dropped (or cleared at the next start). At most one incoming transfer runs at a time.

import { RaftKvError } from '../errors.js';
import type { NodeId, SnapshotMeta, SnapshotRequest } from '../raft/types.js';
import type { NodeStore, SnapshotInstall, SnapshotStaging } from '../storage/node-store.js';
import { SnapshotDecoder, type SnapshotLimits } from '../storage/snapshot-format.js';
import type { SnapshotSink } from '../transport/snapshot-receiver.js';
import type { Logger } from './logger.js';
import type { RaftRuntime } from './raft-runtime.js';

/** Chunk size of a transfer: small enough that a few in flight stay cheap, big enough to stream fast. */
export const DEFAULT_SNAPSHOT_CHUNK_BYTES = 256 * 1024;

export interface SnapshotTransferDeps {
  readonly clusterId: string;
  readonly store: NodeStore;
  readonly runtime: RaftRuntime<unknown, SnapshotInstall>;
  readonly send: (to: NodeId, term: number, chunks: AsyncIterable<Uint8Array>, opts: { signal: AbortSignal }) => Promise<SnapshotMeta>;
  /** The current Raft term (to refuse a transfer from a leader of an older one). */
  readonly currentTerm: () => number;
  readonly chunkBytes: number;
  /** Limits a received record must respect (the same as the KV API's). */
  readonly limits: SnapshotLimits;
  readonly log: Logger;
}

export interface SnapshotTransferCounters {
  sent: number;
  sendFailures: number;
  received: number;
  receiveFailures: number;
  /** Transfers that arrived whole but the core did not need (stale, or its log already held them). */
  notNeeded: number;
}

export class SnapshotTransfers {
  private readonly d: SnapshotTransferDeps;
  /** Outgoing transfers by follower: at most one each, with the term they were asked in. */
  private readonly outgoing = new Map<NodeId, { readonly abort: AbortController; readonly term: number }>();
  private incoming: IncomingSnapshot | undefined;
  readonly counters: SnapshotTransferCounters = { sent: 0, sendFailures: 0, received: 0, receiveFailures: 0, notNeeded: 0 };

  constructor(deps: SnapshotTransferDeps) {
    this.d = deps;
  }

  /** Followers a transfer is running to. */
  get outgoingTo(): NodeId[] {
    return [...this.outgoing.keys()];
  }

  /** The sender of the transfer being received, if any. */
  get incomingFrom(): NodeId | undefined {
    return this.incoming?.from;
  }

  // ---- leader ---------------------------------------------------------------------------------

  /** The core asked for a snapshot to go to m.to. Runs in the background; reports to the runtime. */
  send(m: SnapshotRequest): void {
    const running = this.outgoing.get(m.to);
    if (running !== undefined) {
      // The core asks again only after a report, or in a new term; either way this request must not
      // vanish, or the follower would wait in the core's snapshot state for ever. Stop an older
      // term's transfer, and report this request failed: the core asks again after the follower's
      // next heartbeat response, by when the running transfer has ended.
      if (running.term < m.term) running.abort.abort(new RaftKvError('UNAVAILABLE', `superseded by a request of term ${m.term}`));
      this.d.runtime.reportSnapshot(m.to, m.term, undefined);
      return;
    }
    const transfer = { abort: new AbortController(), term: m.term };
    this.outgoing.set(m.to, transfer);
    void this.runSend(m, transfer.abort, () => {
      if (this.outgoing.get(m.to) === transfer) this.outgoing.delete(m.to);
    });
  }

  private async runSend(m: SnapshotRequest, abort: AbortController, done: () => void): Promise<void> {
    const t0 = performance.now();
    let reader: Awaited<ReturnType<NodeStore['openSnapshot']>> | undefined;
    let installed: SnapshotMeta | undefined;
    try {
      reader = await this.d.store.openSnapshot();
      const h = reader.header;
      this.d.log.info('snapshot transfer starting', { to: m.to, term: m.term, index: h.index, snapshotTerm: h.term });
      installed = await this.d.send(m.to, m.term, reader.chunks(this.d.chunkBytes), { signal: abort.signal });
      this.counters.sent++;
      this.d.log.info('snapshot transfer done', { to: m.to, index: installed.index, ms: Math.round(performance.now() - t0) });
    } catch (e) {
      this.counters.sendFailures++;
      this.d.log.warn('snapshot transfer failed', { to: m.to, error: (e as Error)?.message ?? String(e) });
    } finally {
      await reader?.close().catch(() => undefined);
      // Free the slot before reporting, so the core's next request for this follower is taken.
      done();
      this.d.runtime.reportSnapshot(m.to, m.term, installed);
    }
  }

  /** This node stopped leading (or is stopping): its transfers have no reason to go on. */
  abortOutgoing(reason: string): void {
    for (const t of this.outgoing.values()) t.abort.abort(new RaftKvError('UNAVAILABLE', reason));
  }

  // ---- follower -------------------------------------------------------------------------------

  /** The transport's onSnapshot handler: a sink for a transfer from `from`, a leader of `term`. */
  open(from: NodeId, term: number): SnapshotSink {
    const ours = this.d.currentTerm();
    if (term < ours) {
      throw new RaftKvError('UNAVAILABLE', `snapshot from node ${from} refused: its term ${term} is behind this node's term ${ours}`);
    }
    const cur = this.incoming;
    if (cur !== undefined) {
      if (cur.installing || cur.term >= term) {
        throw new RaftKvError(
          'UNAVAILABLE',
          `snapshot from node ${from} refused: a transfer from node ${cur.from} (term ${cur.term}) is ${cur.installing ? 'being installed' : 'in progress'}; retry later`,
        );
      }
      // A leader of a newer term wins; the older transfer's leader has been deposed.
      cur.abort(new RaftKvError('UNAVAILABLE', `superseded by a transfer from node ${from} at term ${term}`));
    }
    const sink = new IncomingSnapshot(this.d, from, term, (outcome) => {
      if (this.incoming === sink) this.incoming = undefined;
      if (outcome === 'installed') this.counters.received++;
      else if (outcome === 'not-needed') this.counters.notNeeded++;
      else this.counters.receiveFailures++;
    });
    this.incoming = sink;
    this.d.log.info('snapshot transfer incoming', { from, term });
    return sink;
  }
}

type Outcome = 'installed' | 'not-needed' | 'failed';

class IncomingSnapshot implements SnapshotSink {
  private readonly decoder: SnapshotDecoder;
  private staging: SnapshotStaging | undefined;
  private stagingOpening: Promise<SnapshotStaging> | undefined;
  private aborted: Error | undefined;
  private ended = false;
  /** finish() handed the staged snapshot to the runtime; from then on it owns the outcome. */
  installing = false;
  private bytes = 0;
  private readonly t0 = performance.now();

  constructor(
    private readonly d: SnapshotTransferDeps,
    readonly from: NodeId,
    readonly term: number,
    private readonly onEnd: (o: Outcome) => void,
  ) {
    this.decoder = new SnapshotDecoder(d.limits);
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.throwIfAborted();
    const staging = await this.openStaging();
    const records = this.decoder.push(chunk);
    const header = this.decoder.header;
    if (header !== undefined && header.clusterId !== this.d.clusterId) {
      throw new RaftKvError('INVALID_ARGUMENT', `snapshot from node ${this.from} is of cluster ${JSON.stringify(header.clusterId)}, not ${JSON.stringify(this.d.clusterId)}`);
    }
    if (records.length > 0) await staging.write(records);
    this.bytes += chunk.length;
    this.throwIfAborted();
  }

  async finish(): Promise<SnapshotMeta> {
    this.throwIfAborted();
    this.installing = true;
    try {
      const staging = await this.openStaging();
      const summary = this.decoder.end();
      const meta: SnapshotMeta = { index: summary.header.index, term: summary.header.term };
      const outcome = await this.d.runtime.installSnapshot(this.from, this.term, meta, { meta, staging, header: summary.header });
      if (outcome === 'not-needed') await staging.abort();
      this.d.log.info('snapshot received', {
        from: this.from,
        index: meta.index,
        term: meta.term,
        records: summary.records,
        bytes: summary.bytes,
        outcome,
        ms: Math.round(performance.now() - this.t0),
      });
      this.end(outcome);
      return meta;
    } catch (e) {
      this.d.log.warn('snapshot refused', { from: this.from, bytes: this.bytes, error: (e as Error)?.message ?? String(e) });
      await this.staging?.abort().catch(() => undefined);
      this.end('failed');
      throw e;
    }
  }

  abort(reason: Error): void {
    if (this.aborted !== undefined || this.installing) return;
    this.aborted = reason;
    this.d.log.warn('snapshot transfer broken', { from: this.from, bytes: this.bytes, reason: reason.message });
    void (this.stagingOpening ?? Promise.resolve(undefined)).then((s) => s?.abort()).catch(() => undefined);
    this.end('failed');
  }

  private end(o: Outcome): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(o);
  }

  private openStaging(): Promise<SnapshotStaging> {
    this.stagingOpening ??= this.d.store.beginStaging().then((s) => (this.staging = s));
    return this.stagingOpening;
  }

  private throwIfAborted(): void {
    if (this.aborted !== undefined) throw this.aborted;
  }
}
