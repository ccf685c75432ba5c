// kvctl driven in-process (main() with captured stdout/stderr/stdin) against a real 3-node cluster
// of in-process KvNodes: every command, each output mode, stdin and file input, binary-safe values,
// and the exit codes. Two runs of the bin/kvctl shim check that the real process exits with them.

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvError } from '../../src/client/index.js';
import { DEFAULT_ENDPOINTS, EXIT, exitCodeOf, main } from '../../src/cli/kvctl.js';
import { InProcessCluster } from '../support/in-process-cluster.js';
import { waitFor } from '../support/wait.js';
import { deadAddress } from '../client/fake-server.js';

const PAGE = 3;
const MAX_KEY_BYTES = 64;

let cluster: InProcessCluster;
let tmp: string;

beforeAll(async () => {
  cluster = await InProcessCluster.start({ size: 3, config: { limits: { maxKeyBytes: MAX_KEY_BYTES, maxValueBytes: 4096, maxRangePageSize: PAGE, maxClientIdBytes: 128 } } });
  await cluster.waitForLeader();
  tmp = await mkdtemp(join(tmpdir(), 'kvctl-test-'));
});

afterAll(async () => {
  await cluster?.cleanup();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

interface Run {
  readonly code: number;
  /** stdout as bytes. */
  readonly bytes: Buffer;
  /** stdout as UTF-8. */
  readonly out: string;
  readonly err: string;
  /** The code passed to io.exit. */
  readonly exited: number | undefined;
}

interface RunOptions {
  readonly stdin?: string | Uint8Array;
  readonly stdinIsTTY?: boolean;
  readonly stdoutIsTTY?: boolean;
  readonly env?: Record<string, string>;
  /** Leave out --endpoints. */
  readonly noEndpoints?: boolean;
}

async function kvctl(args: readonly string[], opts: RunOptions = {}): Promise<Run> {
  const chunks: Buffer[] = [];
  let err = '';
  let exited: number | undefined;
  const stdin = Object.assign(Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]), { isTTY: opts.stdinIsTTY ?? false });
  const endpoints = opts.noEndpoints ? [] : ['--endpoints', cluster.endpoints.join(',')];
  const code = await main(['node', 'kvctl', ...endpoints, ...args], {
    stdout: { write: (c: string | Uint8Array) => chunks.push(Buffer.from(c)), isTTY: opts.stdoutIsTTY ?? false },
    stderr: { write: (c: string) => (err += c) },
    stdin,
    env: opts.env ?? {},
    exit: (c) => (exited = c),
  });
  const bytes = Buffer.concat(chunks);
  return { code, bytes, out: bytes.toString('utf8'), err, exited };
}

/** Runs and expects exit 0 and nothing on stderr. */
async function ok(args: readonly string[], opts: RunOptions = {}): Promise<Run> {
  const r = await kvctl(args, opts);
  expect({ code: r.code, err: r.err }, `kvctl ${args.join(' ')}`).toEqual({ code: 0, err: '' });
  return r;
}

const json = (r: Run): Record<string, unknown> => JSON.parse(r.out) as Record<string, unknown>;

