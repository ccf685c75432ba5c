// The shim behind `npx tsx test/support/linearizability/cli.ts history.jsonl`: the work is in cli-program.ts.

import { readFile } from 'node:fs/promises';
import { runCheckerCli } from './cli-program.js';

process.exitCode = await runCheckerCli(process.argv.slice(2), {
  out: (line) => process.stdout.write(`${line}\n`),
  readFile: (path) => readFile(path, 'utf8'),
  nowMs: () => performance.now(),
});
