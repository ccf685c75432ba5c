// §7 of the Raft paper (log compaction, InstallSnapshot) on the pure core, driven by hand.

import { describe, expect, it } from 'vitest';
import type { AppendResponse, Message } from '../../src/raft/index.js';
import { Raft, createRng } from '../../src/raft/index.js';
import { bytes, Harness, isolate } from './harness.js';

function proposeAndCommit(h: Harness, leader: number, n: number, filter?: (m: Message) => boolean): void {
  for (let i = 0; i < n; i++) h.node(leader).propose(bytes(`v${i}`));
  h.deliverAll(filter);
  h.tick(2, h.ids, filter);
}

describe('§7 log compaction', () => {
  it('compact drops entries up to an applied index; the log and its terms continue after it', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    proposeAndCommit(h, 1, 5);
    const n = h.node(1);
    expect(n.appliedIndex).toBe(6);
    n.compact(4);
    expect(n.snapshot).toEqual({ index: 4, term: 1 });
    expect(n.termAt(4)).toBe(1);
    expect(n.termAt(3)).toBeUndefined();
    expect(n.entryAt(4)).toBeUndefined();
    expect(n.entryAt(5)?.index).toBe(5);
    expect(() => n.compact(7)).toThrow(/past the applied index 6/);
    n.compact(2); // already compacted: nothing to do
    expect(n.snapshot.index).toBe(4);
    proposeAndCommit(h, 1, 1);
    expect(h.node(2).commitIndex).toBe(7);
  });

  it('a restarted node continues from its snapshot point and a log after it', () => {
    const entries = [5, 6, 7].map((index) => ({ index, term: 2, type: 'normal' as const, data: bytes(`${index}`) }));
    const restart = (over: object = {}): Raft =>
      new Raft({
        id: 1,
        peers: [1, 2, 3],
        electionTimeoutTicks: 10,
        heartbeatIntervalTicks: 2,
        rng: createRng(1),
        initial: { hardState: { term: 2, vote: 0, commit: 6 }, snapshot: { index: 4, term: 2 }, entries, applied: 4, ...over },
      });
    const n = restart();
    expect(n.lastIndex).toBe(7);
    expect(n.termAt(4)).toBe(2);
    const r = n.ready();
    expect(r.committedEntries.map((e) => e.index)).toEqual([5, 6]);
    n.advance(r);
    const bad = (over: object) => () => restart(over);
    expect(bad({ applied: 3 })).toThrow(/applied 3 is below the snapshot index 4/);
    expect(bad({ snapshot: { index: 3, term: 2 } })).toThrow(/not dense/);
  });
});

