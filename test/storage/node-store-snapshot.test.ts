// NodeStore snapshots: log compaction, reading a consistent snapshot while writes go on, staging and
// installing a received one (atomically, surviving a crash before the switch), and restoring a new
// store from a stream.

import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SnapshotFormatError, StoreError } from '../../src/errors.js';
import type { Entry } from '../../src/raft/types.js';
import { concatBytes } from '../../src/storage/bytes.js';
import { NodeStore, SnapshotDecoder, type NodeStoreOptions, type SnapshotHeader, type SnapshotRecord } from '../../src/storage/index.js';
import { encodeEntryValue, logKey, logKeyIndex, parseStateKey, PREFIX_LOG, PREFIX_STATE } from '../../src/storage/keys.js';
import { makeTempDir, removeTempDir, withRawDb } from './temp-dir.js';

const OPTS: NodeStoreOptions = { clusterId: 'c1', nodeId: 1 };
const LIMITS = { maxKeyBytes: 1024, maxValueBytes: 64 * 1024 };
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

function entry(index: number, term: number): Entry {
  return { index, term, type: 'normal', data: enc(`e${index}`) };
}

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* from<T>(items: readonly T[]): AsyncGenerator<T> {
  for (const x of items) yield x;
}

function decodeStream(chunks: readonly Uint8Array[]): { header: SnapshotHeader; records: SnapshotRecord[] } {
  const d = new SnapshotDecoder(LIMITS);
  const records = chunks.flatMap((c) => d.push(c));
  return { header: d.end().header, records };
}

/** Readable records: kind, key and value as strings. */
function show(records: readonly SnapshotRecord[]): string[] {
  return records.map((r) => `${r.kind} ${dec(r.key)}=${dec(r.value)}`);
}

/** The store's whole state machine contents, through its read API. */
async function contents(s: NodeStore): Promise<string[]> {
  const out: string[] = [];
  for await (const [k, v] of s.scanSessions()) out.push(`session ${dec(k)}=${dec(v)}`);
  for await (const [k, v] of s.scanData({ limit: 100_000, values: true })) out.push(`data ${dec(k)}=${dec(v)}`);
  return out;
}

