// The comparison's workloads: the six the targets are judged on, chosen with --only, and the puts at
// other numbers of clients that --put-clients adds. No cluster runs here.

import { describe, expect, it } from 'vitest';
import { defaultWorkload, MAX_CLIENTS, validateWorkload } from '../../bench/kvbench/workload.js';
import { WORKLOADS } from '../../bench/support/compare-table.js';
import { COMPARE_WORKLOADS, MAX_PUT_SWEEP, putSweep, putWorkload, selectAll, selectWorkloads } from '../../bench/support/compare-workloads.js';

describe('selectWorkloads', () => {
  it('takes every workload the targets name, in order, without --only', () => {
    expect(COMPARE_WORKLOADS.map((w) => w.name)).toEqual(Object.values(WORKLOADS));
    expect(selectWorkloads(undefined).map((w) => w.name)).toEqual(Object.values(WORKLOADS));
  });

  it('takes the named ones in their own order, and refuses a name it does not know', () => {
    expect(selectWorkloads(' get-lin-64 ,put-64').map((w) => w.name)).toEqual(['put-64', 'get-lin-64']);
    expect(() => selectWorkloads('put-64,put-16')).toThrow(/--only: unknown workload put-16 \(known: put-64, put-1,.*; puts at other numbers of clients: --put-clients N/);
    expect(() => selectWorkloads('get-64')).toThrow(/unknown workload get-64 \(known: [^;]*\)$/);
  });

  it('runs --only\'s workloads, then the --put-clients puts', () => {
    expect(selectAll('get-lin-64,put-64', '256,16').map((w) => w.name)).toEqual(['put-64', 'get-lin-64', 'put-256', 'put-16']);
    expect(selectAll(undefined, '16').map((w) => w.name)).toEqual([...Object.values(WORKLOADS), 'put-16']);
    expect(selectAll('put-1', undefined).map((w) => w.name)).toEqual(['put-1']);
  });
});

describe('putSweep (--put-clients)', () => {
  it('makes put-N workloads that differ from put-64 only in the number of clients', () => {
    const sweep = putSweep('16, 32,1000');
    expect(sweep.map((w) => w.name)).toEqual(['put-16', 'put-32', 'put-1000']);
    // put-64, which target (1) is judged on, is what it has always been; the sweep's puts differ only in clients.
    const put64 = COMPARE_WORKLOADS.find((w) => w.name === WORKLOADS.put64)!;
    expect(put64.spec).toEqual({ clients: 64, mix: { put: 1, get: 0, cas: 0 } });
    expect(COMPARE_WORKLOADS.find((w) => w.name === WORKLOADS.put1)!.spec).toEqual({ clients: 1, mix: { put: 1, get: 0, cas: 0 } });
    for (const w of sweep) {
      expect({ ...w.spec, clients: 64 }).toEqual(put64.spec);
      expect(w.etcdSpec).toBeUndefined();
      // A workload kvbench accepts as it is.
      expect(() => validateWorkload(defaultWorkload(w.spec))).not.toThrow();
    }
    expect(putWorkload(1).description).toMatch(/^puts, 1 client,/);
  });

  it('refuses what is not a list of distinct client counts, naming the item and the limit', () => {
    expect(() => putSweep(' , ')).toThrow('--put-clients: no number of clients given');
    expect(() => putSweep('16,abc')).toThrow(`--put-clients: "abc" is not an integer from 1 to ${MAX_CLIENTS}`);
    expect(() => putSweep('0')).toThrow(`"0" is not an integer from 1 to ${MAX_CLIENTS}`);
    expect(() => putSweep(String(MAX_CLIENTS + 1))).toThrow(`is not an integer from 1 to ${MAX_CLIENTS}`);
    expect(() => putSweep('2.5')).toThrow('"2.5" is not an integer');
    expect(() => putSweep('16,32,16')).toThrow('--put-clients: 16 is given twice');
    expect(() => putSweep('64')).toThrow('put-64 is one of the standard workloads; name it with --only');
    expect(() => putSweep('1')).toThrow('put-1 is one of the standard workloads');
    const tooMany = Array.from({ length: MAX_PUT_SWEEP + 1 }, (_, i) => i + 2).join(',');
    expect(() => putSweep(tooMany)).toThrow(`at most ${MAX_PUT_SWEEP} numbers of clients (limit MAX_PUT_SWEEP), got ${MAX_PUT_SWEEP + 1}`);
    expect(putSweep(Array.from({ length: MAX_PUT_SWEEP }, (_, i) => i + 2).join(','))).toHaveLength(MAX_PUT_SWEEP);
    expect(putSweep(String(MAX_CLIENTS)).map((w) => w.name)).toEqual([`put-${MAX_CLIENTS}`]);
  });
});
