// Focused tests of the Raft core, each tied to the claim of the Raft paper (Ongaro & Ousterhout,
// "In Search of an Understandable Consensus Algorithm", extended version) or of Ongaro's thesis
// that it checks.

import { describe, expect, it } from 'vitest';
import { Raft, createRng, type AppendRequest, type AppendResponse, type Message } from '../../src/raft/index.js';
import { Harness, bytes, isolate, logOfTerms } from './harness.js';

describe('§5.2 leader election', () => {
  it('elects exactly one leader, and followers learn it', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    expect(h.node(1).role).toBe('leader');
    expect(h.node(2).leader).toBe(1);
    expect(h.node(3).leader).toBe(1);
    expect(h.node(2).role).toBe('follower');
  });

  it('a node grants at most one vote per term', () => {
    const h = new Harness([1, 2, 3], {}, { preVote: false, checkQuorum: false });
    h.node(1).campaign();
    h.node(2).campaign();
    h.flush();
    // Node 3 sees both requests for term 1; only the first gets its vote.
    const requests = h.queue.filter((m) => m.type === 'Vote' && m.to === 3);
    expect(requests.map((m) => m.from)).toEqual([1, 2]);
    h.deliverAll((m) => !(m.type === 'Vote' && m.to !== 3));
    const grants = h.sent.filter((m) => m.type === 'VoteResp' && m.from === 3 && m.granted);
    expect(grants.map((m) => m.to)).toEqual([1]);
    expect(h.node(3).vote).toBe(1);
  });

  it('a candidate that loses steps down when a majority refuses it', () => {
    const h = new Harness([1, 2, 3], { 1: { log: [1] }, 2: { log: [1, 1] }, 3: { log: [1, 1] } }, { preVote: false });
    h.elect(1);
    expect(h.node(1).role).toBe('follower');
  });
});

describe('§5.4.1 election restriction', () => {
  it('refuses a vote to a candidate whose log is less up-to-date', () => {
    // Node 1's last term is lower; node 2's log is longer at the same term.
    const h = new Harness([1, 2, 3], { 1: { term: 2, log: [1, 1] }, 2: { term: 2, log: [1, 2] }, 3: { term: 2, log: [1, 2, 2] } });
    h.elect(1);
    expect(h.node(1).role).not.toBe('leader');
    h.elect(2);
    // Node 3 refuses node 2 (shorter log, same last term); node 1 grants.
    expect(h.node(2).role).toBe('leader');
    const votesTo2 = h.sent.filter((m) => (m.type === 'VoteResp' || m.type === 'PreVoteResp') && m.to === 2);
    expect(votesTo2.filter((m) => m.from === 3).every((m) => m.type.endsWith('Resp') && !('granted' in m && m.granted))).toBe(true);
  });
});