describe('put and get', () => {
  it('text: put prints OK; get prints the exact value, with a newline only on a terminal', async () => {
    const put = await ok(['put', 'greeting', 'hello world']);
    expect(put.out).toBe('OK\n');
    expect(put.exited).toBe(0);
    expect((await ok(['get', 'greeting'])).out).toBe('hello world');
    expect((await ok(['get', 'greeting'], { stdoutIsTTY: true })).out).toBe('hello world\n');
  });

  it('json and table', async () => {
    await ok(['put', 'j/k', 'v1']);
    const w = json(await ok(['-o', 'json', 'put', 'j/k', 'v2']));
    const index = (w['header'] as { index: number }).index;
    expect(index).toBeGreaterThan(0);

    const g = json(await ok(['get', 'j/k', '--output', 'json']));
    expect(g).toMatchObject({ found: true, key: 'j/k', keyEncoding: 'utf8', value: 'v2', valueEncoding: 'utf8', modIndex: index, version: 2 });
    expect(g['header']).toMatchObject({ consistency: 'linearizable' });
    expect(Object.keys(g['header'] as object)).toEqual(['index', 'nodeId', 'term', 'leaderId', 'consistency', 'stalenessMs']);

    const t = (await ok(['get', 'j/k', '-o', 'table'])).out.split('\n');
    expect(t[0]).toMatch(/^KEY\s+VALUE\s+VERSION\s+CREATE_INDEX\s+MOD_INDEX$/);
    expect(t[1]).toMatch(new RegExp(`^j/k\\s+v2\\s+2\\s+\\d+\\s+${index}$`));
  });

  it('a missing key: exit 1 and one line on stderr (and a document in JSON mode)', async () => {
    const r = await kvctl(['get', 'no/such/key']);
    expect(r.code).toBe(EXIT.NOT_FOUND);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^kvctl: NOT_FOUND: key "no\/such\/key" does not exist \(node \d, index \d+\)\n$/);
    const j = await kvctl(['get', 'no/such/key', '-o', 'json']);
    expect(j.code).toBe(EXIT.NOT_FOUND);
    expect(json(j)).toMatchObject({ found: false, key: 'no/such/key', keyEncoding: 'utf8' });
  });

  it('reads at each consistency', async () => {
    await ok(['put', 'cons/k', 'v']);
    for (const c of ['linearizable', 'lease', 'stale']) {
      const r = json(await ok(['get', 'cons/k', '--consistency', c, '-o', 'json']));
      expect(r['value']).toBe('v');
      if (c === 'stale') expect(r['header']).toMatchObject({ consistency: 'stale' });
    }
    // --min-index alone implies a stale read.
    const w = json(await ok(['put', 'cons/k', 'w', '-o', 'json']));
    const index = (w['header'] as { index: number }).index;
    const r = json(await ok(['get', 'cons/k', '--min-index', String(index), '--max-staleness-ms', '60000', '-o', 'json']));
    expect(r).toMatchObject({ value: 'w', header: { consistency: 'stale' } });
    expect((r['header'] as { index: number }).index).toBeGreaterThanOrEqual(index);
  });

  it('values from stdin (absent VALUE or "-") and from --file', async () => {
    await ok(['put', 'in/stdin'], { stdin: 'piped\nvalue\n' });
    expect((await ok(['get', 'in/stdin'])).out).toBe('piped\nvalue\n');
    await ok(['put', 'in/dash', '-'], { stdin: 'dash' });
    expect((await ok(['get', 'in/dash'])).out).toBe('dash');

    const file = join(tmp, 'value.bin');
    await writeFile(file, Buffer.from([0, 1, 2, 0xfe, 0xff]));
    await ok(['put', 'in/file', '--file', file]);
    expect([...(await ok(['get', 'in/file'])).bytes]).toEqual([0, 1, 2, 0xfe, 0xff]);

    const tty = await kvctl(['put', 'in/tty'], { stdinIsTTY: true });
    expect(tty.code).toBe(EXIT.USAGE);
    expect(tty.err).toMatch(/^kvctl: USAGE: VALUE is required/);
    expect((await kvctl(['put', 'in/both', 'x', '--file', file])).code).toBe(EXIT.USAGE);
  });

  it('binary values and keys, in hex and base64, in and out', async () => {
    await ok(['put', 'bin/a', '00ff10', '--encoding', 'hex']);
    expect([...(await ok(['get', 'bin/a'])).bytes]).toEqual([0, 0xff, 0x10]);
    expect((await ok(['get', 'bin/a', '--encoding', 'hex'])).out).toBe('00ff10\n');
    expect((await ok(['get', 'bin/a', '--encoding', 'base64'])).out).toBe('AP8Q\n');
    // JSON: raw bytes that are not UTF-8 come as base64, and say so.
    expect(json(await ok(['get', 'bin/a', '-o', 'json']))).toMatchObject({ value: 'AP8Q', valueEncoding: 'base64' });
    expect(json(await ok(['get', 'bin/a', '-o', 'json', '--encoding', 'hex']))).toMatchObject({ value: '00ff10', valueEncoding: 'hex' });
    expect((await ok(['get', 'bin/a', '-o', 'table'])).out).toContain('0x00ff10');

    await ok(['put', 'bin/b', 'AP8Q', '--encoding', 'base64']);
    expect([...(await ok(['get', 'bin/b'])).bytes]).toEqual([0, 0xff, 0x10]);
    // stdin in base64 (whitespace ignored).
    await ok(['put', 'bin/c', '--encoding', 'base64'], { stdin: 'AP8Q\n' });
    expect([...(await ok(['get', 'bin/c'])).bytes]).toEqual([0, 0xff, 0x10]);

    // A binary key.
    await ok(['put', '--key-encoding', 'hex', '62696e2f00ff', 'x']);
    expect((await ok(['get', '--key-encoding', 'hex', '62696e2f00ff'])).out).toBe('x');
    const listed = json(await ok(['range', '--prefix', 'bin/', '--keys-only', '-o', 'json']));
    expect(listed['kvs']).toContainEqual({ key: 'YmluLwD/', keyEncoding: 'base64' });

    const bad = await kvctl(['put', 'bin/d', 'zz', '--encoding', 'hex']);
    expect(bad.code).toBe(EXIT.USAGE);
    expect(bad.err).toBe('kvctl: USAGE: VALUE is not valid hex (pairs of 0-9, a-f)\n');
  });
});

