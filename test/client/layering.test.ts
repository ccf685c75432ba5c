// The import rule of the client library and of kvctl, checked here rather than by review: the client
// reaches a cluster only over gRPC, so it imports nothing of the node, the Raft core, storage or
// the transport (only the proto definitions and the error codes), and kvctl sits on the client alone,
// but for snapshot files: verifying one, or creating a data directory from one, is work on the local
// disk in the storage format, which src/cli/snapshot-files.ts alone does, through storage's public
// surface (never the node, the core or the transport).

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const allowed: Record<string, readonly RegExp[]> = {
  '../../src/client/': [/^\.\/[a-z-]+\.js$/, /^\.\.\/server\/kv-proto\.js$/, /^\.\.\/errors\.js$/, /^@grpc\/grpc-js$/, /^node:crypto$/],
  '../../src/cli/kvctl': [/^\.\.\/client\/index\.js$/, /^\.\/kvctl-format\.js$/, /^\.\/snapshot-files\.js$/, /^\.\/process-io\.js$/, /^commander$/, /^node:fs\/promises$/],
  '../../src/cli/snapshot-files': [/^\.\.\/storage\/index\.js$/, /^\.\.\/errors\.js$/, /^node:fs$/, /^node:fs\/promises$/, /^node:path$/],
};

/** Module specifiers of static imports and re-exports (statements at line start) and dynamic imports. */
function imports(src: string): string[] {
  const statics = [...src.matchAll(/^(?:import|export)\s[^;]*?from\s*['"]([^'"]+)['"]/gm)].map((m) => m[1] as string);
  const bare = [...src.matchAll(/^import\s*['"]([^'"]+)['"]/gm)].map((m) => m[1] as string);
  const dynamic = [...src.matchAll(/\bimport\(\s*['"]([^'"]+)['"]/g)].map((m) => m[1] as string);
  return [...statics, ...bare, ...dynamic];
}

describe.each(Object.entries(allowed))('imports of %s', (where, rules) => {
  const base = new URL(where, import.meta.url).pathname;
  const dir = where.endsWith('/') ? base : join(base, '..');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.ts') && (where.endsWith('/') || join(dir, f).startsWith(base)))
    .map((f) => join(dir, f));

  it('has files to check, and finds their imports', () => {
    expect(files.length).toBeGreaterThan(0);
    expect(files.flatMap((f) => imports(readFileSync(f, 'utf8'))).length).toBeGreaterThan(files.length);
  });

  it('are only the allowed ones', () => {
    const bad = files.flatMap((f) => imports(readFileSync(f, 'utf8')).filter((spec) => !rules.some((re) => re.test(spec))).map((spec) => `${f}: ${spec}`));
    expect(bad).toEqual([]);
  });
});
