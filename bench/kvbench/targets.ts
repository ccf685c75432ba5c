// The systems kvbench drives, behind one small interface, both over @grpc/grpc-js: raftkv through
// the project's own client library (src/client/), etcd through its v3 gRPC API (bench/proto/etcd-kv.proto).
//
// Fairness rules, the same for both:
// - Every call goes to the leader: found once at open (raftkv: the client library also follows a
//   leader change; etcd: the endpoint whose member id is the leader's, fixed for the run).
// - One round trip per operation; a deadline of CALL_DEADLINE_MS per call.
// - cas is optimistic concurrency on the key's last-modification index, which both systems expose
//   and compare natively, so it is one conditional write on both (no read first):
//     raftkv: compareAndSwap(key, { expectedModIndex: m }, value)  — or { expectAbsent: true }
//     etcd:   Txn(compare: [MOD(key) == m], success: [Put(key, value)], failure: [Range(key)])
//             — or compare CREATE(key) == 0, i.e. the key does not exist
//   where m is the key's mod index (raftkv modIndex, etcd mod_revision) as this worker last saw it:
//   from its own put, get or cas answers (a failed cas returns the current one on both systems). A
//   key the worker has not seen is expected absent. Success therefore depends on contention: two
//   workers writing one key make each other's next cas on it fail once.
// - Reads: linearizable → raftkv LINEARIZABLE (ReadIndex), etcd Range serializable=false;
//   stale → raftkv STALE, etcd serializable=true; lease → raftkv LEASE, etcd has no lease read and
//   serves it linearizable (see consistencyServed).

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { KvClient, KvError } from '../../src/client/index.js';
import type { ReadConsistency } from './workload.js';

export interface TargetSpec {
  readonly system: 'raftkv' | 'etcd';
  /** host:port of the nodes' client endpoints. */
  readonly endpoints: readonly string[];
  /** Server processes whose CPU time is measured (same machine only). */
  readonly serverPids?: readonly number[];
  /** A name for reports. */
  readonly label?: string;
}

/** One worker's client. A worker has at most one call in flight on it. */
export interface TargetClient {
  put(key: Buffer, value: Buffer): Promise<void>;
  /** Resolves to whether the key was found. */
  get(key: Buffer, consistency: ReadConsistency): Promise<boolean>;
  /** Resolves to whether the conditional write succeeded (see the file comment). */
  cas(key: Buffer, value: Buffer): Promise<boolean>;
  close(): void;
}

export interface Target {
  client(worker: number): TargetClient;
  close(): void;
  /** Where the calls go, for reports: e.g. "etcd leader 127.0.0.1:2379 (member 8e9e05c52164694d)". */
  readonly description: string;
}

/** A failed operation; `code` is the raftkv code (KvError.code) or the gRPC status name. */
export class BenchOpError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BenchOpError';
    this.code = code;
  }
}

/** Deadline of every call, in ms. */
export const CALL_DEADLINE_MS = 10_000;
/** Limit: keys whose mod index a worker remembers for cas (oldest forgotten first). */
export const MAX_TRACKED_KEYS = 65_536;

/** The consistency the system actually serves for the one asked. */
export function consistencyServed(system: TargetSpec['system'], asked: ReadConsistency): string {
  if (system === 'etcd' && asked === 'lease') return 'linearizable (etcd has no lease read)';
  return asked;
}

export async function openTarget(spec: TargetSpec): Promise<Target> {
  if (spec.endpoints.length === 0) throw new RangeError('target: at least one endpoint is required');
  return spec.system === 'raftkv' ? openRaftkv(spec) : openEtcd(spec);
}

/** The last mod index seen per key, bounded (FIFO eviction). Values are kept as the wire gives them. */
class ModIndexes<T> {
  private readonly map = new Map<string, T>();
  get(key: Buffer): T | undefined {
    return this.map.get(key.toString('latin1'));
  }
  set(key: Buffer, mod: T | undefined): void {
    const k = key.toString('latin1');
    if (mod === undefined) {
      this.map.delete(k);
      return;
    }
    if (!this.map.has(k) && this.map.size >= MAX_TRACKED_KEYS) {
      const oldest = this.map.keys().next();
      if (oldest.done !== true) this.map.delete(oldest.value);
    }
    this.map.set(k, mod);
  }
}

