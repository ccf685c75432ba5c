// FaultInjection.SetClockRate (proto/fault.proto) on an in-process gRPC server bound to port 0: a rate
// that is not finite, > 0 and <= MAX_CLOCK_RATE is refused with INVALID_ARGUMENT naming the field, and
// never reaches the node; a good one does. (The wiring into a real kvnode is checked by the cluster
// script's `clock` test.)

import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addFaultService, faultServiceDefinition, MAX_CLOCK_RATE } from '../../src/server/fault-service.js';
import { MAX_CLOCK_RATE as RUNTIME_MAX_CLOCK_RATE } from '../../src/node/raft-runtime.js';
import { isServiceError, raftkvCode } from '../support/process-cluster.js';

type UnaryFn = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;

let server: grpc.Server;
let client: grpc.Client;
/** Rates the service handed to the node. */
const rates: number[] = [];

beforeAll(async () => {
  server = new grpc.Server();
  addFaultService(server, () => undefined, (rate) => void rates.push(rate));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const Ctor = grpc.makeGenericClientConstructor(faultServiceDefinition, 'FaultInjection');
  client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

function setClockRate(req: object): Promise<unknown> {
  const fn = (client as unknown as { SetClockRate: UnaryFn }).SetClockRate;
  return new Promise((resolve, reject) =>
    fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

describe('FaultInjection.SetClockRate', () => {
  it('the service and the runtime agree on the fastest rate', () => {
    expect(MAX_CLOCK_RATE).toBe(RUNTIME_MAX_CLOCK_RATE);
  });

  it.each([
    ['0 (also what an unset field decodes to)', {}],
    ['0', { rate: 0 }],
    ['a negative rate', { rate: -1 }],
    ['NaN', { rate: Number.NaN }],
    ['Infinity', { rate: Number.POSITIVE_INFINITY }],
    ['over MAX_CLOCK_RATE', { rate: MAX_CLOCK_RATE + 0.5 }],
  ])('refuses %s with INVALID_ARGUMENT naming the field', async (_name, req) => {
    let caught: unknown;
    try {
      await setClockRate(req);
    } catch (err) {
      caught = err;
    }
    if (!isServiceError(caught)) throw new Error(`expected a gRPC error, got ${String(caught)}`);
    expect(caught.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(raftkvCode(caught)).toBe('INVALID_ARGUMENT');
    expect(caught.details).toContain(`rate: must be a number > 0 and <= ${MAX_CLOCK_RATE}`);
    expect(rates).toEqual([]);
  });

  it('hands a good rate to the node', async () => {
    await setClockRate({ rate: 1.05 });
    await setClockRate({ rate: MAX_CLOCK_RATE });
    await setClockRate({ rate: 1 });
    expect(rates).toEqual([1.05, MAX_CLOCK_RATE, 1]);
  });
});
