// The checker's command line: in-process through runCheckerCli with captured output, and once through
// the real shim for its exit code.

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE, EXIT_VIOLATION, runCheckerCli } from '../support/linearizability/cli-program.js';
import { formatHistory, type HistoryOp } from '../support/linearizability/history.js';

const GOOD: HistoryOp[] = [
  { client: 'c1', op: 'put', key: 'k', value: 'a', call: 0, return: 1, status: 'ok' },
  { client: 'c2', op: 'get', key: 'k', result: { value: 'a' }, call: 2, return: 3, status: 'ok', consistency: 'LINEARIZABLE' },
];
const STALE_READ: HistoryOp[] = [...GOOD, { client: 'c1', op: 'put', key: 'k', value: 'b', call: 4, return: 5, status: 'ok' }, { ...GOOD[1]!, call: 6, return: 7 }];

/** 40 concurrent puts and a stale read: hopeless within a millisecond. */
function pathological(): HistoryOp[] {
  const h: HistoryOp[] = [
    { client: 'c1', op: 'put', key: 'k', value: 'y', call: 0, return: 1, status: 'ok' },
    { client: 'c1', op: 'put', key: 'k', value: 'z', call: 2, return: 3, status: 'ok' },
  ];
  for (let i = 0; i < 40; i++) h.push({ client: `w${i}`, op: 'put', key: 'k', value: 'x', call: 4, return: 100, status: 'ok' });
  h.push({ client: 'r', op: 'get', key: 'k', result: { value: 'y' }, call: 4, return: 100, status: 'ok' });
  return h;
}

async function cli(argv: string[], files: Record<string, string>): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const code = await runCheckerCli(argv, {
    out: (line) => lines.push(line),
    readFile: async (path) => {
      const text = files[path];
      if (text === undefined) throw new Error(`ENOENT: no such file, open '${path}'`);
      return text;
    },
    nowMs: () => performance.now(),
  });
  return { code, out: lines.join('\n') };
}

describe('the checker CLI', () => {
  it('exits 0 and prints a verdict per key for a linearizable history', async () => {
    const r = await cli(['h.jsonl'], { 'h.jsonl': formatHistory(GOOD) });
    expect(r.code).toBe(EXIT_OK);
    expect(r.out).toMatch(/^2 operations on 1 key; checked in [\d.]+ ms$/m);
    expect(r.out).toMatch(/^ {2}"k": ok \(2 ops, \d+ steps, [\d.]+ ms\)$/m);
    expect(r.out).toMatch(/verdict: ok$/);
  });

  it('exits 1 and explains a violation', async () => {
    const r = await cli(['h.jsonl'], { 'h.jsonl': formatHistory(STALE_READ) });
    expect(r.code).toBe(EXIT_VIOLATION);
    expect(r.out).toContain('key "k" (4 ops): not linearizable.');
    expect(r.out).toContain('#4 c2 get "k" -> "a" ok [6.000, 7.000]: it read "a" but the key held "b"');
    expect(r.out).toMatch(/verdict: violation$/);
  });

  it('exits 2 when the time budget runs out', async () => {
    const r = await cli(['h.jsonl', '--timeout-ms', '1'], { 'h.jsonl': formatHistory(pathological()) });
    expect(r.code).toBe(EXIT_UNKNOWN);
    expect(r.out).toContain('key "k" (43 ops): unknown: the time budget ran out');
  });

  it('leaves STALE reads out unless --include-stale', async () => {
    const h = STALE_READ.map((o, i) => (i === 3 ? { ...o, consistency: 'STALE' as const } : o));
    expect((await cli(['h.jsonl'], { 'h.jsonl': formatHistory(h) })).code).toBe(EXIT_OK);
    expect((await cli(['h.jsonl', '--include-stale'], { 'h.jsonl': formatHistory(h) })).code).toBe(EXIT_VIOLATION);
  });

  it('exits 3 on bad usage or input, naming the problem', async () => {
    expect(await cli([], {})).toMatchObject({ code: EXIT_USAGE, out: expect.stringContaining('expected exactly one history file') });
    expect(await cli(['a', 'b'], {})).toMatchObject({ code: EXIT_USAGE });
    expect(await cli(['h.jsonl', '--timeout-ms', 'soon'], { 'h.jsonl': '' })).toMatchObject({ code: EXIT_USAGE, out: expect.stringContaining('--timeout-ms') });
    expect(await cli(['h.jsonl', '--bogus'], { 'h.jsonl': '' })).toMatchObject({ code: EXIT_USAGE, out: expect.stringContaining('usage:') });
    expect(await cli(['missing.jsonl'], {})).toMatchObject({ code: EXIT_USAGE, out: expect.stringContaining('cannot read missing.jsonl') });
    const broken = `${formatHistory(GOOD)}{"client":"c1","op":"put","key":"k","call":0,"return":1,"status":"ok"}\n`;
    expect(await cli(['h.jsonl'], { 'h.jsonl': broken })).toEqual({ code: EXIT_USAGE, out: 'error: h.jsonl: line 3: a put needs "value" (a string)' });
  });

  it('prints its usage with --help', async () => {
    expect(await cli(['--help'], {})).toMatchObject({ code: EXIT_OK, out: expect.stringContaining('exit code: 0 linearizable, 1 violation, 2 unknown') });
  });
});

describe('the cli.ts shim', () => {
  it('exits with the verdict\'s code', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'raftkv-lin-'));
    try {
      const file = join(dir, 'history.jsonl');
      await writeFile(file, formatHistory(STALE_READ));
      const shim = fileURLToPath(new URL('../support/linearizability/cli.ts', import.meta.url));
      const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
        const p = spawn(process.execPath, ['--import', 'tsx', shim, file], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.once('error', reject);
        p.once('exit', (code) => resolve({ code, out }));
      });
      expect(r.code).toBe(EXIT_VIOLATION);
      expect(r.out).toMatch(/verdict: violation\n$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
