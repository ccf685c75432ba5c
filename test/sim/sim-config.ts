// What one seed decides before the run starts: the cluster, the Raft settings and the fault mix.
// Seeds differ in which faults they inject at all, not only in when (TigerBeetle's VOPR "swarm"
// testing): a seed with only partitions finds bugs that heavy loss would hide, and the reverse.

import type { NetworkFaults, PartitionKind } from './network.js';
import { PARTITION_KINDS } from './network.js';
import { leaseDurationTicks } from '../../src/raft/raft.js';
import { chance, createRng, intBetween, pick, type SimRng } from './random.js';

/** Time units per tick of a node with a nominal clock. */
export const TICK_PERIOD_UNITS = 10;

export type Profile = 'calm' | 'lossy' | 'partitions' | 'crashes' | 'chaos' | 'leader-churn';

/** Profiles with weights: a profile listed twice is drawn twice as often. */
export const PROFILES: readonly Profile[] = [
  'calm', 'lossy', 'lossy', 'partitions', 'partitions', 'crashes', 'crashes', 'chaos', 'chaos', 'chaos', 'leader-churn', 'leader-churn',
];

export interface FaultMix {
  readonly profile: Profile;
  readonly network: NetworkFaults;
  /** Random crashes per 100 ticks, over the whole cluster. */
  readonly crashesPer100Ticks: number;
  readonly meanDowntimeTicks: number;
  /**
   * Probability of a crash at each of the three crash points of a Ready that writes something:
   * before persisting, after persisting (before the acknowledgements leave), after applying (before
   * advance).
   */
  readonly crashInReadyProbability: number;
  readonly partitionsPer100Ticks: number;
  readonly meanPartitionTicks: number;
  /**
   * Probability that a node that has just become leader is, within two ticks, isolated from every
   * other node (for `meanLeaderIsolationTicks` on average) or crashed. Leaders cut off right after
   * their election leave uncommitted entries of their term behind: the raw material of Figure 8.
   */
  readonly leaderFaultProbability: number;
  readonly meanLeaderIsolationTicks: number;
  readonly partitionKinds: readonly PartitionKind[];
  /** Spontaneous campaign() calls per 100 ticks, on a random live node. */
  readonly campaignsPer100Ticks: number;
}

/** When nodes take snapshots and compact their logs (§7), and how transfers fail. */
export interface SnapshotPolicy {
  /** A node compacts once its log holds this many applied entries past the margin; 0: never. */
  readonly everyEntries: number;
  /** Applied entries kept in the log behind a compaction, for followers that lag a little. */
  readonly marginEntries: number;
  /** Compactions at random moments on random live nodes, per 100 ticks (to a random applied index). */
  readonly randomPer100Ticks: number;
  /** Probability that a follower crashes while installing a received snapshot, before it is written. */
  readonly crashInInstallProbability: number;
}

export interface SimConfig {
  readonly seed: number;
  readonly clusterSize: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly maxAppendBytes: number | undefined;
  readonly maxInflightMessages: number | undefined;
  readonly maxUncommittedBytes: number | undefined;
  /** The clock-rate drift bound the leader lease is computed for (see leaseDurationTicks). */
  readonly assumedClockDrift: number;
  /** The real bound: each node's clock runs at a rate drawn from [1 - d, 1 + d]. */
  readonly clockDrift: number;
  /** Leader lease length in ticks; 0 when check-quorum is off (no leases then). */
  readonly leaseTicks: number;
  /**
   * 0: a leader sends a new commit index at once. Otherwise it holds it back from followers with no
   * new entries (deferCommitBroadcast) and sends it this many time units after it was first held
   * back (flushCommit), as the runtime does after commitDeferMs.
   */
  readonly commitDeferUnits: number;
  /** Length of the fault phase; the liveness phase follows it. */
  readonly faultTicks: number;
  /** Client proposal events per 100 ticks; each proposes 1 to 3 payloads. */
  readonly proposalsPer100Ticks: number;
  /** Linearizable read requests (readIndex) per 100 ticks, on random live nodes. */
  readonly readsPer100Ticks: number;
  readonly maxPayloadBytes: number;
  readonly mix: FaultMix;
  readonly snapshot: SnapshotPolicy;
}

export interface ConfigOverrides {
  readonly clusterSize?: number;
  readonly faultTicks?: number;
  readonly profile?: Profile;
  /** 0: the leader sends every commit index at once. Default: drawn per seed (SimConfig.commitDeferUnits). */
  readonly commitDeferUnits?: number;
}

const NO_NETWORK_FAULTS = { lossRate: 0, duplicateRate: 0 } as const;

