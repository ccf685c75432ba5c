// Measures snapshots on a 3-node cluster of real kvnode processes on loopback, with kvnode's default
// timings and snapshot settings (a snapshot every 10,000 entries, 5,000 kept behind it):
//
//  (a) load: one follower is stopped, then N keys of V bytes are written through the leader;
//  (b) taking a snapshot on the leader (kvctl snapshot create): marker + log compaction;
//  (c) a full copy: the leader's snapshot streamed to a file (kvctl snapshot save), its size;
//  (d) InstallSnapshot: the stopped follower restarts, needs entries the others compacted, and gets
//      the snapshot: transfer + install time from its log, total catch-up time, and the peak RSS of
//      leader and follower while it runs (sampled from /proc every 50 ms), and the latency of
//      sequential puts through the leader meanwhile (replication to the third node goes on), against
//      the same loop just before;
//  (e) restart time of a node holding that data versus an empty one (kvnode's own startMs/loadMs:
//      opening LevelDB and reading the log back, without the process and TypeScript start-up).
//
// A script, not a test: it asserts nothing about speed. Run: npx tsx bench/measure-snapshot.ts
// Options: --keys N (default 200000), --value-bytes N (default 1024), --concurrency N (default 128).

import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { availableParallelism, cpus, release, tmpdir, type as osType } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { SnapshotFileWriter } from '../src/cli/snapshot-files.js';
import { KvClient as LibClient } from '../src/client/index.js';
import { NodeProcess, ProcessCluster, retryUnavailable } from '../test/support/process-cluster.js';

const { values: flags } = parseArgs({
  options: {
    keys: { type: 'string', default: '200000' },
    'value-bytes': { type: 'string', default: '1024' },
    concurrency: { type: 'string', default: '128' },
  },
});
const KEYS = Number(flags.keys);
const VALUE_BYTES = Number(flags['value-bytes']);
const CONCURRENCY = Number(flags.concurrency);

const mib = (n: number): string => `${(n / (1024 * 1024)).toFixed(1)} MiB`;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const sleep = (n: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, n));

