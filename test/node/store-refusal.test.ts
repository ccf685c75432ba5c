// A kvnode process refuses a data directory it cannot vouch for: it exits non-zero before serving, and
// its one line on stderr names the directory and the problem. Each test has its own one-node cluster.

import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { logKey } from '../../src/storage/keys.js';
import { withRawDb } from '../storage/temp-dir.js';
import { ProcessCluster, retryUnavailable } from '../support/process-cluster.js';

/** kvnode's exit code for a refused store (EX_CONFIG); see src/cli/kvnode.ts. */
const EXIT_STORE_REFUSED = 78;

let cluster: ProcessCluster | undefined;

beforeEach(({ onTestFailed }) => {
  onTestFailed(() => console.error(`kvnode output:\n${cluster?.describe() ?? '(no cluster)'}`));
});

afterEach(async () => {
  await cluster?.cleanup();
  cluster = undefined;
});

async function oneNode(): Promise<ProcessCluster> {
  cluster = await ProcessCluster.create({ size: 1 });
  return cluster;
}

/** Starts node 1 with `extra` flags and expects it to exit with the refusal code; returns its stderr. */
async function expectRefused(c: ProcessCluster, extra: readonly string[] = []): Promise<string> {
  const p = c.spawn(1, extra);
  const exit = await p.exited;
  expect(p.started, 'the node must not start serving').toBe(false);
  expect(exit).toEqual({ code: EXIT_STORE_REFUSED, signal: null });
  return p.stderr;
}

it('refuses a data directory of another cluster id', async () => {
  const c = await oneNode();
  await c.spawn(1, ['--cluster-id', 'a']).waitStarted();
  expect(await c.stopNode(1)).toEqual({ code: 0, signal: null });

  const stderr = await expectRefused(c, ['--cluster-id', 'b']);
  expect(stderr).toContain(c.dataDir(1));
  expect(stderr).toContain('STORE_MISMATCH');
  expect(stderr).toContain('belongs to cluster "a", not "b"');

  // The refusal changed nothing: the right cluster id still opens it.
  await c.spawn(1, ['--cluster-id', 'a']).waitStarted();
});

it('refuses a store whose log has a gap', async () => {
  const c = await oneNode();
  await c.start();
  await c.waitForLeader();
  // A few entries: the leader's no-op at index 1, then one per put.
  let last = 0;
  for (let i = 0; i < 5; i++) {
    const r = await retryUnavailable(() =>
      c.client(1).put({ key: Buffer.from(`k${i}`), value: Buffer.from('v'), session: { client_id: 'refusal-test', seq: i + 1 } }, { timeoutMs: 2_000 }),
    );
    last = Number(r.header.index);
  }
  expect(last).toBeGreaterThanOrEqual(5);
  expect(await c.stopNode(1)).toEqual({ code: 0, signal: null });

  const hole = 3;
  await withRawDb(c.dataDir(1), async (db) => {
    expect(await db.get(logKey(hole)), `log entry ${hole} exists before the damage`).toBeDefined();
    await db.del(logKey(hole));
  });

  const stderr = await expectRefused(c);
  expect(stderr).toContain(c.dataDir(1));
  expect(stderr).toContain('STORE_CORRUPT');
  expect(stderr).toContain(`has a gap: index ${hole + 1} follows ${hole - 1}`);
});

it('refuses a non-empty directory that is not a raftkv store, and leaves it as it was', async () => {
  const c = await oneNode();
  const dir = c.dataDir(1);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'notes.txt'), 'not a database\n');

  const stderr = await expectRefused(c);
  expect(stderr).toContain(dir);
  expect(stderr).toContain('STORE_MISMATCH');
  expect(stderr).toContain('holds no LevelDB database');
  expect(await readdir(dir)).toEqual(['notes.txt']);
});
