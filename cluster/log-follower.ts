// Following node.log files as they grow (like `tail -f`), line by line. Following the files rather than
// the processes' pipes means a node restarted by another invocation of the script (`restart node2`
// while `start --foreground` runs) shows up in the same view. The lines read from all files in one
// check are passed on in the order of their time stamps (`timeOf`), so an election reads in order.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';

/** How often the files are checked for new output. */
const POLL_MS = 100;
/** Limit: bytes read from one file per check (the rest waits for the next one). */
const MAX_READ_BYTES = 1024 * 1024;
/** Limit: a line longer than this is passed on in pieces. */
const MAX_LINE_BYTES = 64 * 1024;

interface Followed {
  readonly file: string;
  offset: number;
  partial: string;
  /** Order key of the last line passed on. */
  lastKey: number;
  /** Keeps a UTF-8 character split across two reads whole. */
  readonly decoder: StringDecoder;
  readonly onLine: (line: string) => void;
}

/** A line read in one check, with the key it is ordered by. */
interface Pending {
  readonly key: number;
  readonly seq: number;
  readonly line: string;
  readonly onLine: (line: string) => void;
}

export class LogFollower {
  private readonly followed: Followed[] = [];
  private timer: NodeJS.Timeout | undefined;
  private pending: Pending[] = [];

  /**
   * `timeOf` gives a line's time (ms) or undefined; a line without one keeps its place after the
   * line before it in the same file.
   */
  constructor(private readonly timeOf: (line: string) => number | undefined = () => undefined) {}

  /** Follows `file` from byte `offset` on (lines already there before it are not passed on). */
  follow(file: string, offset: number, onLine: (line: string) => void): void {
    this.followed.push({ file, offset, partial: '', lastKey: 0, decoder: new StringDecoder('utf8'), onLine });
    this.timer ??= setInterval(() => this.poll(), POLL_MS);
  }

  /** Reads what is new in every file now (for example before reporting that a node exited). */
  poll(): void {
    for (const f of this.followed) this.read(f);
    const batch = this.pending.sort((a, b) => a.key - b.key || a.seq - b.seq);
    this.pending = [];
    for (const p of batch) p.onLine(p.line);
  }

  /** Passes on what is left (also an unterminated last line) and stops. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.poll();
    for (const f of this.followed) {
      if (f.partial !== '') this.push(f, f.partial);
      f.partial = '';
    }
    this.poll();
  }

  private read(f: Followed): void {
    let fd: number;
    try {
      fd = openSync(f.file, 'r');
    } catch {
      return; // not there (yet, or any more)
    }
    try {
      const size = fstatSync(fd).size;
      if (size < f.offset) f.offset = 0; // replaced or truncated: start over
      while (f.offset < size) {
        const buf = Buffer.alloc(Math.min(size - f.offset, MAX_READ_BYTES));
        const n = readSync(fd, buf, 0, buf.length, f.offset);
        if (n === 0) break;
        f.offset += n;
        this.split(f, f.decoder.write(buf.subarray(0, n)));
        if (n === MAX_READ_BYTES) break;
      }
    } finally {
      closeSync(fd);
    }
  }

  private split(f: Followed, chunk: string): void {
    const lines = (f.partial + chunk).split('\n');
    f.partial = lines.pop() ?? '';
    for (const line of lines) this.push(f, line);
    while (f.partial.length > MAX_LINE_BYTES) {
      this.push(f, f.partial.slice(0, MAX_LINE_BYTES));
      f.partial = f.partial.slice(MAX_LINE_BYTES);
    }
  }

  private push(f: Followed, line: string): void {
    f.lastKey = this.timeOf(line) ?? f.lastKey;
    this.pending.push({ key: f.lastKey, seq: this.pending.length, line, onLine: f.onLine });
  }
}
