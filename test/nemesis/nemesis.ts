// The nemesis: a real cluster started by the cluster script (cluster/), clients doing get/put/cas on
// a few keys through every node, and faults injected on a schedule chosen by a seed: kill -9 and
// restart, SIGSTOP/SIGCONT, partitions of every shape, clock-rate drift within the lease's bound.
// Every operation is recorded as one JSON line (test/support/linearizability/README.md); at the end
// everything heals, every key is read linearizably, and the history is checked:
//  - LINEARIZABLE and LEASE runs: the whole history (reads and writes) must be linearizable, so no
//    acknowledged write is lost and no read is stale;
//  - STALE runs: writes and the final reads must be linearizable; every STALE read must return a
//    value some write wrote (or absent); with the client's session (min_index), a read is served at
//    an index at least the highest the client has seen, and never returns an older write of the
//    client's own than one already acknowledged (monotonic reads, read-your-writes).
// The seed decides the fault schedule and every client's choices; the cluster's timing does not
// replay exactly (real processes), so a seed reproduces the schedule, not the interleaving.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { readState } from '../../cluster/cluster-state.js';
import { run as runCluster, type ClusterIo } from '../../cluster/cluster.js';
import { KvClient, KvError } from '../../src/client/index.js';
import { createRng } from '../../src/raft/rng.js';
import { check, type CheckResult } from '../support/linearizability/checker.js';
import { formatHistory, type HistoryOp, type ReadConsistency } from '../support/linearizability/history.js';

export type FaultKind = 'kill' | 'pause' | 'partition' | 'clock';
export const FAULT_KINDS: readonly FaultKind[] = ['kill', 'pause', 'partition', 'clock'];

export interface NemesisOptions {
  readonly seed: number;
  readonly durationMs: number;
  readonly faults: readonly FaultKind[];
  readonly consistency: ReadConsistency;
  /** Where the cluster, the history, the faults and the summary go. */
  readonly outDir: string;
  readonly nodes?: number;
  readonly clientsPerNode?: number;
  readonly keys?: number;
  /** kvnode flags for every node; fast timings by default (tick 20 ms, election timeout 10 ticks). */
  readonly nodeArgs?: readonly string[];
  /** How long one operation may take before it counts as unknown. */
  readonly opTimeoutMs?: number;
  /** A fault holds for a time drawn from this range (ms), then heals; the next comes after a gap. */
  readonly faultHoldMs?: readonly [number, number];
  readonly faultGapMs?: readonly [number, number];
  /** The checker's time budget for the whole history; past it the verdict is unknown. */
  readonly checkTimeoutMs?: number;
  readonly log?: (line: string) => void;
}

export interface FaultRecord {
  readonly kind: FaultKind;
  readonly spec: string;
  readonly start: number;
  readonly end: number;
}

export interface NemesisReport {
  readonly seed: number;
  readonly consistency: ReadConsistency;
  readonly durationMs: number;
  readonly ops: { total: number; ok: number; fail: number; unknown: number; byKind: Record<string, number> };
  readonly faults: { total: number; byKind: Record<string, number> };
  readonly linearizability: { verdict: CheckResult['verdict']; detail: string };
  readonly staleReads: { checked: number; violations: string[] };
  readonly verdict: 'ok' | 'violation' | 'unknown';
  readonly outDir: string;
}

const DEFAULT_NODE_ARGS = ['--tick-ms', '20', '--election-timeout-ticks', '10', '--heartbeat-ticks', '2'];
/** The lease's drift bound the nodes assume (kvnode's default --max-clock-drift); drift stays inside it. */
const ASSUMED_DRIFT = 0.1;

