// kvbench's command line, driven in-process: option validation with clear errors, and the spec it
// builds from the options (the benchmark itself replaced by a stub; runner.test.ts runs the real one).

import { describe, expect, it } from 'vitest';
import { EXIT, main } from '../../bench/kvbench/cli.js';
import type { BenchResult } from '../../bench/kvbench/runner.js';
import type { TargetSpec } from '../../bench/kvbench/targets.js';
import type { WorkloadSpec } from '../../bench/kvbench/workload.js';

interface Captured {
  code: number;
  stdout: string;
  stderr: string;
  calls: Array<{ target: TargetSpec; workload: WorkloadSpec }>;
}

function fakeResult(target: TargetSpec, workload: WorkloadSpec): BenchResult {
  const stats = { count: 10, p50Us: 1000, p95Us: 2000, p99Us: 3000, maxUs: 4000, meanUs: 1200 };
  return {
    target,
    workload,
    consistencyServed: workload.consistency,
    elapsedMs: 1000,
    ops: 10,
    opsPerSec: 10,
    latency: stats,
    byOp: { put: stats },
    errors: { UNAVAILABLE: 2 },
    clientCpuMs: 5,
    clientCpuUsPerOp: 500,
    serverCpuMs: 20,
    serverCpuUsPerOp: 2000,
    serverCpuByPid: { '101': 20 },
  };
}

async function run(...args: string[]): Promise<Captured> {
  const out: Captured = { code: -1, stdout: '', stderr: '', calls: [] };
  out.code = await main(['node', 'kvbench', ...args], {
    stdout: { write: (s: string) => (out.stdout += s) },
    stderr: { write: (s: string) => (out.stderr += s) },
    exit: () => {},
    runBench: async (target, workload, opts) => {
      out.calls.push({ target, workload });
      opts.onProgress?.({ elapsedMs: 1000, ops: 1234, opsPerSec: 1234, errors: 0, p99Us: 12_300 });
      return fakeResult(target, workload);
    },
  });
  return out;
}

describe('kvbench options', () => {
  it.each([
    [['--clients', '0'], /--clients must be an integer in \[1, 10000\], got "0"/],
    [['--clients', 'x'], /--clients must be an integer/],
    [['--duration', '-1'], /--duration must be a number of seconds/],
    [['--ops', '1.5'], /--ops must be an integer/],
    [['--duration', '5', '--ops', '10'], /'--duration <s>' cannot be used with option '--ops <n>'/],
    [['--keys', '0'], /--keys must be an integer/],
    [['--key-dist', 'gauss'], /'gauss' is invalid. Allowed choices are uniform, zipf, sequential/],
    [['--zipf-theta', '1.2'], /--zipf-theta must be a number in \(0, 1\)/],
    [['--value-bytes', '-3'], /--value-bytes/],
    [['--mix', 'put=1,del=1'], /--mix: unknown operation "del"/],
    [['--mix', 'put=0'], /--mix: the weights of "put=0" add up to 0/],
    [['--consistency', 'strong'], /Allowed choices are linearizable, lease, stale/],
    [['--system', 'redis'], /Allowed choices are raftkv, etcd/],
    [['--endpoints', 'localhost'], /--endpoints: "localhost" is not host:port/],
    [['--server-pids', '12,abc'], /--server-pids: "abc" is not a process id/],
    [['--seed', '4294967296'], /--seed must be an integer in \[0, 4294967295\]/],
    [['--warmup', 'soon'], /--warmup must be a number of seconds/],
    [['--frobnicate'], /unknown option '--frobnicate'/],
  ])('%j: a usage error naming the option', async (args, re) => {
    const r = await run(...args);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stderr).toMatch(/^kvbench: USAGE: /);
    expect(r.stderr).toMatch(re);
    expect(r.calls).toEqual([]);
  });

  it('builds the target and workload from the options; --json prints the result only', async () => {
    const r = await run(
      '--system', 'etcd', '--endpoints', '10.0.0.1:2379,10.0.0.2:2379', '--server-pids', '101,102', '--clients', '8',
      '--duration', '2.5', '--warmup', '0.5', '--keys', '1000', '--key-dist', 'zipf', '--zipf-theta', '0.8',
      '--value-bytes', '64', '--mix', 'get=90,cas=10', '--consistency', 'lease', '--preload', '--seed', '42',
      '--key-prefix', 'b/', '--json',
    );
    expect(r.code).toBe(EXIT.OK);
    expect(r.calls).toHaveLength(1);
    const { target, workload } = r.calls[0]!;
    expect(target).toEqual({ system: 'etcd', endpoints: ['10.0.0.1:2379', '10.0.0.2:2379'], serverPids: [101, 102] });
    expect(workload).toEqual({
      clients: 8, durationMs: 2500, warmupMs: 500, keys: 1000, keyDistribution: 'zipf', zipfTheta: 0.8, keyPrefix: 'b/',
      valueBytes: 64, mix: { put: 0, get: 90, cas: 10 }, consistency: 'lease', preload: true, seed: 42,
    });
    const json = JSON.parse(r.stdout) as BenchResult;
    expect(json.ops).toBe(10);
    expect(r.stderr).toContain('seed 42');
    expect(r.stderr).toContain('1,234 ops');
  });

  it('defaults: raftkv on the local cluster, 16 clients, 10 s, put=1, a random seed that is printed', async () => {
    const r = await run('--quiet');
    expect(r.code).toBe(EXIT.OK);
    expect(r.stderr).toBe('');
    const { target, workload } = r.calls[0]!;
    expect(target.endpoints).toEqual(['127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7003']);
    expect(workload).toMatchObject({ clients: 16, durationMs: 10_000, warmupMs: 1000, keys: 10_000, valueBytes: 256, mix: { put: 1, get: 0, cas: 0 }, keyPrefix: 'kvbench/' });
    expect(workload.ops).toBeUndefined();
    // The text report names the seed, so a run can be repeated.
    expect(r.stdout).toContain(`seed ${workload.seed}`);
    expect(r.stdout).toMatch(/latency \(ms\)\s+count\s+p50\s+p95\s+p99\s+max\s+mean/);
    expect(r.stdout).toContain('errors:     UNAVAILABLE 2');
    expect(r.stdout).toContain('server CPU: 2,000.0 µs/op');
  });

  it('a failed run: one line on stderr, exit 1', async () => {
    const out = { stderr: '' };
    const code = await main(['node', 'kvbench', '--quiet', '--ops', '5'], {
      stdout: { write: () => {} },
      stderr: { write: (s: string) => (out.stderr += s) },
      exit: () => {},
      runBench: async () => {
        throw Object.assign(new Error('no etcd endpoint answered Status'), { code: 'UNAVAILABLE' });
      },
    });
    expect(code).toBe(EXIT.FAILED);
    expect(out.stderr).toBe('kvbench: UNAVAILABLE: no etcd endpoint answered Status\n');
  });
});