// ---- raftkv -------------------------------------------------------------------------------------

function benchErrorOfKv(e: unknown): BenchOpError {
  if (e instanceof BenchOpError) return e;
  if (e instanceof KvError) return new BenchOpError(e.code, e.message, { cause: e });
  return new BenchOpError('INTERNAL', (e as Error)?.message ?? String(e), { cause: e });
}

async function openRaftkv(spec: TargetSpec): Promise<Target> {
  // Find the leader once, and list it first: every worker then starts at the leader, and STALE
  // reads (served by the first endpoint, not the leader) are served there too, as on etcd.
  const probe = new KvClient({ endpoints: spec.endpoints, timeoutMs: CALL_DEADLINE_MS });
  let leaderAddress: string;
  try {
    leaderAddress = (await probe.leader()).address;
  } catch (e) {
    throw benchErrorOfKv(e);
  } finally {
    probe.close();
  }
  const endpoints = spec.endpoints.includes(leaderAddress) ? [leaderAddress, ...spec.endpoints.filter((e) => e !== leaderAddress)] : [...spec.endpoints];
  const clients = new Set<KvClient>();
  return {
    description: `raftkv leader ${leaderAddress} (endpoints ${endpoints.join(',')})`,
    client(): TargetClient {
      // One client per worker: its own write session (a KvClient runs its writes one at a time).
      const kv = new KvClient({ endpoints, timeoutMs: CALL_DEADLINE_MS });
      clients.add(kv);
      const mods = new ModIndexes<number>();
      return {
        async put(key, value) {
          try {
            const r = await kv.put(key, value);
            mods.set(key, r.header.index);
          } catch (e) {
            throw benchErrorOfKv(e);
          }
        },
        async get(key, consistency) {
          try {
            const r = await kv.get(key, { consistency });
            mods.set(key, r.kv?.modIndex);
            return r.found;
          } catch (e) {
            throw benchErrorOfKv(e);
          }
        },
        async cas(key, value) {
          const known = mods.get(key);
          try {
            const r = await kv.compareAndSwap(key, known === undefined ? { expectAbsent: true } : { expectedModIndex: known }, value);
            mods.set(key, r.succeeded ? (r.current?.modIndex ?? r.header.index) : r.current?.modIndex);
            return r.succeeded;
          } catch (e) {
            throw benchErrorOfKv(e);
          }
        },
        close() {
          kv.close();
          clients.delete(kv);
        },
      };
    },
    close() {
      for (const c of clients) c.close();
      clients.clear();
    },
  };
}

// ---- etcd ---------------------------------------------------------------------------------------

/** bench/proto/etcd-kv.proto, from bench/kvbench/ or from the compiled dist/bench/kvbench/ (tsc does not copy it). */
function etcdProtoPath(): string {
  const candidates = ['../proto/etcd-kv.proto', '../../../bench/proto/etcd-kv.proto'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`bench/proto/etcd-kv.proto not found; looked at ${candidates.join(', ')}`);
  return found;
}

let etcdServices: { KV: grpc.ServiceClientConstructor; Maintenance: grpc.ServiceClientConstructor } | undefined;

function loadEtcdServices(): NonNullable<typeof etcdServices> {
  if (etcdServices === undefined) {
    // int64/uint64 as decimal strings: member ids use all 64 bits, and revisions pass through as is.
    const def = protoLoader.loadSync(etcdProtoPath(), { keepCase: true, longs: String, enums: String, bytes: Buffer, defaults: true, oneofs: true });
    const pkg = (grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: Record<string, grpc.ServiceClientConstructor> }).etcdserverpb;
    etcdServices = { KV: pkg['KV']!, Maintenance: pkg['Maintenance']! };
  }
  return etcdServices;
}

interface EtcdHeader {
  readonly member_id: string;
  readonly revision: string;
}
interface EtcdKeyValue {
  readonly mod_revision: string;
}
interface EtcdRangeResponse {
  readonly header: EtcdHeader | null;
  readonly kvs: readonly EtcdKeyValue[];
}
interface EtcdPutResponse {
  readonly header: EtcdHeader | null;
}
interface EtcdTxnResponse {
  readonly header: EtcdHeader | null;
  readonly succeeded: boolean;
  readonly responses: readonly { readonly response_range?: EtcdRangeResponse | null }[];
}
interface EtcdStatusResponse {
  readonly header: EtcdHeader | null;
  readonly leader: string;
  readonly version: string;
}