/** A deterministic generator for one purpose, derived from the run's seed. */
function rngFor(seed: number, stream: number): ReturnType<typeof createRng> {
  return createRng((seed * 7919 + stream * 104729) >>> 0);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function runNemesis(o: NemesisOptions): Promise<NemesisReport> {
  const log = o.log ?? ((line: string) => console.log(line));
  const nodes = o.nodes ?? 3;
  const clientsPerNode = o.clientsPerNode ?? 2;
  const keyCount = o.keys ?? 3;
  const opTimeoutMs = o.opTimeoutMs ?? 2_000;
  const [holdLo, holdHi] = o.faultHoldMs ?? [500, 2_500];
  const [gapLo, gapHi] = o.faultGapMs ?? [300, 1_500];
  const clusterDir = join(o.outDir, 'cluster');
  await mkdir(o.outDir, { recursive: true });

  const out: string[] = [];
  const io: ClusterIo = {
    out: (s) => void out.push(s),
    err: (s) => void out.push(s),
    palette: { enabled: false },
    trapSignals: () => new AbortController().signal,
  };
  const cluster = async (...args: string[]): Promise<void> => {
    out.length = 0;
    const code = await runCluster([...args, '--dir', clusterDir], io);
    if (code !== 0) throw new Error(`cluster ${args.join(' ')} failed (exit ${code}):\n${out.join('\n')}`);
  };
  const clusterMay = async (...args: string[]): Promise<boolean> => {
    out.length = 0;
    return (await runCluster([...args, '--dir', clusterDir], io)) === 0;
  };

  await cluster('start', '--nodes', String(nodes), '--base-port', '0', '--node-args', (o.nodeArgs ?? DEFAULT_NODE_ARGS).join(' '));
  const state = readState(clusterDir);
  if (state === undefined) throw new Error(`no cluster state in ${clusterDir}`);
  const endpoints = state.nodes.map((n) => `${state.host}:${n.port}`);
  const ids = state.nodes.map((n) => n.id);
  const t0 = performance.now();
  const now = (): number => performance.now() - t0;

  const history: HistoryOp[] = [];
  const faults: FaultRecord[] = [];
  const keys = Array.from({ length: keyCount }, (_, k) => `k${k}`);
  let stopClients = false;
  const clients: KvClient[] = [];

  const leaderOf = async (): Promise<number | undefined> => {
    const c = new KvClient({ endpoints, timeoutMs: 1_000 });
    try {
      const leader = await c.leader();
      return leader?.id;
    } catch {
      return undefined;
    } finally {
      c.close();
    }
  };

  // ---- clients ----------------------------------------------------------------------------------
  const clientLoop = async (name: string, endpoint: string, stream: number): Promise<void> => {
    const rng = rngFor(o.seed, stream);
    // STALE clients keep a session: each read carries the highest index the client has seen.
    // Pinned to its node (followLeader false): a follower's clients exercise its own read path
    // (ReadIndex through the leader, lease refusal, forwarding of writes), not the leader's.
    const kv = new KvClient({
      endpoints: [endpoint],
      timeoutMs: opTimeoutMs,
      clientId: `${name}-${o.seed}`,
      session: o.consistency === 'STALE',
      followLeader: false,
    });
    clients.push(kv);
    const lastSeen = new Map<string, string | null>();
    let n = 0;
    while (!stopClients) {
      const key = keys[rng.int(keys.length)]!;
      const r = rng.float();
      const call = now();
      if (r < 0.5) {
        const consistency = o.consistency;
        try {
          const res = await kv.get(key, { consistency: consistency.toLowerCase() as 'linearizable' | 'lease' | 'stale' });
          const value = res.found ? res.valueString! : null;
          lastSeen.set(key, value);
          history.push({ client: name, op: 'get', key, call, return: now(), status: 'ok', consistency, result: { value }, node: res.header.nodeId, index: res.header.index });
        } catch (e) {
          history.push({ client: name, op: 'get', key, call, return: now(), status: 'fail', consistency, error: codeOf(e) });
        }
      } else if (r < 0.8) {
        const value = `${name}.${++n}`;
        try {
          const res = await kv.put(key, value);
          lastSeen.set(key, value);
          history.push({ client: name, op: 'put', key, value, call, return: now(), status: 'ok', node: res.header.nodeId, index: res.header.index });
        } catch (e) {
          history.push({ client: name, op: 'put', key, value, call, status: writeStatus(e), error: codeOf(e) });
        }
      } else {
        const value = `${name}.${++n}`;
        const expected = lastSeen.get(key) ?? null;
        try {
          const res = await kv.compareAndSwap(key, expected === null ? { expectAbsent: true } : { expectedValue: expected }, value);
          const current = res.succeeded ? value : res.current === undefined ? null : res.current.valueString;
          lastSeen.set(key, current);
          history.push({
            client: name, op: 'cas', key, value, expected, call, return: now(), status: 'ok',
            result: { swapped: res.succeeded, value: current }, node: res.header.nodeId, index: res.header.index,
          });
        } catch (e) {
          history.push({ client: name, op: 'cas', key, value, expected, call, status: writeStatus(e), error: codeOf(e) });
        }
      }
    }
  };

  // ---- faults -----------------------------------------------------------------------------------
  const frng = rngFor(o.seed, 0);
  const pickNode = async (): Promise<number> => {
    if (frng.float() < 0.5) {
      const l = await leaderOf();
      if (l !== undefined) return l;
    }
    return ids[frng.int(ids.length)]!;
  };
  const injectOne = async (kind: FaultKind): Promise<void> => {
    const hold = holdLo + frng.float() * (holdHi - holdLo);
    const start = now();
    let spec = '';
    switch (kind) {
      case 'kill': {
        const id = await pickNode();
        spec = `kill -9 node${id}, restart after ${Math.round(hold)} ms`;
        await cluster('kill', String(id));
        await sleep(hold);
        await cluster('restart', String(id));
        break;
      }
      case 'pause': {
        const id = await pickNode();
        // Long enough to lose leadership: several election timeouts of the fast timings.
        const pauseMs = Math.max(hold, 600);
        spec = `SIGSTOP node${id} for ${Math.round(pauseMs)} ms`;
        await cluster('pause', String(id));
        await sleep(pauseMs);
        await cluster('resume', String(id));
        break;
      }
      case 'partition': {
        const shapes = ['isolate-leader', 'isolate-follower', 'split', 'oneway', 'bridge'] as const;
        const shape = shapes[frng.int(shapes.length)]!;
        const shuffled = [...ids].sort(() => frng.float() - 0.5);
        let args: string[];
        if (shape === 'isolate-leader') args = ['isolate', 'leader'];
        else if (shape === 'isolate-follower') {
          const l = await leaderOf();
          const f = shuffled.find((id) => id !== l) ?? shuffled[0]!;
          args = ['isolate', String(f)];
        } else if (shape === 'split') {
          const minority = Math.floor((ids.length - 1) / 2);
          args = ['split', shuffled.slice(0, minority).join(','), shuffled.slice(minority).join(',')];
        } else if (shape === 'oneway') args = ['oneway', String(shuffled[0]), String(shuffled[1])];
        else {
          const m = Math.floor(ids.length / 2);
          args = ['bridge', shuffled.slice(0, m).join(','), String(shuffled[m]), shuffled.slice(m + 1).join(',')];
        }
        spec = `partition ${args.join(' ')} for ${Math.round(hold)} ms`;
        if (!(await clusterMay('partition', ...args))) spec += ' (refused: no leader known)';
        await sleep(hold);
        await cluster('heal');
        break;
      }
      case 'clock': {
        const id = await pickNode();
        // Within the lease's bound: up to 80% of the assumed drift, fast or slow.
        const rate = 1 + (frng.float() * 2 - 1) * ASSUMED_DRIFT * 0.8;
        spec = `clock node${id} x${rate.toFixed(3)} for ${Math.round(hold)} ms`;
        await cluster('clock', String(id), rate.toFixed(4));
        await sleep(hold);
        await clusterMay('clock', String(id), '1');
        break;
      }
    }
    faults.push({ kind, spec, start, end: now() });
    log(`  fault ${faults.length}: ${spec}`);
  };
  const faultLoop = async (): Promise<void> => {
    while (now() < o.durationMs) {
      await sleep(gapLo + frng.float() * (gapHi - gapLo));
      if (now() >= o.durationMs || o.faults.length === 0) continue;
      await injectOne(o.faults[frng.int(o.faults.length)]!);
    }
  };

  let report: NemesisReport;
  try {
    const loops: Promise<void>[] = [];
    let stream = 1;
    endpoints.forEach((ep, k) => {
      for (let c = 0; c < clientsPerNode; c++) loops.push(clientLoop(`n${ids[k]}c${c}`, ep, stream++));
    });
    await faultLoop();
    // Heal everything, then let the clients run a little on a whole cluster, then stop them.
    await clusterMay('heal');
    for (const id of ids) {
      await clusterMay('resume', String(id));
      await clusterMay('clock', String(id), '1');
    }
    await clusterMay('start');
    stopClients = true;
    await Promise.all(loops);

    // Every key read linearizably at the end: what the acknowledged writes must have come to.
    const final = new KvClient({ endpoints, timeoutMs: 10_000 });
    try {
      for (const key of keys) {
        for (let attempt = 0; ; attempt++) {
          const call = now();
          try {
            const res = await final.get(key, { consistency: 'linearizable' });
            history.push({ client: 'final', op: 'get', key, call, return: now(), status: 'ok', consistency: 'LINEARIZABLE', result: { value: res.found ? res.valueString! : null } });
            break;
          } catch (e) {
            if (attempt >= 20) throw e;
            await sleep(250);
          }
        }
      }
    } finally {
      final.close();
    }
    report = await evaluate(o, history, faults, now(), log);
  } finally {
    stopClients = true;
    for (const c of clients) c.close();
    await writeFile(join(o.outDir, 'history.jsonl'), formatHistory(history));
    await writeFile(join(o.outDir, 'faults.jsonl'), faults.map((f) => JSON.stringify(f)).join('\n') + (faults.length ? '\n' : ''));
    await clusterMay('clean');
  }
  await writeFile(join(o.outDir, 'summary.json'), JSON.stringify(report, null, 2) + '\n');
  return report;
}

function codeOf(e: unknown): string {
  return e instanceof KvError ? e.code : e instanceof Error ? e.name : 'ERROR';
}

/**
 * A failed write: 'fail' only when it certainly did not take effect (refused as invalid); anything
 * else may have been proposed on some attempt (the client retries), so its outcome is unknown.
 */
function writeStatus(e: unknown): 'fail' | 'unknown' {
  return e instanceof KvError && e.code === 'INVALID_ARGUMENT' ? 'fail' : 'unknown';
}

async function evaluate(
  o: NemesisOptions,
  history: readonly HistoryOp[],
  faults: readonly FaultRecord[],
  elapsedMs: number,
  log: (line: string) => void,
): Promise<NemesisReport> {
  const byKind: Record<string, number> = {};
  let ok = 0;
  let fail = 0;
  let unknown = 0;
  for (const h of history) {
    byKind[h.op] = (byKind[h.op] ?? 0) + 1;
    if (h.status === 'ok') ok++;
    else if (h.status === 'fail') fail++;
    else unknown++;
  }
  const faultKinds: Record<string, number> = {};
  for (const f of faults) faultKinds[f.kind] = (faultKinds[f.kind] ?? 0) + 1;

  // STALE reads are not linearizable by design: check them apart, and the rest for linearizability.
  const checked = history.filter((h) => !(h.op === 'get' && h.consistency === 'STALE'));
  const lin = check(checked, { timeoutMs: o.checkTimeoutMs ?? 60_000 });
  const stale = checkStaleReads(history);
  const verdict = lin.verdict === 'violation' || stale.violations.length > 0 ? 'violation' : lin.verdict === 'unknown' ? 'unknown' : 'ok';
  const report: NemesisReport = {
    seed: o.seed,
    consistency: o.consistency,
    durationMs: Math.round(elapsedMs),
    ops: { total: history.length, ok, fail, unknown, byKind },
    faults: { total: faults.length, byKind: faultKinds },
    linearizability: {
      verdict: lin.verdict,
      detail: [...lin.perKey.values()]
        .filter((k) => k.verdict !== 'ok')
        .map((k) => `${k.key}: ${k.explanation ?? k.unknownReason ?? k.verdict}`)
        .join('\n'),
    },
    staleReads: stale,
    verdict,
    outDir: o.outDir,
  };
  log(
    `nemesis seed ${o.seed} ${o.consistency}: ${history.length} ops (${ok} ok, ${fail} fail, ${unknown} unknown), ` +
      `${faults.length} faults ${JSON.stringify(faultKinds)}; linearizability ${lin.verdict}; ` +
      `stale reads ${stale.checked} checked, ${stale.violations.length} bad; verdict ${verdict}`,
  );
  return report;
}

/**
 * STALE reads: each value read must have been written by some put or cas (any status: an unknown
 * write may have taken effect), or be absent. A client that got a write of its own acknowledged
 * never reads an older write of its own to that key afterwards (its own writes carry increasing
 * numbers), and its reads of its own writes never go back.
 */
export function checkStaleReads(history: readonly HistoryOp[]): { checked: number; violations: string[] } {
  const written = new Map<string, Set<string>>();
  for (const h of history) {
    if ((h.op === 'put' || h.op === 'cas') && h.value !== undefined) {
      let s = written.get(h.key);
      if (s === undefined) written.set(h.key, (s = new Set()));
      s.add(h.value);
    }
  }
  const violations: string[] = [];
  let checked = 0;
  const ownSeen = new Map<string, number>();
  const indexSeen = new Map<string, number>();
  const byClient = [...history].filter((h) => h.status === 'ok').sort((a, b) => a.call - b.call);
  const seqOf = (client: string, value: string | null | undefined): number | undefined => {
    if (value === null || value === undefined || !value.startsWith(`${client}.`)) return undefined;
    return Number(value.slice(client.length + 1));
  };
  for (const h of byClient) {
    const k = `${h.client}/${h.key}`;
    if ((h.op === 'put' || (h.op === 'cas' && h.result?.swapped === true)) && h.value !== undefined) {
      ownSeen.set(k, Math.max(ownSeen.get(k) ?? 0, seqOf(h.client, h.value) ?? 0));
      continue;
    }
    if (h.op !== 'get' || h.consistency !== 'STALE') {
      if (h.index !== undefined) indexSeen.set(h.client, Math.max(indexSeen.get(h.client) ?? 0, h.index));
      continue;
    }
    checked++;
    const floorIndex = indexSeen.get(h.client) ?? 0;
    if (h.index !== undefined) {
      if (h.index < floorIndex) violations.push(`${h.client} read ${h.key} at index ${h.index}, below index ${floorIndex} it had already seen`);
      indexSeen.set(h.client, Math.max(floorIndex, h.index));
    }
    const v = h.result?.value;
    if (v !== null && v !== undefined && !(written.get(h.key)?.has(v) ?? false)) {
      violations.push(`${h.client} read ${h.key}=${JSON.stringify(v)}, which no operation wrote`);
    }
    const own = seqOf(h.client, v);
    const floor = ownSeen.get(k) ?? 0;
    if (own !== undefined && own < floor) {
      violations.push(`${h.client} read its own older write ${JSON.stringify(v)} of ${h.key} after its write #${floor} was acknowledged`);
    }
    if (own !== undefined) ownSeen.set(k, Math.max(floor, own));
  }
  return { checked, violations };
}