describe('del, range, cas', () => {
  it('del', async () => {
    await ok(['put', 'd/k', 'v']);
    expect((await ok(['del', 'd/k'])).out).toBe('deleted\n');
    expect((await ok(['delete', 'd/k'])).out).toBe('not found\n');
    expect(json(await ok(['del', 'd/k', '-o', 'json']))).toMatchObject({ deleted: false });
    expect((await kvctl(['get', 'd/k'])).code).toBe(EXIT.NOT_FOUND);
  });

  it('range and scan: prefix, from/to, limit, keys only, across pages, in each mode', async () => {
    for (let i = 1; i <= 7; i++) await ok(['put', `p/${i}`, `v${i}`]);
    await ok(['put', 'q/1', 'other']);

    const all = await ok(['range', '--prefix', 'p/']);
    expect(all.out).toBe([1, 2, 3, 4, 5, 6, 7].map((i) => `p/${i}\tv${i}\n`).join(''));
    expect((await ok(['scan', '--from', 'p/2', '--to', 'p/5'])).out).toBe('p/2\tv2\np/3\tv3\np/4\tv4\n');
    expect((await ok(['range', '--prefix', 'p/', '--limit', '4', '--keys-only'])).out).toBe('p/1\np/2\np/3\np/4\n');

    const j = json(await ok(['range', '--prefix', 'p/', '--limit', '5', '-o', 'json']));
    expect(j).toMatchObject({ count: 5, more: true });
    expect((j['kvs'] as unknown[])[4]).toMatchObject({ key: 'p/5', value: 'v5', valueEncoding: 'utf8', version: 1 });
    const whole = json(await ok(['range', '--prefix', 'p/', '-o', 'json']));
    expect(whole).toMatchObject({ count: 7, more: false });
    expect(json(await ok(['range', '--prefix', 'none/', '-o', 'json']))).toMatchObject({ kvs: [], count: 0, more: false });

    const t = (await ok(['range', '--prefix', 'p/', '-o', 'table', '--limit', '2'])).out.split('\n');
    expect(t[0]).toMatch(/^KEY\s+VALUE\s+VERSION\s+MOD_INDEX$/);
    expect(t[1]).toMatch(/^p\/1\s+v1\s+1\s+\d+$/);
    expect(t).toHaveLength(4); // heading, 2 rows, and the empty string after the last newline

    expect((await kvctl(['range', '--prefix', 'p/', '--from', 'p/2'])).code).toBe(EXIT.USAGE);
  });

  it('cas: EXPECTED NEW, --create, --mod-index; exit 1 when the comparison fails', async () => {
    expect((await ok(['cas', 'c/k', '--create', '1'])).out).toBe('OK\n');
    const again = await kvctl(['cas', 'c/k', '--create', '1']);
    expect(again.code).toBe(EXIT.NOT_FOUND);
    expect(again.err).toMatch(/^kvctl: COMPARE_FAILED: key "c\/k": the comparison did not hold; it is at mod index \d+, version 1\n$/);

    await ok(['cas', 'c/k', '1', '2']);
    const failed = await kvctl(['cas', 'c/k', '1', '3', '-o', 'json']);
    expect(failed.code).toBe(EXIT.NOT_FOUND);
    const doc = json(failed);
    expect(doc).toMatchObject({ succeeded: false, current: { key: 'c/k', value: '2', version: 2 } });
    const modIndex = (doc['current'] as { modIndex: number }).modIndex;

    await ok(['cas', 'c/k', '--mod-index', String(modIndex), '3']);
    expect((await kvctl(['cas', 'c/k', '--mod-index', String(modIndex), '4'])).code).toBe(EXIT.NOT_FOUND);
    // NEW from stdin.
    await ok(['cas', 'c/k', '3', '-'], { stdin: 'four' });
    expect((await ok(['get', 'c/k'])).out).toBe('four');

    expect((await kvctl(['cas', 'c/k', 'only-one'])).code).toBe(EXIT.USAGE);
    expect((await kvctl(['cas', 'c/k', '--create', 'a', 'b'])).code).toBe(EXIT.USAGE);
    expect((await kvctl(['cas', 'c/k', '--create', '--mod-index', '3', 'a'])).code).toBe(EXIT.USAGE);
  });
});

