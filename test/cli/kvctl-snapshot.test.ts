// kvctl snapshot create|save|status|restore, driven in-process with captured output. save and
// create run against the real Maintenance service over scripted handlers (test/client/
// fake-maintenance.ts), so that a stream can be broken, corrupted or cut short on purpose; the
// snapshot bytes are real ones, made by a NodeStore (snapshot-fixture.ts). restore is checked by
// opening the data directory it made with NodeStore and reading the data back.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, main } from '../../src/cli/kvctl.js';
import { RaftKvError } from '../../src/errors.js';
import { decodeRecord } from '../../src/kv/record.js';
import { NodeStore } from '../../src/storage/index.js';
import { FakeMaintenanceNode, scriptedSnapshot, type ScriptedSnapshotOptions, type SnapshotProbe } from '../client/fake-maintenance.js';
import { deadAddress } from '../client/fake-server.js';
import { waitFor } from '../support/wait.js';
import { flipByte, makeSnapshot, type SnapshotStream } from './snapshot-fixture.js';

/** About 7 KiB of snapshot: several chunks of 1 KiB. */
const PAIRS = Array.from({ length: 50 }, (_, i) => [`cfg/${String(i).padStart(2, '0')}`, `value-${i}-${'x'.repeat(100)}`] as const);

let tmp: string;
let snap: SnapshotStream;
/** A good snapshot file. */
let good: string;
const nodes: FakeMaintenanceNode[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'kvctl-snapshot-test-'));
  snap = await makeSnapshot({ clusterId: 'origin', pairs: PAIRS, sessions: [['client-1', 'session-1'], ['client-2', 'session-2']], index: 60, term: 3 });
  good = join(tmp, 'good.snap');
  await writeFile(good, snap.bytes);
});

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

interface RunOptions {
  readonly stderrIsTTY?: boolean;
  /** Called with kvctl's interrupt handler when it asks for one. */
  readonly onInterrupt?: (handler: () => void) => void;
}

async function kvctl(args: readonly string[], opts: RunOptions = {}): Promise<Run> {
  let out = '';
  let err = '';
  const code = await main(['node', 'kvctl', ...args], {
    stdout: { write: (c: string | Uint8Array) => (out += Buffer.from(c).toString()), isTTY: false },
    stderr: { write: (c: string) => (err += c), isTTY: opts.stderrIsTTY ?? false },
    stdin: Object.assign(Readable.from([]), { isTTY: true }),
    env: {},
    exit: () => undefined,
    onInterrupt: (h) => {
      opts.onInterrupt?.(h);
      return () => undefined;
    },
  });
  return { code, out, err };
}

async function ok(args: readonly string[], opts: RunOptions = {}): Promise<Run> {
  const r = await kvctl(args, opts);
  expect({ code: r.code, err: r.err }, `kvctl ${args.join(' ')}`).toEqual({ code: 0, err: '' });
  return r;
}

/** A node serving `bytes` as its snapshot (scripted as asked). */
async function serving(bytes: Uint8Array, script: Partial<ScriptedSnapshotOptions> = {}): Promise<{ node: FakeMaintenanceNode; probe: SnapshotProbe }> {
  const { openSnapshot, probe } = scriptedSnapshot(bytes, { index: snap.header.index, term: snap.header.term, ...script });
  const node = await FakeMaintenanceNode.start({ openSnapshot });
  nodes.push(node);
  return { node, probe };
}

/** The files in the test folder whose names start with `prefix`. */
async function filesLike(prefix: string): Promise<string[]> {
  return (await readdir(tmp)).filter((f) => f.startsWith(prefix)).sort();
}

