// Node's HTTP/2 session keeps its open streams in a Map: one entry added and one deleted per gRPC
// call. On a long-lived connection that Map's tables form the chain that IntKeyMap's comment
// describes, and every call's objects (the stream, grpc-js's call, the request and the answer) are
// then promoted and left to full GCs. A node serving LEASE reads at 64 clients spent 0.66 and 0.76
// times the server CPU per read with the Map replaced (README, "Where the time goes").
//
// There is no public way to do this. The sessions come from the 'session' event of the HTTP/2
// servers grpc-js keeps in its Server's private `http2Servers` Map (as of grpc-js 1.14); the streams
// Map is the `streams` of the session's state, under its symbol 'state' (as of Node 20). Each step is
// checked; when one does not find what it expects, nothing is changed (NodeListener logs it once).

import { EventEmitter } from 'node:events';
import { types } from 'node:util';
import type * as grpc from '@grpc/grpc-js';
import { IntKeyMap } from './int-key-map.js';

function ownSymbol(o: object, description: string): symbol | undefined {
  const found = Object.getOwnPropertySymbols(o).filter((s) => s.description === description);
  return found.length === 1 ? found[0] : undefined;
}

/**
 * Gives an HTTP/2 session an IntKeyMap for its streams in place of Node's Map, with the streams it
 * has already. Returns whether it did.
 */
export function replaceStreamMap(session: object): boolean {
  const kState = ownSymbol(session, 'state');
  const state: unknown = kState === undefined ? undefined : (session as Record<symbol, unknown>)[kState];
  if (typeof state !== 'object' || state === null || !('streams' in state)) return false;
  const streams = (state as { streams: unknown }).streams;
  // Node's own SafeMap: a Map whose prototype chain is cut off from Map.prototype.
  if (!types.isMap(streams)) return false;
  const replacement = new IntKeyMap<unknown>();
  for (const [id, stream] of Map.prototype.entries.call(streams as Map<unknown, unknown>)) {
    if (typeof id !== 'number') return false;
    replacement.set(id, stream);
  }
  (state as { streams: unknown }).streams = replacement;
  return true;
}

/**
 * The HTTP/2 servers grpc-js keeps for `server` (its connection injectors' included), from its
 * private `http2Servers` Map; undefined when there are none or they are not where expected.
 */
export function grpcHttp2Servers(server: grpc.Server): EventEmitter[] | undefined {
  const servers: unknown = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return undefined;
  const emitters = [...(servers as Map<unknown, unknown>).keys()];
  return emitters.every((e) => e instanceof EventEmitter) ? (emitters as EventEmitter[]) : undefined;
}

/**
 * Calls `onSession` with each HTTP/2 session that the HTTP/2 servers `server` has now (its
 * connection injectors' included) make from now on. Returns false, and does nothing, when grpc-js
 * does not keep them where expected.
 */
export function onGrpcSessions(server: grpc.Server, onSession: (session: object) => void): boolean {
  const emitters = grpcHttp2Servers(server);
  if (emitters === undefined) return false;
  for (const e of emitters) e.on('session', (session: unknown) => typeof session === 'object' && session !== null && onSession(session));
  return true;
}