/** Draws the whole configuration of a run from `rng` (the seed's generator), first thing. */
export function chooseConfig(seed: number, rng: SimRng, overrides: ConfigOverrides = {}): SimConfig {
  const clusterSize = overrides.clusterSize ?? pick(rng, [3, 5]);
  const electionTimeoutTicks = intBetween(rng, 6, 14);
  const heartbeatIntervalTicks = intBetween(rng, 1, Math.min(3, electionTimeoutTicks - 1));
  const preVote = chance(rng, 0.8);
  const checkQuorum = chance(rng, 0.8);
  const maxAppendBytes = chance(rng, 0.4) ? intBetween(rng, 1, 64) : undefined;
  const maxInflightMessages = chance(rng, 0.5) ? intBetween(rng, 1, 8) : undefined;
  const maxUncommittedBytes = chance(rng, 0.25) ? intBetween(rng, 32, 512) : undefined;
  const faultTicks = overrides.faultTicks ?? intBetween(rng, 300, 500);
  const proposalsPer100Ticks = pick(rng, [5, 20, 60]);
  const maxPayloadBytes = pick(rng, [16, 64]);
  const readsPer100Ticks = pick(rng, [0, 10, 40]);

  const profile = overrides.profile ?? pick(rng, PROFILES);
  // Keep a round trip well under the election timeout, so the healed cluster can elect a leader.
  const maxDelayCap = Math.floor((electionTimeoutTicks * TICK_PERIOD_UNITS) / 3);
  const delays = {
    minDelayUnits: 1,
    maxDelayUnits: Math.min(maxDelayCap, pick(rng, [5, 15, 30, 50])),
  };
  const lossy = { lossRate: pick(rng, [0.01, 0.05, 0.15, 0.3]), duplicateRate: pick(rng, [0, 0.02, 0.1]) };
  const crashes = {
    crashesPer100Ticks: pick(rng, [0.5, 1, 3]),
    meanDowntimeTicks: pick(rng, [5, 20, 60]),
    crashInReadyProbability: pick(rng, [0, 0.001, 0.005, 0.02]),
  };
  const noCrashes = { crashesPer100Ticks: 0, meanDowntimeTicks: 0, crashInReadyProbability: 0 };
  const partitions = {
    partitionsPer100Ticks: pick(rng, [0.5, 1, 3]),
    meanPartitionTicks: pick(rng, [10, 30, 80]),
    partitionKinds: somePartitionKinds(rng),
  };
  const noPartitions = { partitionsPer100Ticks: 0, meanPartitionTicks: 0, partitionKinds: [] };
  const campaignsPer100Ticks = pick(rng, [0, 0, 0.5, 2]);
  // Drawn after everything above, so adding them did not change what earlier draws decide.
  const leaderFaults = {
    leaderFaultProbability: pick(rng, [0.3, 0.6, 0.9]),
    meanLeaderIsolationTicks: pick(rng, [5, 15, 40]),
  };
  const noLeaderFaults = { leaderFaultProbability: 0, meanLeaderIsolationTicks: 0 };
  const churnAppendBytes = intBetween(rng, 1, 16);
  const assumedClockDrift = pick(rng, [0.05, 0.1, 0.2]);
  // Within the bound: what leases are proven against. test/raft/lease.test.ts shows that drift
  // beyond it is what breaks them.
  const clockDrift = chance(rng, 0.3) ? 0 : rng.float() * assumedClockDrift;

  // Drawn last, for the same reason. Most seeds compact, often aggressively, so followers that were
  // down or cut off fall behind the compaction point and need a snapshot.
  const snapshotsOn = chance(rng, 0.75);
  const snapshot: SnapshotPolicy = {
    everyEntries: snapshotsOn ? pick(rng, [3, 8, 20, 60]) : 0,
    marginEntries: pick(rng, [0, 0, 2, 10]),
    randomPer100Ticks: snapshotsOn ? pick(rng, [0, 2, 10]) : 0,
    crashInInstallProbability: pick(rng, [0, 0.1, 0.3]),
  };

  // From a generator of its own, so the seed's other draws are what they were before this option, and
  // a seed that sends commits at once runs as it did then. 1, 5 or 20 units (a tick is 10): from well
  // within a heartbeat interval to beyond one.
  const own = createRng((seed ^ 0x5bd1e995) >>> 0);
  const commitDeferUnits = overrides.commitDeferUnits ?? (chance(own, 0.5) ? pick(own, [1, 5, 2 * TICK_PERIOD_UNITS]) : 0);

  let mix: FaultMix;
  switch (profile) {
    case 'calm':
      mix = { profile, network: { ...NO_NETWORK_FAULTS, ...delays }, ...noCrashes, ...noPartitions, campaignsPer100Ticks, ...noLeaderFaults };
      break;
    case 'lossy':
      mix = { profile, network: { ...lossy, ...delays }, ...noCrashes, ...noPartitions, campaignsPer100Ticks: 0, ...noLeaderFaults };
      break;
    case 'partitions':
      mix = { profile, network: { ...NO_NETWORK_FAULTS, ...delays }, ...noCrashes, ...partitions, campaignsPer100Ticks: 0, ...noLeaderFaults };
      break;
    case 'crashes':
      mix = { profile, network: { ...NO_NETWORK_FAULTS, ...delays }, ...crashes, ...noPartitions, campaignsPer100Ticks: 0, ...noLeaderFaults };
      break;
    case 'chaos':
      mix = { profile, network: { ...lossy, ...delays }, ...crashes, ...partitions, campaignsPer100Ticks, ...leaderFaults, leaderFaultProbability: 0.1 };
      break;
    case 'leader-churn':
      // New leaders are cut off or crash soon after election, appends carry one entry or a few, and
      // messages overtake each other: old-term entries reach a majority before the new no-op does.
      mix = {
        profile,
        network: { lossRate: pick(rng, [0, 0.05]), duplicateRate: 0, ...delays },
        ...crashes,
        crashesPer100Ticks: 0,
        ...partitions,
        campaignsPer100Ticks,
        ...leaderFaults,
      };
      break;
  }
  return {
    seed,
    clusterSize,
    electionTimeoutTicks,
    heartbeatIntervalTicks,
    preVote,
    checkQuorum,
    maxAppendBytes: profile === 'leader-churn' ? churnAppendBytes : maxAppendBytes,
    maxInflightMessages,
    maxUncommittedBytes,
    assumedClockDrift,
    clockDrift,
    leaseTicks: checkQuorum ? leaseDurationTicks(electionTimeoutTicks, assumedClockDrift) : 0,
    faultTicks,
    proposalsPer100Ticks,
    readsPer100Ticks,
    maxPayloadBytes,
    mix,
    snapshot: {
      ...snapshot,
      // Crashes during an install belong to the profiles that crash.
      crashInInstallProbability: mix.crashesPer100Ticks > 0 ? snapshot.crashInInstallProbability : 0,
    },
    commitDeferUnits,
  };
}

