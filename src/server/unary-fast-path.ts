// Unary calls answered straight from their HTTP/2 streams, ahead of grpc-js's per-call machinery.
//
// For every call grpc-js builds an intercepting call, a Metadata parsed from the headers, a message
// decoder, a chain of listener objects and callbacks, and a timer for the deadline. A unary method of
// raftkv needs none of it: one request message in, one answer or one status out. A grpc-js server
// that answered every Put at once took 65 µs of CPU per call at 64 clients; the same answers written
// here, from Node's HTTP/2 stream, took 43 µs (this project's 2-core VM, 2026-12-05). On a leader
// that is a sixth of what a put costs.
//
// What it takes: a stream whose :path is one of the given methods, sent with POST, content-type
// application/grpc or application/grpc+proto, no compression (no grpc-encoding, or identity), and a
// well-formed grpc-timeout if any. Everything else goes to grpc-js as before: the other services
// (health, reflection, maintenance, the peers' snapshots), compressed requests (grpc-js decompresses
// them), and headers grpc-js would refuse (it answers them as it always did).
//
// What a client sees is what grpc-js's handling gives it: the answer in one DATA frame and
// grpc-status 0 in trailers, with grpc-js's response headers; a failure as a trailers-only response
// with its metadata, its message percent-encoded as the gRPC spec asks; the message size limits both
// ways, refused with RESOURCE_EXHAUSTED (the details also name the limit). Where it differs, it does
// what the gRPC spec and grpc-go and grpc-java do: a unary call without exactly one request message,
// a malformed message, or a compressed flag on a call without grpc-encoding, is refused with
// INTERNAL (grpc-js answers a missing or second message with UNIMPLEMENTED, and reads a flagged
// message as if it were not compressed). What it leaves out: a server-side timer per deadline. The
// method gets the time left to the call's deadline, counted from the arrival of its headers, and
// bounds its own waits by it (raftkv's answer TIMEOUT, as DEADLINE_EXCEEDED); a client that gives up
// resets the stream, and an answer that comes after that is dropped.
//
// grpc-js keeps its HTTP/2 servers and their 'stream' handler private. installUnaryFastPath checks
// each step (see grpcHttp2Servers) and changes nothing when one is not as expected, or when the
// server uses what the fast path would bypass: interceptors, channelz, a connection idle timeout
// (grpc-js counts a connection's open streams in its own handler).

import type { EventEmitter } from 'node:events';
import type * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { grpcHttp2Servers } from '../transport/http2-stream-map.js';

export interface FastUnaryMethod {
  /** Decodes a request message (without its 5-byte prefix); throws when it is malformed. */
  readonly decode: (message: Buffer) => unknown;
  /** Encodes an answer message (without the prefix). */
  readonly encode: (answer: unknown) => Uint8Array;
  /**
   * Serves one call: `timeoutMs` is the call's grpc-timeout (undefined without one), `headers` its
   * request headers (the custom metadata among them). A rejection becomes the status statusOf gives.
   */
  readonly serve: (request: unknown, timeoutMs: number | undefined, headers: http2.IncomingHttpHeaders) => Promise<unknown>;
}

/** A unary method of a grpc-js service definition, served by `serve` through the fast path. */
export function fastMethod(def: grpc.MethodDefinition<unknown, unknown>, serve: FastUnaryMethod['serve']): FastUnaryMethod {
  return { decode: (message) => def.requestDeserialize(message), encode: (answer) => def.responseSerialize(answer), serve };
}

export interface CallStatus {
  readonly code: grpc.status;
  readonly details: string;
  readonly metadata?: grpc.Metadata;
}

export interface UnaryFastPathOptions {
  /** Limit: bytes of a request message. */
  readonly maxReceiveMessageBytes: number;
  /** Limit: bytes of an answer message. */
  readonly maxSendMessageBytes: number;
  /** The limits' name where users set them, for refusals (e.g. "--max-message-bytes"). */
  readonly limitName: string;
  /** The status for a rejection of a method's `serve`. */
  readonly statusOf: (err: unknown) => CallStatus;
}

/** The bytes before each gRPC message: a compressed flag and a 32-bit big-endian length. */
const PREFIX_BYTES = 5;

const RESPONSE_HEADERS: http2.OutgoingHttpHeaders = Object.freeze({
  ':status': 200,
  'content-type': 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
});
const OK_TRAILERS: http2.OutgoingHttpHeaders = Object.freeze({ 'grpc-status': '0', 'grpc-message': 'OK' });
const WAIT_FOR_TRAILERS: http2.ServerStreamResponseOptions = Object.freeze({ waitForTrailers: true });
const END_STREAM: http2.ServerStreamResponseOptions = Object.freeze({ endStream: true });

