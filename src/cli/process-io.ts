// What a CLI's main() takes from the process: its output streams, how it sets the exit code, and how
// it asks to be told of SIGINT/SIGTERM. Tests pass their own instead.

export interface ProcessIo {
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  /** Sets the exit code; not process.exit(), which could cut off output still being written to a pipe. */
  readonly exit: (code: number) => void;
  /** Delivers SIGINT/SIGTERM to `handler` instead of the default; returns the function that stops it. */
  readonly onInterrupt: (handler: () => void) => () => void;
}

export function processIo(): ProcessIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    exit: (code) => {
      process.exitCode = code;
    },
    onInterrupt: (handler) => {
      const signals = ['SIGINT', 'SIGTERM'] as const;
      for (const s of signals) process.on(s, handler);
      return () => {
        for (const s of signals) process.off(s, handler);
      };
    },
  };
}
