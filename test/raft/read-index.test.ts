// ReadIndex (thesis §6.4): a leader answers a linearizable read only after a heartbeat round sent
// after the read arrived is acknowledged by a majority, and never before it has committed an entry of
// its own term (etcd#7331).

import { describe, expect, it } from 'vitest';
import type { Message, ReadState } from '../../src/raft/index.js';
import { Harness, bytes, isolate } from './harness.js';

/** Collects read states the harness's flush would otherwise drop. */
function readStatesOf(h: Harness, id: number): ReadState[] {
  const out: ReadState[] = [];
  const n = h.node(id);
  while (n.hasReady()) {
    const r = n.ready();
    out.push(...r.readStates);
    for (const m of [...r.messages, ...r.messagesAfterPersist]) {
      h.queue.push(m);
      h.sent.push(m);
    }
    n.advance(r);
  }
  return out;
}

function deliverCollecting(h: Harness, id: number, filter: (m: Message) => boolean = () => true): ReadState[] {
  const out: ReadState[] = [];
  out.push(...readStatesOf(h, id));
  let guard = 0;
  while (h.queue.length > 0 && guard++ < 10_000) {
    const m = h.queue.shift()!;
    if (!filter(m)) continue;
    h.node(m.to).step(m);
    out.push(...readStatesOf(h, id));
    h.flush();
  }
  return out;
}

describe('ReadIndex', () => {
  it('a leader answers once a majority acknowledged a heartbeat sent after the read', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    h.node(1).readIndex(7);
    // Nothing yet: the confirmation round is still in flight.
    expect(readStatesOf(h, 1)).toEqual([]);
    const states = deliverCollecting(h, 1);
    expect(states).toEqual([{ context: 7, index: 2 }]);
  });

  it('an isolated leader never confirms a read', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.deliverAll();
    h.node(1).readIndex(1);
    expect(deliverCollecting(h, 1, isolate(1))).toEqual([]);
  });

  it('one acknowledged round confirms every read registered before it', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.deliverAll();
    for (let c = 1; c <= 5; c++) h.node(1).readIndex(c);
    const states = deliverCollecting(h, 1);
    expect(states.map((s) => s.context)).toEqual([1, 2, 3, 4, 5]);
  });

  it('reads that arrive while a round is in flight share the next round, not one round each', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.deliverAll();
    const heartbeats = (): number => h.sent.filter((m) => m.type === 'Heartbeat').length;
    const before = heartbeats();
    h.node(1).readIndex(1);
    readStatesOf(h, 1);
    expect(heartbeats() - before).toBe(2); // round r to both followers
    // Round r is in flight: these wait for the next round instead of starting one each.
    for (let c = 2; c <= 10; c++) h.node(1).readIndex(c);
    readStatesOf(h, 1);
    expect(heartbeats() - before).toBe(2);
    const states = deliverCollecting(h, 1);
    expect(states.map((s) => s.context)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // Round r confirmed the first read; one more round (r + 1) confirmed the nine others.
    expect(heartbeats() - before).toBe(4);
  });

  it('when a read round is lost, the next periodic heartbeat confirms the waiting reads', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.deliverAll();
    const heartbeats = (): number => h.sent.filter((m) => m.type === 'Heartbeat').length;
    h.node(1).readIndex(1);
    // The round's heartbeats are lost.
    expect(deliverCollecting(h, 1, (m) => m.type !== 'Heartbeat')).toEqual([]);
    const afterFirstRound = heartbeats();
    // Still in flight as far as the leader knows: a new read starts no round of its own.
    h.node(1).readIndex(2);
    expect(deliverCollecting(h, 1, (m) => m.type !== 'Heartbeat')).toEqual([]);
    expect(heartbeats()).toBe(afterFirstRound);
    let states: ReadState[] = [];
    for (let t = 0; t < 10 && states.length < 2; t++) {
      h.node(1).tick();
      states = states.concat(deliverCollecting(h, 1));
    }
    expect(states.map((s) => s.context)).toEqual([1, 2]);
  });

  it('a leader elected again starts a read round at once (no round of its earlier term counts as in flight)', () => {
    // Without pre-vote and check-quorum, so that leadership can move at once by campaigning.
    const h = new Harness([1, 2, 3], {}, { preVote: false, checkQuorum: false });
    h.elect(1);
    h.deliverAll();
    // A round that is never answered; then node 2 takes over, and node 1 wins again.
    h.node(1).readIndex(1);
    deliverCollecting(h, 1, (m) => m.type !== 'HeartbeatResp');
    h.elect(2);
    h.deliverAll();
    expect(h.node(1).role).toBe('follower');
    h.elect(1);
    h.deliverAll();
    expect(h.node(1).role).toBe('leader');
    const heartbeatsOf1 = (): number => h.sent.filter((m) => m.type === 'Heartbeat' && m.from === 1).length;
    const before = heartbeatsOf1();
    h.node(1).readIndex(5);
    readStatesOf(h, 1);
    expect(heartbeatsOf1() - before).toBe(2);
    expect(deliverCollecting(h, 1).map((s) => s.context)).toEqual([5]);
  });

  it('a new leader serves no read before an entry of its own term is committed (etcd#7331)', () => {
    const h = new Harness([1, 2, 3]);
    // Hold back the new leader's no-op: its commit index (0) says nothing about what is committed.
    h.elect(1, (m) => m.type !== 'App');
    expect(h.node(1).role).toBe('leader');
    h.node(1).readIndex(9);
    const early = deliverCollecting(h, 1, (m) => m.type !== 'App' && m.type !== 'AppResp');
    expect(early).toEqual([]);
    h.node(1).tick();
    h.node(1).tick();
    const states = deliverCollecting(h, 1);
    expect(states).toEqual([{ context: 9, index: 1 }]);
  });

  it('a follower gets a read index from the leader', () => {
    const h = new Harness([1, 2, 3]);
    h.elect(1);
    h.node(1).propose(bytes('a'));
    h.deliverAll();
    h.node(2).readIndex(42);
    const states = deliverCollecting(h, 2);
    expect(states).toEqual([{ context: 42, index: 2 }]);
  });

  it('with no known leader, readIndex throws NOT_LEADER', () => {
    const h = new Harness([1, 2, 3]);
    expect(() => h.node(2).readIndex(1)).toThrow(expect.objectContaining({ code: 'NOT_LEADER' }));
  });
});
