// A scripted stand-in for a node's Maintenance service: a real gRPC server on a loopback port with the
// real service (src/server/maintenance-service.ts) over handlers a test gives, and a scripted snapshot
// whose stream can be cut, corrupted, truncated or stalled, recording what the service pulled and
// whether it released the snapshot.

import * as grpc from '@grpc/grpc-js';
import { RaftKvError } from '../../src/errors.js';
import { addMaintenanceService, type CreatedSnapshot, type MaintenanceHandlers, type MaintenanceServiceOptions, type OpenedSnapshot } from '../../src/server/maintenance-service.js';
import { split } from '../cli/snapshot-fixture.js';

export class FakeMaintenanceNode {
  private readonly server = new grpc.Server();
  address = '';

  private constructor(h: MaintenanceHandlers, opts: MaintenanceServiceOptions) {
    addMaintenanceService(this.server, h, opts);
  }

  static async start(h: Partial<MaintenanceHandlers> & { nodeId?: number }, opts: MaintenanceServiceOptions = {}): Promise<FakeMaintenanceNode> {
    const handlers: MaintenanceHandlers = {
      nodeId: h.nodeId ?? 7,
      createSnapshot: h.createSnapshot ?? (() => Promise.reject(new RaftKvError('INTERNAL', 'createSnapshot not scripted'))),
      openSnapshot: h.openSnapshot ?? (() => Promise.reject(new RaftKvError('INTERNAL', 'openSnapshot not scripted'))),
    };
    const node = new FakeMaintenanceNode(handlers, opts);
    const port = await new Promise<number>((resolve, reject) =>
      node.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    node.address = `127.0.0.1:${port}`;
    return node;
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
  }
}

export interface ScriptedSnapshotOptions {
  readonly index: number;
  readonly term: number;
  readonly approximateBytes?: number;
  /** Throw this after yielding that many chunks (a store failing midway). */
  readonly failAfter?: { readonly chunks: number; readonly error: Error };
  /** Stop (without error) after that many chunks: a stream cut short. */
  readonly endAfter?: number;
  /** Never yield more after that many chunks (until the snapshot is closed). */
  readonly hangAfter?: number;
}

/** What the service did with a scripted snapshot. */
export interface SnapshotProbe {
  /** Chunks the service pulled from the snapshot. */
  pulled: number;
  /** The chunk size it asked for. */
  chunkBytes: number | undefined;
  /** The generator's finally ran (the store's iterator would be released). */
  finished: boolean;
  /** close() calls. */
  closed: number;
}

/**
 * An openSnapshot() handler serving `bytes` in chunks of the size the request asks for, scripted to
 * fail, end early or hang; `probe` records what happened.
 */
export function scriptedSnapshot(bytes: Uint8Array, o: ScriptedSnapshotOptions): { openSnapshot: () => Promise<OpenedSnapshot>; probe: SnapshotProbe } {
  const probe: SnapshotProbe = { pulled: 0, chunkBytes: undefined, finished: false, closed: 0 };
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const openSnapshot = async (): Promise<OpenedSnapshot> => ({
    header: { clusterId: 'raftkv', index: o.index, term: o.term, sessionClockMs: 0 },
    approximateBytes: o.approximateBytes ?? bytes.length,
    async *chunks(chunkBytes: number): AsyncGenerator<Uint8Array> {
      probe.chunkBytes = chunkBytes;
      const all = split(bytes, chunkBytes);
      for (const at of [o.failAfter?.chunks, o.endAfter, o.hangAfter]) {
        // A script that would never act would let a test pass for the wrong reason.
        if (at !== undefined && at >= all.length) throw new Error(`scriptedSnapshot: only ${all.length} chunks of ${chunkBytes} bytes; cannot act after ${at}`);
      }
      try {
        let n = 0;
        for (const c of all) {
          if (o.failAfter !== undefined && n === o.failAfter.chunks) throw o.failAfter.error;
          if (o.endAfter !== undefined && n === o.endAfter) return;
          if (o.hangAfter !== undefined && n === o.hangAfter) {
            await released;
            return;
          }
          probe.pulled++;
          n++;
          yield c;
        }
      } finally {
        probe.finished = true;
      }
    },
    async close(): Promise<void> {
      probe.closed++;
      release();
    },
  });
  return { openSnapshot, probe };
}

export type { CreatedSnapshot };