async function rssBytes(pid: number | undefined, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): Promise<number> {
  if (pid === undefined) return 0;
  try {
    const s = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(s);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The JSON log line of `event` in a node's output, parsed; the last one if several. */
function logEvent(p: NodeProcess, event: string): Record<string, unknown> | undefined {
  for (let i = p.stderrTail.length - 1; i >= 0; i--) {
    const line = p.stderrTail[i]!;
    if (line.startsWith('{') && line.includes(`"event":"${event}"`)) return JSON.parse(line) as Record<string, unknown>;
  }
  return undefined;
}

async function waitUntil(cond: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function main(): Promise<void> {
  console.log(`command: npx tsx bench/measure-snapshot.ts${process.argv.slice(2).length ? ' ' + process.argv.slice(2).join(' ') : ''}`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, nproc ${availableParallelism()}, ${osType()} ${release()}, Node ${process.version}`);
  console.log(`cluster: 3 kvnode processes on 127.0.0.1, default timings and snapshot settings; ${KEYS} keys x ${VALUE_BYTES} B`);

  const cluster = await ProcessCluster.create({ size: 3, timingArgs: [] });
  const tmp = await mkdtemp(join(tmpdir(), 'raftkv-bench-snap-'));
  try {
    await cluster.start();
    const leader = await cluster.waitForLeader(30_000);
    const follower = cluster.ids.find((id) => id !== leader)!;
    await cluster.stopNode(follower);

    // (a) load through the leader, CONCURRENCY writes in flight.
    const client = cluster.client(leader);
    const value = Buffer.alloc(VALUE_BYTES, 'v');
    let next = 0;
    const t0 = performance.now();
    const worker = async (): Promise<void> => {
      for (;;) {
        const i = next++;
        if (i >= KEYS) return;
        const key = Buffer.from(`key/${String(i).padStart(8, '0')}`);
        await retryUnavailable(() => client.put({ key, value }, { timeoutMs: 30_000 }), 60_000);
        if (i > 0 && i % 20_000 === 0) console.log(`  loaded ${i} keys, ${secs(performance.now() - t0)}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const loadMs = performance.now() - t0;
    console.log(`(a) load: ${KEYS} puts in ${secs(loadMs)} (${Math.round((KEYS * 1000) / loadMs)} puts/s)`);

    const lib = new LibClient({ endpoints: [cluster.addresses.get(leader)!] });
    try {
      // (b) take a snapshot on the leader now.
      const taken = await lib.createSnapshot();
      console.log(
        `(b) snapshot create on the leader: index ${taken.index}, log start ${taken.logStartIndex}, ` +
          `${taken.entriesCompacted} entries compacted, ${taken.durationMs.toFixed(1)} ms`,
      );

      // (c) a full copy to a file, streamed through one LevelDB iterator.
      const file = join(tmp, 'leader.snap');
      const t1 = performance.now();
      const download = await lib.saveSnapshot();
      const writer = await SnapshotFileWriter.create(file);
      for await (const c of download) await writer.write(c);
      const saved = await writer.commit(download);
      const saveMs = performance.now() - t1;
      const size = (await stat(file)).size;
      console.log(`(c) snapshot save: ${mib(size)} (${size} bytes, ${saved.records} records) in ${secs(saveMs)} (${mib((size * 1000) / saveMs)}/s)`);
    } finally {
      lib.close();
    }

    // (d) the follower comes back behind the compaction point.
    const probeLatencies = async (until: () => boolean, out: number[]): Promise<void> => {
      let n = 0;
      while (!until()) {
        const s = performance.now();
        await retryUnavailable(() => client.put({ key: Buffer.from(`probe/${n++}`), value: Buffer.from('p') }, { timeoutMs: 10_000 }), 60_000);
        out.push(performance.now() - s);
      }
    };
    const baseline: number[] = [];
    const baselineEnd = performance.now() + 3_000;
    await probeLatencies(() => performance.now() > baselineEnd, baseline);
    const leaderPid = cluster.node(leader).child.pid;
    const leaderRssBefore = await rssBytes(leaderPid);
    let peakLeader = leaderRssBefore;
    let peakFollower = 0;
    const t2 = performance.now();
    const p = cluster.spawn(follower);
    let sampling = true;
    const during: number[] = [];
    const prober = probeLatencies(() => !sampling, during);
    const sampler = (async () => {
      while (sampling) {
        peakLeader = Math.max(peakLeader, await rssBytes(leaderPid));
        peakFollower = Math.max(peakFollower, await rssBytes(p.child.pid));
        await sleep(50);
      }
    })();
    await p.waitStarted(60_000);
    const commit = Number((await client.status({ timeoutMs: 5_000 })).commit_index);
    await waitUntil(async () => Number((await cluster.client(follower).status({ timeoutMs: 5_000 })).applied_index) >= commit, 600_000, 'the follower to catch up');
    const catchUpMs = performance.now() - t2;
    sampling = false;
    await sampler;
    await prober;
    const received = logEvent(p, 'snapshot received');
    const incoming = logEvent(p, 'snapshot transfer incoming');
    const transferMs = received && incoming ? Date.parse(String(received['time'])) - Date.parse(String(incoming['time'])) : NaN;
    console.log(
      `(d) InstallSnapshot: ${String(received?.['records'] ?? '?')} records, ${mib(Number(received?.['bytes'] ?? 0))} ` +
        `streamed and installed in ${secs(transferMs)} (first chunk to installed); restart to caught up ${secs(catchUpMs)}`,
    );
    console.log(
      `    peak RSS during the transfer: leader ${mib(peakLeader)} (before: ${mib(leaderRssBefore)}), follower ${mib(peakFollower)} ` +
        `(VmHWM ${mib(await rssBytes(p.child.pid, 'VmHWM'))})`,
    );
    const pct = (xs: number[], q: number): string => {
      const s = [...xs].sort((a, b) => a - b);
      return `${(s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN).toFixed(1)} ms`;
    };
    console.log(
      `    sequential puts through the leader: before ${baseline.length} puts p50 ${pct(baseline, 0.5)} p99 ${pct(baseline, 0.99)}; ` +
        `during the catch-up ${during.length} puts p50 ${pct(during, 0.5)} p99 ${pct(during, 0.99)}`,
    );

    // (e) restart time, with the data and empty.
    await cluster.stopNode(follower);
    const withData = await cluster.restart(follower);
    const started = logEvent(withData, 'started')!;
    // The third node compacted on its own schedule, so its log is longer (up to snapshot-entries + margin).
    const third = cluster.ids.find((id) => id !== leader && id !== follower)!;
    await cluster.stopNode(third);
    const thirdStarted = logEvent(await cluster.restart(third), 'started')!;
    const emptyDir = join(tmp, 'empty-node');
    const empty = new NodeProcess(9, ['--id', '9', '--members', '9=127.0.0.1:0', '--data-dir', emptyDir, '--cluster-id', 'bench-empty']);
    await empty.waitStarted(60_000);
    const startedEmpty = logEvent(empty, 'started')!;
    await empty.stop('SIGTERM', 5_000);
    console.log(
      `(e) restart with ${KEYS} keys (log start ${String(started['snapshotIndex'])}, last index ${String(started['lastIndex'])}): ` +
        `load ${String(started['loadMs'])} ms, start ${String(started['startMs'])} ms; ` +
        `another node (log ${Number(thirdStarted['lastIndex']) - Number(thirdStarted['snapshotIndex'])} entries): ` +
        `load ${String(thirdStarted['loadMs'])} ms, start ${String(thirdStarted['startMs'])} ms; ` +
        `empty node: load ${String(startedEmpty['loadMs'])} ms, start ${String(startedEmpty['startMs'])} ms`,
    );
  } finally {
    await cluster.cleanup();
    await rm(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
