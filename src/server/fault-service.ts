// The test-only FaultInjection service (proto/fault.proto): cuts peer links and skews the tick clock's
// rate at run time. Registered only on nodes started with --enable-fault-injection.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { toServiceError } from './grpc-errors.js';
import { InvalidArgumentError, parseU64 } from './validate.js';

const FAULT_PROTO_PATH: string = (() => {
  const candidates = ['../../proto/fault.proto', '../../../proto/fault.proto'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`proto/fault.proto not found; looked at ${candidates.join(', ')}`);
  return found;
})();

export const faultPackageDefinition = protoLoader.loadSync(FAULT_PROTO_PATH, { keepCase: true, longs: String, defaults: true });
export const faultServiceDefinition = faultPackageDefinition['raftkv.test.v1.FaultInjection'] as grpc.ServiceDefinition;

/** Limit: links in one SetLinks request (a 9-node cluster has 72). */
export const MAX_FAULT_LINKS = 1024;

/** Limit: the fastest clock rate SetClockRate accepts (as RaftRuntime's MAX_CLOCK_RATE). */
export const MAX_CLOCK_RATE = 10;

interface SetLinksRequest {
  blocked: { from: string; to: string }[];
}

interface SetClockRateRequest {
  rate: number;
}

/** The rate of a SetClockRate request, refused unless finite, > 0 and <= MAX_CLOCK_RATE. */
export function checkClockRate(field: string, rate: unknown): number {
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0 || rate > MAX_CLOCK_RATE) {
    throw new InvalidArgumentError(field, `must be a number > 0 and <= ${MAX_CLOCK_RATE} (1 = real time), got ${String(rate)}`);
  }
  return rate;
}

export function addFaultService(
  server: grpc.Server,
  setLinks: (links: Array<[number, number]>) => void,
  setClockRate: (rate: number) => void,
): void {
  server.addService(faultServiceDefinition, {
    SetLinks: (call: grpc.ServerUnaryCall<SetLinksRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      try {
        const blocked = call.request.blocked ?? [];
        if (blocked.length > MAX_FAULT_LINKS) {
          throw new InvalidArgumentError('blocked', `${blocked.length} links, over the limit (limit MAX_FAULT_LINKS=${MAX_FAULT_LINKS})`);
        }
        const links = blocked.map((l, i): [number, number] => [parseU64(`blocked[${i}].from`, l.from), parseU64(`blocked[${i}].to`, l.to)]);
        setLinks(links);
        callback(null, { blocked_count: links.length });
      } catch (err) {
        callback(toServiceError(err, 0, () => undefined));
      }
    },
    SetClockRate: (call: grpc.ServerUnaryCall<SetClockRateRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      try {
        setClockRate(checkClockRate('rate', call.request.rate));
        callback(null, {});
      } catch (err) {
        callback(toServiceError(err, 0, () => undefined));
      }
    },
  });
}
