// The closed-loop load generator: `clients` workers, each with its own client, each starting its
// next operation only when the previous one has returned (so the offered load adapts to the
// system's speed, and latency is per operation, not per queue). Phases:
//
//   preload (optional, unmeasured)  →  warm-up (run, not recorded)  →  measured window  →  drain
//
// The measured window starts when warm-up ends and lasts durationMs, or until `ops` operations have
// been started in it; it ends when the last operation started in it has returned (the drain), so
// every recorded latency lies inside [start, end]. An operation counts toward the phase it was
// started in. Failed operations are counted by code and their latency is not recorded.

import { performance } from 'node:perf_hooks';
import { ownCpuMs, sampleCpu } from './cpu.js';
import { HdrHistogram } from './histogram.js';
import { BenchOpError, consistencyServed, openTarget, type Target, type TargetClient, type TargetSpec } from './targets.js';
import { keyOf, OP_KINDS, validateWorkload, workerSource, type OpKind, type WorkerSource, type WorkloadSpec } from './workload.js';

export interface Progress {
  /** Since the measured window started. */
  readonly elapsedMs: number;
  /** Successful operations in the window so far. */
  readonly ops: number;
  /** Successful operations per second over the last interval. */
  readonly opsPerSec: number;
  /** Failed operations in the window so far. */
  readonly errors: number;
  /** p99 latency over the last interval (0 when no operation completed in it). */
  readonly p99Us: number;
}

/** Latency of successful operations, in µs. count 0: every field 0. */
export interface OpStats {
  readonly count: number;
  readonly p50Us: number;
  readonly p95Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
  readonly meanUs: number;
}

export interface BenchResult {
  readonly target: TargetSpec;
  readonly workload: WorkloadSpec;
  /** The read consistency the system served (etcd serves 'lease' as linearizable). */
  readonly consistencyServed: string;
  /** The measured window, drain included. */
  readonly elapsedMs: number;
  /** Successful operations in the window (failed ones are in `errors`). */
  readonly ops: number;
  readonly opsPerSec: number;
  /** All successful operations. */
  readonly latency: OpStats;
  /** Per kind of operation; kinds the mix does not use are absent. */
  readonly byOp: Partial<Record<OpKind, OpStats>>;
  /** Failed operations of the window, by code (BenchOpError.code). */
  readonly errors: Record<string, number>;
  /** CPU ms of the serverPids over the window, summed; absent without serverPids (or none readable). */
  readonly serverCpuMs?: number;
  readonly serverCpuUsPerOp?: number;
  /** pid → CPU ms over the window. */
  readonly serverCpuByPid?: Record<string, number>;
  /** This process's CPU over the window (the load generator and its client library). */
  readonly clientCpuMs: number;
  readonly clientCpuUsPerOp: number;
  /** Successful (compare held) cas operations; present when the mix has cas. */
  readonly casSucceeded?: number;
  /** Gets that found their key; present when the mix has get. */
  readonly getsFound?: number;
  // Extras beyond the agreed shape (optional, so results built elsewhere need not have them).
  /** Where the calls went (from the target). */
  readonly targetDescription?: string;
  /** Latencies above the histogram's range (60 s), recorded as 60 s. */
  readonly clampedLatencies?: number;
  /** Operations run during warm-up (not recorded). */
  readonly warmupOps?: number;
}

export interface RunOptions {
  readonly onProgress?: (p: Progress) => void;
  /** Default 1000. */
  readonly progressIntervalMs?: number;
  readonly signal?: AbortSignal;
  /** The run fails when every operation has failed for this long. Default 10 s. */
  readonly allFailingLimitMs?: number;
}

/** Attempts per key in preload before the run gives up. */
const PRELOAD_ATTEMPTS = 3;
const DEFAULT_ALL_FAILING_LIMIT_MS = 10_000;

function statsOf(h: HdrHistogram): OpStats {
  if (h.count === 0) return { count: 0, p50Us: 0, p95Us: 0, p99Us: 0, maxUs: 0, meanUs: 0 };
  return { count: h.count, p50Us: h.percentile(50), p95Us: h.percentile(95), p99Us: h.percentile(99), maxUs: h.max, meanUs: h.mean };
}

function codeOf(e: unknown): string {
  return e instanceof BenchOpError ? e.code : 'INTERNAL';
}

