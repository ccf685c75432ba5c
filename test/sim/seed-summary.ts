// The few numbers of one seed's run that a batch of seeds adds up, small enough to pass between
// worker threads.

import type { CheckName } from './checker.js';
import { formatFailure, type SeedResult } from './run.js';
import type { Profile } from './sim-config.js';

export interface SeedSummary {
  readonly seed: number;
  readonly clusterSize: number;
  readonly profile: Profile;
  readonly steps: number;
  readonly ticks: number;
  readonly messagesSent: number;
  readonly crashes: number;
  readonly partitions: number;
  readonly committedIndex: number;
  readonly leadersElected: number;
  readonly compactions: number;
  readonly snapshotsInstalled: number;
  /** Set on a violation. */
  readonly check?: CheckName;
  /** The full failure report (check, trace tail, replay command). */
  readonly failure?: string;
  readonly replay: string;
}

export function summarize(r: SeedResult): SeedSummary {
  const base = {
    seed: r.seed,
    clusterSize: r.config.clusterSize,
    profile: r.config.mix.profile,
    steps: r.steps,
    ticks: r.ticks,
    messagesSent: r.messagesSent,
    crashes: r.crashes,
    partitions: r.partitions,
    committedIndex: r.committedIndex,
    leadersElected: r.leadersElected,
    compactions: r.compactions,
    snapshotsInstalled: r.snapshotsInstalled,
    replay: r.replay,
  };
  return r.violation === undefined ? base : { ...base, check: r.violation.check, failure: formatFailure(r) };
}

/** Running totals over many seeds. */
export class BatchTotals {
  seeds = 0;
  steps = 0;
  ticks = 0;
  messagesSent = 0;
  crashes = 0;
  partitions = 0;
  committedEntries = 0;
  leadersElected = 0;
  compactions = 0;
  snapshotsInstalled = 0;
  /** Seeds in which some follower installed a snapshot. */
  seedsWithInstall = 0;
  readonly byProfile = new Map<Profile, number>();
  readonly byClusterSize = new Map<number, number>();
  readonly failures: SeedSummary[] = [];

  add(s: SeedSummary): void {
    this.seeds++;
    this.steps += s.steps;
    this.ticks += s.ticks;
    this.messagesSent += s.messagesSent;
    this.crashes += s.crashes;
    this.partitions += s.partitions;
    this.committedEntries += s.committedIndex;
    this.leadersElected += s.leadersElected;
    this.compactions += s.compactions;
    this.snapshotsInstalled += s.snapshotsInstalled;
    if (s.snapshotsInstalled > 0) this.seedsWithInstall++;
    this.byProfile.set(s.profile, (this.byProfile.get(s.profile) ?? 0) + 1);
    this.byClusterSize.set(s.clusterSize, (this.byClusterSize.get(s.clusterSize) ?? 0) + 1);
    if (s.check !== undefined) this.failures.push(s);
  }
}
