import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RaftKvError, StoreError } from '../../src/errors.js';
import type { Entry, HardState } from '../../src/raft/types.js';
import { NodeStore, type NodeStoreOptions } from '../../src/storage/index.js';
import {
  appliedKey,
  encodeHardState,
  encodeSnapshotMeta,
  encodeU32,
  logKey,
  META_FORMAT_VERSION,
  META_HARD_STATE,
} from '../../src/storage/keys.js';
import { makeTempDir, removeTempDir, withRawDb } from './temp-dir.js';

const OPTS: NodeStoreOptions = { clusterId: 'c1', nodeId: 1 };

function entry(index: number, term: number, text = `e${index}`): Entry {
  return { index, term, type: 'normal', data: new TextEncoder().encode(text) };
}

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term, `t${term}-e${i}`));
  return out;
}

/** Opens, expecting a StoreError; returns it for assertions. */
async function openFails(dir: string, opts: NodeStoreOptions = OPTS): Promise<StoreError> {
  try {
    const s = await NodeStore.open(dir, opts);
    await s.close();
  } catch (err) {
    expect(err).toBeInstanceOf(StoreError);
    expect(err).toBeInstanceOf(RaftKvError);
    return err as StoreError;
  }
  throw new Error('open was expected to fail');
}

describe('NodeStore', () => {
  let root: string;
  let dir: string;
  const open: NodeStore[] = [];

  async function openStore(opts: NodeStoreOptions = OPTS): Promise<NodeStore> {
    const s = await NodeStore.open(dir, opts);
    open.push(s);
    return s;
  }

  async function reopen(s: NodeStore, opts: NodeStoreOptions = OPTS): Promise<NodeStore> {
    await s.close();
    return openStore(opts);
  }

  beforeEach(async () => {
    root = await makeTempDir();
    dir = join(root, 'node1');
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    await removeTempDir(root);
  });

  it('creates a new store with an empty initial state', async () => {
    const s = await openStore();
    const empty = { hardState: { term: 0, vote: 0, commit: 0 }, snapshot: { index: 0, term: 0 }, entries: [], applied: 0 };
    expect(s.initialState()).toEqual(empty);
    expect(s.lastIndex).toBe(0);
    expect(s.appliedIndex).toBe(0);
    expect(s.appliedTerm).toBe(0);
    expect(s.logStart).toEqual({ index: 0, term: 0 });
    const again = await reopen(s);
    expect(again.initialState()).toEqual(empty);
  });

  it('round-trips hard state and entries, including noop entries and empty data', async () => {
    const s = await openStore();
    const hs: HardState = { term: 3, vote: 2, commit: 2 };
    const log: Entry[] = [
      { index: 1, term: 1, type: 'noop', data: new Uint8Array(0) },
      entry(2, 2),
      { index: 3, term: 3, type: 'normal', data: new Uint8Array([0, 255, 7]) },
    ];
    await s.persist({ hardState: hs, entries: log });
    expect(s.hardState).toEqual(hs);
    expect(s.lastIndex).toBe(3);

    const again = await reopen(s);
    const init = again.initialState();
    expect(init.hardState).toEqual(hs);
    expect(init.applied).toBe(0);
    expect(init.entries.map((e) => ({ ...e, data: [...e.data] }))).toEqual(log.map((e) => ({ ...e, data: [...e.data] })));
    expect(again.lastIndex).toBe(3);
  });

  it('persists a hard state alone, and later ones replace it', async () => {
    const s = await openStore();
    await s.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: [] });
    await s.persist({ hardState: { term: 5, vote: 0, commit: 0 }, entries: [] });
    const again = await reopen(s);
    expect(again.initialState().hardState).toEqual({ term: 5, vote: 0, commit: 0 });
  });

  it('replaces the persisted suffix when entries overwrite it', async () => {
    const s = await openStore();
    await s.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: entries(1, 5, 1) });
    await s.persist({ hardState: { term: 2, vote: 2, commit: 0 }, entries: entries(3, 4, 2) });
    expect(s.lastIndex).toBe(4);

    const again = await reopen(s);
    const init = again.initialState();
    expect(init.entries.map((e) => [e.index, e.term])).toEqual([
      [1, 1],
      [2, 1],
      [3, 2],
      [4, 2],
    ]);
    expect(new TextDecoder().decode(init.entries[2]?.data)).toBe('t2-e3');
    // Appending after the overwrite continues at index 5.
    await again.persist({ entries: entries(5, 5, 2) });
    const third = await reopen(again);
    expect(third.initialState().entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5]);
  });

  it('resolves without a write when there is nothing new', async () => {
    const s = await openStore();
    await s.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: [] });
    const batch = vi.spyOn((s as unknown as { db: { _batch: () => unknown } }).db, '_batch');
    await s.persist({ entries: [] });
    await s.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: [] });
    expect(batch).not.toHaveBeenCalled();
    await s.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: entries(1, 1, 1) });
    expect(batch).toHaveBeenCalledTimes(1);
  });

  it('rejects writes that would break the log (caller bugs)', async () => {
    const s = await openStore();
    await s.persist({ hardState: { term: 2, vote: 1, commit: 0 }, entries: entries(1, 2, 1) });
    await expect(s.persist({ entries: entries(4, 4, 2) })).rejects.toThrow(/gap after 2/);
    await expect(s.persist({ entries: [entry(3, 2), entry(5, 2)] })).rejects.toThrow(/cannot follow/);
    await expect(s.persist({ entries: entries(3, 3, 7) })).rejects.toThrow(/outside \[1, 2\]/);
    await expect(s.persist({ hardState: { term: 2, vote: 1, commit: 9 }, entries: [] })).rejects.toThrow(/past the last log index 2/);
    await expect(s.writeState({ applied: 1, appliedTerm: 1 })).rejects.toThrow(/must be in \[0, 0\]/);
    await s.persist({ hardState: { term: 2, vote: 1, commit: 2 }, entries: [] });
    await expect(s.persist({ entries: entries(2, 2, 2) })).rejects.toThrow(/would replace committed entries \(commit 2\)/);
  });

  it('hands over the initial state once', async () => {
    const s = await openStore();
    s.initialState();
    expect(() => s.initialState()).toThrow(/only once/);
  });

  it('persists the applied index with the state changes', async () => {
    const s = await openStore();
    await s.persist({ hardState: { term: 1, vote: 1, commit: 2 }, entries: entries(1, 2, 1) });
    await expect(s.writeState({ applied: 2, appliedTerm: 2 })).rejects.toThrow(/applied term 2 at index 2 cannot follow term 0 at index 0 \(current term 1\)/);
    await s.writeState({ applied: 2, appliedTerm: 1, data: [[new Uint8Array([1]), new Uint8Array([9])]], sessionClockMs: 1234 });
    const again = await reopen(s);
    expect(again.appliedIndex).toBe(2);
    expect(again.appliedTerm).toBe(1);
    expect(again.sessionClockMs).toBe(1234);
    expect(again.initialState().applied).toBe(2);
    expect([...((await again.getData(new Uint8Array([1]))) ?? [])]).toEqual([9]);
  });

  it('writes an apply in the same batch as the entries and hard state that commit it', async () => {
    const s = await openStore();
    const batch = vi.spyOn((s as unknown as { db: { _batch: () => unknown } }).db, '_batch');
    // Entries 1..2 arrive committed, and their apply is written with them: one synced batch.
    await s.persist({
      hardState: { term: 1, vote: 1, commit: 2 },
      entries: entries(1, 2, 1),
      state: { applied: 2, appliedTerm: 1, data: [[new Uint8Array([1]), new Uint8Array([7])]], sessionClockMs: 99 },
    });
    expect(s.appliedIndex).toBe(2);
    expect(batch).toHaveBeenCalledTimes(1);
    // The state is checked against the batch's own hard state: an apply beyond its commit is refused.
    await expect(
      s.persist({ hardState: { term: 1, vote: 1, commit: 3 }, entries: entries(3, 4, 1), state: { applied: 4, appliedTerm: 1 } }),
    ).rejects.toThrow(/must be in \[2, 3\]/);
    const again = await reopen(s);
    expect(again.appliedIndex).toBe(2);
    expect(again.lastIndex).toBe(2);
    expect(again.sessionClockMs).toBe(99);
    expect([...((await again.getData(new Uint8Array([1]))) ?? [])]).toEqual([7]);
  });

  describe('refuses to open', () => {
    it('a store of another cluster', async () => {
      await (await openStore()).close();
      const err = await openFails(dir, { clusterId: 'other', nodeId: 1 });
      expect(err.code).toBe('STORE_MISMATCH');
      expect(err.message).toBe(`data directory ${dir} belongs to cluster "c1", not "other"`);
    });

    it('a store of another node', async () => {
      await (await openStore()).close();
      const err = await openFails(dir, { clusterId: 'c1', nodeId: 2 });
      expect(err.code).toBe('STORE_MISMATCH');
      expect(err.message).toBe(`data directory ${dir} belongs to node 1, not node 2`);
    });

    it('a log with a gap', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 1, vote: 1, commit: 1 }, entries: entries(1, 5, 1) });
      await s.close();
      await withRawDb(dir, (db) => db.del(logKey(3)));
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_CORRUPT');
      expect(err.message).toBe(`log in ${dir} has a gap: index 4 follows 2`);
    });

    it('a log that does not start at index 1', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 1, vote: 1, commit: 0 }, entries: entries(1, 3, 1) });
      await s.close();
      await withRawDb(dir, (db) => db.del(logKey(1)));
      expect((await openFails(dir)).message).toBe(`log in ${dir} starts at index 2, not 1`);
    });

    it('a log whose terms go back', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 2, vote: 1, commit: 0 }, entries: [...entries(1, 2, 2)] });
      await s.close();
      await withRawDb(dir, (db) => db.put(logKey(3), new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 0])));
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_CORRUPT');
      expect(err.message).toBe(`log in ${dir} has term 1 at index 3 after term 2`);
    });

    it('a commit index past the end of the log, and an applied index past the commit', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 1, vote: 1, commit: 2 }, entries: entries(1, 2, 1) });
      await s.close();
      await withRawDb(dir, (db) => db.put(META_HARD_STATE, encodeHardState({ term: 1, vote: 1, commit: 3 })));
      expect((await openFails(dir)).message).toBe(`data directory ${dir}: the commit index 3 is past the end of the log (last index 2)`);
      await withRawDb(dir, async (db) => {
        await db.put(META_HARD_STATE, encodeHardState({ term: 1, vote: 1, commit: 1 }));
        await db.put(appliedKey(0), encodeSnapshotMeta({ index: 2, term: 1 }));
      });
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_CORRUPT');
      expect(err.message).toBe(`data directory ${dir}: the applied index 2 is past the commit index 1`);
    });

    it('a hard state that does not decode', async () => {
      await (await openStore()).close();
      await withRawDb(dir, (db) => db.put(META_HARD_STATE, new Uint8Array([1, 2, 3])));
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_CORRUPT');
      expect(err.message).toMatch(new RegExp(`^data directory ${dir}: the hard state cannot be decoded`));
    });

    it('an unknown format version', async () => {
      await (await openStore()).close();
      await withRawDb(dir, (db) => db.put(META_FORMAT_VERSION, encodeU32(99)));
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_MISMATCH');
      expect(err.message).toBe(`data directory ${dir} has store format version 99; this raftkv understands version 2`);
    });

    it('a store of format version 1 (no migration)', async () => {
      await (await openStore()).close();
      await withRawDb(dir, (db) => db.put(META_FORMAT_VERSION, encodeU32(1)));
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_MISMATCH');
      expect(err.message).toBe(`data directory ${dir} has store format version 1; this raftkv understands version 2`);
    });

    it('an applied position whose term does not match the log', async () => {
      const s = await openStore();
      await s.persist({ hardState: { term: 2, vote: 1, commit: 2 }, entries: [entry(1, 1), entry(2, 2)] });
      await s.close();
      await withRawDb(dir, (db) => db.put(appliedKey(0), encodeSnapshotMeta({ index: 2, term: 1 })));
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_CORRUPT');
      expect(err.message).toBe(`data directory ${dir}: the applied index 2 has term 1, but the log has term 2 there`);
    });

    it('a non-empty directory that is not a LevelDB, and leaves it untouched', async () => {
      await mkdir(dir);
      await writeFile(join(dir, 'notes.txt'), 'my precious data');
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_MISMATCH');
      expect(err.message).toBe(`data directory ${dir} is not empty (notes.txt) and holds no LevelDB database; refusing to use it for a raftkv store`);
      const { readdir } = await import('node:fs/promises');
      expect(await readdir(dir)).toEqual(['notes.txt']);
    });

    it('a LevelDB that is not a raftkv store', async () => {
      const { Level } = await import('level');
      const db = new Level(dir);
      await db.put('hello', 'world');
      await db.close();
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_MISMATCH');
      expect(err.message).toBe(`data directory ${dir} holds a LevelDB database that is not a raftkv store (no format version)`);
    });

    it('a file in place of the directory', async () => {
      await writeFile(dir, 'x');
      const err = await openFails(dir);
      expect(err.message).toBe(`data directory ${dir} is not a directory`);
    });

    it('a missing or empty directory when creating is not allowed', async () => {
      const missing = await openFails(dir, { ...OPTS, create: false });
      expect(missing.code).toBe('STORE_UNAVAILABLE');
      expect(missing.message).toBe(`data directory ${dir} does not exist, and creating a new store was not allowed`);
      await mkdir(dir);
      const empty = await openFails(dir, { ...OPTS, create: false });
      expect(empty.message).toBe(`data directory ${dir} is empty, and creating a new store was not allowed`);
    });

    it('a directory in use by another open store', async () => {
      await openStore();
      const err = await openFails(dir);
      expect(err.code).toBe('STORE_UNAVAILABLE');
      expect(err.message).toMatch(/is locked by another process/);
    });
  });

  it('opens an existing store with create: false', async () => {
    await (await openStore()).close();
    const s = await openStore({ ...OPTS, create: false });
    expect(s.appliedIndex).toBe(0);
  });
});
