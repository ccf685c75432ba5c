import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ApplyResult, type KvRecord, type KvStateMachineOptions } from '../../src/kv/index.js';
import { createRng } from '../../src/raft/rng.js';
import { SnapshotDecoder } from '../../src/storage/index.js';
import { makeTempDir, removeTempDir } from '../storage/temp-dir.js';
import { dec, enc, Harness, type CommandInput } from './harness.js';

const put = (key: string, value: string, extra: Partial<CommandInput> = {}): CommandInput =>
  ({ op: 'put', key: enc(key), value: enc(value), ...extra }) as CommandInput;
const del = (key: string, extra: Partial<CommandInput> = {}): CommandInput => ({ op: 'delete', key: enc(key), ...extra }) as CommandInput;
const casValue = (key: string, expected: string, value: string): CommandInput => ({
  op: 'cas',
  key: enc(key),
  compare: { kind: 'value', value: enc(expected) },
  value: enc(value),
});
const casMod = (key: string, modIndex: number, value: string): CommandInput => ({
  op: 'cas',
  key: enc(key),
  compare: { kind: 'modIndex', modIndex },
  value: enc(value),
});
const casAbsent = (key: string, value: string, extra: Partial<CommandInput> = {}): CommandInput =>
  ({ op: 'cas', key: enc(key), compare: { kind: 'absent' }, value: enc(value), ...extra }) as CommandInput;

const rec = (value: string, createIndex: number, modIndex: number, version: number): KvRecord => ({
  value: enc(value),
  createIndex,
  modIndex,
  version,
});

