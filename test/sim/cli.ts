// The shim behind `npm run sim`: all the work is in sim-program.ts.

import { runSimCli } from './sim-program.js';

process.exitCode = await runSimCli(process.argv.slice(2), {
  out: (line) => process.stdout.write(`${line}\n`),
  nowMs: () => performance.now(),
});
