// Temporary data directories for storage tests: each test gets a fresh one, removed afterwards.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';

export async function makeTempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'raftkv-test-'));
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Opens the LevelDB in `dir` directly (the store must be closed), runs `fn`, closes it. */
export async function withRawDb(dir: string, fn: (db: Level<Uint8Array, Uint8Array>) => Promise<void>): Promise<void> {
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view', createIfMissing: false });
  await db.open();
  try {
    await fn(db);
  } finally {
    await db.close();
  }
}