describe('status and leader', () => {
  it('status of one node, in each mode', async () => {
    const text = (await ok(['status'])).out;
    expect(text).toMatch(/^node: +\d\n/);
    expect(text).toMatch(/\nrole: +(leader|follower)\n/);
    expect(text).toMatch(/\nstate: +writable\n/);

    const addr = cluster.addresses.get(2)!;
    const j = json(await ok(['status', addr, '-o', 'json']));
    expect(j).toMatchObject({ endpoint: addr, nodeId: 2, clusterId: 'test', writable: true });
    expect(j['members']).toHaveLength(3);

    const t = (await ok(['status', addr, '-o', 'table'])).out.split('\n');
    expect(t[0]).toMatch(/^ID\s+ADDRESS\s+ROLE\s+TERM\s+LEADER\s+COMMIT\s+APPLIED\s+LAG\s+STATE$/);
    expect(t[1]).toMatch(new RegExp(`^2\\s+${addr}\\s`));
  });

  it('status --cluster: a table of every node, or JSON', async () => {
    const leader = await cluster.waitForLeader();
    const t = (await ok(['status', '--cluster'])).out.trimEnd().split('\n');
    expect(t).toHaveLength(4);
    expect(t[0]).toMatch(/^ID\s+ADDRESS\s+ROLE\s+TERM\s+LEADER\s+COMMIT\s+APPLIED\s+LAG\s+STATE$/);
    expect(t.filter((l) => /\sleader\s/.test(l))).toHaveLength(1);
    for (const line of t.slice(1)) expect(line).toMatch(new RegExp(`^\\d\\s+127\\.0\\.0\\.1:\\d+\\s+\\S+\\s+\\d+\\s+${leader}\\s+\\d+\\s+\\d+\\s+\\d+\\s+writable$`));

    const j = json(await ok(['status', '--cluster', '-o', 'json']));
    const nodes = j['nodes'] as Array<Record<string, unknown>>;
    expect(nodes.map((n) => n['nodeId']).sort()).toEqual([1, 2, 3]);
    for (const n of nodes) expect(n).toMatchObject({ ok: true, lag: expect.any(Number) });
  });

  it('status --cluster shows a node that does not answer', async () => {
    const dead = await deadAddress();
    const r = await kvctl(['status', '--cluster', '--timeout', '1000', '--endpoints', `${cluster.endpoints.join(',')},${dead}`], { noEndpoints: true });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`\\n-\\s+${dead}\\s+.*unreachable: UNAVAILABLE: `));
  });

  it('leader', async () => {
    const id = await cluster.waitForLeader();
    const addr = cluster.addresses.get(id)!;
    expect((await ok(['leader'])).out).toMatch(new RegExp(`^${id} ${addr} term \\d+\\n$`));
    expect(json(await ok(['leader', '-o', 'json']))).toMatchObject({ id, address: addr });
    expect((await ok(['leader', '-o', 'table'])).out).toMatch(new RegExp(`^ID\\s+ADDRESS\\s+TERM\\n${id}\\s+${addr}\\s+\\d+\\n$`));
  });
});