describe('§7 InstallSnapshot', () => {
  it('a follower behind the compaction point catches up through a snapshot, then through appends', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    const cut = isolate(3);
    proposeAndCommit(h, 1, 10, cut);
    h.node(1).compact(h.node(1).appliedIndex - 2); // keep a trailing margin of 2 entries
    expect(h.node(1).snapshot.index).toBe(9);
    h.queue = [];
    h.tick(4); // heartbeats reach node 3 again; it needs entries before 9
    const snaps = h.sent.filter((m) => m.type === 'Snap');
    expect(snaps).toHaveLength(1);
    expect(snaps[0]).toMatchObject({ from: 1, to: 3 });
    const f = h.node(3);
    expect(f.snapshot).toEqual({ index: 11, term: 1 });
    expect(h.applied.get(3)).toContain('snapshot 11@1');
    expect(f.appliedIndex).toBe(11);
    proposeAndCommit(h, 1, 2);
    expect(f.appliedIndex).toBe(13);
    expect(h.applied.get(3)!.slice(-2)).toEqual(['12@1', '13@1']);
    expect(h.node(1).status().progress!.get(3)!.state).toBe('replicate');
  });

  it('the snapshot waits for persistence: the AppResp leaves only with the Ready that installs it', () => {
    const h = new Harness([1, 2]);
    const f = h.node(2);
    f.step({ type: 'Snap', from: 1, to: 2, term: 3, snapshot: { index: 20, term: 3 } });
    expect(f.pendingSnapshot).toEqual({ index: 20, term: 3 });
    const r = f.ready();
    expect(r.snapshot).toEqual({ index: 20, term: 3 });
    expect(r.hardState).toMatchObject({ term: 3, commit: 20 });
    expect(r.messages).toHaveLength(0);
    expect(r.messagesAfterPersist).toEqual([{ type: 'AppResp', from: 2, to: 1, term: 3, index: 20, reject: false }]);
    expect(r.committedEntries).toHaveLength(0);
    // Appends arriving before the install continue the snapshot; they are applied only after it.
    f.step({
      type: 'App', from: 1, to: 2, term: 3, prevIndex: 20, prevTerm: 3, commit: 21,
      entries: [{ index: 21, term: 3, type: 'normal', data: bytes('x') }],
    });
    f.advance(r);
    expect(f.pendingSnapshot).toBeUndefined();
    expect(f.appliedIndex).toBe(20);
    const r2 = f.ready();
    expect(r2.snapshot).toBeUndefined();
    expect(r2.entries.map((e) => e.index)).toEqual([21]);
    expect(r2.committedEntries.map((e) => e.index)).toEqual([21]);
    f.advance(r2);
    expect(f.appliedIndex).toBe(21);
  });

  it('a stale snapshot (at or below the commit index) is answered with the commit index and not installed', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    proposeAndCommit(h, 1, 3);
    const f = h.node(2);
    f.step({ type: 'Snap', from: 1, to: 2, term: 1, snapshot: { index: 2, term: 1 } });
    expect(f.pendingSnapshot).toBeUndefined();
    const r = f.ready();
    expect(r.snapshot).toBeUndefined();
    expect(r.messagesAfterPersist).toEqual([{ type: 'AppResp', from: 2, to: 1, term: 1, index: 4, reject: false }]);
    f.advance(r);
  });

  it('a snapshot whose last entry the log already holds only moves the commit index', () => {
    const h = new Harness([1, 2], { 2: { log: [1, 1, 1, 1] } });
    const f = h.node(2);
    f.step({ type: 'Snap', from: 1, to: 2, term: 1, snapshot: { index: 3, term: 1 } });
    expect(f.pendingSnapshot).toBeUndefined();
    expect(f.commitIndex).toBe(3);
    expect(f.lastIndex).toBe(4);
  });

  it('a snapshot that conflicts with the log replaces it entirely (uncommitted suffix dropped)', () => {
    const h = new Harness([1, 2], { 2: { log: [1, 1, 2, 2, 2] } });
    const f = h.node(2);
    f.step({ type: 'Snap', from: 1, to: 2, term: 3, snapshot: { index: 4, term: 3 } });
    expect(f.lastIndex).toBe(4);
    expect(f.termAt(4)).toBe(3);
    expect(f.termAt(5)).toBeUndefined();
    h.flush();
    expect(f.appliedIndex).toBe(4);
  });

  it('a snapshot from a leader of an older term is refused and tells it the newer term', () => {
    const h = new Harness([1, 2], { 2: { term: 5 } });
    const f = h.node(2);
    f.step({ type: 'Snap', from: 1, to: 2, term: 4, snapshot: { index: 9, term: 4 } });
    expect(f.pendingSnapshot).toBeUndefined();
    h.flush();
    expect(h.queue.pop()).toMatchObject({ type: 'AppResp', term: 5 });
  });

  it('a failed transfer is retried after the follower answers a heartbeat, not in a storm', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    proposeAndCommit(h, 1, 6, isolate(3));
    h.node(1).compact(h.node(1).appliedIndex);
    h.queue = [];
    // Transfers to node 3 fail: the caller reports failure instead of delivering.
    const failSnaps = (m: Message): boolean => {
      if (m.type === 'Snap') {
        h.node(1).reportSnapshot(m.to, undefined);
        return false;
      }
      return true;
    };
    h.tick(6, h.ids, failSnaps);
    const snapCount = h.sent.filter((m) => m.type === 'Snap').length;
    // One try per heartbeat response at most (heartbeats every 2 ticks), never one per message.
    expect(snapCount).toBeGreaterThanOrEqual(1);
    expect(snapCount).toBeLessThanOrEqual(4);
    expect(h.node(1).status().progress!.get(3)!.state).not.toBe('snapshot');
    h.tick(4); // now transfers succeed
    expect(h.node(3).appliedIndex).toBe(h.node(1).appliedIndex);
  });

  it('while a transfer is running, the leader sends the follower no appends; others replicate as usual', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    proposeAndCommit(h, 1, 4, isolate(3));
    h.node(1).compact(h.node(1).appliedIndex);
    h.queue = [];
    const held: Message[] = [];
    const holdSnaps = (m: Message): boolean => {
      if (m.type === 'Snap') {
        held.push(m);
        return false;
      }
      return true;
    };
    h.tick(3, h.ids, holdSnaps);
    expect(held).toHaveLength(1);
    const before = h.sent.length;
    proposeAndCommit(h, 1, 3, holdSnaps);
    const toThree = h.sent.slice(before).filter((m) => m.to === 3 && m.type === 'App');
    expect(toThree).toHaveLength(0);
    expect(h.node(2).appliedIndex).toBe(h.node(1).appliedIndex);
    expect(h.sent.filter((m) => m.type === 'Snap')).toHaveLength(1);
  });

  it('an AppResp for an installed snapshot resumes replication even if the transfer report is lost', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    proposeAndCommit(h, 1, 4, isolate(3));
    h.node(1).compact(h.node(1).appliedIndex);
    h.queue = [];
    const deliverWithoutReport = (m: Message): boolean => {
      if (m.type === 'Snap' && m.snapshot === undefined) {
        const l = h.node(1);
        h.node(3).step({ ...m, snapshot: { index: l.appliedIndex, term: l.termAt(l.appliedIndex)! } });
        return false;
      }
      return true;
    };
    h.tick(3, h.ids, deliverWithoutReport);
    expect(h.node(3).appliedIndex).toBe(h.node(1).appliedIndex);
    proposeAndCommit(h, 1, 2);
    expect(h.node(3).appliedIndex).toBe(h.node(1).appliedIndex);
    const resp = h.sent.filter((m): m is AppendResponse => m.type === 'AppResp' && m.from === 3);
    expect(resp.length).toBeGreaterThan(0);
  });

  it('a snapshot that arrives while a Ready is being handled is installed by the next one, after it', () => {
    const entries = [1, 2, 3, 4, 5].map((index) => ({ index, term: index <= 2 ? 1 : 2, type: 'normal' as const, data: bytes(`${index}`) }));
    const f = new Raft({
      id: 2,
      peers: [1, 2, 3],
      electionTimeoutTicks: 10,
      heartbeatIntervalTicks: 2,
      rng: createRng(1),
      initial: { hardState: { term: 2, vote: 0, commit: 2 }, entries: entries.slice(0, 3), applied: 1 },
    });
    // The leader of term 2 appends 4 and 5 and commits 3: a Ready with entries to persist and apply.
    f.step({ type: 'App', from: 1, to: 2, term: 2, prevIndex: 3, prevTerm: 2, entries: entries.slice(3), commit: 3 });
    const r0 = f.ready();
    expect(r0.entries.map((e) => e.index)).toEqual([4, 5]);
    expect(r0.committedEntries.map((e) => e.index)).toEqual([2, 3]);
    // Meanwhile a leader of term 4 sends a snapshot at 8/4, then an append after it.
    f.step({ type: 'Snap', from: 3, to: 2, term: 4, snapshot: { index: 8, term: 4 } });
    f.step({
      type: 'App', from: 3, to: 2, term: 4, prevIndex: 8, prevTerm: 4, commit: 9,
      entries: [{ index: 9, term: 4, type: 'normal', data: bytes('9') }],
    });
    f.advance(r0);
    expect(f.appliedIndex).toBe(3);
    const r1 = f.ready();
    expect(r1.snapshot).toEqual({ index: 8, term: 4 });
    expect(r1.entries.map((e) => e.index)).toEqual([9]);
    expect(r1.committedEntries).toHaveLength(0);
    expect(r1.hardState?.commit).toBe(9);
    f.compact(3); // below a pending snapshot: nothing to do
    f.advance(r1);
    expect(f.appliedIndex).toBe(8);
    const r2 = f.ready();
    expect(r2.committedEntries.map((e) => e.index)).toEqual([9]);
    f.advance(r2);
    expect(f.appliedIndex).toBe(9);
  });
});
