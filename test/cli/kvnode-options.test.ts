// kvnode's option parsing: the apply deferral's default, its off switch, and its limit.

import { describe, expect, it } from 'vitest';
import { buildProgram, resolveConfig } from '../../src/cli/kvnode.js';
import { DEFAULT_APPLY_DEFER_MS, MAX_APPLY_DEFER_MS } from '../../src/node/raft-runtime.js';

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
