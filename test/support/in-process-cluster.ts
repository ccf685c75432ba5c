// A cluster of in-process KvNodes on loopback, for client and CLI tests: ports chosen at run time,
// data directories under one fresh temporary folder, fast test timings, quiet logs. stop(id) closes
// one node (a clean stop: pending requests fail with UNAVAILABLE); restart(id) brings it back on the
// same port and data. cleanup() always closes every node and removes the folder.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_NODE_CONFIG, KvNode, type KvNodeConfig } from '../../src/node/kv-node.js';
import { freePorts } from './process-cluster.js';
import { waitFor } from './wait.js';

export interface InProcessClusterOptions {
  readonly size: number;
  /** Overrides of every node's config (limits, timings). */
  readonly config?: Partial<Omit<KvNodeConfig, 'nodeId' | 'members' | 'dataDir'>>;
}

export class InProcessCluster {
  readonly rootDir: string;
  readonly ids: readonly number[];
  /** id → 127.0.0.1:port */
  readonly addresses: ReadonlyMap<number, string>;
  private readonly opts: InProcessClusterOptions;
  private readonly nodes = new Map<number, KvNode>();
  /** Fatal errors of any node (a test should find none). */
  readonly fatalErrors: unknown[] = [];

  private constructor(rootDir: string, ports: readonly number[], opts: InProcessClusterOptions) {
    this.rootDir = rootDir;
    this.opts = opts;
    this.ids = ports.map((_, i) => i + 1);
    this.addresses = new Map(ports.map((p, i) => [i + 1, `127.0.0.1:${p}`]));
  }

  /** Creates and starts every node. */
  static async start(opts: InProcessClusterOptions): Promise<InProcessCluster> {
    const rootDir = await mkdtemp(join(tmpdir(), 'raftkv-inproc-'));
    const c = new InProcessCluster(rootDir, await freePorts(opts.size), opts);
    try {
      await Promise.all(c.ids.map((id) => c.startNode(id)));
    } catch (e) {
      await c.cleanup();
      throw e;
    }
    return c;
  }

  get endpoints(): string[] {
    return [...this.addresses.values()];
  }

  node(id: number): KvNode | undefined {
    return this.nodes.get(id);
  }

  runningIds(): number[] {
    return this.ids.filter((id) => this.nodes.has(id));
  }

  async startNode(id: number): Promise<void> {
    if (this.nodes.has(id)) throw new Error(`node ${id} is already running`);
    const config: KvNodeConfig = {
      ...DEFAULT_NODE_CONFIG,
      // 500-1000 ms election timeouts: the nodes share the test's event loop, so shorter ones
      // risk needless elections on a busy machine.
      tickMs: 20,
      electionTimeoutTicks: 25,
      heartbeatIntervalTicks: 2,
      logLevel: 'error',
      clusterId: 'test',
      ...this.opts.config,
      nodeId: id,
      members: this.addresses as Map<number, string>,
      dataDir: join(this.rootDir, `node-${id}`),
    };
    const node = new KvNode(config, { onFatal: (err) => this.fatalErrors.push(err) });
    await node.start();
    this.nodes.set(id, node);
  }

  /** Closes one node. */
  async stop(id: number): Promise<void> {
    const node = this.nodes.get(id);
    this.nodes.delete(id);
    await node?.close();
  }

  /** Waits until a running node reports itself leader and every running node agrees; returns its id. */
  async waitForLeader(timeoutMs = 10_000): Promise<number> {
    let leader = 0;
    await waitFor(
      () => {
        const statuses = this.runningIds().map((id) => this.nodes.get(id)!.status());
        const l = statuses.find((s) => s.role === 'leader');
        if (l === undefined || !statuses.every((s) => s.leader_id === l.node_id && s.term === l.term)) return false;
        leader = Number(l.node_id);
        return true;
      },
      timeoutMs,
      'a leader agreed on by every running node',
      10,
    );
    return leader;
  }

  async cleanup(): Promise<void> {
    try {
      await Promise.all([...this.nodes.values()].map((n) => n.close()));
      this.nodes.clear();
    } finally {
      await rm(this.rootDir, { recursive: true, force: true });
    }
  }
}
