// The record cache: its byte limit and eviction order (CLOCK), and, through the state machine, that it never
// answers with a record older than the last completed apply (a read that missed while an apply wrote
// the key must not cache what it found).

import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { KvRecord } from '../../src/kv/index.js';
import { RecordCache } from '../../src/kv/record-cache.js';
import { createRng } from '../../src/raft/rng.js';
import { NodeStore } from '../../src/storage/index.js';
import { makeTempDir, removeTempDir } from '../storage/temp-dir.js';
import { seedOf } from '../support/seed.js';
import { dec, enc, Harness, type CommandInput } from './harness.js';

const rec = (value: string): KvRecord => ({ value: enc(value), createIndex: 1, modIndex: 1, version: 1 });
const put = (key: string, value: string): CommandInput => ({ op: 'put', key: enc(key), value: enc(value) }) as CommandInput;

describe('RecordCache', () => {
  it('evicts the least recently used entries beyond its byte limit', () => {
    // Each entry below counts 1 (key) + 10 (value) + 256 (overhead) = 267 bytes.
    const c = new RecordCache(3 * 267);
    c.set('a', rec('0123456789'));
    c.set('b', rec('0123456789'));
    c.set('c', rec('0123456789'));
    expect(c.get('a')).not.toBeUndefined(); // a is now the most recently used
    c.set('d', rec('0123456789'));
    expect(c.get('b')).toBeUndefined();
    expect(c.get('a')).not.toBeUndefined();
    expect(c.get('c')).not.toBeUndefined();
    expect(c.get('d')).not.toBeUndefined();
    expect(c.usedBytes).toBe(3 * 267);
  });

  it('gives an entry hit or rewritten since the scan last passed it one more turn, and leaves the others in their order', () => {
    const c = new RecordCache(3 * 267);
    c.set('a', rec('0123456789'));
    c.set('b', rec('0123456789'));
    c.set('c', rec('0123456789'));
    c.set('b', rec('9876543210')); // rewritten: used, like a hit
    c.set('d', rec('0123456789')); // a is the oldest and unused: it goes
    expect(c.has('a')).toBe(false);
    c.set('e', rec('0123456789')); // b moves behind e with its mark cleared; c goes
    expect(c.has('c')).toBe(false);
    expect(dec(c.get('b')!.value)).toBe('9876543210');
    c.set('f', rec('0123456789')); // d is now the oldest and unused
    expect(['b', 'c', 'd', 'e', 'f'].filter((k) => c.has(k))).toEqual(['b', 'e', 'f']);
    expect(c.usedBytes).toBe(3 * 267);
    expect(c.evictions).toBe(3);
  });

  it('gives at most 32 used entries another turn per eviction, then evicts the oldest whatever its mark', () => {
    // Keys of 4 characters: 4 + 10 + 256 = 270 bytes each, 100 of them fit.
    const key = (i: number): string => `k${String(i).padStart(3, '0')}`;
    const c = new RecordCache(100 * 270);
    for (let i = 0; i < 100; i++) c.set(key(i), rec('0123456789'));
    for (let i = 0; i < 100; i++) expect(c.get(key(i))).not.toBeUndefined();
    c.set('new!', rec('0123456789'));
    const gone = Array.from({ length: 100 }, (_, i) => key(i)).filter((k) => !c.has(k));
    expect(gone).toEqual([key(32)]);
    // Each eviction spends its chances on the marked entries in front (k033-k064, then k066-k097)
    // and evicts the next (k065, then k098). Then k099 moves, and 'new!', queued before the entries
    // moved by the first eviction and never used, is the oldest without a mark.
    for (const k of ['nxt1', 'nxt2', 'nxt3']) c.set(k, rec('0123456789'));
    const goneNow = [...Array.from({ length: 100 }, (_, i) => key(i)), 'new!'].filter((k) => !c.has(k));
    expect(goneNow).toEqual([key(32), key(65), key(98), 'new!']);
    expect(c.usedBytes).toBe(100 * 270);
  });

  it('evicts a key by the place of its latest insertion, after it was dropped and cached again', () => {
    const c = new RecordCache(3 * 267);
    c.set('a', rec('0123456789'));
    c.set('b', rec('0123456789'));
    c.set('a', rec('x'.repeat(2000))); // too large: dropped
    expect(c.has('a')).toBe(false);
    c.set('c', rec('0123456789'));
    c.set('a', rec('0123456789')); // back, now the newest
    c.set('d', rec('0123456789')); // over the limit: b, the oldest, goes
    expect(['a', 'b', 'c', 'd'].filter((k) => c.has(k))).toEqual(['a', 'c', 'd']);
    expect(c.usedBytes).toBe(3 * 267);
  });

  it('keeps its own copy of a value: neither the buffer it was given nor the bytes it returned can change it', () => {
    const frame = new Uint8Array(1024 * 1024);
    frame.set([1, 2, 3], 100);
    const c = new RecordCache(4096);
    c.set('k', { value: frame.subarray(100, 103), createIndex: 1, modIndex: 2, version: 3 });
    frame.fill(9);
    const got = c.get('k')!;
    expect(got).toEqual({ value: new Uint8Array([1, 2, 3]), createIndex: 1, modIndex: 2, version: 3 });
    got.value.fill(7);
    expect([...c.get('k')!.value]).toEqual([1, 2, 3]);
  });

  it('returns every byte value as it was given, for values short and long', () => {
    const c = new RecordCache(1024 * 1024);
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const long = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 131) % 256);
    c.set('all', { value: all, createIndex: 1, modIndex: 1, version: 1 });
    c.set('long', { value: long, createIndex: 1, modIndex: 1, version: 1 });
    c.set('empty', { value: new Uint8Array(0), createIndex: 1, modIndex: 1, version: 1 });
    expect(c.get('all')!.value).toEqual(all);
    expect(c.get('long')!.value).toEqual(long);
    expect(c.get('empty')!.value).toEqual(new Uint8Array(0));
  });

  it('counts at least the heap its entries take', () => {
    // V8's gc, reachable once the flag is set at run time; heap figures are read after a full collection.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const heap = (): number => {
      gc();
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const n = 50_000;
    for (const valueBytes of [0, 100, 1000]) {
      const frame = new Uint8Array(64 * 1024).fill(1);
      const c = new RecordCache(2 ** 40);
      const before = heap();
      for (let i = 0; i < n; i++) {
        // Keys and values as an apply gives them: flat strings, and views into a received message.
        const key = Buffer.from(`key/${String(i).padStart(12, '0')}`).toString('latin1');
        const off = (i * 61) % (frame.length - valueBytes);
        c.set(key, { value: frame.subarray(off, off + valueBytes), createIndex: 1e9 + i, modIndex: 1e9 + i, version: i + 1 });
      }
      const real = heap() - before;
      expect(c.size).toBe(n);
      console.log(`record cache, ${valueBytes} B values: counts ${(c.usedBytes / n).toFixed(0)} B per entry, takes ${(real / n).toFixed(0)} B of heap`);
      expect(real).toBeLessThanOrEqual(c.usedBytes);
    }
  });

  it('caches absence as null, distinct from not cached', () => {
    const c = new RecordCache(1024);
    c.set('gone', null);
    expect(c.get('gone')).toBeNull();
    expect(c.get('never')).toBeUndefined();
  });

  it('with a zero limit caches nothing; an entry larger than the limit is not kept', () => {
    const off = new RecordCache(0);
    off.set('a', rec('x'));
    expect(off.get('a')).toBeUndefined();
    const small = new RecordCache(400);
    small.set('a', rec('x'.repeat(500)));
    expect(small.get('a')).toBeUndefined();
    expect(small.usedBytes).toBe(0);
  });

  it('refuses a negative or fractional limit', () => {
    expect(() => new RecordCache(-1)).toThrow(/maxBytes/);
    expect(() => new RecordCache(1.5)).toThrow(/maxBytes/);
  });
});

