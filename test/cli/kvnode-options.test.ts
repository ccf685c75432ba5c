// kvnode's option parsing: the apply and commit deferrals' and the read pacing's defaults, their off
// switches and limits, and the switch that keeps Node's HTTP/2 stream maps.

import { describe, expect, it } from 'vitest';
import { buildProgram, resolveConfig } from '../../src/cli/kvnode.js';
import { DEFAULT_APPLY_DEFER_MS, DEFAULT_COMMIT_DEFER_MS, MAX_APPLY_DEFER_MS, MAX_COMMIT_DEFER_MS } from '../../src/node/raft-runtime.js';
import { DEFAULT_READS_PER_TURN, MAX_READS_PER_TURN } from '../../src/node/read-pacer.js';

const REQUIRED = ['--id', '1', '--members', '1=127.0.0.1:7001', '--data-dir', '/nonexistent/kvnode-options-test'];

function parse(extra: string[]): ReturnType<typeof resolveConfig> {
  const program = buildProgram()
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  program.parse([...REQUIRED, ...extra], { from: 'user' });
  return resolveConfig(program);
}

/** Integer options with a default, 0 as their off switch, and a named upper limit. */
const BOUNDED_OPTIONS = [
  { flag: '--apply-defer-ms', key: 'applyDeferMs', def: DEFAULT_APPLY_DEFER_MS, max: MAX_APPLY_DEFER_MS, zero: 'never wait' },
  { flag: '--commit-defer-ms', key: 'commitDeferMs', def: DEFAULT_COMMIT_DEFER_MS, max: MAX_COMMIT_DEFER_MS, zero: 'send at once' },
  { flag: '--reads-per-turn', key: 'readsPerTurn', def: DEFAULT_READS_PER_TURN, max: MAX_READS_PER_TURN, zero: 'all at once' },
] as const;

describe.each(BOUNDED_OPTIONS)('kvnode $flag', ({ flag, key, def, max, zero }) => {
  it(`defaults to ${def} and takes 0 (${zero}) up to ${max}`, () => {
    expect(parse([])[key]).toBe(def);
    expect(parse([flag, '0'])[key]).toBe(0);
    expect(parse([flag, String(max)])[key]).toBe(max);
  });

  it('refuses a value over the limit or below 0, naming the option and the limit', () => {
    expect(() => parse([flag, String(max + 1)])).toThrow(`${flag} must be <= ${max}`);
    expect(() => parse([flag, '-1'])).toThrow(`${flag} must be an integer >= 0`);
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
