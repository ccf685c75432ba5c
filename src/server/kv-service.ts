// Registers the KV service on a gRPC server: every handler gets the request and its deadline, and
// every failure becomes one gRPC status with the raftkv code in the trailing metadata.

import type * as grpc from '@grpc/grpc-js';
import { toServiceError } from './grpc-errors.js';
import { kvServiceDefinition } from './kv-proto.js';
import type * as pb from './kv-proto.js';

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

function deadlineOf(call: grpc.ServerUnaryCall<unknown, unknown>, defaultTimeoutMs: number): number {
  const d = call.getDeadline();
  const fallback = Date.now() + defaultTimeoutMs;
  if (d instanceof Date) return Math.min(d.getTime(), Date.now() + 10 * defaultTimeoutMs);
  if (typeof d === 'number' && Number.isFinite(d)) return Math.min(d, Date.now() + 10 * defaultTimeoutMs);
  return fallback;
}

export function addKvService(server: grpc.Server, h: KvHandlers): void {
  const unary =
    <Req, Res>(fn: (req: Req, ctx: CallContext) => Promise<Res>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void => {
      const ctx: CallContext = {
        deadlineMs: deadlineOf(call as grpc.ServerUnaryCall<unknown, unknown>, h.defaultTimeoutMs),
        forwarded: call.metadata.get('raftkv-forwarded').length > 0,
      };
      fn(call.request, ctx).then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err, h.nodeId, h.leaderAddress)),
      );
    };
  server.addService(kvServiceDefinition, {
    Put: unary(h.put.bind(h)),
    Get: unary(h.get.bind(h)),
    Delete: unary(h.delete.bind(h)),
    Range: unary(h.range.bind(h)),
    CompareAndSwap: unary(h.compareAndSwap.bind(h)),
    Status: unary(h.status.bind(h)),
  });
}
