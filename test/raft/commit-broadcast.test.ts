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
});