function somePartitionKinds(rng: SimRng): PartitionKind[] {
  const kinds = PARTITION_KINDS.filter(() => chance(rng, 0.6));
  return kinds.length > 0 ? kinds : [pick(rng, PARTITION_KINDS)];
}

/** The configuration in a few lines, for the verbose replay. */
export function describeConfig(c: SimConfig): string {
  const m = c.mix;
  const n = m.network;
  const opt = (v: number | undefined): string => (v === undefined ? 'default' : String(v));
  return [
    `seed ${c.seed}: ${c.clusterSize} nodes, profile ${m.profile}, fault phase ${c.faultTicks} ticks`,
    `  raft: electionTimeoutTicks=${c.electionTimeoutTicks} heartbeatIntervalTicks=${c.heartbeatIntervalTicks} ` +
      `preVote=${c.preVote} checkQuorum=${c.checkQuorum} maxAppendBytes=${opt(c.maxAppendBytes)} ` +
      `maxInflightMessages=${opt(c.maxInflightMessages)} maxUncommittedBytes=${opt(c.maxUncommittedBytes)} leaseTicks=${c.leaseTicks} ` +
      `commit ${c.commitDeferUnits > 0 ? `deferred up to ${c.commitDeferUnits} units` : 'sent at once'}`,
    `  clocks: rates within ±${c.clockDrift.toFixed(3)} (leases assume ±${c.assumedClockDrift})`,
    `  network: loss=${n.lossRate} duplicate=${n.duplicateRate} delay=${n.minDelayUnits}..${n.maxDelayUnits} units (tick=${TICK_PERIOD_UNITS})`,
    `  crashes: ${m.crashesPer100Ticks}/100 ticks, mean downtime ${m.meanDowntimeTicks} ticks, in-Ready crash p=${m.crashInReadyProbability}`,
    `  partitions: ${m.partitionsPer100Ticks}/100 ticks, mean ${m.meanPartitionTicks} ticks, kinds [${m.partitionKinds.join(', ')}]`,
    `  leader faults: p=${m.leaderFaultProbability} after each election, mean isolation ${m.meanLeaderIsolationTicks} ticks`,
    c.snapshot.everyEntries > 0
      ? `  snapshots: every ${c.snapshot.everyEntries} entries, margin ${c.snapshot.marginEntries}, random ${c.snapshot.randomPer100Ticks}/100 ticks, crash in install p=${c.snapshot.crashInInstallProbability}`
      : '  snapshots: off',
    `  clients: ${c.proposalsPer100Ticks} proposals/100 ticks, payload <= ${c.maxPayloadBytes} bytes; ${c.readsPer100Ticks} reads/100 ticks; campaigns ${m.campaignsPer100Ticks}/100 ticks`,
  ].join('\n');
}