describe('KvStateMachine with the record cache', () => {
  let root: string;
  const open: Harness[] = [];

  beforeEach(async () => {
    root = await makeTempDir();
  });

  afterEach(async () => {
    for (const h of open.splice(0)) await h.close();
    await removeTempDir(root);
  });

  it('a get that missed while an apply rewrote the key does not cache the old record', async () => {
    const h = await Harness.open(join(root, 'n1'), { cacheBytes: 1024 * 1024 });
    open.push(h);
    await h.run(put('a', 'v1'), put('k', 'v1'));
    // Reopen with room for one record: the load at open caches a and stops before k, so the cache is
    // not complete, and the next get of k misses and reads LevelDB.
    await h.close();
    open.pop();
    const h2 = await Harness.open(join(root, 'n1'), { cacheBytes: RecordCache.entryBytes('a', 2) + 10 });
    open.push(h2);
    await h2.sm.cacheLoaded();
    expect(h2.sm.cacheStats).toMatchObject({ entries: 1, complete: false });
    const entries = h2.entries([put('k', 'v2')]);
    await h2.commit(entries);
    // Hold the get's LevelDB read (which finds v1) until the apply of v2 has completed.
    const store = h2.store;
    const realGetData = store.getData.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let held = false;
    store.getData = async (key) => {
      const first = !held;
      held = true;
      const value = await realGetData(key);
      if (first) await gate;
      return value;
    };
    const early = h2.sm.get(enc('k'));
    await h2.sm.apply(entries);
    release();
    expect(dec((await early)!.value)).toBe('v1');
    // The cache holds v2 from the apply, not the v1 the late read found.
    const after = await h2.sm.get(enc('k'));
    expect(dec(after!.value)).toBe('v2');
    expect(h2.sm.cacheStats.entries).toBe(1);
  });

  it('answers repeated gets from memory and sees every apply', async () => {
    const h = await Harness.open(join(root, 'n1'), { cacheBytes: 1024 * 1024 });
    open.push(h);
    await h.run(put('a', '1'), put('b', '1'));
    expect(dec((await h.sm.get(enc('a')))!.value)).toBe('1');
    const before = h.sm.cacheStats;
    for (let i = 0; i < 10; i++) await h.sm.get(enc('a'));
    expect(h.sm.cacheStats.hits - before.hits).toBe(10);
    expect(h.sm.cacheStats.misses).toBe(before.misses);
    await h.run(put('a', '2'), { op: 'delete', key: enc('b') } as CommandInput);
    expect(dec((await h.sm.get(enc('a')))!.value)).toBe('2');
    expect(await h.sm.get(enc('b'))).toBeUndefined();
    // Absence is cached too: a second get of the deleted key is a hit.
    const hits = h.sm.cacheStats.hits;
    expect(await h.sm.get(enc('b'))).toBeUndefined();
    expect(h.sm.cacheStats.hits).toBe(hits + 1);
  });

  it('holding the whole data set, it answers misses as absent without reading the store, until its first eviction', async () => {
    const h = await Harness.open(join(root, 'n1'), { cacheBytes: 1024 * 1024 });
    open.push(h);
    await h.run(put('a', '1'), put('b', '2'));
    await h.close();
    open.pop();
    // Room for three records: the two stored ones load at open, whole.
    const h2 = await Harness.open(join(root, 'n1'), { cacheBytes: 3 * RecordCache.entryBytes('a', 1) });
    open.push(h2);
    await h2.sm.cacheLoaded();
    expect(h2.sm.cacheStats).toMatchObject({ entries: 2, complete: true });
    const store = h2.store;
    let storeReads = 0;
    const realGetData = store.getData.bind(store);
    store.getData = (key) => {
      storeReads++;
      return realGetData(key);
    };
    expect(dec((await h2.sm.get(enc('b')))!.value)).toBe('2');
    expect(await h2.sm.get(enc('never-written'))).toBeUndefined();
    expect(storeReads).toBe(0);
    // Two new keys do not fit beside the two: the first eviction ends completeness, and a key that is
    // no longer cached is read from the store again.
    await h2.run(put('c', '3'), put('d', '4'));
    expect(h2.sm.cacheStats.complete).toBe(false);
    expect(dec((await h2.sm.get(enc('a')))!.value)).toBe('1');
    expect(storeReads).toBeGreaterThan(0);
  });

  it('the background load at open never puts back a record that an apply replaced meanwhile', async () => {
    const h = await Harness.open(join(root, 'n1'), { cacheBytes: 1024 * 1024 });
    open.push(h);
    const keys = Array.from({ length: 500 }, (_, i) => `key-${String(i).padStart(3, '0')}`);
    await h.run(...keys.map((k) => put(k, 'old')));
    await h.close();
    open.pop();
    // Hold the load after its first record: its LevelDB iterator (a snapshot) exists by then.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const realScan = NodeStore.prototype.scanData;
    const scan = vi.spyOn(NodeStore.prototype, 'scanData').mockImplementation(async function* (this: NodeStore, q) {
      let first = true;
      for await (const item of realScan.call(this, q)) {
        yield item;
        if (first) await gate;
        first = false;
      }
    });
    const h2 = await Harness.open(join(root, 'n1'), { cacheBytes: 1024 * 1024 });
    open.push(h2);
    scan.mockRestore();
    // Applies replace and delete keys while the load walks its older snapshot.
    await h2.run(...keys.filter((_, i) => i % 2 === 0).map((k) => put(k, 'new')));
    await h2.run({ op: 'delete', key: enc('key-499') } as CommandInput);
    release();
    await h2.sm.cacheLoaded();
    expect(h2.sm.cacheStats.complete).toBe(true);
    for (const [i, k] of keys.entries()) {
      const got = await h2.sm.get(enc(k));
      if (k === 'key-499') expect(got).toBeUndefined();
      else expect(dec(got!.value)).toBe(i % 2 === 0 ? 'new' : 'old');
    }
  });

  it('applies a random mix of commands to the same results whether records come from the cache or the store', async () => {
    // Cache off: every record an apply reads comes from the store (the waiting path). Large: the cache
    // holds everything from the start (an apply never waits). Tiny: a mix of both.
    const seed = seedOf('record cache apply paths');
    const rng = createRng(seed);
    const sizes = { off: 0, tiny: 3 * RecordCache.entryBytes('k0', 3), large: 1024 * 1024 };
    const hs: Harness[] = [];
    for (const [name, cacheBytes] of Object.entries(sizes)) {
      const h = await Harness.open(join(root, name), { cacheBytes });
      open.push(h);
      await h.sm.cacheLoaded();
      hs.push(h);
    }
    const keys = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'];
    const seqs = [0, 0, 0];
    const command = (): CommandInput => {
      const key = enc(keys[rng.int(keys.length)]!);
      const value = enc(`v${rng.int(3)}`);
      const client = rng.int(4); // 3: no session
      let session = {};
      if (client < 3) {
        // Mostly the next sequence; sometimes the last one again (a retry) or an older one.
        const r = rng.int(10);
        const seq = r < 7 || seqs[client] === 0 ? ++seqs[client]! : r < 9 ? seqs[client]! : Math.max(1, seqs[client]! - 1);
        session = { clientId: `c${client}`, seq };
      }
      const prevKv = rng.int(2) === 0;
      switch (rng.int(5)) {
        case 0:
        case 1:
          return { op: 'put', key, value, prevKv, ...session } as CommandInput;
        case 2:
          return { op: 'delete', key, prevKv, ...session } as CommandInput;
        default: {
          const k = rng.int(3);
          const compare = k === 0 ? { kind: 'value', value: enc(`v${rng.int(3)}`) } : k === 1 ? { kind: 'modIndex', modIndex: rng.int(40) } : { kind: 'absent' };
          return { op: 'cas', key, value, compare, ...session } as CommandInput;
        }
      }
    };
    let applied = 0;
    while (applied < 300) {
      const batch = Array.from({ length: 1 + rng.int(8) }, command);
      applied += batch.length;
      const results = await Promise.all(hs.map((h) => h.run(...batch)));
      expect(results[0], `seed ${seed}`).toEqual(results[2]);
      expect(results[1], `seed ${seed}`).toEqual(results[2]);
    }
    for (const key of keys) {
      const records = await Promise.all(hs.map((h) => h.sm.get(enc(key))));
      expect(records[0], `seed ${seed}, ${key}`).toEqual(records[2]);
      expect(records[1], `seed ${seed}, ${key}`).toEqual(records[2]);
    }
    expect(hs[0]!.sm.cacheStats.entries).toBe(0);
    expect(hs[1]!.sm.cacheStats.misses).toBeGreaterThan(0);
  });

  it('with the cache off, every get reads the store and the answers are the same', async () => {
    const h = await Harness.open(join(root, 'n1'), { cacheBytes: 0 });
    open.push(h);
    await h.run(put('a', '1'));
    const misses = h.sm.cacheStats.misses;
    expect(dec((await h.sm.get(enc('a')))!.value)).toBe('1');
    expect(dec((await h.sm.get(enc('a')))!.value)).toBe('1');
    expect(h.sm.cacheStats).toMatchObject({ entries: 0, hits: 0, misses: misses + 2 });
  });
});