describe('§5.3 log replication', () => {
  it('replicates and commits proposals; followers apply them in order', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    for (const v of ['a', 'b', 'c']) h.node(1).propose(bytes(v));
    h.deliverAll();
    h.tick(2);
    for (const id of [1, 2, 3]) {
      expect(h.node(id).commitIndex).toBe(4);
      expect(h.applied.get(id)).toEqual(['1@1', '2@1', '3@1', '4@1']);
    }
  });

  it('a follower rejects an append whose previous entry does not match, with a conflict hint', () => {
    const h = new Harness([1, 2], { 2: { log: [1, 1, 2, 2] } });
    const f = h.node(2);
    f.step({ type: 'App', from: 1, to: 2, term: 3, prevIndex: 4, prevTerm: 3, entries: [], commit: 0 });
    h.flush();
    const resp = h.queue.pop() as AppendResponse;
    expect(resp.type).toBe('AppResp');
    expect(resp.reject).toBe(true);
    expect(resp.hint).toEqual({ conflictTerm: 2, conflictIndex: 3 });
    expect(h.termsOf(2)).toEqual([1, 1, 2, 2]);
    f.step({ type: 'App', from: 1, to: 2, term: 3, prevIndex: 9, prevTerm: 3, entries: [], commit: 0 });
    h.flush();
    expect((h.queue.pop() as AppendResponse).hint).toEqual({ conflictTerm: 0, conflictIndex: 5 });
  });

  it('a follower truncates a conflicting suffix and appends the leader’s entries', () => {
    const h = new Harness([1, 2], { 2: { log: [1, 1, 2, 2] } });
    const entries = [
      { index: 3, term: 3, type: 'normal' as const, data: bytes('x') },
      { index: 4, term: 3, type: 'normal' as const, data: bytes('y') },
      { index: 5, term: 3, type: 'normal' as const, data: bytes('z') },
    ];
    h.node(2).step({ type: 'App', from: 1, to: 2, term: 3, prevIndex: 2, prevTerm: 1, entries, commit: 4 });
    h.flush();
    expect(h.termsOf(2)).toEqual([1, 1, 3, 3, 3]);
    expect(h.node(2).commitIndex).toBe(4);
    const resp = h.queue.pop() as AppendResponse;
    expect(resp).toMatchObject({ type: 'AppResp', reject: false, index: 5 });
  });

  it('a commit alone goes to replicating followers as an append they do not answer', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.sent.length = 0;
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    // Entries (index 2) go out with replies; the commit that follows goes out without.
    const apps = h.sent.filter((m): m is AppendRequest => m.type === 'App');
    const withEntries = apps.filter((m) => m.entries.length > 0);
    const commitOnly = apps.filter((m) => m.entries.length === 0);
    expect(withEntries.map((m) => [m.to, m.noReply])).toEqual([
      [2, undefined],
      [3, undefined],
    ]);
    expect(commitOnly.length).toBeGreaterThan(0);
    for (const m of commitOnly) expect(m).toMatchObject({ commit: 2, noReply: true });
    const acks = h.sent.filter((m) => m.type === 'AppResp');
    expect(acks.map((m) => m.from).sort()).toEqual([2, 3]);
    for (const id of [1, 2, 3]) expect(h.node(id).commitIndex).toBe(2);
  });

  it('a lost acknowledgement is made up by the next heartbeat, with an append that asks for a reply', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.node(1).propose(bytes('a'));
    // Node 3's acknowledgement of entry 2 is lost; node 2's commits it.
    h.deliverAll((m) => !(m.type === 'AppResp' && m.from === 3));
    expect(h.node(1).commitIndex).toBe(2);
    expect(h.node(3).commitIndex).toBe(2);
    expect(h.node(1).status().progress?.get(3)?.match).toBe(1);
    h.sent.length = 0;
    h.tick(2);
    const repair = h.sent.filter((m): m is AppendRequest => m.type === 'App' && m.to === 3);
    expect(repair.length).toBeGreaterThan(0);
    for (const m of repair) expect(m.noReply).toBeUndefined();
    expect(h.node(1).status().progress?.get(3)?.match).toBe(2);
  });

  it('a follower still answers a noReply append it rejects, and one from a stale term', () => {
    const h = new Harness([1, 2], { 2: { log: [1, 1, 2, 2] } });
    const f = h.node(2);
    // A success: no answer, and the commit moves.
    f.step({ type: 'App', from: 1, to: 2, term: 3, prevIndex: 4, prevTerm: 2, entries: [], commit: 3, noReply: true });
    h.flush();
    expect(h.queue.filter((m) => m.type === 'AppResp')).toEqual([]);
    expect(f.commitIndex).toBe(3);
    // A mismatch: the rejection and its hint go back, so the leader can repair the log.
    f.step({ type: 'App', from: 1, to: 2, term: 3, prevIndex: 9, prevTerm: 3, entries: [], commit: 3, noReply: true });
    h.flush();
    expect(h.queue.pop()).toMatchObject({ type: 'AppResp', reject: true, index: 9, hint: { conflictTerm: 0, conflictIndex: 5 } });
    // An append with entries is acknowledged even if it says noReply (the leader never sends one).
    const entry = { index: 5, term: 3, type: 'normal' as const, data: bytes('x') };
    f.step({ type: 'App', from: 1, to: 2, term: 3, prevIndex: 4, prevTerm: 2, entries: [entry], commit: 3, noReply: true });
    h.flush();
    expect(h.queue.pop()).toMatchObject({ type: 'AppResp', reject: false, index: 5 });
    // A stale leader hears the newer term.
    f.step({ type: 'App', from: 1, to: 2, term: 1, prevIndex: 4, prevTerm: 2, entries: [], commit: 3, noReply: true });
    h.flush();
    expect(h.queue.pop()).toMatchObject({ type: 'AppResp', term: 3 });
  });

  it('a follower being repaired gets appends that ask for replies, and its log converges', () => {
    // Node 3 lacks an entry the new leader has: the leader probes it, and is rejected first.
    const h = new Harness([1, 2, 3], { 1: { log: [1, 1] }, 2: { log: [1, 1] }, 3: { log: [1] } });
    h.elect(2);
    h.node(2).propose(bytes('a'));
    h.deliverAll();
    const firstSuccess = h.sent.findIndex((m) => m.type === 'AppResp' && m.from === 3 && !m.reject);
    const rejected = h.sent.slice(0, firstSuccess).filter((m) => m.type === 'AppResp' && m.from === 3 && m.reject);
    expect(firstSuccess).toBeGreaterThan(0);
    expect(rejected.length).toBeGreaterThan(0);
    for (const m of h.sent.slice(0, firstSuccess)) if (m.type === 'App' && m.to === 3) expect(m.noReply).toBeUndefined();
    expect(h.termsOf(3)).toEqual(h.termsOf(2));
  });
});

