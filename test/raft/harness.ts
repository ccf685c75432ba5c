// A tiny hand-driven cluster for focused tests of the Raft core: messages are collected in a queue
// and delivered only when the test says so, so a test can reproduce an exact scenario.

import { Raft, createRng, type Entry, type Message, type NodeId, type RaftConfig } from '../../src/raft/index.js';

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A log of the given terms, index 1 upward, each entry's data naming its index and term. */
export function logOfTerms(terms: readonly number[]): Entry[] {
  return terms.map((term, k) => ({ index: k + 1, term, type: 'normal' as const, data: bytes(`${k + 1}@${term}`) }));
}

export interface NodeSetup {
  readonly term?: number;
  readonly log?: readonly number[];
}

export class Harness {
  readonly nodes = new Map<NodeId, Raft>();
  /** Messages sent and not yet delivered, in send order. */
  queue: Message[] = [];
  /** Every message ever sent, for assertions. */
  readonly sent: Message[] = [];
  /** Entries applied per node, as `index@term`. */
  readonly applied = new Map<NodeId, string[]>();

  constructor(
    readonly ids: readonly NodeId[],
    setup: Readonly<Record<number, NodeSetup>> = {},
    overrides: Partial<RaftConfig> = {},
  ) {
    for (const id of ids) {
      const s = setup[id];
      this.nodes.set(
        id,
        new Raft({
          id,
          peers: ids,
          electionTimeoutTicks: 10,
          heartbeatIntervalTicks: 2,
          rng: createRng(id),
          initial: { hardState: { term: s?.term ?? s?.log?.at(-1) ?? 0, vote: 0, commit: 0 }, entries: logOfTerms(s?.log ?? []), applied: 0 },
          ...overrides,
        }),
      );
      this.applied.set(id, []);
    }
    // Restarted nodes refuse votes for one election timeout; let that pass, dropping what they send.
    if (ids.some((id) => (setup[id]?.term ?? setup[id]?.log?.at(-1) ?? 0) > 0) && !overrides.initial) {
      for (let i = 0; i < 10; i++) for (const n of this.nodes.values()) n.tick();
      this.flush();
      this.queue = [];
    }
  }

  node(id: NodeId): Raft {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Processes every node's Ready (persisting is implicit: this harness never crashes). */
  flush(): void {
    for (const n of this.nodes.values()) {
      while (n.hasReady()) {
        const r = n.ready();
        for (const m of [...r.messages, ...r.messagesAfterPersist]) {
          this.queue.push(m);
          this.sent.push(m);
        }
        if (r.snapshot) this.applied.get(n.id)!.push(`snapshot ${r.snapshot.index}@${r.snapshot.term}`);
        for (const e of r.committedEntries) this.applied.get(n.id)!.push(`${e.index}@${e.term}`);
        n.advance(r);
      }
    }
  }

  /**
   * Delivers queued messages until none are left (or `limit` deliveries), dropping those `filter`
   * rejects. Returns how many were delivered.
   */
  deliverAll(filter: (m: Message) => boolean = () => true, limit = 100_000): number {
    let delivered = 0;
    this.flush();
    while (this.queue.length > 0 && delivered < limit) {
      const m = this.queue.shift()!;
      if (!filter(m)) continue;
      if (m.type === 'Snap' && m.snapshot === undefined) {
        // The caller's part of InstallSnapshot: the leader's state machine at its applied index is
        // "streamed" to the follower, which steps it; then the leader hears how it went.
        const leader = this.node(m.from);
        const snapshot = { index: leader.appliedIndex, term: leader.termAt(leader.appliedIndex)! };
        this.node(m.to).step({ ...m, snapshot });
        this.flush();
        leader.reportSnapshot(m.to, snapshot);
      } else {
        this.node(m.to).step(m);
      }
      delivered++;
      this.flush();
    }
    return delivered;
  }

  /** Ticks the given nodes (all by default) n times, delivering messages after each tick. */
  tick(n: number, ids: readonly NodeId[] = this.ids, filter?: (m: Message) => boolean): void {
    for (let i = 0; i < n; i++) {
      for (const id of ids) this.node(id).tick();
      this.deliverAll(filter);
    }
  }

  /** Makes `id` campaign and delivers everything; returns the node. */
  elect(id: NodeId, filter?: (m: Message) => boolean): Raft {
    this.node(id).campaign();
    this.deliverAll(filter);
    return this.node(id);
  }

  termsOf(id: NodeId): number[] {
    const n = this.node(id);
    const out: number[] = [];
    for (let i = n.snapshot.index + 1; i <= n.lastIndex; i++) out.push(n.termAt(i)!);
    return out;
  }
}

/** Cuts every message to or from the given nodes. */
export const isolate =
  (...ids: NodeId[]) =>
  (m: Message): boolean =>
    !ids.includes(m.from) && !ids.includes(m.to);
