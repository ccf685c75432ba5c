// kvnode's option parsing: the apply and commit deferrals' and the read pacing's defaults, their off
// switches and limits, and the switch that keeps Node's HTTP/2 stream maps.

import { describe, expect, it } from 'vitest';
import { buildProgram, resolveConfig } from '../../src/cli/kvnode.js';
import { DEFAULT_APPLY_DEFER_MS, DEFAULT_COMMIT_DEFER_MS, MAX_APPLY_DEFER_MS, MAX_COMMIT_DEFER_MS } from '../../src/node/raft-runtime.js';
import { DEFAULT_READS_PER_TURN, MAX_READS_PER_TURN } from '../../src/node/turn-pacer.js';

const REQUIRED = ['--id', '1', '--members', '1=127.0.0.1:7001', '--data-dir', '/nonexistent/kvnode-options-test'];

function parse(extra: string[]): ReturnType<typeof resolveConfig> {
  const program = buildProgram()
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  program.parse([...REQUIRED, ...extra], { from: 'user' });
  return resolveConfig(program);
}

describe('kvnode --apply-defer-ms', () => {
  it('defaults to DEFAULT_APPLY_DEFER_MS and takes 0 (never wait) up to MAX_APPLY_DEFER_MS', () => {
    expect(parse([]).applyDeferMs).toBe(DEFAULT_APPLY_DEFER_MS);
    expect(parse(['--apply-defer-ms', '0']).applyDeferMs).toBe(0);
    expect(parse(['--apply-defer-ms', String(MAX_APPLY_DEFER_MS)]).applyDeferMs).toBe(MAX_APPLY_DEFER_MS);
  });

  it('refuses a value over the limit or below 0, naming the option and the limit', () => {
    expect(() => parse(['--apply-defer-ms', String(MAX_APPLY_DEFER_MS + 1)])).toThrow(`--apply-defer-ms must be <= ${MAX_APPLY_DEFER_MS}`);
    expect(() => parse(['--apply-defer-ms', '-1'])).toThrow('--apply-defer-ms must be an integer >= 0');
  });
});

describe('kvnode --commit-defer-ms', () => {
  it('defaults to DEFAULT_COMMIT_DEFER_MS and takes 0 (send at once) up to MAX_COMMIT_DEFER_MS', () => {
    expect(parse([]).commitDeferMs).toBe(DEFAULT_COMMIT_DEFER_MS);
    expect(parse(['--commit-defer-ms', '0']).commitDeferMs).toBe(0);
    expect(parse(['--commit-defer-ms', String(MAX_COMMIT_DEFER_MS)]).commitDeferMs).toBe(MAX_COMMIT_DEFER_MS);
  });

  it('refuses a value over the limit or below 0, naming the option and the limit', () => {
    expect(() => parse(['--commit-defer-ms', String(MAX_COMMIT_DEFER_MS + 1)])).toThrow(`--commit-defer-ms must be <= ${MAX_COMMIT_DEFER_MS}`);
    expect(() => parse(['--commit-defer-ms', '-1'])).toThrow('--commit-defer-ms must be an integer >= 0');
  });
});

describe('kvnode --reads-per-turn', () => {
  it('defaults to DEFAULT_READS_PER_TURN and takes 0 (all at once) up to MAX_READS_PER_TURN', () => {
    expect(parse([]).readsPerTurn).toBe(DEFAULT_READS_PER_TURN);
    expect(parse(['--reads-per-turn', '0']).readsPerTurn).toBe(0);
    expect(parse(['--reads-per-turn', String(MAX_READS_PER_TURN)]).readsPerTurn).toBe(MAX_READS_PER_TURN);
  });

  it('refuses a value over the limit or below 0, naming the option and the limit', () => {
    expect(() => parse(['--reads-per-turn', String(MAX_READS_PER_TURN + 1)])).toThrow(`--reads-per-turn must be <= ${MAX_READS_PER_TURN}`);
    expect(() => parse(['--reads-per-turn', '-1'])).toThrow('--reads-per-turn must be an integer >= 0');
  });
});

describe('kvnode addresses and ids', () => {
  it('refuses members, --listen and --cluster-id that the peer wire cannot carry, naming the limit', () => {
    const program = (args: string[]): ReturnType<typeof resolveConfig> => {
      const p = buildProgram()
        .exitOverride()
        .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
      p.parse([...args, '--data-dir', '/nonexistent/kvnode-options-test'], { from: 'user' });
      return resolveConfig(p);
    };
    expect(() => program(['--id', '1', '--members', '1=127.0.0.1:7001,4294967296=127.0.0.1:7002'])).toThrow(/MAX_WIRE_NODE_ID/);
    expect(() => program(['--id', '1', '--members', '1=127.0.0.1:99999'])).toThrow(/is not HOST:PORT/);
    expect(() => program(['--id', '1', '--members', '1=::1:7001'])).toThrow(/is not HOST:PORT/);
    expect(program(['--id', '1', '--members', '1=[::1]:7001']).members.get(1)).toBe('[::1]:7001');
    expect(() => parse(['--listen', 'localhost'])).toThrow(/--listen "localhost" is not HOST:PORT/);
    expect(() => parse(['--cluster-id', 'x'.repeat(1025)])).toThrow(/MAX_CLUSTER_ID_BYTES/);
    expect(parse(['--listen', '0.0.0.0:7001']).listen).toBe('0.0.0.0:7001');
  });
});

describe('kvnode --keep-http2-stream-maps', () => {
  it('is off unless given', () => {
    expect(parse([]).keepHttp2StreamMaps).toBe(false);
    expect(parse(['--keep-http2-stream-maps']).keepHttp2StreamMaps).toBe(true);
  });
});

describe('kvnode --grpcjs-kv-calls', () => {
  it('is off unless given', () => {
    expect(parse([]).grpcjsKvCalls).toBe(false);
    expect(parse(['--grpcjs-kv-calls']).grpcjsKvCalls).toBe(true);
  });
});
