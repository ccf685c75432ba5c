// The command line of a bench script: string options, -h/--help printing its usage, and an unknown
// option or a missing value answered with the usage and exit code 64 instead of a stack trace.

import { parseArgs } from 'node:util';

type StringOptions = Record<string, { readonly type: 'string'; readonly default?: string }>;

/** The parsed values: a string for options with a default, else string or undefined. */
type Values<O extends StringOptions> = { [K in keyof O]: O[K] extends { default: string } ? string : string | undefined };

export function parseScriptFlags<O extends StringOptions>(name: string, usage: string, options: O): Values<O> {
  try {
    const { values } = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } } });
    if ((values as Record<string, unknown>)['help'] === true) {
      process.stdout.write(usage);
      process.exit(0);
    }
    return values as unknown as Values<O>;
  } catch (e) {
    process.stderr.write(`${name}: ${(e as Error).message}\n\n${usage}`);
    process.exit(64);
  }
}
