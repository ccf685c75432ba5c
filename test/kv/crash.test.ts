// Crash atomicity, by behaviour: a child process applies batches until it is SIGKILLed at an
// arbitrary point; after every kill, the reopened store must show data, sessions and the applied
// index of one and the same prefix of the log (each apply is one atomic batch), and the next run
// must resume from exactly there.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { KvStateMachine } from '../../src/kv/index.js';
import { NodeStore } from '../../src/storage/index.js';
import { makeTempDir, removeTempDir } from '../storage/temp-dir.js';

const projectRoot = fileURLToPath(new URL('../..', import.meta.url));
const script = fileURLToPath(new URL('./fixtures/apply-loop.ts', import.meta.url));

type Report = { readonly kind: 'persisted' | 'applied'; readonly index: number };

/**
 * Runs the loop until it reports `kind` at an index >= target, then SIGKILLs it at once: after a
 * "persisted" report the kill lands before or while the apply batch is written; after an "applied"
 * one, before or while the next persist is.
 */
async function runUntilKilled(dir: string, kind: Report['kind'], target: number, deadlineMs: number): Promise<Report> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, dir], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    return await new Promise<Report>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no progress to ${target} within ${deadlineMs}ms; stderr: ${stderr}`)), deadlineMs);
      let buffered = '';
      child.stdout.on('data', (d: Buffer) => {
        buffered += d.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        for (const line of lines) {
          const m = /^(persisted|applied) (\d+)$/.exec(line);
          if (m?.[1] === kind && Number(m[2]) >= target) {
            clearTimeout(timer);
            child.kill('SIGKILL');
            resolve({ kind, index: Number(m[2]) });
          }
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (signal !== 'SIGKILL') reject(new Error(`apply loop exited early (code ${code}); stderr: ${stderr}`));
      });
    });
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
}

let root: string;
beforeEach(async () => {
  root = await makeTempDir();
});
afterEach(async () => {
  await removeTempDir(root);
});

it('keeps data, sessions and the applied index in step across SIGKILLs', async () => {
  const dir = join(root, 'node');
  const dec = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));
  let previous = 0;
  for (let round = 0; round < 6; round++) {
    const seen = await runUntilKilled(dir, round % 2 === 0 ? 'persisted' : 'applied', previous + 40, 30_000);

    const store = await NodeStore.open(dir, { clusterId: 'crash', nodeId: 1, create: false });
    try {
      const sm = await KvStateMachine.open(store);
      const applied = sm.appliedIndex;
      // What was reported is durable; the applied index never passes the commit index.
      if (seen.kind === 'applied') expect(applied).toBeGreaterThanOrEqual(seen.index);
      else expect(store.hardState.commit).toBeGreaterThanOrEqual(seen.index);
      expect(applied).toBeGreaterThan(previous);
      expect(applied).toBeLessThanOrEqual(store.hardState.commit);
      expect(store.hardState.commit).toBeLessThanOrEqual(store.lastIndex);
      // Entries committed but not applied (usual after a "persisted" kill) are applied first by the
      // next run, which the next round's checks cover.
      // Odd entries put n = i: its record is the last odd entry <= applied, changed by every odd one.
      const lastOdd = applied % 2 === 1 ? applied : applied - 1;
      const n = await sm.get(new TextEncoder().encode('n'));
      expect(dec(n?.value)).toBe(String(lastOdd));
      expect(n?.modIndex).toBe(lastOdd);
      expect(n?.version).toBe((lastOdd + 1) / 2);
      // Even entries each create one k/ key: exactly those <= applied exist.
      const ks = await sm.range({ prefix: new TextEncoder().encode('k/') }, { keysOnly: true, limit: 100_000 });
      expect(ks.items.length).toBe(Math.floor(applied / 2));
      const lastEven = applied - (applied % 2);
      expect(dec(ks.items[ks.items.length - 1]?.key)).toBe(`k/${String(lastEven).padStart(8, '0')}`);
      // The session records the last applied seq.
      expect(sm.session('loop')).toMatchObject({ lastSeq: applied, lastIndex: applied });
      previous = applied;
    } finally {
      await store.close();
    }
  }
}, 120_000);