/** The log indexes and state generations present on disk (the store must be closed). */
async function onDisk(dir: string): Promise<{ log: number[]; generations: number[] }> {
  const log: number[] = [];
  const generations = new Set<number>();
  await withRawDb(dir, async (db) => {
    for await (const k of db.keys()) {
      const key = new Uint8Array(k);
      if (key[0] === PREFIX_LOG) log.push(logKeyIndex(key));
      if (key[0] === PREFIX_STATE) generations.add(parseStateKey(key).gen);
    }
  });
  return { log, generations: [...generations].sort((a, b) => a - b) };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe('NodeStore snapshots', () => {
  let root: string;
  let dir: string;
  const open: NodeStore[] = [];

  async function openStore(opts: NodeStoreOptions = OPTS, at = dir): Promise<NodeStore> {
    const s = await NodeStore.open(at, opts);
    open.push(s);
    return s;
  }

  async function reopen(s: NodeStore, opts: NodeStoreOptions = OPTS): Promise<NodeStore> {
    await s.close();
    return openStore(opts, s.dir);
  }

  /** A store with entries 1..last (term 1), committed and applied up to `applied`, and some state. */
  async function seeded(at = dir, applied = 3, last = 5): Promise<NodeStore> {
    const s = await openStore(OPTS, at);
    await s.persist({ hardState: { term: 1, vote: 1, commit: applied }, entries: entries(1, last, 1) });
    await s.writeState({
      applied,
      appliedTerm: 1,
      data: [
        [enc('a'), enc('1')],
        [enc('b'), enc('2')],
      ],
      sessions: [[enc('client-1'), enc('s1')]],
      sessionClockMs: 100,
    });
    return s;
  }

  beforeEach(async () => {
    root = await makeTempDir();
    dir = join(root, 'node1');
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    await removeTempDir(root);
  });

  describe('log compaction', () => {
    it('moves the log start; a restart loads only the entries after it', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 2, vote: 1, commit: 8 }, entries: [...entries(1, 4, 1), ...entries(5, 10, 2)] });
      await s.writeState({ applied: 6, appliedTerm: 2 });

      expect(await s.compactLog({ index: 5, term: 2 })).toBe(5);
      expect(s.logStart).toEqual({ index: 5, term: 2 });
      expect(s.lastIndex).toBe(10);
      await s.persist({ entries: entries(11, 11, 2) });

      const again = await reopen(s);
      const init = again.initialState();
      expect(init.snapshot).toEqual({ index: 5, term: 2 });
      expect(init.entries.map((e) => [e.index, e.term])).toEqual([6, 7, 8, 9, 10, 11].map((i) => [i, 2]));
      expect(init.applied).toBe(6);
      expect(again.lastIndex).toBe(11);
      expect(await again.compactLog({ index: 6, term: 2 })).toBe(1);
      await again.close();
      expect((await onDisk(dir)).log).toEqual([7, 8, 9, 10, 11]);
    });

    it('refuses to compact past the applied index, at or before the log start, or with the wrong term', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 2, vote: 1, commit: 8 }, entries: [...entries(1, 4, 1), ...entries(5, 10, 2)] });
      await s.writeState({ applied: 6, appliedTerm: 2 });
      await expect(s.compactLog({ index: 7, term: 2 })).rejects.toThrow('NodeStore.compactLog: index 7 must be in [1, 6]');
      await expect(s.compactLog({ index: 0, term: 0 })).rejects.toThrow(/index 0 must be in \[1, 6\]/);
      await expect(s.compactLog({ index: 5, term: 1 })).rejects.toThrow('NodeStore.compactLog: the entry at index 5 has term 2, not 1');
      await s.compactLog({ index: 4, term: 1 });
      await expect(s.compactLog({ index: 4, term: 1 })).rejects.toThrow(/index 4 must be in \[5, 6\]/);
      // Nothing was written by the refused calls.
      const again = await reopen(s);
      expect(again.initialState().snapshot).toEqual({ index: 4, term: 1 });
    });

    it('compacts the whole log; appends continue after the log start', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 3, vote: 1, commit: 4 }, entries: entries(1, 4, 3) });
      await s.writeState({ applied: 4, appliedTerm: 3 });
      expect(await s.compactLog({ index: 4, term: 3 })).toBe(4);
      expect(s.lastIndex).toBe(4);
      await expect(s.persist({ entries: [entry(5, 2)] })).rejects.toThrow(/entry 5 has term 2, below the term 3 before it/);
      let again = await reopen(s);
      expect(again.initialState()).toEqual({ hardState: { term: 3, vote: 1, commit: 4 }, snapshot: { index: 4, term: 3 }, entries: [], applied: 4 });
      await again.persist({ entries: [entry(5, 3)] });
      again = await reopen(again);
      expect(again.initialState().entries.map((e) => e.index)).toEqual([5]);
    });

    it('ignores and clears entries up to the log start that an interrupted clear left', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 1, vote: 1, commit: 6 }, entries: entries(1, 6, 1) });
      await s.writeState({ applied: 6, appliedTerm: 1 });
      await s.compactLog({ index: 4, term: 1 });
      await s.close();
      await withRawDb(dir, async (db) => {
        for (const i of [1, 3, 4]) await db.put(logKey(i), encodeEntryValue(entry(i, 1)));
      });
      const again = await openStore();
      expect(again.initialState().entries.map((e) => e.index)).toEqual([5, 6]);
      await again.close();
      expect((await onDisk(dir)).log).toEqual([5, 6]);
    });

    it('refuses to overlap persist (the caller serializes them)', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 1, vote: 1, commit: 3 }, entries: entries(1, 3, 1) });
      await s.writeState({ applied: 3, appliedTerm: 1 });
      const persisting = s.persist({ entries: entries(4, 4, 1) });
      await expect(s.compactLog({ index: 2, term: 1 })).rejects.toThrow('NodeStore.compactLog called before the previous persist call resolved');
      await persisting;
      const compacting = s.compactLog({ index: 2, term: 1 });
      await expect(s.persist({ entries: entries(5, 5, 1) })).rejects.toThrow('NodeStore.persist called before the previous compactLog call resolved');
      expect(await compacting).toBe(2);
    });
  });

  describe('reading a snapshot', () => {
    it('is consistent at the applied index when opened, whatever is written meanwhile', async () => {
      const s = await seeded();
      const reader = await s.openSnapshot();
      expect(reader.header).toEqual({ clusterId: 'c1', index: 3, term: 1, sessionClockMs: 100 });
      const chunks = reader.chunks(8);
      const got: Uint8Array[] = [];
      const first = await chunks.next();
      if (first.done !== false) throw new Error('expected a first chunk');
      got.push(first.value);

      await s.persist({ hardState: { term: 1, vote: 1, commit: 5 }, entries: [] });
      await s.writeState({
        applied: 5,
        appliedTerm: 1,
        data: [
          [enc('a'), enc('changed')],
          [enc('b'), undefined],
          [enc('c'), enc('new')],
        ],
        sessions: [[enc('client-2'), enc('s2')]],
        sessionClockMs: 200,
      });
      expect(await contents(s)).toEqual(['session client-1=s1', 'session client-2=s2', 'data a=changed', 'data c=new']);

      for await (const c of { [Symbol.asyncIterator]: () => chunks }) got.push(c);
      expect(got.slice(0, -1).every((c) => c.length === 8)).toBe(true);
      const { header, records } = decodeStream(got);
      expect(header).toEqual({ clusterId: 'c1', index: 3, term: 1, sessionClockMs: 100 });
      expect(show(records)).toEqual(['session client-1=s1', 'data a=1', 'data b=2']);

      // A new reader sees the new state.
      const later = await s.openSnapshot();
      expect(later.header.index).toBe(5);
      expect(show(decodeStream(await collect(later.chunks(1024))).records)).toEqual([
        'session client-1=s1',
        'session client-2=s2',
        'data a=changed',
        'data c=new',
      ]);
    });

    it('can be abandoned early, or closed without being read', async () => {
      const s = await seeded();
      const reader = await s.openSnapshot();
      for await (const _ of reader.chunks(4)) break;
      await reader.close();
      const unread = await s.openSnapshot();
      await unread.close();
      expect(() => reader.chunks(4)).toThrow(/may be called only once/);
      // The store is unaffected and closes cleanly.
      expect(await contents(s)).toEqual(['session client-1=s1', 'data a=1', 'data b=2']);
    });
  });

  describe('staging and installing a snapshot', () => {
    const meta = { index: 20, term: 3 };
    const header: SnapshotHeader = { clusterId: 'leader-cluster', ...meta, sessionClockMs: 500 };
    const received: SnapshotRecord[] = [
      { kind: 'session', key: enc('client-9'), value: enc('s9') },
      { kind: 'data', key: enc('x'), value: enc('10') },
      { kind: 'data', key: enc('y'), value: enc('20') },
    ];

    it('stages invisibly, then switches in persist; a restart sees the new state and the old generation is gone', async () => {
      const s = await seeded();
      const staging = await s.beginStaging();
      expect(staging.generation).toBe(1);
      await staging.write(received.slice(0, 1));
      await staging.write(received.slice(1));
      // Reads still see the current generation.
      expect(await contents(s)).toEqual(['session client-1=s1', 'data a=1', 'data b=2']);
      expect(s.appliedIndex).toBe(3);

      await s.persist({ hardState: { term: 3, vote: 0, commit: 20 }, entries: [entry(21, 3)], snapshot: { meta, staging, header } });
      expect(s.appliedIndex).toBe(20);
      expect(s.appliedTerm).toBe(3);
      expect(s.sessionClockMs).toBe(500);
      expect(s.logStart).toEqual(meta);
      expect(s.lastIndex).toBe(21);
      expect(await contents(s)).toEqual(['session client-9=s9', 'data x=10', 'data y=20']);
      await expect(staging.write(received)).rejects.toThrow('NodeStore: the snapshot staging of generation 1 was installed');
      // The old generation and the old log were cleared in the background (close waits for that).
      await s.close();
      expect(await onDisk(dir)).toEqual({ log: [21], generations: [1] });

      const again = await openStore();
      expect(again.initialState()).toEqual({ hardState: { term: 3, vote: 0, commit: 20 }, snapshot: meta, entries: [entry(21, 3)], applied: 20 });
      expect(again.appliedTerm).toBe(3);
      expect(again.sessionClockMs).toBe(500);
      expect(await contents(again)).toEqual(['session client-9=s9', 'data x=10', 'data y=20']);
      // The snapshot of the installed state is the one received (with this store's cluster id).
      const copy = decodeStream(await collect((await again.openSnapshot()).chunks(64)));
      expect(copy.header).toEqual({ ...header, clusterId: 'c1' });
      expect(show(copy.records)).toEqual(show(received));
      await again.close();
      expect(await onDisk(dir)).toEqual({ log: [21], generations: [1] });
    });

    it('drops the whole old log, uncommitted entries past the snapshot included', async () => {
      const s = await seeded(dir, 3, 30);
      const staging = await s.beginStaging();
      await s.persist({ hardState: { term: 3, vote: 0, commit: 20 }, entries: [], snapshot: { meta, staging, header } });
      expect(s.lastIndex).toBe(20);
      const again = await reopen(s);
      expect(again.initialState().entries).toEqual([]);
      await again.persist({ entries: [entry(21, 3)] });
      await again.close();
      expect((await onDisk(dir)).log).toEqual([21]);
    });

    it('a crash before the install leaves the old state whole, and open clears what was staged', async () => {
      const s = await seeded();
      const staging = await s.beginStaging();
      await staging.write(received);
      await s.close(); // "crash": the install never happened
      await expect(staging.write(received)).rejects.toThrow(/is closed/);
      expect((await onDisk(dir)).generations).toEqual([0, 1]);

      const again = await openStore();
      expect(again.appliedIndex).toBe(3);
      expect(again.initialState().snapshot).toEqual({ index: 0, term: 0 });
      expect(await contents(again)).toEqual(['session client-1=s1', 'data a=1', 'data b=2']);
      await again.close();
      expect((await onDisk(dir)).generations).toEqual([0]);
    });

    it('abort() clears the staged records; a new staging aborts the previous one', async () => {
      const s = await seeded();
      const first = await s.beginStaging();
      await first.write(received);
      await first.abort();
      await first.abort(); // idempotent
      await expect(first.write(received)).rejects.toThrow('NodeStore: the snapshot staging of generation 1 was aborted');

      const second = await s.beginStaging();
      await second.write(received.slice(0, 2));
      const third = await s.beginStaging();
      expect(third.generation).toBe(1);
      await expect(s.persist({ hardState: { term: 3, vote: 0, commit: 20 }, entries: [], snapshot: { meta, staging: second, header } })).rejects.toThrow(
        /the snapshot staging is not this store's current one/,
      );
      await third.write(received.slice(2));
      await s.persist({ hardState: { term: 3, vote: 0, commit: 20 }, entries: [], snapshot: { meta, staging: third, header } });
      // Only what the third staging wrote.
      expect(await contents(s)).toEqual(['data y=20']);
    });

    it('refuses installs that do not fit (caller bugs) without writing anything', async () => {
      const s = await seeded();
      const staging = await s.beginStaging();
      await staging.write(received);
      const hardState = { term: 3, vote: 0, commit: 20 };
      await expect(s.persist({ hardState, entries: [], snapshot: { meta, staging, header: { ...header, index: 19 } } })).rejects.toThrow(
        'NodeStore.persist: the snapshot header is at 19/3, not at 20/3',
      );
      await expect(s.persist({ hardState: { ...hardState, commit: 19 }, entries: entries(20, 20, 3), snapshot: { meta, staging, header } })).rejects.toThrow(
        /entries start at 20, but after a snapshot at 20 they must start at 21/,
      );
      await expect(s.persist({ hardState: { ...hardState, commit: 19 }, entries: [], snapshot: { meta, staging, header } })).rejects.toThrow(
        'NodeStore.persist: commit 19 is below the snapshot index 20',
      );
      await expect(s.persist({ hardState: { term: 2, vote: 0, commit: 20 }, entries: [], snapshot: { meta, staging, header } })).rejects.toThrow(
        'NodeStore.persist: the snapshot term 3 is beyond the current term 2',
      );
      const behind = { index: 2, term: 1 };
      await expect(
        s.persist({ hardState: { term: 1, vote: 1, commit: 3 }, entries: [], snapshot: { meta: behind, staging, header: { ...header, ...behind } } }),
      ).rejects.toThrow('NodeStore.persist: the snapshot at 2 is behind the persisted commit index 3');
      expect(s.appliedIndex).toBe(3);
      // The staging is still usable.
      await s.persist({ hardState, entries: [], snapshot: { meta, staging, header } });
      expect(s.appliedIndex).toBe(20);
    });

    it('does not overlap writeState, nor let the staging change while it is installed', async () => {
      const s = await seeded();
      const staging = await s.beginStaging();
      const writing = s.writeState({ applied: 3, appliedTerm: 1, data: [[enc('z'), enc('1')]] });
      await expect(s.persist({ hardState: { term: 3, vote: 0, commit: 20 }, entries: [], snapshot: { meta, staging, header } })).rejects.toThrow(
        'NodeStore.persist: cannot install a snapshot while writeState is in progress',
      );
      await writing;
      const installing = s.persist({ hardState: { term: 3, vote: 0, commit: 20 }, entries: [], snapshot: { meta, staging, header } });
      await expect(s.writeState({ applied: 20, appliedTerm: 3 })).rejects.toThrow('NodeStore.writeState called while a snapshot is being installed');
      await expect(staging.abort()).rejects.toThrow('NodeStore: a snapshot staging cannot be aborted while persist() installs it');
      await expect(staging.write(received)).rejects.toThrow('NodeStore: the snapshot staging of generation 1 is being installed');
      await expect(s.beginStaging()).rejects.toThrow('NodeStore.beginStaging called while a snapshot is being installed');
      await installing;
      await s.persist({ hardState: { term: 3, vote: 0, commit: 21 }, entries: [entry(21, 3)] });
      await s.writeState({ applied: 21, appliedTerm: 3, data: [[enc('w'), enc('2')]] });
      expect(await contents(s)).toEqual(['data w=2']);
    });
  });

  describe('restoring into a new directory', () => {
    /** A source store with a few hundred records, and its snapshot stream. */
    async function source(): Promise<{ store: NodeStore; stream: Uint8Array }> {
      const store = await openStore(OPTS, join(root, 'source'));
      await store.persist({ hardState: { term: 2, vote: 1, commit: 10 }, entries: [...entries(1, 5, 1), ...entries(6, 12, 2)] });
      const data: Array<[Uint8Array, Uint8Array]> = [];
      for (let i = 0; i < 300; i++) data.push([enc(`key/${String(i).padStart(4, '0')}`), enc(`value-${i}`.repeat(1 + (i % 7)))]);
      await store.writeState({ applied: 10, appliedTerm: 2, data, sessions: [[enc('c1'), enc('x')], [enc('c2'), enc('y')]], sessionClockMs: 777 });
      const reader = await store.openSnapshot();
      const stream = concatBytes(...(await collect(reader.chunks(100))));
      return { store, stream };
    }

    it('restores the same data from another store\'s snapshot, under its own cluster id', async () => {
      const { store: a } = await source();
      const reader = await a.openSnapshot();
      const opts = { clusterId: 'seeded', nodeId: 3 };
      const header = await NodeStore.restoreSnapshot(dir, opts, reader.chunks(333), LIMITS);
      expect(header).toEqual({ clusterId: 'c1', index: 10, term: 2, sessionClockMs: 777 });

      const b = await openStore({ ...opts, create: false });
      expect(b.initialState()).toEqual({ hardState: { term: 2, vote: 0, commit: 10 }, snapshot: { index: 10, term: 2 }, entries: [], applied: 10 });
      expect(b.appliedTerm).toBe(2);
      expect(b.sessionClockMs).toBe(777);
      expect(await contents(b)).toEqual(await contents(a));
      expect((await contents(b)).length).toBe(302);
      // It carries on from there.
      await b.persist({ hardState: { term: 2, vote: 0, commit: 11 }, entries: [entry(11, 2)] });
      await b.writeState({ applied: 11, appliedTerm: 2 });
    });

    it('refuses a corrupted stream, leaving a missing directory missing', async () => {
      const { stream } = await source();
      const bad = stream.slice();
      bad[bad.length >> 1] = (bad[bad.length >> 1] as number) ^ 0x10;
      const err = await NodeStore.restoreSnapshot(dir, OPTS, from([bad.subarray(0, 1000), bad.subarray(1000)]), LIMITS).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotFormatError);
      expect(await exists(dir)).toBe(false);
    });

    it('refuses a truncated stream, leaving an empty directory empty', async () => {
      const { stream } = await source();
      await mkdir(dir);
      const err = await NodeStore.restoreSnapshot(dir, OPTS, from([stream.subarray(0, stream.length - 10)]), LIMITS).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotFormatError);
      expect((err as Error).message).toBe(`truncated snapshot: the stream ended before the trailer, at byte ${stream.length - 10} (after 302 records)`);
      expect(await readdir(dir)).toEqual([]);
    });

    it('refuses a record over the limits, and a failing source, cleaning up alike', async () => {
      const { stream } = await source();
      const tooBig = await NodeStore.restoreSnapshot(dir, OPTS, from([stream]), { maxKeyBytes: 1024, maxValueBytes: 10 }).catch((e: unknown) => e);
      expect((tooBig as Error).message).toMatch(/over the limit \(maxValueBytes=10\)/);
      expect(await exists(dir)).toBe(false);

      async function* failing(): AsyncGenerator<Uint8Array> {
        yield stream.subarray(0, 500);
        throw new Error('connection reset');
      }
      await expect(NodeStore.restoreSnapshot(dir, OPTS, failing(), LIMITS)).rejects.toThrow('connection reset');
      expect(await exists(dir)).toBe(false);
    });

    it('refuses a directory that holds a store, and leaves it untouched', async () => {
      const s = await seeded();
      await s.close();
      const { stream } = await source();
      const err = await NodeStore.restoreSnapshot(dir, OPTS, from([stream]), LIMITS).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).code).toBe('STORE_MISMATCH');
      expect((err as StoreError).message).toBe(
        `data directory ${dir} is not empty; a snapshot can only be restored into a missing or empty directory`,
      );
      const again = await openStore();
      expect(await contents(again)).toEqual(['session client-1=s1', 'data a=1', 'data b=2']);
    });
  });
});