describe('Figure 7: a new leader brings every follower’s log to match its own', () => {
  // The leader's log and followers (a)-(f) of Figure 7; the leader is elected for term 8.
  const leaderLog = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const followers: Record<string, number[]> = {
    a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
    b: [1, 1, 1, 4],
    c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    e: [1, 1, 1, 4, 4, 4, 4],
    f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
  };
  for (const [name, log] of Object.entries(followers)) {
    it(`follower (${name})`, () => {
      // Node 3 has an empty log and votes for the leader, so the election does not depend on (a)-(f).
      const h = new Harness([1, 2, 3], { 1: { term: 7, log: leaderLog }, 2: { term: 7, log }, 3: { term: 7 } });
      h.elect(1);
      expect(h.node(1).role).toBe('leader');
      expect(h.node(1).term).toBe(8);
      h.tick(4);
      const expected = [...leaderLog, 8];
      expect(h.termsOf(2)).toEqual(expected);
      expect(h.node(2).commitIndex).toBe(11);
      // Fast backtracking: at most one rejection per conflicting term of the follower, plus one for a
      // log that is too short, instead of one per entry.
      const rejections = h.sent.filter((m) => m.type === 'AppResp' && m.from === 2 && m.reject).length;
      const conflictingTerms = new Set(log.filter((t, i) => leaderLog[i] !== t)).size;
      expect(rejections).toBeLessThanOrEqual(conflictingTerms + 1);
    });
  }
});

describe('§5.4.2 and Figure 8: committing entries from previous terms', () => {
  it('a leader does not commit an entry of an earlier term by counting replicas', () => {
    // Figure 8 (c): S1 is leader in term 4 with (2, term 2) in its log; S5 has (2, term 3).
    const h = new Harness([1, 2, 3, 4, 5], {
      1: { term: 3, log: [1, 2] },
      2: { term: 3, log: [1, 2] },
      3: { term: 3, log: [1] },
      4: { term: 3, log: [1] },
      5: { term: 3, log: [1, 3] },
    });
    // Elect S1 while S5 is unreachable, and hold back its first appends; S1's log now ends with its
    // term-4 no-op at index 3.
    h.elect(1, (m) => isolate(5)(m) && m.type !== 'App');
    expect(h.node(1).role).toBe('leader');
    expect(h.node(1).term).toBe(4);
    // Let index 2 (term 2) reach S2 and S3 but keep index 3 (term 4) from everyone: index 2 is then
    // stored on a majority (S1, S2, S3).
    const withoutIndex3 = (m: Message): Message =>
      m.type === 'App' ? { ...m, entries: (m as AppendRequest).entries.filter((e) => e.index <= 2) } : m;
    h.node(1).tick();
    h.node(1).tick();
    h.flush();
    let steps = 0;
    while (h.queue.length > 0 && steps++ < 100) {
      const m = withoutIndex3(h.queue.shift()!);
      if (m.to === 4 || m.to === 5) continue;
      h.node(m.to).step(m);
      h.flush();
    }
    expect(h.node(3).termAt(2)).toBe(2);
    expect(h.node(2).termAt(2)).toBe(2);
    expect(h.node(1).commitIndex).toBeLessThan(2);
    // Figure 8 (d): were S1 to crash now, S5 could still win (votes of S2, S3, S4) and overwrite index 2,
    // which is safe only because index 2 was never committed. Once index 3 of term 4 reaches a
    // majority, index 2 is committed with it (Figure 8 (e)).
    h.tick(3, [1, 2, 3], isolate(5));
    expect(h.node(1).commitIndex).toBe(3);
    expect(h.node(2).commitIndex).toBe(3);
  });
});