/** Headers a failure's metadata cannot set: the status's own, and the response's framing. */
const RESERVED_HEADERS: ReadonlySet<string> = new Set(['content-type', 'te', 'grpc-status', 'grpc-message', 'grpc-encoding', 'grpc-accept-encoding', 'grpc-timeout']);

/** grpc-timeout's units, in ms. */
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };

/** The ms of a grpc-timeout value (1 to 8 digits and a unit), or undefined when it is malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  return m === null ? undefined : Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!;
}

/**
 * A grpc-message value: `details` as UTF-8, with every byte outside printable ASCII, and '%',
 * written %XX (the gRPC spec's percent-encoding; any string, lone surrogates included).
 */
export function percentEncodeMessage(details: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(details)) return details;
  let out = '';
  for (const b of Buffer.from(details, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function ignore(): void {}

function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  if (!this.destroyed) this.sendTrailers(OK_TRAILERS);
}

/** The stream can take a response: not reset, not closed, nothing sent yet. */
function answerable(stream: http2.ServerHttp2Stream): boolean {
  return !stream.destroyed && !stream.closed && !stream.headersSent;
}

/** A trailers-only response with `status` (its metadata without reserved keys). */
function sendStatus(stream: http2.ServerHttp2Stream, status: CallStatus): void {
  if (!answerable(stream)) return;
  const headers: http2.OutgoingHttpHeaders = {
    ':status': 200,
    'content-type': 'application/grpc+proto',
    'grpc-status': String(status.code),
    'grpc-message': percentEncodeMessage(status.details),
  };
  if (status.metadata !== undefined) {
    for (const [key, value] of Object.entries(status.metadata.toHttp2Headers())) {
      if (!RESERVED_HEADERS.has(key) && !key.startsWith(':')) headers[key] = value;
    }
  }
  try {
    stream.respond(headers, END_STREAM);
  } catch {
    stream.destroy();
  }
}

function sendAnswer(stream: http2.ServerHttp2Stream, method: FastUnaryMethod, answer: unknown, o: UnaryFastPathOptions): void {
  if (!answerable(stream)) return;
  let body: Uint8Array;
  try {
    body = method.encode(answer);
  } catch (err) {
    return sendStatus(stream, { code: grpc.status.INTERNAL, details: `Error serializing response: ${(err as Error)?.message ?? String(err)}` });
  }
  if (body.length > o.maxSendMessageBytes) {
    return sendStatus(stream, {
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `Sent message larger than max (${body.length} vs. ${o.maxSendMessageBytes}): limit ${o.limitName}=${o.maxSendMessageBytes}`,
    });
  }
  const frame = Buffer.allocUnsafe(PREFIX_BYTES + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, PREFIX_BYTES);
  try {
    stream.respond(RESPONSE_HEADERS, WAIT_FOR_TRAILERS);
    stream.once('wantTrailers', sendOkTrailers);
    stream.end(frame);
  } catch {
    stream.destroy();
  }
}

/** Reads a call's one request message, then serves it and answers. */
function runCall(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  method: FastUnaryMethod,
  timeoutMs: number | undefined,
  o: UnaryFastPathOptions,
): void {
  stream.on('error', ignore);
  const arrivedMs = timeoutMs === undefined ? 0 : Date.now();
  let first: Buffer | undefined;
  let rest: Buffer[] | undefined;
  let bytes = 0;
  /** The request message's length, once its prefix has arrived. */
  let length = -1;
  let refused = false;
  const refuse = (code: grpc.status, details: string): void => {
    refused = true;
    first = rest = undefined;
    sendStatus(stream, { code, details });
  };
  stream.on('data', (chunk: Buffer) => {
    if (refused) return;
    if (first === undefined) first = chunk;
    else (rest ??= []).push(chunk);
    bytes += chunk.length;
    if (length < 0 && bytes >= PREFIX_BYTES) {
      const head = rest === undefined ? first : Buffer.concat([first, ...rest], bytes);
      if (head[0] !== 0) {
        return refuse(grpc.status.INTERNAL, `request message has compressed flag ${head[0]}, but the call names no compression (grpc-encoding)`);
      }
      length = head.readUInt32BE(1);
      if (length > o.maxReceiveMessageBytes) {
        return refuse(
          grpc.status.RESOURCE_EXHAUSTED,
          `Received message larger than max (${length} vs. ${o.maxReceiveMessageBytes}): limit ${o.limitName}=${o.maxReceiveMessageBytes}`,
        );
      }
    }
    if (length >= 0 && bytes > PREFIX_BYTES + length) refuse(grpc.status.INTERNAL, 'more than one request message for a unary method');
  });
  stream.on('end', () => {
    if (refused) return;
    if (first === undefined || length < 0 || bytes !== PREFIX_BYTES + length) {
      return sendStatus(stream, { code: grpc.status.INTERNAL, details: 'no complete request message for a unary method' });
    }
    const whole = rest === undefined ? first : Buffer.concat([first, ...rest], bytes);
    first = rest = undefined;
    let request: unknown;
    try {
      request = method.decode(whole.subarray(PREFIX_BYTES));
    } catch (err) {
      return sendStatus(stream, { code: grpc.status.INTERNAL, details: `Error deserializing request: ${(err as Error)?.message ?? String(err)}` });
    }
    let served: Promise<unknown>;
    try {
      served = method.serve(request, timeoutMs === undefined ? undefined : timeoutMs - (Date.now() - arrivedMs), headers);
    } catch (err) {
      served = Promise.reject(err);
    }
    served
      .then(
        (answer) => sendAnswer(stream, method, answer, o),
        (err: unknown) => {
          let status: CallStatus;
          try {
            status = o.statusOf(err);
          } catch (mapErr) {
            status = { code: grpc.status.INTERNAL, details: `INTERNAL: ${(mapErr as Error)?.message ?? String(mapErr)}` };
          }
          sendStatus(stream, status);
        },
      )
      // Nothing above should throw; if it does, the call ends with a reset rather than the process.
      .catch(() => stream.destroy());
  });
}

/** What the fast path did with the calls of its methods, since it was installed. */
export interface FastPathCounters {
  /** Calls it served. */
  served: number;
  /** Calls of its methods it left to grpc-js (compressed, not POST, another content-type, a malformed grpc-timeout). */
  passedOn: number;
}

/**
 * The stream handler: takes the streams this path serves (see the top of this file) and returns
 * true for them; returns false, touching nothing, for the others.
 */
function unaryFastPath(
  methods: ReadonlyMap<string, FastUnaryMethod>,
  o: UnaryFastPathOptions,
  counters: FastPathCounters,
): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean {
  const passOn = (): false => {
    counters.passedOn++;
    return false;
  };
  return (stream, headers) => {
    const method = methods.get(headers[':path'] as string);
    if (method === undefined) return false;
    if (headers[':method'] !== 'POST') return passOn();
    const contentType = headers['content-type'];
    if (contentType !== 'application/grpc' && contentType !== 'application/grpc+proto') return passOn();
    const encoding = headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') return passOn();
    const timeout = headers['grpc-timeout'];
    let timeoutMs: number | undefined;
    if (timeout !== undefined) {
      timeoutMs = typeof timeout === 'string' ? parseGrpcTimeout(timeout) : undefined;
      if (timeoutMs === undefined) return passOn();
    }
    counters.served++;
    runCall(stream, headers, method, timeoutMs, o);
    return true;
  };
}

/** grpc-js's idle timeout when none is set (server.js's MAX_CONNECTION_IDLE_MS, as of grpc-js 1.14). */
const NO_IDLE_TIMEOUT_MS = ~(1 << 31);

/**
 * Whether `server` (its private fields, as of grpc-js 1.14) uses nothing its stream handler does per
 * call that the fast path leaves out: no interceptors, no channelz, no connection idle timeout.
 */
function bypassable(server: grpc.Server): boolean {
  const s = server as unknown as { interceptors?: unknown; channelzEnabled?: unknown; sessionIdleTimeout?: unknown };
  return Array.isArray(s.interceptors) && s.interceptors.length === 0 && s.channelzEnabled === false && s.sessionIdleTimeout === NO_IDLE_TIMEOUT_MS;
}

/**
 * Puts the fast path ahead of grpc-js on every HTTP/2 server grpc-js keeps for `server` now (create
 * its connection injectors first): the streams it takes are its own, grpc-js gets every other one
 * as before. Returns its counters; undefined, having changed nothing, when grpc-js's servers or
 * their one 'stream' handler are not where expected.
 */
export function installUnaryFastPath(
  server: grpc.Server,
  methods: ReadonlyMap<string, FastUnaryMethod>,
  o: UnaryFastPathOptions,
): FastPathCounters | undefined {
  if (!bypassable(server)) return undefined;
  const emitters = grpcHttp2Servers(server);
  if (emitters === undefined || !emitters.every((e) => e.listenerCount('stream') === 1)) return undefined;
  const counters: FastPathCounters = { served: 0, passedOn: 0 };
  const take = unaryFastPath(methods, o, counters);
  for (const e of emitters) {
    const grpcjs = e.listeners('stream')[0] as (this: EventEmitter, ...args: unknown[]) => void;
    e.removeListener('stream', grpcjs);
    e.on('stream', function (this: EventEmitter, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: unknown, raw: unknown) {
      if (!take(stream, headers)) grpcjs.call(this, stream, headers, flags, raw);
    });
  }
  return counters;
}