/** Runs one benchmark against `targetSpec` and returns its result. Rejects on abort or a fatal error. */
export async function runBench(targetSpec: TargetSpec, workloadIn: WorkloadSpec, opts: RunOptions = {}): Promise<BenchResult> {
  const w = validateWorkload(workloadIn);
  const progressIntervalMs = opts.progressIntervalMs ?? 1000;
  if (!Number.isSafeInteger(progressIntervalMs) || progressIntervalMs < 1) throw new RangeError(`progressIntervalMs must be an integer >= 1, got ${progressIntervalMs}`);
  const allFailingLimitMs = opts.allFailingLimitMs ?? DEFAULT_ALL_FAILING_LIMIT_MS;
  opts.signal?.throwIfAborted();

  const target = await openTarget(targetSpec);
  const sources: WorkerSource[] = [];
  const clients: TargetClient[] = [];
  const timers: NodeJS.Timeout[] = [];
  let onAbort: (() => void) | undefined;
  try {
    for (let i = 0; i < w.clients; i++) {
      sources.push(workerSource(w, i));
      clients.push(target.client(i));
    }
    const run = new Run(w, target, sources, clients, opts, progressIntervalMs, allFailingLimitMs, timers);
    if (opts.signal !== undefined) {
      const signal = opts.signal;
      onAbort = () => run.abort(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    if (w.preload) await run.preload();
    return await run.measure(targetSpec);
  } finally {
    if (onAbort !== undefined) opts.signal?.removeEventListener('abort', onAbort);
    for (const t of timers) clearTimeout(t);
    for (const c of clients) c.close();
    target.close();
  }
}

type Phase = 'warmup' | 'measure' | 'stopped';

/** The state of one run, shared by its workers (one event loop: no locking needed). */
class Run {
  private phase: Phase = 'warmup';
  /** Set when the run must end early: abort, or a fatal error. */
  private failure: { readonly error: unknown } | undefined;
  private measureStartMs = 0;
  private cpuAtStart: { readonly own: number; readonly servers: Map<number, number> } | undefined;
  /** Operations started in the measured window (bounded by w.ops). */
  private startedInWindow = 0;
  private warmupOps = 0;
  private lastSuccessMs = performance.now();

  private readonly byOp: Record<OpKind, HdrHistogram> = { put: new HdrHistogram(), get: new HdrHistogram(), cas: new HdrHistogram() };
  private readonly interval = new HdrHistogram();
  private readonly errors: Record<string, number> = {};
  private errorCount = 0;
  private okCount = 0;
  private casSucceeded = 0;
  private getsFound = 0;

  constructor(
    private readonly w: WorkloadSpec,
    private readonly target: Target,
    private readonly sources: readonly WorkerSource[],
    private readonly clients: readonly TargetClient[],
    private readonly opts: RunOptions,
    private readonly progressIntervalMs: number,
    private readonly allFailingLimitMs: number,
    private readonly timers: NodeJS.Timeout[],
  ) {}

  abort(reason: unknown): void {
    this.fail(reason ?? new Error('aborted'));
    // Cancels calls in flight (the raftkv client fails them at once with CLOSED).
    for (const c of this.clients) c.close();
  }

  private fail(error: unknown): void {
    if (this.failure === undefined) this.failure = { error };
    this.phase = 'stopped';
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure.error;
  }

  /** Puts every key once, `clients` workers taking the next key in turn. */
  async preload(): Promise<void> {
    let next = 0;
    const worker = async (i: number): Promise<void> => {
      const src = this.sources[i]!;
      const client = this.clients[i]!;
      while (next < this.w.keys && this.failure === undefined) {
        const index = next++;
        for (let attempt = 1; ; attempt++) {
          try {
            await client.put(src.keys.key(index), src.value);
            break;
          } catch (e) {
            if (this.failure !== undefined) return;
            if (attempt >= PRELOAD_ATTEMPTS || !(e instanceof BenchOpError)) {
              this.fail(new Error(`preload: put of ${keyOf(this.w.keyPrefix, index)} failed ${attempt} times: ${codeOf(e)}: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
              return;
            }
          }
        }
      }
    };
    await Promise.all(this.sources.map((_, i) => worker(i)));
    this.throwIfFailed();
  }

  async measure(targetSpec: TargetSpec): Promise<BenchResult> {
    const w = this.w;
    const pids = targetSpec.serverPids ?? [];
    this.lastSuccessMs = performance.now();
    const begin = (): void => {
      if (this.phase !== 'warmup') return;
      this.cpuAtStart = { own: ownCpuMs(), servers: sampleCpu(pids) };
      this.measureStartMs = performance.now();
      this.phase = 'measure';
      if (w.durationMs !== undefined) {
        this.timers.push(
          setTimeout(() => {
            if (this.phase === 'measure') this.phase = 'stopped';
          }, w.durationMs),
        );
      }
      this.startProgress();
    };
    if (w.warmupMs > 0) this.timers.push(setTimeout(begin, w.warmupMs));
    else begin();

    await Promise.all(this.sources.map((_, i) => this.worker(i)));
    this.throwIfFailed();

    const endMs = performance.now();
    const ownEnd = ownCpuMs();
    const serversEnd = sampleCpu(pids);
    const start = this.cpuAtStart!;
    const elapsedMs = endMs - this.measureStartMs;
    const ops = this.okCount;

    const all = new HdrHistogram();
    const byOp: Partial<Record<OpKind, OpStats>> = {};
    for (const k of OP_KINDS) {
      if (w.mix[k] > 0) byOp[k] = statsOf(this.byOp[k]);
      all.merge(this.byOp[k]);
    }

    let serverCpu: Pick<BenchResult, 'serverCpuMs' | 'serverCpuUsPerOp' | 'serverCpuByPid'> = {};
    const byPid: Record<string, number> = {};
    let sum = 0;
    for (const [pid, endCpu] of serversEnd) {
      const startCpu = start.servers.get(pid);
      if (startCpu === undefined) continue;
      byPid[String(pid)] = endCpu - startCpu;
      sum += endCpu - startCpu;
    }
    if (Object.keys(byPid).length > 0) serverCpu = { serverCpuMs: sum, serverCpuUsPerOp: ops > 0 ? (sum * 1000) / ops : 0, serverCpuByPid: byPid };
    const clientCpuMs = ownEnd - start.own;

    return {
      target: targetSpec,
      workload: w,
      consistencyServed: consistencyServed(targetSpec.system, w.consistency),
      elapsedMs,
      ops,
      opsPerSec: elapsedMs > 0 ? (ops * 1000) / elapsedMs : 0,
      latency: statsOf(all),
      byOp,
      errors: { ...this.errors },
      ...serverCpu,
      clientCpuMs,
      clientCpuUsPerOp: ops > 0 ? (clientCpuMs * 1000) / ops : 0,
      ...(w.mix.cas > 0 ? { casSucceeded: this.casSucceeded } : {}),
      ...(w.mix.get > 0 ? { getsFound: this.getsFound } : {}),
      targetDescription: this.target.description,
      clampedLatencies: all.clamped,
      warmupOps: this.warmupOps,
    };
  }

  private startProgress(): void {
    const onProgress = this.opts.onProgress;
    if (onProgress === undefined) return;
    let lastMs = this.measureStartMs;
    let lastOps = 0;
    const tick = (): void => {
      if (this.phase !== 'measure') return;
      const now = performance.now();
      const dt = now - lastMs;
      const p: Progress = {
        elapsedMs: now - this.measureStartMs,
        ops: this.okCount,
        opsPerSec: dt > 0 ? ((this.okCount - lastOps) * 1000) / dt : 0,
        errors: this.errorCount,
        p99Us: this.interval.count === 0 ? 0 : this.interval.percentile(99),
      };
      lastMs = now;
      lastOps = this.okCount;
      this.interval.reset();
      onProgress(p);
      this.timers.push(setTimeout(tick, this.progressIntervalMs));
    };
    this.timers.push(setTimeout(tick, this.progressIntervalMs));
  }

  /** One closed-loop worker: the next operation starts when the previous one has returned. */
  private async worker(i: number): Promise<void> {
    const w = this.w;
    const src = this.sources[i]!;
    const client = this.clients[i]!;
    for (;;) {
      const phase = this.phase;
      if (phase === 'stopped') return;
      if (phase === 'measure' && w.ops !== undefined) {
        if (this.startedInWindow >= w.ops) {
          // The window is over once every started operation has returned (the other workers' drain).
          this.phase = 'stopped';
          return;
        }
        this.startedInWindow++;
      }
      const kind = src.nextOp();
      const key = src.keys.key(src.nextKey.next());
      const t0 = performance.now();
      try {
        switch (kind) {
          case 'put':
            await client.put(key, src.value);
            break;
          case 'get':
            if ((await client.get(key, w.consistency)) && phase === 'measure') this.getsFound++;
            break;
          case 'cas':
            if ((await client.cas(key, src.value)) && phase === 'measure') this.casSucceeded++;
            break;
        }
        const t1 = performance.now();
        this.lastSuccessMs = t1;
        if (phase === 'measure') {
          const us = (t1 - t0) * 1000;
          this.byOp[kind].record(us);
          this.interval.record(us);
          this.okCount++;
        } else {
          this.warmupOps++;
        }
      } catch (e) {
        if (this.failure !== undefined) return;
        if (!(e instanceof BenchOpError)) {
          // Not a failure of the system under test: a bug here.
          this.fail(e);
          return;
        }
        if (phase === 'measure') {
          this.errors[e.code] = (this.errors[e.code] ?? 0) + 1;
          this.errorCount++;
        }
        const failingMs = performance.now() - this.lastSuccessMs;
        if (failingMs >= this.allFailingLimitMs) {
          this.fail(new Error(`every operation failed for ${(failingMs / 1000).toFixed(1)} s; giving up (last error ${e.code}: ${e.message})`, { cause: e }));
          return;
        }
        // An error can come back without any I/O (a client-side refusal): yield to the event loop, so
        // that a worker failing in a tight loop cannot starve the timers that end the run.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }
}
