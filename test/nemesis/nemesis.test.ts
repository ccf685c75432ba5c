// The short version of the nemesis suite: three runs of about 15 s on a real 3-node cluster started
// by the cluster script, one per read consistency, each with its own mix of faults. A run passes only
// if its history checks out (see nemesis.ts) and it really did something: operations acknowledged
// and faults injected. The seed decides the fault schedule and the clients' choices; on a failure the
// history, the faults and the summary stay in the folder printed. Long runs: `npm run nemesis`.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ReadConsistency } from '../support/linearizability/history.js';
import { runNemesis, type FaultKind } from './nemesis.js';

const SCENARIOS: ReadonlyArray<{ consistency: ReadConsistency; faults: FaultKind[]; seed: number; seconds: number }> = [
  { consistency: 'LINEARIZABLE', faults: ['kill', 'partition', 'pause'], seed: 7001, seconds: 15 },
  { consistency: 'LEASE', faults: ['pause', 'partition', 'clock'], seed: 7002, seconds: 15 },
  { consistency: 'STALE', faults: ['kill', 'partition'], seed: 7003, seconds: 12 },
];

describe('nemesis (short)', () => {
  it.each(SCENARIOS)(
    '$consistency under $faults: the history is linearizable and no acknowledged write is lost (seed $seed)',
    async ({ consistency, faults, seed, seconds }) => {
      const outDir = await mkdtemp(join(tmpdir(), `raftkv-nemesis-${seed}-`));
      console.log(`nemesis: seed ${seed}, ${consistency}, faults ${faults.join(',')}, ${seconds} s; output in ${outDir}`);
      const report = await runNemesis({ seed, durationMs: seconds * 1000, faults, consistency, outDir, log: (l) => console.log(l) });
      if (report.verdict !== 'ok') {
        throw new Error(
          `nemesis seed ${seed} (${consistency}): verdict ${report.verdict}; history kept in ${outDir}\n` +
            `${report.linearizability.detail}\n${report.staleReads.violations.slice(0, 10).join('\n')}`,
        );
      }
      expect(report.ops.ok).toBeGreaterThan(100);
      expect(report.faults.total).toBeGreaterThan(0);
      if (consistency === 'STALE') expect(report.staleReads.checked).toBeGreaterThan(0);
      await rm(outDir, { recursive: true, force: true });
    },
    180_000,
  );
});