describe('KvStateMachine', () => {
  let root: string;
  const harnesses: Harness[] = [];

  async function open(name = 'n1', options: KvStateMachineOptions = {}): Promise<Harness> {
    const h = await Harness.open(join(root, name), options);
    harnesses.push(h);
    return h;
  }

  async function reopen(h: Harness, name = 'n1', options: KvStateMachineOptions = {}): Promise<Harness> {
    await h.close();
    return open(name, options);
  }

  beforeEach(async () => {
    root = await makeTempDir();
  });

  afterEach(async () => {
    for (const h of harnesses.splice(0)) await h.close();
    await removeTempDir(root);
  });

  describe('put, get, delete', () => {
    it('keeps createIndex, modIndex and version like etcd', async () => {
      const h = await open();
      expect(await h.run(put('a', '1'))).toEqual([{ kind: 'put', index: 1 }]);
      expect(await h.sm.get(enc('a'))).toEqual(rec('1', 1, 1, 1));
      expect(await h.run('noop', put('a', '2', { prevKv: true }))).toEqual([
        { kind: 'noop', index: 2 },
        { kind: 'put', index: 3, prev: rec('1', 1, 1, 1) },
      ]);
      expect(await h.sm.get(enc('a'))).toEqual(rec('2', 1, 3, 2));
      expect(h.sm.appliedIndex).toBe(3);

      expect(await h.run(del('a', { prevKv: true }), del('a', { prevKv: true }))).toEqual([
        { kind: 'delete', index: 4, deleted: true, prev: rec('2', 1, 3, 2) },
        { kind: 'delete', index: 5, deleted: false },
      ]);
      expect(await h.sm.get(enc('a'))).toBeUndefined();
      // Re-created: a new life, counted from the creating entry.
      await h.run(put('a', '3'));
      expect(await h.sm.get(enc('a'))).toEqual(rec('3', 6, 6, 1));
    });

    it('lets later entries of one batch see the writes of earlier ones', async () => {
      const h = await open();
      const results = await h.run(put('k', 'v1'), casValue('k', 'v1', 'v2'), put('k', 'v3', { prevKv: true }), del('k', { prevKv: true }), casAbsent('k', 'v4'));
      expect(results).toEqual([
        { kind: 'put', index: 1 },
        { kind: 'cas', index: 2, succeeded: true, current: rec('v2', 1, 2, 2) },
        { kind: 'put', index: 3, prev: rec('v2', 1, 2, 2) },
        { kind: 'delete', index: 4, deleted: true, prev: rec('v3', 1, 3, 3) },
        { kind: 'cas', index: 5, succeeded: true, current: rec('v4', 5, 5, 1) },
      ]);
      expect(await h.sm.get(enc('k'))).toEqual(rec('v4', 5, 5, 1));
    });

    it('handles binary keys and values, and the empty key', async () => {
      const h = await open();
      const key = new Uint8Array([0, 255, 3]);
      await h.run({ op: 'put', key, value: new Uint8Array([1, 0, 2]) }, { op: 'put', key: new Uint8Array(0), value: enc('e') });
      expect([...((await h.sm.get(key))?.value ?? [])]).toEqual([1, 0, 2]);
      expect(dec((await h.sm.get(new Uint8Array(0)))?.value)).toBe('e');
    });
  });

  describe('compare-and-swap', () => {
    it('compares the value', async () => {
      const h = await open();
      await h.run(put('k', 'a'));
      expect(await h.run(casValue('k', 'b', 'x'))).toEqual([{ kind: 'cas', index: 2, succeeded: false, current: rec('a', 1, 1, 1) }]);
      expect(await h.run(casValue('k', 'a', 'x'))).toEqual([{ kind: 'cas', index: 3, succeeded: true, current: rec('x', 1, 3, 2) }]);
      expect(await h.run(casValue('missing', '', 'x'))).toEqual([{ kind: 'cas', index: 4, succeeded: false }]);
      expect(await h.sm.get(enc('missing'))).toBeUndefined();
    });

    it('compares the modification index (0 means absent)', async () => {
      const h = await open();
      await h.run(put('k', 'a'), put('k', 'b'));
      expect(await h.run(casMod('k', 1, 'x'))).toEqual([{ kind: 'cas', index: 3, succeeded: false, current: rec('b', 1, 2, 2) }]);
      expect(await h.run(casMod('k', 2, 'x'))).toEqual([{ kind: 'cas', index: 4, succeeded: true, current: rec('x', 1, 4, 3) }]);
      expect(await h.run(casMod('new', 0, 'y'))).toEqual([{ kind: 'cas', index: 5, succeeded: true, current: rec('y', 5, 5, 1) }]);
    });

    it('creates only if absent: succeeds once, then fails', async () => {
      const h = await open();
      expect(await h.run(casAbsent('lock', 'me'), casAbsent('lock', 'you'))).toEqual([
        { kind: 'cas', index: 1, succeeded: true, current: rec('me', 1, 1, 1) },
        { kind: 'cas', index: 2, succeeded: false, current: rec('me', 1, 1, 1) },
      ]);
      expect(await h.run(casAbsent('lock', 'them'))).toEqual([{ kind: 'cas', index: 3, succeeded: false, current: rec('me', 1, 1, 1) }]);
      expect(await h.sm.get(enc('lock'))).toEqual(rec('me', 1, 1, 1));
    });
  });

  describe('durability', () => {
    it('persists data and the applied index together across a reopen', async () => {
      let h = await open();
      await h.run(put('a', '1'), put('b', '2'), 'noop', del('a'));
      h = await reopen(h);
      expect(h.sm.appliedIndex).toBe(4);
      expect(h.store.initialState().applied).toBe(4);
      expect(await h.sm.get(enc('a'))).toBeUndefined();
      expect(await h.sm.get(enc('b'))).toEqual(rec('2', 2, 2, 1));
      // The next entry continues after the applied index; re-applying old ones is refused.
      const again = h.entries([put('c', '3')]);
      await h.commit(again);
      await expect(h.sm.apply([{ index: 4, term: 1, type: 'noop', data: new Uint8Array(0) }])).rejects.toThrow(
        /entry 4 where 5 was expected/,
      );
    });

    it('a committed but unapplied entry is applied after a restart, exactly once', async () => {
      let h = await open();
      await h.run(put('n', '1'));
      const pending = h.entries([put('n', '2', { prevKv: true })]);
      await h.commit(pending); // then "crash" before applying
      h = await reopen(h);
      const init = h.store.initialState();
      expect(init.applied).toBe(1);
      expect(init.hardState.commit).toBe(2);
      const toApply = init.entries.filter((e) => e.index > init.applied && e.index <= init.hardState.commit);
      expect(await h.sm.apply(toApply)).toEqual([{ kind: 'put', index: 2, prev: rec('1', 1, 1, 1) }]);
      expect(await h.sm.get(enc('n'))).toEqual(rec('2', 1, 2, 2));
    });

    it('applies nothing and writes nothing for an empty batch', async () => {
      const h = await open();
      expect(await h.sm.apply([])).toEqual([]);
      expect(h.sm.appliedIndex).toBe(0);
    });

    it('rejects malformed entries alike and moves past them', async () => {
      const h = await open();
      const results = await h.run(new Uint8Array([1, 2, 3]), put('a', '1'));
      expect(results[0]).toMatchObject({ kind: 'error', index: 1, code: 'MALFORMED_COMMAND' });
      expect((results[0] as { message: string }).message).toMatch(/^malformed command: /);
      expect(results[1]).toEqual({ kind: 'put', index: 2 });
      expect(h.sm.appliedIndex).toBe(2);
    });
  });

  describe('exactly-once writes', () => {
    it('returns the first result for a retried clientId+seq and changes nothing', async () => {
      const h = await open();
      const first = await h.run(put('k', 'v1', { clientId: 'c1', seq: 1 }));
      expect(first).toEqual([{ kind: 'put', index: 1 }]);
      // Another client changes the key; then c1 retries seq 1 (with a different payload even).
      await h.run(put('k', 'other'));
      const retried = await h.run(put('k', 'v1', { clientId: 'c1', seq: 1 }), del('k', { clientId: 'c1', seq: 1 }));
      expect(retried).toEqual([
        { kind: 'put', index: 1, duplicate: true },
        { kind: 'put', index: 1, duplicate: true },
      ]);
      expect(await h.sm.get(enc('k'))).toEqual(rec('other', 1, 2, 2));
      expect(h.sm.appliedIndex).toBe(4);
    });

    it('deduplicates within one batch and stores CAS results, failures included', async () => {
      const h = await open();
      const results = await h.run(
        casAbsent('lock', 'a', { clientId: 'c', seq: 1 }),
        casAbsent('lock', 'a', { clientId: 'c', seq: 1 }),
        casAbsent('lock', 'b', { clientId: 'd', seq: 7 }),
        casAbsent('lock', 'b', { clientId: 'd', seq: 7 }),
      );
      expect(results).toEqual([
        { kind: 'cas', index: 1, succeeded: true, current: rec('a', 1, 1, 1) },
        { kind: 'cas', index: 1, succeeded: true, current: rec('a', 1, 1, 1), duplicate: true },
        { kind: 'cas', index: 3, succeeded: false, current: rec('a', 1, 1, 1) },
        { kind: 'cas', index: 3, succeeded: false, current: rec('a', 1, 1, 1), duplicate: true },
      ]);
    });

    it('rejects a stale sequence number without applying it', async () => {
      const h = await open();
      await h.run(put('k', '1', { clientId: 'c', seq: 1 }), put('k', '5', { clientId: 'c', seq: 5 }));
      const [stale] = await h.run(put('k', '3', { clientId: 'c', seq: 3 }));
      expect(stale).toEqual({
        kind: 'error',
        index: 3,
        code: 'STALE_SEQUENCE',
        message: 'client "c": sequence 3 is below the last applied sequence 5',
      });
      expect(await h.sm.get(enc('k'))).toEqual(rec('5', 1, 2, 2));
      expect(h.sm.session('c')).toEqual({ lastSeq: 5, lastIndex: 2, lastSeenMs: 0 });
    });

    it('does not deduplicate without a client id or a seq', async () => {
      const h = await open();
      const results = await h.run(put('k', 'a', { seq: 1 }), put('k', 'a', { seq: 1 }), put('k', 'b', { clientId: 'c' }), put('k', 'b', { clientId: 'c' }));
      expect(results.map((r) => (r as { duplicate?: true }).duplicate)).toEqual([undefined, undefined, undefined, undefined]);
      expect((await h.sm.get(enc('k')))?.version).toBe(4);
      expect(h.sm.sessionCount).toBe(0);
    });

    it('keeps sessions across a reopen', async () => {
      let h = await open();
      await h.run(put('k', 'v', { clientId: 'c1', seq: 1 }), del('x', { clientId: 'c2', seq: 9 }));
      h = await reopen(h);
      expect(h.sm.sessionCount).toBe(2);
      expect(await h.run(put('k', 'v', { clientId: 'c1', seq: 1 }), del('x', { clientId: 'c2', seq: 8 }))).toEqual([
        { kind: 'put', index: 1, duplicate: true },
        {
          kind: 'error',
          index: 4,
          code: 'STALE_SEQUENCE',
          message: 'client "c2": sequence 8 is below the last applied sequence 9',
        },
      ]);
      expect(await h.sm.get(enc('k'))).toEqual(rec('v', 1, 1, 1));
    });

    it('evicts the least recently used session beyond maxSessions, also after a reopen', async () => {
      const options = { maxSessions: 2 };
      let h = await open('n1', options);
      await h.run(put('k', 'a', { clientId: 'a', seq: 1 }), put('k', 'b', { clientId: 'b', seq: 1 }));
      await h.run(put('k', 'a2', { clientId: 'a', seq: 2, prevKv: true })); // a is now the most recently used
      await h.run(put('k', 'c', { clientId: 'c', seq: 1 })); // evicts b
      expect(h.sm.session('b')).toBeUndefined();
      expect(h.sm.sessionCount).toBe(2);

      h = await reopen(h, 'n1', options);
      expect(h.sm.session('a')?.lastSeq).toBe(2);
      // a's retry is still deduplicated (a duplicate does not refresh the session); b was forgotten,
      // so its retry is applied again, and the LRU order rebuilt from the log indexes (a, c) makes a
      // the one to go.
      const results = await h.run(put('k', 'a2', { clientId: 'a', seq: 2, prevKv: true }), put('k', 'b', { clientId: 'b', seq: 1, prevKv: true }));
      expect(results).toEqual([
        { kind: 'put', index: 3, prev: rec('b', 1, 2, 2), duplicate: true },
        { kind: 'put', index: 6, prev: rec('c', 1, 4, 4) },
      ]);
      expect(h.sm.session('a')).toBeUndefined();
      await h.run(put('z', 'z', { clientId: 'z', seq: 1 }));
      expect(h.sm.session('c')).toBeUndefined();
      expect(h.sm.session('b')).toBeDefined();
    });

    it('keeps the previous record in a result only when the write asked for it, also for its retry', async () => {
      let h = await open();
      await h.run(put('k', '0'));
      expect(await h.run(put('k', '1', { clientId: 'c', seq: 1 }))).toEqual([{ kind: 'put', index: 2 }]);
      expect(await h.run(put('k', '1', { clientId: 'c', seq: 1 }))).toEqual([{ kind: 'put', index: 2, duplicate: true }]);
      expect(await h.run(put('k', '2', { clientId: 'c', seq: 2, prevKv: true }))).toEqual([{ kind: 'put', index: 4, prev: rec('1', 1, 2, 2) }]);
      h = await reopen(h);
      expect(await h.run(put('k', '2', { clientId: 'c', seq: 2, prevKv: true }))).toEqual([
        { kind: 'put', index: 4, prev: rec('1', 1, 2, 2), duplicate: true },
      ]);
      expect(await h.run(del('k', { clientId: 'c', seq: 3 }))).toEqual([{ kind: 'delete', index: 6, deleted: true }]);
      expect(await h.run(del('k', { clientId: 'c', seq: 3 }))).toEqual([{ kind: 'delete', index: 6, deleted: true, duplicate: true }]);
    });

    it('expires sessions by the commands proposedAtMs, never by the local clock', async () => {
      const ttl = 1000;
      let h = await open('n1', { sessionTtlMs: ttl });
      await h.run(put('k', '1', { clientId: 'old', seq: 1, proposedAtMs: 10_000 }), put('k', '2', { clientId: 'mid', seq: 1, proposedAtMs: 10_500 }));
      // A command stamped by a node whose clock lags does not move the clock back.
      await h.run(put('x', '1', { proposedAtMs: 5_000 }));
      expect(h.store.sessionClockMs).toBe(10_500);
      expect(h.sm.sessionCount).toBe(2);
      // 10_999: "old" has been idle 999ms, still alive.
      await h.run(put('x', '2', { proposedAtMs: 10_999 }));
      expect(h.sm.session('old')).toBeDefined();
      // 11_000: idle for the full ttl, expired, and the clock survives a reopen.
      await h.run(put('x', '3', { proposedAtMs: 11_000 }));
      expect(h.sm.session('old')).toBeUndefined();
      expect(h.sm.session('mid')).toBeDefined();
      h = await reopen(h, 'n1', { sessionTtlMs: ttl });
      expect(h.store.sessionClockMs).toBe(11_000);
      expect(h.sm.session('old')).toBeUndefined();
      // An expired client's retry is treated as new (the price of bounded sessions).
      expect(await h.run(put('k', '1', { clientId: 'old', seq: 1, proposedAtMs: 11_000, prevKv: true }))).toEqual([
        { kind: 'put', index: 6, prev: rec('2', 1, 2, 2) },
      ]);
    });

    it('decides the same on every replica, however the log is split into apply batches', async () => {
      const options = { maxSessions: 4, sessionTtlMs: 200 };
      const seed = 42;
      const rng = createRng(seed);
      const rand = (n: number): number => rng.int(n);
      const items: CommandInput[] = [];
      const seqs = new Map<string, number>();
      for (let i = 0; i < 300; i++) {
        const client = `c${rand(6)}`;
        const last = seqs.get(client) ?? 0;
        const pick = rand(6);
        const seq = pick === 0 ? Math.max(1, last) : pick === 1 ? Math.max(1, last - 1) : last + 1; // retries, stale ones
        seqs.set(client, Math.max(last, seq));
        const key = `k${rand(5)}`;
        // Clocks of different proposers disagree a little; halfway, time jumps past the session ttl.
        const proposedAtMs = 1000 + i * 3 - rand(20) + (i >= 150 ? 400 : 0);
        const r = rand(3);
        const extra = { clientId: client, seq, proposedAtMs };
        items.push(r === 0 ? put(key, `v${i}`, extra) : r === 1 ? del(key, extra) : casAbsent(key, `v${i}`, extra));
      }
      const a = await open('a', options);
      const b = await open('b', options);
      const resultsA: ApplyResult[] = [];
      const resultsB: ApplyResult[] = [];
      const entries = a.entries(items);
      await a.commit(entries);
      await b.commit(entries);
      for (const e of entries) {
        resultsA.push(...(await a.sm.apply([e])));
        if (e.index === 150) expect(a.sm.sessionCount).toBe(4);
        if (e.index === 151) expect(a.sm.sessionCount).toBe(1); // all others expired at once
      }
      for (let i = 0; i < entries.length; ) {
        const n = 1 + rand(40);
        resultsB.push(...(await b.sm.apply(entries.slice(i, i + n))));
        i += n;
      }
      expect(resultsB).toEqual(resultsA);
      // The mix exercised what it should (counts for seed 42).
      expect(resultsA.filter((r) => 'duplicate' in r).length).toBeGreaterThan(10);
      expect(resultsA.filter((r) => r.kind === 'error').length).toBeGreaterThan(10);
      const all = { prefix: new Uint8Array(0) };
      expect(await b.sm.range(all)).toEqual(await a.sm.range(all));
      const sessions = (h: Harness) => [0, 1, 2, 3, 4, 5].map((c) => h.sm.session(`c${c}`));
      expect(sessions(b)).toEqual(sessions(a));
      const reopened = await reopen(b, 'b', options);
      expect(sessions(reopened)).toEqual(sessions(a));
    });
  });

  describe('range', () => {
    async function seeded(): Promise<Harness> {
      const h = await open();
      await h.run(put('a', '0'), put('app/1', '1'), put('app/2', '2'), put('app/3', '3'), put('apple', '4'), put('b', '5'), put('ap', '6'));
      return h;
    }
    const keys = (r: { items: ReadonlyArray<{ key: Uint8Array }> }) => r.items.map((i) => dec(i.key));

    it('reads a prefix', async () => {
      const h = await seeded();
      const r = await h.sm.range({ prefix: enc('app/') });
      expect(keys(r)).toEqual(['app/1', 'app/2', 'app/3']);
      expect(r.more).toBe(false);
      expect(r.nextToken).toBeUndefined();
      expect(r.items[1]?.record).toEqual(rec('2', 3, 3, 1));
      expect(keys(await h.sm.range({ prefix: enc('ap') }))).toEqual(['ap', 'app/1', 'app/2', 'app/3', 'apple']);
      expect(keys(await h.sm.range({ prefix: new Uint8Array(0) }))).toHaveLength(7);
    });

    it('reads [start, end)', async () => {
      const h = await seeded();
      expect(keys(await h.sm.range({ start: enc('app/2'), end: enc('b') }))).toEqual(['app/2', 'app/3', 'apple']);
      expect(keys(await h.sm.range({ start: enc('apple') }))).toEqual(['apple', 'b']);
      expect(keys(await h.sm.range({ start: enc('b'), end: enc('a') }))).toEqual([]);
    });

    it('pages with a limit and a token', async () => {
      const h = await seeded();
      const seen: string[] = [];
      let after: Uint8Array | undefined;
      let pages = 0;
      for (;;) {
        const r = await h.sm.range({ start: enc('a'), end: enc('b') }, { limit: 2, ...(after ? { after } : {}) });
        seen.push(...keys(r).map(String));
        pages++;
        if (!r.more) break;
        expect(r.nextToken).toEqual(r.items[r.items.length - 1]?.key);
        after = r.nextToken;
      }
      expect(seen).toEqual(['a', 'ap', 'app/1', 'app/2', 'app/3', 'apple']);
      expect(pages).toBe(3);
      // Exactly `limit` keys left: no further page is announced.
      const last = await h.sm.range({ prefix: enc('app/') }, { limit: 3 });
      expect(last.more).toBe(false);
    });

    it('stops at maxBytes, returning at least one item', async () => {
      const h = await seeded();
      // Bytes as stored: key (5) + record (24 bytes of indexes + 1 byte of value) = 30 per item.
      const r = await h.sm.range({ prefix: enc('app/') }, { maxBytes: 60 });
      expect(keys(r)).toEqual(['app/1', 'app/2']);
      expect(r.more).toBe(true);
      expect(keys(await h.sm.range({ prefix: enc('app/') }, { maxBytes: 1 }))).toEqual(['app/1']);
    });

    it('returns keys only', async () => {
      const h = await seeded();
      const r = await h.sm.range({ prefix: enc('app/') }, { keysOnly: true, limit: 2 });
      expect(r.items).toEqual([{ key: enc('app/1') }, { key: enc('app/2') }]);
      expect(r.more).toBe(true);
    });

    it('sees a deleted key disappear', async () => {
      const h = await seeded();
      await h.run(del('app/2'));
      expect(keys(await h.sm.range({ prefix: enc('app/') }))).toEqual(['app/1', 'app/3']);
    });

    it('handles a prefix of 0xff bytes', async () => {
      const h = await open();
      await h.run({ op: 'put', key: new Uint8Array([0xff, 0xff, 1]), value: enc('x') }, put('z', 'z'));
      const r = await h.sm.range({ prefix: new Uint8Array([0xff, 0xff]) });
      expect(r.items.map((i) => [...i.key])).toEqual([[0xff, 0xff, 1]]);
    });
  });

  describe('snapshots', () => {
    it('stores the applied entry\'s term with the applied index', async () => {
      let h = await open();
      const [e] = h.entries([put('a', '1')]).map((x) => ({ ...x, term: 4 }));
      await h.store.persist({ hardState: { term: 4, vote: 1, commit: 1 }, entries: [e!] });
      await h.sm.apply([e!]);
      expect(h.store.appliedTerm).toBe(4);
      h = await reopen(h);
      expect(h.store.appliedTerm).toBe(4);
    });

    it('reloads the session table and clock after a snapshot was installed underneath it', async () => {
      const options = { maxSessions: 3 };
      const a = await open('a', options);
      await a.run(put('k', '1', { clientId: 'c1', seq: 1, proposedAtMs: 1000 }), put('j', '2', { clientId: 'c2', seq: 4, proposedAtMs: 2000 }));
      const b = await open('b', options);
      await b.run(put('old', 'x', { clientId: 'c9', seq: 1, proposedAtMs: 5 }));

      // b receives a's snapshot (as a follower would) and installs it.
      const reader = await a.store.openSnapshot();
      const staging = await b.store.beginStaging();
      const decoder = new SnapshotDecoder({ maxKeyBytes: 1024, maxValueBytes: 1024 });
      for await (const chunk of reader.chunks(64)) await staging.write(decoder.push(chunk));
      const { header } = decoder.end();
      const meta = { index: header.index, term: header.term };
      await b.store.persist({ hardState: { term: 1, vote: 0, commit: header.index }, entries: [], snapshot: { meta, staging, header } });
      await b.sm.reload();

      expect(b.sm.appliedIndex).toBe(2);
      expect(b.sm.sessionCount).toBe(2);
      expect(b.sm.session('c9')).toBeUndefined();
      expect(b.sm.session('c1')).toEqual(a.sm.session('c1'));
      expect(b.sm.session('c2')).toEqual(a.sm.session('c2'));
      expect(await b.sm.get(enc('old'))).toBeUndefined();
      expect(await b.sm.get(enc('k'))).toEqual(rec('1', 1, 1, 1));
      // From here both replicas decide alike: the retry is deduplicated, the clock was carried over
      // (a command stamped 1500 does not move it back), and the LRU order is the same.
      const next = [
        put('k', '1', { clientId: 'c1', seq: 1 }),
        put('z', '3', { clientId: 'c3', seq: 1, proposedAtMs: 1500 }),
        put('z', '4', { clientId: 'c4', seq: 1, proposedAtMs: 1600 }),
      ];
      expect(await b.run(...next)).toEqual(await a.run(...next));
      expect(b.store.sessionClockMs).toBe(2000);
      const ids = ['c1', 'c2', 'c3', 'c4', 'c9'];
      expect(ids.map((id) => b.sm.session(id))).toEqual(ids.map((id) => a.sm.session(id)));
      expect(b.sm.session('c1')).toBeUndefined(); // evicted by maxSessions, on both
    });

    it('refuses to reload while applying', async () => {
      const h = await open();
      const entries = h.entries([put('a', '1')]);
      await h.commit(entries);
      const applying = h.sm.apply(entries);
      await expect(h.sm.reload()).rejects.toThrow('KvStateMachine.reload called while an apply is prepared or being written');
      await applying;
      await h.sm.reload();
      expect(h.sm.appliedIndex).toBe(1);
    });
  });

  describe('prepare and takeWrite', () => {
    it('accumulates prepared applies, later ones reading through earlier ones, and writes them in one write', async () => {
      const h = await open();
      await h.run(put('a', '0'));
      const entries = h.entries([put('a', '1', { prevKv: true }), casValue('a', '1', '2'), put('b', '3')]);
      await h.commit(entries);
      expect(await h.sm.prepare(entries.slice(0, 1))).toEqual([{ kind: 'put', index: 2, prev: rec('0', 1, 1, 1) }]);
      // The second prepare sees the first one's put, which is not written yet.
      expect(await h.sm.prepare(entries.slice(1))).toEqual([
        { kind: 'cas', index: 3, succeeded: true, current: rec('2', 1, 3, 3) },
        { kind: 'put', index: 4 },
      ]);
      expect(h.sm.preparedIndex).toBe(4);
      // Reads serve the durable state until the write is reported.
      expect(h.sm.appliedIndex).toBe(1);
      expect(await h.sm.get(enc('a'))).toEqual(rec('0', 1, 1, 1));
      expect(await h.sm.get(enc('b'))).toBeUndefined();
      const w = h.sm.takeWrite()!;
      expect(w.write.applied).toBe(4);
      expect(() => h.sm.takeWrite()).toThrow(/while a write is being written/);
      await expect(h.sm.prepare(h.entries([put('c', '1')]))).rejects.toThrow(/before the previous call resolved/);
      await h.store.writeState(w.write);
      w.written();
      expect(h.sm.takeWrite()).toBeUndefined();
      expect(h.sm.appliedIndex).toBe(4);
      expect(await h.sm.get(enc('a'))).toEqual(rec('2', 1, 3, 3));
      expect(await h.sm.get(enc('b'))).toEqual(rec('3', 4, 4, 1));
      // And they are what a reopen finds.
      const again = await reopen(h);
      expect(again.sm.appliedIndex).toBe(4);
      expect(await again.sm.get(enc('a'))).toEqual(rec('2', 1, 3, 3));
    });

    it('prepared applies that were never written are applied again after a restart, to the same results', async () => {
      const h = await open();
      const entries = h.entries([put('a', '1'), put('a', '2', { clientId: 'c1', seq: 1 })]);
      await h.commit(entries);
      const first = await h.sm.prepare(entries);
      const again = await reopen(h); // "crash" before the write
      expect(again.sm.appliedIndex).toBe(0);
      expect(await again.sm.apply(entries)).toEqual(first);
      expect(await again.sm.get(enc('a'))).toEqual(rec('2', 1, 2, 2));
    });

    it('apply() also writes the applies prepared before it', async () => {
      const h = await open();
      const entries = h.entries([put('a', '1'), put('b', '2')]);
      await h.commit(entries);
      await h.sm.prepare(entries.slice(0, 1));
      expect(await h.sm.apply(entries.slice(1))).toEqual([{ kind: 'put', index: 2 }]);
      expect(h.sm.appliedIndex).toBe(2);
      expect(await h.sm.get(enc('a'))).toEqual(rec('1', 1, 1, 1));
    });
  });

  it('rejects apply calls that overlap (a caller bug)', async () => {
    const h = await open();
    const entries = h.entries([put('a', '1'), put('b', '2')]);
    await h.commit(entries);
    const first = h.sm.apply(entries.slice(0, 1));
    await expect(h.sm.apply(entries.slice(1))).rejects.toThrow(/called again before the previous call resolved/);
    await first;
    expect(await h.sm.apply(entries.slice(1))).toEqual([{ kind: 'put', index: 2 }]);
  });
});
