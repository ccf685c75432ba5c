// The session table's LRU order, expiry and eviction against a plain model (an array in LRU order),
// over random touch sequences, and the bound on the touch order it keeps beside its map.

import { describe, expect, it } from 'vitest';
import { SessionTable, type SessionMeta } from '../../src/kv/session-table.js';
import { createRng } from '../../src/raft/rng.js';
import { seedOf } from '../support/seed.js';

/** The model: sessions in LRU order, least recently used first. */
class ModelTable {
  order: Array<[string, SessionMeta]> = [];
  constructor(readonly max: number, readonly ttl: number) {}
  touch(id: string, meta: SessionMeta): void {
    this.order = this.order.filter(([k]) => k !== id);
    this.order.push([id, meta]);
  }
  expire(clock: number): string[] {
    const out: string[] = [];
    while (this.order.length > 0 && clock - this.order[0]![1].lastSeenMs >= this.ttl) out.push(this.order.shift()![0]);
    return out;
  }
  evictOverflow(): string[] {
    const out: string[] = [];
    while (this.order.length > this.max) out.push(this.order.shift()![0]);
    return out;
  }
}

describe('SessionTable', () => {
  it('keeps the same LRU order, expiries and evictions as a plain LRU list, over random touches', () => {
    const seed = seedOf('session table model');
    const rng = createRng(seed);
    let expired = 0;
    let evicted = 0;
    for (let round = 0; round < 20; round++) {
      const max = 1 + rng.int(12);
      const ttl = 5 + rng.int(60);
      const clients = 1 + rng.int(30);
      const table = new SessionTable(max, ttl);
      const model = new ModelTable(max, ttl);
      let index = 0;
      let clock = 0;
      for (let step = 0; step < 3000; step++) {
        index++;
        clock += rng.int(3);
        const e1 = table.expire(clock);
        expect([...e1]).toEqual(model.expire(clock));
        expired += e1.length;
        const id = `c${rng.int(clients)}`;
        const meta = { lastSeq: step + 1, lastIndex: index, lastSeenMs: clock };
        table.touch(id, meta);
        model.touch(id, meta);
        const e2 = table.evictOverflow();
        expect([...e2]).toEqual(model.evictOverflow());
        evicted += e2.length;
        expect(table.size).toBe(model.order.length);
        if (step % 97 === 0) expect(table.clientIds()).toEqual(model.order.map(([k]) => k));
      }
      for (const [k, meta] of model.order) expect(table.get(k)).toBe(meta);
    }
    console.log(`${expired} sessions expired, ${evicted} evicted`);
    expect(expired).toBeGreaterThan(0);
    expect(evicted).toBeGreaterThan(0);
  });

  it('a reload restores the LRU order from sessions given in any order', () => {
    const t = new SessionTable(3, 1000);
    t.load([
      ['b', { lastSeq: 1, lastIndex: 20, lastSeenMs: 2 }],
      ['a', { lastSeq: 1, lastIndex: 10, lastSeenMs: 1 }],
      ['c', { lastSeq: 1, lastIndex: 30, lastSeenMs: 3 }],
    ]);
    expect(t.clientIds()).toEqual(['a', 'b', 'c']);
    t.touch('a', { lastSeq: 2, lastIndex: 31, lastSeenMs: 3 });
    t.touch('d', { lastSeq: 1, lastIndex: 32, lastSeenMs: 4 });
    expect([...t.evictOverflow()]).toEqual(['b']);
    expect(t.clientIds()).toEqual(['c', 'a', 'd']);
    expect(() => t.touch('e', { lastSeq: 1, lastIndex: 32, lastSeenMs: 5 })).toThrow(/goes back/);
  });

  it('keeps a session idle through many touches of others as the least recently used', () => {
    const t = new SessionTable(100, 1_000_000);
    t.touch('idle', { lastSeq: 1, lastIndex: 1, lastSeenMs: 0 });
    for (let i = 2; i <= 100_000; i++) t.touch(`c${i % 10}`, { lastSeq: i, lastIndex: i, lastSeenMs: 0 });
    expect(t.clientIds()).toEqual(['idle', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8', 'c9', 'c0']);
    expect(t.size).toBe(11);
  });
});
