// CPU time of processes, for "server CPU per operation": utime + stime from /proc/<pid>/stat
// (Linux), and this process's own from process.cpuUsage().

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clockTicksPerSec: number | undefined;

/** The kernel's clock ticks per second (USER_HZ), from `getconf CLK_TCK`; 100 if that fails. */
export function clockTicks(): number {
  if (clockTicksPerSec === undefined) {
    let hz = 100;
    try {
      const out = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 2_000 }).trim());
      if (Number.isSafeInteger(out) && out > 0) hz = out;
    } catch {
      // No getconf: 100 is the value on every common Linux build.
    }
    clockTicksPerSec = hz;
  }
  return clockTicksPerSec;
}

/**
 * utime + stime (fields 14 and 15 of `stat`) of `/proc/<pid>/stat`'s text, in clock ticks. The
 * second field, the command name in parentheses, may itself hold spaces and ')', so the fields are
 * counted from after the LAST ')'.
 */
export function parseStatTicks(stat: string): number {
  const close = stat.lastIndexOf(')');
  if (close < 0) throw new Error('/proc stat: no ")" after the command name');
  // After ") ": field 3 (state) is at offset 0, so field n is at n - 3.
  const fields = stat.slice(close + 1).trim().split(/\s+/);
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  if (!Number.isSafeInteger(utime) || !Number.isSafeInteger(stime)) throw new Error(`/proc stat: bad utime/stime "${fields[11]}" "${fields[12]}"`);
  return utime + stime;
}

/** CPU time (user + system) process `pid` has used, in ms. Throws if the process is gone. */
export function readProcessCpuMs(pid: number): number {
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new RangeError(`readProcessCpuMs: bad pid ${pid}`);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return (parseStatTicks(stat) * 1000) / clockTicks();
}

/** CPU ms of each pid; a pid that cannot be read (gone, not Linux) is left out. */
export function sampleCpu(pids: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, readProcessCpuMs(pid));
    } catch {
      // Left out: the caller reports the pids it could not measure.
    }
  }
  return out;
}

/** This process's CPU time (user + system), in ms. */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
