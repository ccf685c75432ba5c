// A scripted stand-in for a raftkv node: a real gRPC server on a loopback port serving the KV
// service, whose every answer comes from a test's `behave` function. It records each call, so tests
// can check where the client sent what, with which session and read options.

import * as grpc from '@grpc/grpc-js';
import { kvServiceDefinition } from '../../src/server/kv-proto.js';

export interface RecordedCall {
  readonly method: string;
  readonly request: Record<string, unknown>;
}

/** A scripted failure: a gRPC status, details, and trailing metadata (e.g. raftkv-code). */
export interface FakeError {
  readonly error: { readonly code: grpc.status; readonly details: string; readonly metadata?: Record<string, string> };
}

/** An answer: a response, a failure, or 'hang' (never answer; the client's deadline ends it). */
export type FakeAnswer = { readonly response: Record<string, unknown> } | FakeError | 'hang';

export type Behavior = (method: string, request: Record<string, unknown>, node: FakeNode) => FakeAnswer | Promise<FakeAnswer>;

export const METHODS = ['Put', 'Get', 'Delete', 'Range', 'CompareAndSwap', 'Status'] as const;

export class FakeNode {
  readonly calls: RecordedCall[] = [];
  /** Calls in progress now, and the most ever at once. */
  inFlight = 0;
  maxInFlight = 0;
  behave: Behavior;
  private readonly server: grpc.Server;
  private readonly hanging: Array<() => void> = [];
  address = '';

  private constructor(behave: Behavior) {
    this.behave = behave;
    this.server = new grpc.Server();
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of METHODS) {
      handlers[method] = (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        this.calls.push({ method, request: call.request });
        this.inFlight++;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        const settle = (fn: () => void): void => {
          this.inFlight--;
          fn();
        };
        Promise.resolve(this.behave(method, call.request, this)).then(
          (answer) => {
            if (answer === 'hang') {
              // Answered only when the server shuts down.
              this.hanging.push(() => settle(() => callback({ code: grpc.status.UNAVAILABLE, details: 'shutting down' })));
              return;
            }
            if ('error' in answer) {
              const md = new grpc.Metadata();
              for (const [k, v] of Object.entries(answer.error.metadata ?? {})) md.set(k, v);
              settle(() => callback({ code: answer.error.code, details: answer.error.details, metadata: md }));
            } else {
              settle(() => callback(null, answer.response));
            }
          },
          (err: unknown) => settle(() => callback({ code: grpc.status.INTERNAL, details: String(err) })),
        );
      };
    }
    this.server.addService(kvServiceDefinition, handlers);
  }

  static async start(behave: Behavior): Promise<FakeNode> {
    const node = new FakeNode(behave);
    const port = await new Promise<number>((resolve, reject) =>
      node.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    node.address = `127.0.0.1:${port}`;
    return node;
  }

  callsOf(method: string): RecordedCall[] {
    return this.calls.filter((c) => c.method === method);
  }

  async stop(): Promise<void> {
    for (const h of this.hanging.splice(0)) h();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}

/** A response header as a node sends it. */
export function header(index: number | string, nodeId: number, leaderId = nodeId, term = 1, consistency = 'CONSISTENCY_UNSPECIFIED'): Record<string, unknown> {
  return { index: String(index), node_id: String(nodeId), term: String(term), leader_id: String(leaderId), consistency, staleness_ms: '0' };
}

/** A raftkv error as a node sends it: the gRPC status its code maps to, and the metadata. */
export function raftkvError(code: string, message: string, extra: Record<string, string> = {}): FakeError {
  const status: Record<string, grpc.status> = {
    NOT_LEADER: grpc.status.UNAVAILABLE,
    NO_QUORUM: grpc.status.UNAVAILABLE,
    UNAVAILABLE: grpc.status.UNAVAILABLE,
    TOO_STALE: grpc.status.UNAVAILABLE,
    TIMEOUT: grpc.status.DEADLINE_EXCEEDED,
    INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
    TOO_MANY_REQUESTS: grpc.status.RESOURCE_EXHAUSTED,
    STALE_SEQUENCE: grpc.status.FAILED_PRECONDITION,
    INTERNAL: grpc.status.INTERNAL,
  };
  return { error: { code: status[code] ?? grpc.status.UNKNOWN, details: `${code}: ${message}`, metadata: { 'raftkv-code': code, 'raftkv-node-id': '9', ...extra } } };
}

/** A free loopback port with nothing listening (bound, read back, closed). */
export async function deadAddress(): Promise<string> {
  const { freePorts } = await import('../support/process-cluster.js');
  const [port] = await freePorts(1);
  return `127.0.0.1:${port}`;
}
