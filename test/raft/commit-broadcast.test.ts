// How a leader tells followers that entries are committed. By default an append carrying only the
// new commit index goes to every follower that has no new entries to receive, as soon as the commit
// moves. With deferCommitBroadcast it does not: the commit rides on the follower's next append or
// heartbeat, or goes when the caller calls flushCommit(), and commitUnsent() tells the caller when
// one is due.

import { describe, expect, it } from 'vitest';
import type { AppendRequest, Message } from '../../src/raft/index.js';
import { bytes, Harness } from './harness.js';

const apps = (sent: readonly Message[]): AppendRequest[] => sent.filter((m): m is AppendRequest => m.type === 'App');
const empty = (sent: readonly Message[]): AppendRequest[] => apps(sent).filter((m) => m.entries.length === 0);

/** A 3-node cluster with node 1 leading, every follower told of every commit so far. */
function steady(defer: boolean): Harness {
  const h = new Harness([1, 2, 3], {}, { deferCommitBroadcast: defer });
  h.elect(1);
  h.node(1).flushCommit();
  h.deliverAll();
  for (const id of [1, 2, 3]) expect(h.node(id).commitIndex).toBe(1);
  expect(h.node(1).commitUnsent()).toBe(false);
  h.sent.length = 0;
  return h;
}

describe('commit broadcast', () => {
  it('by default sends a commit alone at once, and nothing is left unsent', () => {
    const h = steady(false);
    expect(h.node(1).defersCommitBroadcast).toBe(false);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    expect(empty(h.sent).map((m) => [m.to, m.commit])).toEqual([
      [2, 2],
      [3, 2],
    ]);
    for (const id of [1, 2, 3]) expect(h.node(id).commitIndex).toBe(2);
    expect(h.node(1).commitUnsent()).toBe(false);
  });

  it('with deferCommitBroadcast holds a commit alone back until flushCommit', () => {
    const h = steady(true);
    expect(h.node(1).defersCommitBroadcast).toBe(true);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    // Entry 2 is committed on the leader; the followers hold it without knowing.
    expect(h.node(1).commitIndex).toBe(2);
    expect(h.node(2).commitIndex).toBe(1);
    expect(h.node(3).commitIndex).toBe(1);
    expect(empty(h.sent)).toEqual([]);
    expect(h.node(1).commitUnsent()).toBe(true);

    h.node(1).flushCommit();
    h.deliverAll();
    // One append each, with no entries and no reply asked: the same message as the default's.
    expect(empty(h.sent).map((m) => [m.to, m.commit, m.noReply])).toEqual([
      [2, 2, true],
      [3, 2, true],
    ]);
    for (const id of [2, 3]) expect(h.node(id).commitIndex).toBe(2);
    expect(h.node(1).commitUnsent()).toBe(false);
    // Nothing more to send: a second flush sends nothing.
    h.sent.length = 0;
    h.node(1).flushCommit();
    h.deliverAll();
    expect(h.sent).toEqual([]);
  });

  it('sends a held-back commit with the next entries', () => {
    const h = steady(true);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    h.node(1).propose(bytes('b'));
    h.deliverAll();
    // Entry 3's append told the followers of commit 2; commit 3 waits in its turn.
    const withEntries = apps(h.sent).filter((m) => m.entries.length > 0);
    expect(withEntries.filter((m) => m.entries[0]!.index === 3).map((m) => [m.to, m.commit])).toEqual([
      [2, 2],
      [3, 2],
    ]);
    expect(empty(h.sent)).toEqual([]);
    for (const id of [2, 3]) expect(h.node(id).commitIndex).toBe(2);
    expect(h.node(1).commitIndex).toBe(3);
    expect(h.node(1).commitUnsent()).toBe(true);
  });

  it('a heartbeat carries a held-back commit too', () => {
    const h = steady(true);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    expect(h.node(1).commitUnsent()).toBe(true);
    h.tick(2); // the heartbeat interval
    expect(h.sent.some((m) => m.type === 'Heartbeat' && m.commit === 2)).toBe(true);
    expect(empty(h.sent)).toEqual([]);
    for (const id of [2, 3]) expect(h.node(id).commitIndex).toBe(2);
    expect(h.node(1).commitUnsent()).toBe(false);
  });

  it('does not count a follower that lacks the committed entries', () => {
    const h = steady(true);
    // Node 3 hears nothing from here on; node 2 alone makes the majority.
    const cut = (m: Message): boolean => m.to !== 3 && m.from !== 3;
    h.node(1).propose(bytes('a'));
    h.deliverAll(cut);
    expect(h.node(1).commitIndex).toBe(2);
    expect(h.node(1).commitUnsent()).toBe(true);
    h.sent.length = 0;
    h.node(1).flushCommit();
    h.deliverAll(cut);
    // Node 3 was never acknowledged entry 2: the commit of it is not its due.
    expect(empty(h.sent).map((m) => m.to)).toEqual([2]);
    expect(h.node(2).commitIndex).toBe(2);
    expect(h.node(1).commitUnsent()).toBe(false);
  });

  it('reports nothing unsent on a follower, and flushCommit there does nothing', () => {
    const h = steady(true);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    h.sent.length = 0;
    expect(h.node(2).commitUnsent()).toBe(false);
    h.node(2).flushCommit();
    h.deliverAll();
    expect(h.sent).toEqual([]);
  });

  it('reports no commit due to a follower that cannot be sent one now (a snapshot on its way)', () => {
    // One append in flight per follower, so node 3 is paused while its answer is held back.
    const h = new Harness([1, 2, 3], {}, { deferCommitBroadcast: true, maxInflightMessages: 1 });
    h.elect(1);
    h.node(1).flushCommit();
    h.deliverAll();
    const held: Message[] = [];
    const holdNode3Answers = (m: Message): boolean => {
      if (m.from !== 3 || m.type !== 'AppResp') return true;
      held.push(m);
      return false;
    };
    // Node 3 gets entry 2 (told commit 1) and answers; its answer waits. Node 2 commits entry 2, and
    // then 3 and 4, which node 3 is not sent: its one append in flight is unanswered.
    h.node(1).propose(bytes('a'));
    h.deliverAll(holdNode3Answers);
    h.node(1).propose(bytes('b'));
    h.node(1).propose(bytes('c'));
    h.deliverAll(holdNode3Answers);
    h.node(1).flushCommit();
    h.deliverAll(holdNode3Answers);
    expect(h.node(1).commitIndex).toBe(4);
    expect(h.node(2).commitIndex).toBe(4);
    expect(h.node(1).commitUnsent()).toBe(false);
    expect(held).toHaveLength(1);
    // The entries node 3 lacks are compacted away; its late answer makes it match entry 2, and
    // what it needs next is a snapshot.
    h.node(1).compact(4);
    h.node(1).step(held[0]!);
    h.flush();
    const pr = h.node(1).status().progress!.get(3)!;
    expect(pr).toMatchObject({ state: 'snapshot', match: 2 });
    expect(h.queue.filter((m) => m.to === 3).map((m) => m.type)).toEqual(['Snap']);
    // Node 3 was last told commit 1 and holds entry 2, but while the snapshot is on its way no append
    // can go to it: nothing is due, and flushCommit sends nothing.
    expect(h.node(1).commitUnsent()).toBe(false);
    h.sent.length = 0;
    h.node(1).flushCommit();
    h.flush();
    expect(h.sent).toEqual([]);
    // Once the snapshot is in, node 3 is at the commit.
    h.deliverAll();
    h.tick(2);
    expect(h.node(3).commitIndex).toBe(4);
    expect(h.node(1).commitUnsent()).toBe(false);
  });
});