describe('thesis §9.6 pre-vote and §6.2 check-quorum', () => {
  it('a node returning from a partition does not depose a healthy leader', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.tick(3);
    // Node 3 is cut off long enough to time out many times.
    h.tick(100, [1, 2, 3], isolate(3));
    expect(h.node(3).term).toBe(1); // pre-votes never won, so its term never moved
    h.tick(10);
    expect(h.node(1).role).toBe('leader');
    expect(h.node(1).term).toBe(1);
    expect(h.node(3).leader).toBe(1);
  });

  it('without pre-vote the same partition does disrupt the leader (the control case)', () => {
    const h = new Harness([1, 2, 3], {}, { preVote: false, checkQuorum: false });
    h.elect(1);
    h.tick(3);
    h.tick(100, [1, 2, 3], isolate(3));
    expect(h.node(3).term).toBeGreaterThan(1);
    h.tick(30);
    expect(h.node(1).term).toBeGreaterThan(1);
  });

  it('a leader cut off from the majority steps down within one election timeout', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.tick(3);
    let ticks = 0;
    while (h.node(1).role === 'leader' && ticks < 100) {
      h.tick(1, [1], isolate(1));
      ticks++;
    }
    expect(h.node(1).role).toBe('follower');
    expect(ticks).toBeLessThanOrEqual(2 * 10);
  });

  it('a follower that heard from a live leader within the election timeout ignores vote requests', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.tick(1);
    h.node(2).step({ type: 'Vote', from: 3, to: 2, term: 5, lastLogIndex: 99, lastLogTerm: 9 });
    h.node(2).step({ type: 'PreVote', from: 3, to: 2, term: 5, lastLogIndex: 99, lastLogTerm: 9 });
    h.flush();
    expect(h.node(2).term).toBe(1);
    expect(h.node(2).vote).toBe(1);
    expect(h.queue.filter((m) => m.from === 2 && m.type.includes('Vote'))).toEqual([]);
  });
});

