// Reading a process's CPU time from /proc/<pid>/stat.

import { describe, expect, it } from 'vitest';
import { parseStatTicks, readProcessCpuMs, sampleCpu } from '../../bench/kvbench/cpu.js';

describe('cpu', () => {
  it('parses utime + stime after the last ")", whatever the command name holds', () => {
    // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    const stat = '1234 (a b) (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 50';
    expect(parseStatTicks(stat)).toBe(325);
    expect(() => parseStatTicks('garbage')).toThrow();
  });

  it('reads this process, and leaves out a pid that does not exist', () => {
    const before = readProcessCpuMs(process.pid);
    expect(before).toBeGreaterThan(0);
    let x = 0;
    for (let i = 0; i < 5e6; i++) x += Math.sqrt(i);
    expect(x).toBeGreaterThan(0);
    expect(readProcessCpuMs(process.pid)).toBeGreaterThanOrEqual(before);
    const m = sampleCpu([process.pid, 2 ** 22 + 12345]);
    expect([...m.keys()]).toEqual([process.pid]);
  });
});