describe('a node cut off from the majority (read-only)', () => {
  it('status --cluster marks it read-only with the reason; a write sent to it prints the NO_QUORUM reason in one line, exit 3', async () => {
    const leader = await cluster.waitForLeader();
    const cut = cluster.ids.find((id) => id !== leader)!;
    const addr = cluster.addresses.get(cut)!;
    const setLinks = (links: Array<[number, number]>): void => {
      for (const id of cluster.runningIds()) cluster.node(id)!.setBlockedLinks(links);
    };
    await ok(['put', 'ro/k', 'before']);
    // A write is acknowledged once committed; the node about to be cut may apply it a moment later.
    // Wait for that, so the STALE read below has the write to show.
    const written = cluster.node(leader)!.status().commit_index;
    await waitFor(() => cluster.node(cut)!.status().applied_index >= written, 10_000, `node ${cut} to apply the write`, 10);
    setLinks(cluster.ids.filter((id) => id !== cut).flatMap((o): Array<[number, number]> => [[cut, o], [o, cut]]));
    try {
      await waitFor(() => !cluster.node(cut)!.status().writable, 10_000, `node ${cut} to turn read-only`, 10);
      const reason = /this node has not heard from a leader (?:for \d+ ms|since it started) \(election timeout 500 ms\)/;

      const rows = (await ok(['status', '--cluster'])).out.trimEnd().split('\n');
      expect(rows[0]).toMatch(/\sSTATE$/);
      const row = rows.find((l) => l.startsWith(`${cut} `))!;
      expect(row).toMatch(new RegExp(`\\sread-only: ${reason.source}$`));
      for (const other of rows.slice(1).filter((l) => l !== row)) expect(other).toMatch(/\swritable$/);
      const nodes = json(await ok(['status', '--cluster', '-o', 'json']))['nodes'] as Array<Record<string, unknown>>;
      const doc = nodes.find((n) => n['nodeId'] === cut)!;
      expect(doc).toMatchObject({ ok: true, writable: false });
      expect(doc['readOnlyReason']).toMatch(reason);

      const refused = await kvctl(['put', 'ro/k', 'refused', '--endpoints', addr, '--timeout', '1500'], { noEndpoints: true });
      expect(refused.code).toBe(EXIT.UNAVAILABLE);
      expect(refused.out).toBe('');
      expect(refused.err).toMatch(
        new RegExp(`^kvctl: NO_QUORUM: write refused: the cluster is read-only from this node: ${reason.source}; STALE reads still work \\(${addr.replace(/\./g, '\\.')}\\)\\n$`),
      );
      // STALE reads still work there, and say how stale they are.
      const stale = json(await ok(['get', 'ro/k', '--consistency', 'stale', '-o', 'json', '--endpoints', addr], { noEndpoints: true }));
      expect(stale).toMatchObject({ value: 'before', header: { nodeId: cut, consistency: 'stale' } });
      expect((stale['header'] as { stalenessMs: number }).stalenessMs).toBeGreaterThan(0);
    } finally {
      setLinks([]);
    }
    // Writes resume by themselves once it hears from the majority again.
    await waitFor(() => cluster.node(cut)!.status().writable, 10_000, `node ${cut} to be writable again`, 10);
    await ok(['put', 'ro/k', 'after', '--endpoints', addr], { noEndpoints: true });
    expect((await ok(['get', 'ro/k'])).out).toBe('after');
  });
});