type Unary = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => grpc.ClientUnaryCall;

function unary<Res>(client: grpc.Client, method: string, req: unknown): Promise<Res> {
  const fn = (client as unknown as Record<string, Unary>)[method]!;
  return new Promise<Res>((resolve, reject) => {
    fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + CALL_DEADLINE_MS }, (err, res) => {
      if (err !== null) reject(benchErrorOfGrpc(err));
      else resolve(res as Res);
    });
  });
}

function benchErrorOfGrpc(err: grpc.ServiceError): BenchOpError {
  const code = grpc.status[err.code] ?? 'UNKNOWN';
  return new BenchOpError(code, (err.details || err.message).replace(/\s*Resolution note:\s*$/, ''), { cause: err });
}

async function openEtcd(spec: TargetSpec): Promise<Target> {
  const { KV, Maintenance } = loadEtcdServices();
  // channelz off, as raftkv's KvClient has it: the same per-call client work on both sides.
  const kvs = spec.endpoints.map((ep) => new KV(ep, grpc.credentials.createInsecure(), { 'grpc.enable_channelz': 0 }));
  const closeAll = (): void => {
    for (const c of kvs) c.close();
  };
  // The leader: ask every endpoint; the one whose own member id is the leader's serves the run.
  const statuses = await Promise.allSettled(
    kvs.map((kv, i) => {
      const m = new Maintenance(spec.endpoints[i]!, grpc.credentials.createInsecure(), { channelOverride: kv.getChannel() });
      return unary<EtcdStatusResponse>(m, 'Status', {});
    }),
  );
  const answered = statuses.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  if (answered.length === 0) {
    closeAll();
    const first = statuses[0];
    throw first?.status === 'rejected' && first.reason instanceof BenchOpError ? first.reason : new BenchOpError('UNAVAILABLE', 'no etcd endpoint answered Status');
  }
  const leaderId = answered.find((s) => s.leader !== '0')?.leader ?? '0';
  let at = statuses.findIndex((s) => s.status === 'fulfilled' && s.value.header?.member_id === leaderId);
  // The leader is not among the endpoints (or unknown): use the first that answered; it forwards.
  if (at < 0) at = statuses.findIndex((s) => s.status === 'fulfilled');
  const kv = kvs[at]!;
  const endpoint = spec.endpoints[at]!;
  const isLeader = statuses[at]?.status === 'fulfilled' && (statuses[at] as PromiseFulfilledResult<EtcdStatusResponse>).value.header?.member_id === leaderId;
  const leaderHex = BigInt(leaderId).toString(16);

  return {
    description: isLeader ? `etcd leader ${endpoint} (member ${leaderHex})` : `etcd ${endpoint} (not the leader; leader member ${leaderHex} is not among the endpoints)`,
    client(): TargetClient {
      const mods = new ModIndexes<string>();
      return {
        async put(key, value) {
          const r = await unary<EtcdPutResponse>(kv, 'Put', { key, value });
          mods.set(key, r.header?.revision);
        },
        async get(key, consistency) {
          const r = await unary<EtcdRangeResponse>(kv, 'Range', { key, serializable: consistency === 'stale' });
          const found = r.kvs[0];
          mods.set(key, found?.mod_revision);
          return found !== undefined;
        },
        async cas(key, value) {
          const known = mods.get(key);
          const compare =
            known === undefined
              ? { result: 'EQUAL', target: 'CREATE', key, create_revision: '0' }
              : { result: 'EQUAL', target: 'MOD', key, mod_revision: known };
          const r = await unary<EtcdTxnResponse>(kv, 'Txn', {
            compare: [compare],
            success: [{ request_put: { key, value } }],
            failure: [{ request_range: { key } }],
          });
          // Success: the put's revision is the key's new mod revision. Failure: the key as it is.
          mods.set(key, r.succeeded ? r.header?.revision : r.responses[0]?.response_range?.kvs[0]?.mod_revision);
          return r.succeeded;
        },
        close() {
          // The channel is shared by every worker; Target.close() closes it.
        },
      };
    },
    close: closeAll,
  };
}