describe('snapshot status', () => {
  it('verifies a good file and prints what it holds', async () => {
    const r = await ok(['snapshot', 'status', good]);
    const sha = (r.out.match(/^sha256:\s+([0-9a-f]{64})$/m) ?? [])[1];
    expect(r.out).toBe(
      [
        `file:     ${good}`,
        'index:    60',
        'term:     3',
        'cluster:  "origin" (where the snapshot was taken)',
        'keys:     50',
        'sessions: 2',
        `bytes:    ${snap.bytes.length} (${(snap.bytes.length / 1024).toFixed(1)} KiB)`,
        `sha256:   ${sha}`,
        '',
      ].join('\n'),
    );
    const j = JSON.parse((await ok(['-o', 'json', 'snapshot', 'status', good])).out) as Record<string, unknown>;
    expect(j).toEqual({ file: good, index: 60, term: 3, clusterId: 'origin', keys: 50, sessions: 2, bytes: snap.bytes.length, sha256: sha });
  });

  it('a truncated, corrupted, foreign or missing file: one line naming the file and what is wrong, exit 7', async () => {
    const cases: Array<[string, Uint8Array | undefined, RegExp]> = [
      ['truncated.snap', snap.bytes.subarray(0, snap.bytes.length - 10), /truncated snapshot: the stream ended before the trailer, at byte \d+ \(after 52 records\)/],
      ['header-only.snap', snap.bytes.subarray(0, 20), /truncated snapshot: the stream ended before the trailer, at byte 20 \(in the header\)/],
      ['flipped.snap', flipByte(snap.bytes, Math.floor(snap.bytes.length / 2)), /checksum mismatch|record \d+ |unknown kind/],
      ['value-flipped.snap', flipByte(snap.bytes, snap.bytes.indexOf(Buffer.from('value-25')) + 6), /checksum mismatch: the trailer says sha256 [0-9a-f]{16}\.\.\., the stream hashes to [0-9a-f]{16}\.\.\./],
      ['extra.snap', Buffer.concat([snap.bytes, Buffer.from('x')]), /1 bytes after the trailer/],
      ['text.snap', Buffer.from('hello, this is not a snapshot\n'), /not a raftkv snapshot \(bad magic bytes at the start of the stream\)/],
      ['empty.snap', new Uint8Array(0), /truncated snapshot/],
      ['missing.snap', undefined, /^cannot read .*missing\.snap: no such file or directory$/],
    ];
    for (const [name, bytes, why] of cases) {
      const file = join(tmp, name);
      if (bytes !== undefined) await writeFile(file, bytes);
      const r = await kvctl(['snapshot', 'status', file]);
      expect(r.code, name).toBe(EXIT.SNAPSHOT_FILE);
      expect(r.out, name).toBe('');
      const lines = r.err.split('\n');
      expect(lines, name).toHaveLength(2);
      const m = /^kvctl: (SNAPSHOT_CORRUPT|FILE_ERROR): (.*)$/.exec(lines[0]!);
      expect(m, `${name}: ${r.err}`).not.toBeNull();
      expect(m![1], name).toBe(bytes === undefined ? 'FILE_ERROR' : 'SNAPSHOT_CORRUPT');
      if (bytes !== undefined) expect(m![2]!.startsWith(`${file}: `), name).toBe(true);
      expect(m![2], name).toMatch(why);
    }
  });
});