describe('exit codes and errors', () => {
  it('usage errors exit 2 with one line on stderr', async () => {
    for (const args of [['frobnicate'], ['get'], ['get', 'k', '--output', 'xml'], ['get', 'k', '--timeout', 'soon'], ['get', 'k', '--min-index', '5', '--consistency', 'linearizable'], []]) {
      const r = await kvctl(args);
      expect(r.code, `kvctl ${args.join(' ')}`).toBe(EXIT.USAGE);
      expect(r.exited).toBe(EXIT.USAGE);
      expect(r.err).toMatch(args.length === 0 ? /^Usage: kvctl/ : /^kvctl: USAGE: /);
    }
  });

  it('--help exits 0 and documents the exit codes and JSON shapes', async () => {
    const r = await kvctl(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Exit codes:');
    expect(r.out).toContain('3  unavailable');
    expect(r.out).toContain('JSON output');
    expect(r.out).toContain(DEFAULT_ENDPOINTS.join(','));
  });

  it('3 when no node answers', async () => {
    const dead = await deadAddress();
    const r = await kvctl(['get', 'k', '--endpoints', dead, '--timeout', '300'], { noEndpoints: true });
    expect(r.code).toBe(EXIT.UNAVAILABLE);
    expect(r.err).toMatch(new RegExp(`^kvctl: UNAVAILABLE: [^\\n]+ \\(${dead.replace(/\./g, '\\.')}\\)\\n$`));
  });

  it('4 when the server refuses the request', async () => {
    const r = await kvctl(['put', 'k'.repeat(MAX_KEY_BYTES + 1), 'v']);
    expect(r.code).toBe(EXIT.INVALID_ARGUMENT);
    expect(r.err).toMatch(/^kvctl: INVALID_ARGUMENT: key is 65 bytes, over the limit \(limit maxKeyBytes=64\) \(127\.0\.0\.1:\d+\)\n$/);
  });

  it('5 when the deadline passes', async () => {
    const r = await kvctl(['get', 'k', '--consistency', 'stale', '--min-index', '100000000', '--timeout', '200']);
    expect(r.code).toBe(EXIT.TIMEOUT);
    expect(r.err).toMatch(/^kvctl: TIMEOUT: /);
  });

  it('maps each error code to its exit code', () => {
    const cases: Array<[string, number]> = [
      ['NOT_LEADER', 3], ['NO_QUORUM', 3], ['UNAVAILABLE', 3], ['TOO_STALE', 3],
      ['INVALID_ARGUMENT', 4], ['TIMEOUT', 5],
      ['INTERNAL', 6], ['STALE_SEQUENCE', 6], ['TOO_MANY_REQUESTS', 6], ['STORE_CORRUPT', 6],
    ];
    for (const [code, exit] of cases) expect(exitCodeOf(new KvError(code, 'x')), code).toBe(exit);
  });

  it('takes the endpoints from RAFTKV_ENDPOINTS', async () => {
    await ok(['put', 'env/k', 'v']);
    const r = await kvctl(['get', 'env/k'], { noEndpoints: true, env: { RAFTKV_ENDPOINTS: cluster.endpoints.join(',') } });
    expect(r).toMatchObject({ code: 0, out: 'v' });
  });
});

describe('the bin/kvctl shim', () => {
  const bin = fileURLToPath(new URL('../../bin/kvctl', import.meta.url));
  const run = (args: string[]): Promise<{ code: number | null; out: string; err: string }> =>
    new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.once('error', reject);
      p.once('exit', (code) => resolve({ code, out, err }));
    });

  it('exits with kvctl\'s code once its work is done', async () => {
    await ok(['put', 'shim/k', 'from the shim']);
    const [got, dead] = await Promise.all([
      run(['--endpoints', cluster.endpoints.join(','), 'get', 'shim/k']),
      deadAddress().then((d) => run(['--endpoints', d, '--timeout', '1000', 'status'])),
    ]);
    expect(got).toEqual({ code: 0, out: 'from the shim', err: '' });
    expect(dead.code).toBe(EXIT.UNAVAILABLE);
    expect(dead.err).toMatch(/^kvctl: UNAVAILABLE: /);
  });
});
