// The import rules of src/storage/ and src/kv/, checked here rather than by review:
//  - storage sits on LevelDB (and node:crypto, to checksum snapshot streams) and knows nothing of the
//    KV semantics, the network or the node;
//  - the KV state machine reaches the disk only through storage, and is deterministic: the same log
//    must give the same state on every replica, so it reads no clock and draws no randomness.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ruleViolations } from '../support/import-rules.js';

interface Rule {
  readonly dir: string;
  readonly allowed: readonly RegExp[];
  readonly forbidden: ReadonlyArray<[RegExp, string]>;
}

const nondeterminism: ReadonlyArray<[RegExp, string]> = [
  [/\bDate\b/, 'Date (a clock)'],
  [/\bperformance\b/, 'performance (a clock)'],
  [/\bMath\.random\b/, 'Math.random (randomness)'],
  [/\bcrypto\b/, 'crypto (randomness)'],
  [/\b(setTimeout|setInterval|setImmediate)\b/, 'timers'],
  [/\bprocess\b/, 'process (environment)'],
];

const rules: Record<'storage' | 'kv', Rule> = {
  storage: {
    dir: '../../src/storage/',
    allowed: [/^\.\/[a-z-]+\.js$/, /^\.\.\/errors\.js$/, /^\.\.\/raft\/types\.js$/, /^level$/, /^node:fs\/promises$/, /^node:crypto$/],
    forbidden: [],
  },
  kv: {
    dir: '../../src/kv/',
    allowed: [/^\.\/[a-z-]+\.js$/, /^\.\.\/errors\.js$/, /^\.\.\/raft\/types\.js$/, /^\.\.\/storage\/[a-z-]+\.js$/],
    forbidden: nondeterminism,
  },
};

function violations(rule: Rule, file: string, src: string): string[] {
  return ruleViolations(file, src, (spec) => rule.allowed.some((re) => re.test(spec)), rule.forbidden);
}

describe.each(Object.entries(rules))('src/%s/ import rule', (name, rule) => {
  const dir = new URL(rule.dir, import.meta.url).pathname;
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));

  it('has files to check', () => {
    expect(files).toContain('index.ts');
  });

  it(`imports only what the ${name} layer may`, () => {
    expect(files.flatMap((f) => violations(rule, f, readFileSync(join(dir, f), 'utf8')))).toEqual([]);
  });
});

describe('the rules catch what they are meant to catch', () => {
  it('storage may not reach up into kv, the node, the transport or gRPC', () => {
    for (const spec of ['../kv/record.js', '../node/raft-runtime.js', '../transport/index.js', '@grpc/grpc-js', 'node:net']) {
      expect(violations(rules.storage, 'x.ts', `import { x } from '${spec}';`)).toHaveLength(1);
    }
    expect(violations(rules.storage, 'x.ts', "import { Level } from 'level';")).toEqual([]);
  });

  it('kv may not touch LevelDB directly, nor read a clock or randomness', () => {
    expect(violations(rules.kv, 'x.ts', "import { Level } from 'level';")).toHaveLength(1);
    expect(violations(rules.kv, 'x.ts', "import { readFile } from 'node:fs/promises';")).toHaveLength(1);
    expect(violations(rules.kv, 'x.ts', 'const t = Date.now();')).toHaveLength(1);
    expect(violations(rules.kv, 'x.ts', 'const r = Math.random();')).toHaveLength(1);
    expect(violations(rules.kv, 'x.ts', "import { NodeStore } from '../storage/node-store.js'; // Date.now()")).toEqual([]);
  });
});
