// Registers the KV service on a gRPC server: every handler gets the request and its deadline, and
// every failure becomes one gRPC status with the raftkv code in the trailing metadata.

import * as grpc from '@grpc/grpc-js';
import { toServiceError } from './grpc-errors.js';
import { kvServiceDefinition } from './kv-proto.js';
import type * as pb from './kv-proto.js';
import { fastMethod, type CallStatus, type FastUnaryMethod } from './unary-fast-path.js';

export interface CallContext {
  /** Wall-clock deadline in ms (the call's own, or the node's default). */
  readonly deadlineMs: number;
  /** The request came from another node forwarding it; do not forward it again. */
  readonly forwarded: boolean;
}

export interface KvHandlers {
  readonly nodeId: number;
  readonly defaultTimeoutMs: number;
  readonly leaderAddress: (id: number) => string | undefined;
  put(req: pb.PutRequest, ctx: CallContext): Promise<pb.PutResponse>;
  get(req: pb.GetRequest, ctx: CallContext): Promise<pb.GetResponse>;
  delete(req: pb.DeleteRequest, ctx: CallContext): Promise<pb.DeleteResponse>;
  range(req: pb.RangeRequest, ctx: CallContext): Promise<pb.RangeResponse>;
  compareAndSwap(req: pb.CompareAndSwapRequest, ctx: CallContext): Promise<pb.CompareAndSwapResponse>;
  status(req: Record<string, never>, ctx: CallContext): Promise<pb.StatusResponse>;
}

/** The metadata key a node sets on a request it forwards to the leader. */
export const METADATA_FORWARDED = 'raftkv-forwarded';

/**
 * A call's context: its deadline is `timeoutMs` from now (at most 10 times the node's default), or
 * the node's default without one.
 */
function contextOf(timeoutMs: number | undefined, forwarded: boolean, defaultTimeoutMs: number): CallContext {
  const now = Date.now();
  const ms = timeoutMs === undefined ? defaultTimeoutMs : Math.min(timeoutMs, 10 * defaultTimeoutMs);
  return { deadlineMs: now + ms, forwarded };
}

/** The ms left to a grpc-js call's deadline, undefined without one. */
function timeoutOf(call: grpc.ServerUnaryCall<unknown, unknown>): number | undefined {
  const d = call.getDeadline();
  if (d instanceof Date) return d.getTime() - Date.now();
  if (typeof d === 'number' && Number.isFinite(d)) return d - Date.now();
  return undefined;
}

type Handler = (req: never, ctx: CallContext) => Promise<unknown>;

/** The KV service's methods, by their names in proto/kv.proto. */
function methodsOf(h: KvHandlers): Record<string, Handler> {
  return {
    Put: h.put.bind(h),
    Get: h.get.bind(h),
    Delete: h.delete.bind(h),
    Range: h.range.bind(h),
    CompareAndSwap: h.compareAndSwap.bind(h),
    Status: h.status.bind(h),
  };
}

/** Registers the KV service with grpc-js's own call handling. */
export function addKvService(server: grpc.Server, h: KvHandlers): void {
  const unary =
    (fn: Handler) =>
    (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>): void => {
      const ctx = contextOf(timeoutOf(call), call.metadata.get(METADATA_FORWARDED).length > 0, h.defaultTimeoutMs);
      fn(call.request as never, ctx).then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err, h.nodeId, h.leaderAddress)),
      );
    };
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, fn] of Object.entries(methodsOf(h))) impl[name] = unary(fn);
  server.addService(kvServiceDefinition, impl);
}

/**
 * The KV service's methods for the unary fast path (unary-fast-path.ts), by path; `statusOf` maps a
 * failure as addKvService's calls do.
 */
export function kvFastMethods(h: KvHandlers): { methods: Map<string, FastUnaryMethod>; statusOf: (err: unknown) => CallStatus } {
  const methods = new Map<string, FastUnaryMethod>();
  for (const [name, fn] of Object.entries(methodsOf(h))) {
    const def = kvServiceDefinition[name]!;
    methods.set(
      def.path,
      fastMethod(def, (request, timeoutMs, headers) => fn(request as never, contextOf(timeoutMs, headers[METADATA_FORWARDED] !== undefined, h.defaultTimeoutMs))),
    );
  }
  const statusOf = (err: unknown): CallStatus => {
    const e = toServiceError(err, h.nodeId, h.leaderAddress);
    return { code: e.code ?? grpc.status.INTERNAL, details: e.details ?? e.message ?? 'INTERNAL', ...(e.metadata ? { metadata: e.metadata } : {}) };
  };
  return { methods, statusOf };
}