describe('persistence contract', () => {
  it('votes and append acknowledgements wait for persistence; leader appends do not', () => {
    const h = new Harness([1, 2, 3], {}, { preVote: false });
    h.node(2).step({ type: 'Vote', from: 1, to: 2, term: 1, lastLogIndex: 0, lastLogTerm: 0 });
    const r = h.node(2).ready();
    expect(r.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
    expect(r.messages).toEqual([]);
    expect(r.messagesAfterPersist.map((m) => m.type)).toEqual(['VoteResp']);
    h.node(2).advance(r);

    h.node(2).step({ type: 'App', from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [{ index: 1, term: 1, type: 'noop', data: new Uint8Array() }], commit: 0 });
    const r2 = h.node(2).ready();
    expect(r2.entries.map((e) => e.index)).toEqual([1]);
    expect(r2.messages).toEqual([]);
    expect(r2.messagesAfterPersist.map((m) => m.type)).toEqual(['AppResp']);
    h.node(2).advance(r2);
  });

  it('a leader counts its own entry toward a commit only after advance says it is durable', () => {
    const h = new Harness([1]);
    h.node(1).campaign();
    const r = h.node(1).ready();
    expect(h.node(1).role).toBe('leader');
    expect(r.entries.length).toBe(1);
    expect(h.node(1).commitIndex).toBe(0);
    h.node(1).advance(r);
    expect(h.node(1).commitIndex).toBe(1);
  });

  it('a candidate’s vote requests wait for its term and self-vote to be durable', () => {
    const h = new Harness([1, 2, 3], {}, { preVote: false });
    h.node(1).campaign();
    const r = h.node(1).ready();
    expect(r.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
    expect(r.messages).toEqual([]);
    expect(r.messagesAfterPersist.map((m) => m.type)).toEqual(['Vote', 'Vote']);
  });
});

describe('limits', () => {
  it('batches entries into appends of at most maxAppendBytes (at least one entry each)', () => {
    const h = new Harness([1, 2, 3], {}, { maxAppendBytes: 250 });
    h.elect(1);
    h.tick(2);
    for (let i = 0; i < 20; i++) h.node(1).propose(bytes('x'.repeat(100)));
    h.flush();
    const apps = h.queue.filter((m): m is AppendRequest => m.type === 'App');
    expect(apps.length).toBeGreaterThan(2);
    for (const a of apps) {
      const size = a.entries.reduce((s, e) => s + e.data.length, 0);
      expect(a.entries.length === 1 || size <= 250).toBe(true);
    }
    h.deliverAll();
    expect(h.node(3).lastIndex).toBe(21);
  });

  it('pipelines at most maxInflightMessages appends per follower before waiting for replies', () => {
    const h = new Harness([1, 2, 3], {}, { maxAppendBytes: 1, maxInflightMessages: 3 });
    h.elect(1);
    h.tick(2);
    for (let i = 0; i < 10; i++) h.node(1).propose(bytes(`p${i}`));
    h.flush();
    const toNode2 = h.queue.filter((m) => m.type === 'App' && m.to === 2 && (m as AppendRequest).entries.length > 0);
    expect(toNode2.length).toBe(3);
    h.deliverAll();
    expect(h.node(2).lastIndex).toBe(11);
  });

  it('refuses proposals past maxUncommittedBytes with a typed error naming the limit', () => {
    const h = new Harness([1, 2, 3], {}, { maxUncommittedBytes: 100 });
    h.elect(1);
    h.tick(2);
    h.node(1).propose(bytes('x'.repeat(60)));
    let err: unknown;
    try {
      h.node(1).propose(bytes('y'.repeat(60)));
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'UNCOMMITTED_LIMIT', limit: 'maxUncommittedBytes', value: 100 });
    expect(String((err as Error).message)).toContain('maxUncommittedBytes=100');
    // Once the first commits, there is room again.
    h.deliverAll();
    expect(() => h.node(1).propose(bytes('y'.repeat(60)))).not.toThrow();
  });

  it('refuses proposals on a follower with NOT_LEADER and the leader it knows', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    expect(() => h.node(2).propose(bytes('x'))).toThrow(expect.objectContaining({ code: 'NOT_LEADER', leader: 1 }));
  });
});

describe('restart from persisted state', () => {
  it('a restarted node refuses votes for one election timeout (it may have a live leader)', () => {
    const n = new Raft({
      id: 2,
      peers: [1, 2, 3],
      electionTimeoutTicks: 10,
      heartbeatIntervalTicks: 2,
      rng: createRng(2),
      initial: { hardState: { term: 4, vote: 1, commit: 0 }, entries: logOfTerms([1, 4]), applied: 0 },
    });
    n.step({ type: 'Vote', from: 3, to: 2, term: 5, lastLogIndex: 9, lastLogTerm: 9 });
    expect(n.term).toBe(4);
    for (let i = 0; i < 10; i++) n.tick();
    n.step({ type: 'Vote', from: 3, to: 2, term: 5, lastLogIndex: 9, lastLogTerm: 9 });
    expect(n.term).toBe(5);
    expect(n.vote).toBe(3);
  });
});
