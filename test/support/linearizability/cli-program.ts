// The checker's command line, driven in-process by tests with captured output (cli.ts is the shim).
//
//   npx tsx test/support/linearizability/cli.ts history.jsonl [--timeout-ms N] [--include-stale]
//
// Prints a verdict per key and, for each violation or unknown verdict, an explanation.
// Exit code: 0 linearizable, 1 violation, 2 unknown (out of time or memory), 3 bad usage or input.

import { parseArgs } from 'node:util';
import { check, formatReport } from './checker.js';
import { HistoryFormatError, parseHistory } from './history.js';

export interface CheckerCliIo {
  out(line: string): void;
  readFile(path: string): Promise<string>;
  /** Wall-clock milliseconds, for the time budget. */
  nowMs(): number;
}

export const EXIT_OK = 0;
export const EXIT_VIOLATION = 1;
export const EXIT_UNKNOWN = 2;
export const EXIT_USAGE = 3;

const USAGE = [
  'usage: npx tsx test/support/linearizability/cli.ts HISTORY.jsonl [options]',
  '  --timeout-ms N     time budget of the whole check (default 60000); past it the verdict is unknown',
  '  --include-stale    check STALE reads too (by default they are left out: they may be stale)',
  '  --no-simplify      search the history as recorded, without simplifying unknown writes',
  'exit code: 0 linearizable, 1 violation, 2 unknown, 3 bad usage or input',
].join('\n');

export async function runCheckerCli(argv: readonly string[], io: CheckerCliIo): Promise<number> {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: {
        'timeout-ms': { type: 'string' },
        'include-stale': { type: 'boolean' },
        'no-simplify': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    io.out(`error: ${err instanceof Error ? err.message : String(err)}`);
    io.out(USAGE);
    return EXIT_USAGE;
  }
  if (values.help) {
    io.out(USAGE);
    return EXIT_OK;
  }
  const file = positionals[0];
  if (file === undefined || positionals.length > 1) {
    io.out('error: expected exactly one history file');
    io.out(USAGE);
    return EXIT_USAGE;
  }
  let timeoutMs: number | undefined;
  if (values['timeout-ms'] !== undefined) {
    timeoutMs = Number(values['timeout-ms']);
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      io.out(`error: --timeout-ms must be a non-negative number, got ${JSON.stringify(values['timeout-ms'])}`);
      return EXIT_USAGE;
    }
  }

  let history;
  try {
    history = parseHistory(await io.readFile(file));
  } catch (err) {
    const what = err instanceof HistoryFormatError ? `${file}: ${err.message}` : `cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`;
    io.out(`error: ${what}`);
    return EXIT_USAGE;
  }
  const result = check(history, {
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    includeStaleReads: values['include-stale'] === true,
    simplify: values['no-simplify'] !== true,
    nowMs: io.nowMs,
  });
  for (const line of formatReport(result)) io.out(line);
  return result.verdict === 'ok' ? EXIT_OK : result.verdict === 'violation' ? EXIT_VIOLATION : EXIT_UNKNOWN;
}
