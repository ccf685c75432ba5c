// One seed, start to end: draw the configuration, run the simulator, and report what happened. A
// violation is returned, not thrown, with the trace tail and the command that replays it.

import { SafetyViolation, type CheckName } from './checker.js';
import { createRng } from './random.js';
import { chooseConfig, type ConfigOverrides, type SimConfig } from './sim-config.js';
import { Simulator, type Sabotage, type SimStats } from './simulator.js';
import { DEFAULT_TRACE_TAIL, Trace } from './trace.js';

export interface RunOptions extends ConfigOverrides {
  /** Lines of trace kept for a failure report. */
  readonly traceTail?: number;
  /** Receives every trace line as it happens (verbose replay). */
  readonly traceSink?: (line: string) => void;
  /**
   * Call checkInvariants() after every event on every live node (the default), or only on the node
   * the event touched (faster; misses a node corrupted through an object it shares with another).
   */
  readonly invariantsOnAllNodes?: boolean;
  /** A deliberate storage bug, only for the checker's own tests. */
  readonly sabotage?: Sabotage;
}

export interface SeedViolation {
  readonly check: CheckName;
  readonly message: string;
  readonly nodes: readonly number[];
  readonly index: number | undefined;
  readonly term: number | undefined;
}

export interface SeedResult extends SimStats {
  readonly seed: number;
  readonly config: SimConfig;
  /** Simulated ticks (of a nominal clock) from the start to the end of the run. */
  readonly ticks: number;
  readonly messagesSent: number;
  readonly messagesLost: number;
  readonly messagesBlocked: number;
  readonly messagesDuplicated: number;
  readonly leadersElected: number;
  readonly maxTerm: number;
  /** Persisted writes that replaced a conflicting log suffix. */
  readonly truncations: number;
  /** Highest index any node saw committed. */
  readonly committedIndex: number;
  /** A hash over every traced event: equal for two runs of one seed. */
  readonly traceHash: number;
  readonly violation: SeedViolation | undefined;
  /** The last events of the run (one line each); on a violation, those that led to it. */
  readonly traceTail: readonly string[];
  /** The command that replays this run. */
  readonly replay: string;
}

/** The command that replays `seed` with the same options. */
export function replayCommand(seed: number, options: RunOptions = {}): string {
  const flags = [`--seed ${seed}`];
  if (options.clusterSize !== undefined) flags.push(`--nodes ${options.clusterSize}`);
  if (options.faultTicks !== undefined) flags.push(`--ticks ${options.faultTicks}`);
  if (options.profile !== undefined) flags.push(`--profile ${options.profile}`);
  if (options.sabotage !== undefined) flags.push(`--sabotage ${options.sabotage}`);
  if (options.invariantsOnAllNodes === false) flags.push('--fast-invariants');
  return `npm run sim -- ${flags.join(' ')}`;
}

/** What `options` decide of a seed's configuration. */
export function configOverrides(options: RunOptions): ConfigOverrides {
  // A sabotaged run sends commits at once, as the runs that showed the checker catching it did.
  return options.sabotage !== undefined ? { commitDeferUnits: 0, ...options } : options;
}

export function runSeed(seed: number, options: RunOptions = {}): SeedResult {
  const rng = createRng(seed);
  const config = chooseConfig(seed, rng, configOverrides(options));
  const trace = new Trace(options.traceTail ?? DEFAULT_TRACE_TAIL, options.traceSink);
  const sim = new Simulator(config, rng, trace, {
    invariantsOnAllNodes: options.invariantsOnAllNodes ?? true,
    ...(options.sabotage !== undefined ? { sabotage: options.sabotage } : {}),
  });
  let violation: SeedViolation | undefined;
  try {
    sim.run();
  } catch (err) {
    if (!(err instanceof SafetyViolation)) throw err;
    violation = { check: err.check, message: err.message, nodes: err.nodes, index: err.index, term: err.term };
  }
  const net = sim.network.stats;
  return {
    seed,
    config,
    ...sim.stats,
    ticks: sim.ticks,
    messagesSent: net.sent,
    messagesLost: net.lost,
    messagesBlocked: net.blocked,
    messagesDuplicated: net.duplicated,
    leadersElected: sim.checker.leadersElected,
    maxTerm: sim.checker.maxTerm,
    truncations: sim.checker.truncations,
    committedIndex: sim.checker.committedMax,
    traceHash: trace.hash,
    violation,
    traceTail: trace.lines(),
    replay: replayCommand(seed, options),
  };
}

/** A failure report: the seed, the check, the trace tail and the replay command. */
export function formatFailure(r: SeedResult): string {
  if (r.violation === undefined) return `seed ${r.seed}: ok`;
  const v = r.violation;
  return [
    `seed ${r.seed} violated ${v.check} (${r.config.clusterSize} nodes, profile ${r.config.mix.profile}, at tick ${r.ticks})`,
    `  ${v.message}`,
    `last ${r.traceTail.length} events:`,
    ...r.traceTail.map((l) => `  ${l}`),
    `replay: ${r.replay}`,
  ].join('\n');
}

/** The counters of a run in one line. */
export function formatSummary(r: SeedResult): string {
  return (
    `seed ${r.seed}: ${r.violation ? `VIOLATION ${r.violation.check}` : 'ok'}; ${r.steps} events, ${r.ticks} ticks; ` +
    `messages sent=${r.messagesSent} delivered=${r.messagesDelivered} lost=${r.messagesLost} blocked=${r.messagesBlocked} ` +
    `duplicated=${r.messagesDuplicated} to-down-node=${r.messagesToCrashed}; crashes=${r.crashes} (in Ready ${r.crashesInReady}) ` +
    `restarts=${r.restarts} partitions=${r.partitions} campaigns=${r.campaigns}; proposals: ${r.proposedEntries} entries accepted, ` +
    `${r.notLeader} not-leader, ${r.limited} limited; reads: ${r.readsRequested} asked, ${r.readsAnswered} answered, ` +
    `${r.readsNotLeader} not-leader; committed index ${r.committedIndex}; leaders ${r.leadersElected}, ` +
    `max term ${r.maxTerm}; log truncations ${r.truncations}; snapshots: ${r.compactions} compactions, ` +
    `${r.snapshotTransfers} transfers (${r.snapshotTransfersFailed} failed), ${r.snapshotsInstalled} installed, ${r.crashesDuringInstall} crashes during an install; ` +
    (r.livenessBoundTicks === 0
      ? 'liveness phase not reached'
      : `liveness: leader after ${r.livenessLeaderTicks ?? '-'} ticks, applied everywhere after ${r.livenessTicks ?? '-'} ticks ` +
        `(bound ${r.livenessBoundTicks} ticks, backlog ${r.livenessBacklogEntries} entries)`)
  );
}
