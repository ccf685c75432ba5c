// The import rule of src/raft/: the core is a pure state machine. It imports only its own modules and
// the pure error module, and uses no clock, timer, global randomness, promise or process state.
// This is what lets the simulator replay any run from its seed.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ruleViolations } from '../support/import-rules.js';

const coreDir = new URL('../../src/raft/', import.meta.url).pathname;
const allowedImports = new Set(['../errors.js']);
const forbidden: ReadonlyArray<[RegExp, string]> = [
  [/\bDate\b/, 'Date (a clock)'],
  [/\bperformance\b/, 'performance (a clock)'],
  [/\bprocess\b/, 'process (environment and clock)'],
  [/\bMath\.random\b/, 'Math.random (global randomness)'],
  [/\bcrypto\b/, 'crypto (randomness)'],
  [/\b(setTimeout|setInterval|setImmediate|queueMicrotask)\b/, 'timers'],
  [/\b(async|await|Promise)\b/, 'promises (the core is synchronous)'],
  [/\b(require|globalThis|fetch)\b/, 'dynamic or global access'],
];

export function violations(file: string, src: string): string[] {
  const allowed = (spec: string): boolean => (spec.startsWith('./') && !spec.slice(2).includes('/')) || allowedImports.has(spec);
  return ruleViolations(file, src, allowed, forbidden);
}

describe('src/raft/ stays pure', () => {
  const files = readdirSync(coreDir).filter((f) => f.endsWith('.ts'));

  it('has files to check', () => {
    expect(files).toContain('raft.ts');
  });

  it('imports nothing from Node, storage, transport or gRPC, and uses no clock, timer or global randomness', () => {
    const found = files.flatMap((f) => violations(f, readFileSync(join(coreDir, f), 'utf8')));
    expect(found).toEqual([]);
  });

  it('the error module the core may import is itself pure', () => {
    const src = readFileSync(new URL('../../src/errors.ts', import.meta.url), 'utf8');
    expect(violations('errors.ts', src.replace(/^import type .*$/gm, ''))).toEqual([]);
    expect(src).not.toMatch(/^import (?!type)/m);
  });

  it('the rule catches what it is meant to catch', () => {
    expect(violations('x.ts', "import { readFileSync } from 'node:fs';")).toHaveLength(1);
    expect(violations('x.ts', "import { Level } from 'level';")).toHaveLength(1);
    expect(violations('x.ts', "import { Store } from '../storage/store.js';")).toHaveLength(1);
    expect(violations('x.ts', 'const t = Date.now();')).toHaveLength(1);
    expect(violations('x.ts', 'const r = Math.random();')).toHaveLength(1);
    expect(violations('x.ts', 'setTimeout(f, 1);')).toHaveLength(1);
    expect(violations('x.ts', "import { Raft } from './raft.js'; // Date.now() in a comment")).toEqual([]);
  });
});