describe('snapshot save', () => {
  it('streams the snapshot to FILE, verified; prints index, term, keys, bytes, sha256; no FILE.part left', async () => {
    const { node, probe } = await serving(snap.bytes);
    const file = join(tmp, 'saved.snap');
    const r = await ok(['--endpoints', node.address, 'snapshot', 'save', file, '--chunk-bytes', '700']);
    expect(probe.chunkBytes).toBe(700);
    expect((await readFile(file)).equals(snap.bytes)).toBe(true);
    expect(await filesLike('saved.snap')).toEqual(['saved.snap']);
    expect(r.out).toMatch(new RegExp(`^saved a snapshot of ${node.address.replace(/\./g, '\\.')} to ${file.replace(/\./g, '\\.')}\\n`));
    expect(r.out).toMatch(/^index:\s+60$/m);
    expect(r.out).toMatch(/^term:\s+3$/m);
    expect(r.out).toMatch(/^keys:\s+50$/m);
    expect(r.out).toMatch(new RegExp(`^bytes:\\s+${snap.bytes.length} `, 'm'));
    expect(r.out).toMatch(/^sha256:\s+[0-9a-f]{64}$/m);
    // The same digest as an offline check of the file.
    const status = await ok(['snapshot', 'status', file]);
    expect(status.out.match(/^sha256:.*$/m)![0]).toBe(r.out.match(/^sha256:.*$/m)![0]);

    const again = await ok(['--endpoints', node.address, '-o', 'json', 'snapshot', 'save', join(tmp, 'saved-json.snap')]);
    expect(JSON.parse(again.out)).toMatchObject({ file: join(tmp, 'saved-json.snap'), endpoint: node.address, index: 60, term: 3, clusterId: 'origin', keys: 50, sessions: 2, bytes: snap.bytes.length });
  });

  it('refuses to replace an existing FILE unless --force (which replaces it only once the new one verified)', async () => {
    const { node } = await serving(snap.bytes);
    const file = join(tmp, 'exists.snap');
    await writeFile(file, 'precious');
    const r = await kvctl(['--endpoints', node.address, 'snapshot', 'save', file]);
    expect(r.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(r.err).toBe(`kvctl: FILE_EXISTS: ${file} exists; give --force to replace it\n`);
    expect(await readFile(file, 'utf8')).toBe('precious');

    const broken = await serving(snap.bytes, { failAfter: { chunks: 2, error: new RaftKvError('STORE_UNAVAILABLE', 'read failed') } });
    expect((await kvctl(['--endpoints', broken.node.address, 'snapshot', 'save', file, '--force', '--chunk-bytes', '1024'])).code).toBe(EXIT.SERVER_ERROR);
    expect(await readFile(file, 'utf8')).toBe('precious');

    await ok(['--endpoints', node.address, 'snapshot', 'save', file, '--force']);
    expect((await readFile(file)).equals(snap.bytes)).toBe(true);
    expect(await filesLike('exists.snap')).toEqual(['exists.snap']);
  });

  it('a stream broken midway: one line, exit non-zero, no FILE and no FILE.part', async () => {
    const { node, probe } = await serving(snap.bytes, { failAfter: { chunks: 3, error: new RaftKvError('STORE_UNAVAILABLE', 'read failed') } });
    const file = join(tmp, 'broken.snap');
    const r = await kvctl(['--endpoints', node.address, 'snapshot', 'save', file, '--chunk-bytes', '1024']);
    expect(r.code).toBe(EXIT.SERVER_ERROR);
    expect(r.out).toBe('');
    expect(r.err).toBe(
      `kvctl: STORE_UNAVAILABLE: the snapshot transfer failed after 3.0 KiB (read failed); ${file} not written (${node.address})\n`,
    );
    expect(await filesLike('broken.snap')).toEqual([]);
    expect(probe.closed).toBeGreaterThan(0);
  });

  it('a corrupted stream is refused: SNAPSHOT_CORRUPT, exit 7, nothing left', async () => {
    const { node } = await serving(flipByte(snap.bytes, snap.bytes.indexOf(Buffer.from('value-25')) + 6));
    const file = join(tmp, 'corrupt.snap');
    const r = await kvctl(['--endpoints', node.address, 'snapshot', 'save', file]);
    expect(r.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(r.err).toMatch(
      new RegExp(`^kvctl: SNAPSHOT_CORRUPT: the snapshot from ${node.address.replace(/\./g, '\\.')} failed verification after [\\d.]+ KiB \\(checksum mismatch: [^)]+\\); ${file.replace(/\./g, '\\.')} not written\\n$`),
    );
    expect(await filesLike('corrupt.snap')).toEqual([]);
  });

  it('a stream that ends early without an error is refused as truncated; one announcing another position too', async () => {
    const cut = await serving(snap.bytes, { endAfter: 2 });
    const file = join(tmp, 'short.snap');
    const r = await kvctl(['--endpoints', cut.node.address, 'snapshot', 'save', file, '--chunk-bytes', '1024']);
    expect(r.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(r.err).toMatch(/^kvctl: SNAPSHOT_CORRUPT: .*\(truncated snapshot: the stream ended before the trailer, at byte 2048 \(after \d+ records\)\); .* not written\n$/);
    expect(await filesLike('short.snap')).toEqual([]);

    const lying = await serving(snap.bytes, { index: 61 });
    const r2 = await kvctl(['--endpoints', lying.node.address, 'snapshot', 'save', file]);
    expect(r2.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(r2.err).toContain("the stream's header says index 60, term 3; the node announced index 61, term 3");
    expect(await filesLike('short.snap')).toEqual([]);
  });

  it('an unreachable node: UNAVAILABLE, exit 3, nothing left', async () => {
    const dead = await deadAddress();
    const file = join(tmp, 'unreachable.snap');
    const r = await kvctl(['--endpoints', dead, '--timeout', '1000', 'snapshot', 'save', file]);
    expect(r.code).toBe(EXIT.UNAVAILABLE);
    expect(r.err).toMatch(new RegExp(`^kvctl: UNAVAILABLE: the snapshot transfer could not start \\(.*\\); .* not written \\(${dead.replace(/\./g, '\\.')}\\)\\n$`));
    expect(await filesLike('unreachable.snap')).toEqual([]);
  });

  it('asks one node: several endpoints and no --endpoint is a usage error', async () => {
    const r = await kvctl(['--endpoints', '127.0.0.1:1,127.0.0.1:2', 'snapshot', 'save', join(tmp, 'x.snap')]);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.err).toBe('kvctl: USAGE: snapshot save asks one node: give --endpoint HOST:PORT (the endpoints are 127.0.0.1:1,127.0.0.1:2)\n');
    expect(await filesLike('x.snap')).toEqual([]);
  });

  it('a progress bar on stderr when it is a terminal; none otherwise, nor with --quiet', async () => {
    const { node } = await serving(snap.bytes);
    const tty = await kvctl(['--endpoints', '127.0.0.1:1', 'snapshot', 'save', join(tmp, 'bar.snap'), '--endpoint', node.address], { stderrIsTTY: true });
    expect(tty.code).toBe(0);
    expect(tty.err).toMatch(/^\r0 B \/ ~[\d.]+ KiB \[\.{24}\] 0% {2}[\d.]+ (B|KiB|MiB)\/s\u001b\[K/);
    expect(tty.err.endsWith('\r\u001b[K')).toBe(true); // erased before the summary
    const quiet = await ok(['--endpoints', node.address, 'snapshot', 'save', join(tmp, 'quiet.snap'), '--quiet'], { stderrIsTTY: true });
    expect(quiet.err).toBe('');
    expect((await ok(['--endpoints', node.address, 'snapshot', 'save', join(tmp, 'pipe.snap')])).err).toBe('');
  });

  it('interrupted (SIGINT): the transfer stops, FILE.part is removed, exit 130', async () => {
    const { node, probe } = await serving(snap.bytes, { hangAfter: 2 });
    const file = join(tmp, 'interrupted.snap');
    let interrupt: (() => void) | undefined;
    const running = kvctl(['--endpoints', node.address, 'snapshot', 'save', file, '--chunk-bytes', '1024'], { onInterrupt: (h) => (interrupt = h) });
    await waitFor(() => probe.pulled === 2 && existsSync(`${file}.part`), 5_000, 'the transfer to start');
    interrupt!();
    const r = await running;
    expect(r.code).toBe(EXIT.INTERRUPTED);
    expect(r.err).toMatch(/^kvctl: INTERRUPTED: interrupted after [\d.]+ (B|KiB); .* not written\n$/);
    expect(await filesLike('interrupted.snap')).toEqual([]);
    await waitFor(() => probe.closed > 0, 5_000, 'the node to release the snapshot');
  });
});

describe('snapshot create', () => {
  it('asks the node at --endpoint and prints what it did', async () => {
    const node = await FakeMaintenanceNode.start({ nodeId: 2, createSnapshot: async () => ({ index: 1234, term: 5, logStartIndex: 234, entriesCompacted: 1000, durationMs: 12 }) });
    nodes.push(node);
    const r = await ok(['snapshot', 'create', '--endpoint', node.address]);
    expect(r.out).toBe(
      [
        `snapshot taken on node 2 (${node.address})`,
        'index:             1234',
        'term:              5',
        'log start:         234 (entries up to it are compacted)',
        'entries compacted: 1000',
        'duration:          12 ms',
        '',
      ].join('\n'),
    );
    expect(JSON.parse((await ok(['-o', 'json', '--endpoints', node.address, 'snapshot', 'create'])).out)).toEqual({
      endpoint: node.address,
      nodeId: 2,
      index: 1234,
      term: 5,
      logStartIndex: 234,
      entriesCompacted: 1000,
      durationMs: 12,
    });
    const usage = await kvctl(['--endpoints', `${node.address},127.0.0.1:1`, 'snapshot', 'create']);
    expect(usage.code).toBe(EXIT.USAGE);
  });
});

describe('snapshot restore', () => {
  it('creates a data directory that NodeStore opens, holding the snapshot\'s data at its index', async () => {
    const dir = join(tmp, 'restored', 'node2');
    const r = await ok(['snapshot', 'restore', good, '--data-dir', dir, '--cluster-id', 'fresh', '--node-id', '2']);
    expect(r.out).toMatch(new RegExp(`^restored ${good.replace(/\./g, '\\.')} into ${dir.replace(/\./g, '\\.')}, for node 2 of cluster "fresh"\\n`));
    expect(r.out).toMatch(/^index:\s+60$/m);
    expect(r.out).toMatch(/^keys:\s+50$/m);
    expect(r.out).toMatch(/^cluster:\s+"origin"/m);
    expect(r.out).toContain('Restore every node of the new cluster from this same file');

    const store = await NodeStore.open(dir, { clusterId: 'fresh', nodeId: 2, create: false });
    try {
      expect(store.appliedIndex).toBe(60);
      expect(store.appliedTerm).toBe(3);
      expect(store.logStart).toEqual({ index: 60, term: 3 });
      expect(store.hardState).toEqual({ term: 3, vote: 0, commit: 60 });
      expect(store.lastIndex).toBe(60);
      for (const [k, v] of PAIRS) {
        const raw = await store.getData(Buffer.from(k));
        expect(raw, k).toBeDefined();
        expect(Buffer.from(decodeRecord(raw!).value).toString()).toBe(v);
      }
      const sessions: string[] = [];
      for await (const [id, v] of store.scanSessions()) sessions.push(`${Buffer.from(id).toString()}=${Buffer.from(v).toString()}`);
      expect(sessions).toEqual(['client-1=session-1', 'client-2=session-2']);
    } finally {
      await store.close();
    }
    // Another node, another cluster id: refused by the store, as any foreign data directory.
    await expect(NodeStore.open(dir, { clusterId: 'fresh', nodeId: 1 })).rejects.toThrow(/belongs to node 2/);

    const j = JSON.parse((await ok(['-o', 'json', 'snapshot', 'restore', good, '--data-dir', join(tmp, 'restored', 'json'), '--node-id', '1'])).out) as Record<string, unknown>;
    expect(j).toMatchObject({ clusterId: 'raftkv', nodeId: 1, index: 60, term: 3, fromClusterId: 'origin', keys: 50, sessions: 2, bytes: snap.bytes.length });
  });

  it('an empty directory is fine; a non-empty one is refused and left alone', async () => {
    const empty = join(tmp, 'empty-dir');
    await mkdir(empty);
    await ok(['snapshot', 'restore', good, '--data-dir', empty, '--node-id', '1']);

    const full = join(tmp, 'full-dir');
    await mkdir(full);
    await writeFile(join(full, 'precious.txt'), 'keep me');
    const r = await kvctl(['snapshot', 'restore', good, '--data-dir', full, '--node-id', '1']);
    expect(r.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(r.err).toBe(`kvctl: DATA_DIR_NOT_EMPTY: ${full} is not empty (precious.txt); a restore creates a new data directory: give a missing or empty one\n`);
    expect(await readdir(full)).toEqual(['precious.txt']);
    // A store already there, too.
    const again = await kvctl(['snapshot', 'restore', good, '--data-dir', empty, '--node-id', '1']);
    expect(again.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(again.err).toMatch(/^kvctl: DATA_DIR_NOT_EMPTY: /);
  });

  it('a corrupt file: refused, and no directory is left behind', async () => {
    const bad = join(tmp, 'bad-for-restore.snap');
    await writeFile(bad, snap.bytes.subarray(0, snap.bytes.length - 1));
    const dir = join(tmp, 'not-created');
    const r = await kvctl(['snapshot', 'restore', bad, '--data-dir', dir, '--node-id', '1']);
    expect(r.code).toBe(EXIT.SNAPSHOT_FILE);
    expect(r.err).toMatch(/^kvctl: SNAPSHOT_CORRUPT: .*bad-for-restore\.snap: truncated snapshot/);
    expect(existsSync(dir)).toBe(false);
  });

  it('usage: --data-dir and --node-id are required', async () => {
    for (const args of [['snapshot', 'restore', good, '--node-id', '1'], ['snapshot', 'restore', good, '--data-dir', join(tmp, 'u')], ['snapshot', 'restore', good, '--data-dir', join(tmp, 'u'), '--node-id', '0']]) {
      const r = await kvctl(args);
      expect(r.code, args.join(' ')).toBe(EXIT.USAGE);
      expect(r.err).toMatch(/^kvctl: USAGE: /);
    }
    expect(existsSync(join(tmp, 'u'))).toBe(false);
  });

  it('--help of the group says why every node is restored from the same file', async () => {
    const r = await kvctl(['snapshot', '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('restore EVERY node of the new cluster from the SAME file');
    expect(r.out).toMatch(/create .*\n.*save .*\n.*status .*\n.*restore /s);
  });
});
