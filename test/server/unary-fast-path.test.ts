// The unary fast path (src/server/unary-fast-path.ts) against grpc-js's own call handling: the same
// KV handlers behind a real grpc-js server on 127.0.0.1, reached through a NodeListener as a node
// reaches them, once with the fast path installed and once without. Clients see the same answers,
// statuses, details, metadata and response headers either way; limits are refused with the status
// grpc-js uses; malformed framing with INTERNAL (as grpc-go and grpc-java do); what the fast path
// does not take (compression, other services) grpc-js still serves. Malformed requests come from a
// raw node:http2 client.

import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { NotLeaderError, RaftKvError } from '../../src/errors.js';
import { METADATA_CODE, METADATA_LEADER_ADDRESS, METADATA_LEADER_ID } from '../../src/server/grpc-errors.js';
import { kvServiceDefinition } from '../../src/server/kv-proto.js';
import type * as pb from '../../src/server/kv-proto.js';
import { addKvService, kvFastMethods, METADATA_FORWARDED, type CallContext, type KvHandlers } from '../../src/server/kv-service.js';
import { installUnaryFastPath, parseGrpcTimeout, percentEncodeMessage, type FastPathCounters } from '../../src/server/unary-fast-path.js';
import { grpcHttp2Servers } from '../../src/transport/http2-stream-map.js';
import { NodeListener } from '../../src/transport/node-listener.js';

const MAX_MESSAGE_BYTES = 2048;
const DEFAULT_TIMEOUT_MS = 5_000;

const header = (index: number): pb.ResponseHeader => ({ index, node_id: 1, term: 2, leader_id: 1, consistency: 'CONSISTENCY_UNSPECIFIED', staleness_ms: 0 });

/** Handlers that record each call's context; Get fails as its key asks; Range answers with `n` pairs. */
class TestHandlers implements KvHandlers {
  readonly nodeId = 1;
  readonly defaultTimeoutMs = DEFAULT_TIMEOUT_MS;
  readonly contexts: CallContext[] = [];
  /** Resolves the Get of key "hang" (held until the test lets it go). */
  release: (() => void) | undefined;
  leaderAddress = (id: number): string | undefined => (id === 2 ? '127.0.0.1:7402' : undefined);
  async put(req: pb.PutRequest, ctx: CallContext): Promise<pb.PutResponse> {
    this.contexts.push(ctx);
    return { header: header(Number(req.value.length)) };
  }
  async get(req: pb.GetRequest, ctx: CallContext): Promise<pb.GetResponse> {
    this.contexts.push(ctx);
    const key = Buffer.from(req.key).toString();
    if (key === 'not-leader') throw new NotLeaderError(2);
    if (key === 'odd-text') throw new RaftKvError('INVALID_ARGUMENT', 'ключ 100% \u00e9 bad\nline');
    if (key === 'plain-error') throw new Error('boom');
    if (key === 'hang') {
      await new Promise<void>((resolve) => (this.release = resolve));
    }
    return { header: header(7), found: true, kv: { key: req.key, value: Buffer.from('v'), create_index: 1, mod_index: 2, version: 1 } };
  }
  async delete(): Promise<pb.DeleteResponse> {
    return { header: header(1), deleted: false };
  }
  async range(req: pb.RangeRequest): Promise<pb.RangeResponse> {
    const kvs = Array.from({ length: req.limit }, (_, i) => ({ key: Buffer.from(`k${i}`), value: Buffer.alloc(100, 1), create_index: 1, mod_index: 1, version: 1 }));
    return { header: header(1), kvs, more: false, next_page_token: Buffer.alloc(0) } as unknown as pb.RangeResponse;
  }
  async compareAndSwap(): Promise<pb.CompareAndSwapResponse> {
    throw new Error('not used');
  }
  async status(): Promise<pb.StatusResponse> {
    throw new Error('not used');
  }
}

interface Served {
  readonly handlers: TestHandlers;
  readonly server: grpc.Server;
  readonly address: string;
  readonly counters: FastPathCounters | undefined;
}

/** kv-node's server options (channelz off: the fast path is not installed with channelz on). */
const serverOptions = (): grpc.ServerOptions => ({
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.enable_channelz': 0,
});

const fastOptions = (statusOf: (err: unknown) => { code: grpc.status; details: string }) => ({
  maxReceiveMessageBytes: MAX_MESSAGE_BYTES,
  maxSendMessageBytes: MAX_MESSAGE_BYTES,
  limitName: '--max-message-bytes',
  statusOf,
});

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(fast: boolean): Promise<Served> {
  const handlers = new TestHandlers();
  const server = new grpc.Server(serverOptions());
  addKvService(server, handlers);
  const listener = new NodeListener({ grpcServer: server });
  let counters: FastPathCounters | undefined;
  if (fast) {
    const { methods, statusOf } = kvFastMethods(handlers);
    counters = installUnaryFastPath(server, methods, fastOptions(statusOf));
    expect(counters, 'the fast path must find grpc-js as expected').toBeDefined();
  }
  const port = await listener.listen('127.0.0.1:0');
  cleanups.push(async () => {
    server.forceShutdown();
    await listener.close(0);
  });
  return { handlers, server, address: `127.0.0.1:${port}`, counters };
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type UnaryFn = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

function client(address: string, options: grpc.ChannelOptions = {}): Record<string, UnaryFn> {
  const Ctor = grpc.makeGenericClientConstructor(kvServiceDefinition, 'KV');
  const c = new Ctor(address, grpc.credentials.createInsecure(), options);
  cleanups.push(() => c.close());
  return c as unknown as Record<string, UnaryFn>;
}

interface Outcome {
  readonly res?: unknown;
  readonly err?: grpc.ServiceError;
}

function call(c: Record<string, UnaryFn>, method: string, req: unknown, opts: { timeoutMs?: number; md?: grpc.Metadata } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    c[method]!.call(c, req, opts.md ?? new grpc.Metadata(), { deadline: Date.now() + (opts.timeoutMs ?? 10_000) }, (err, res) =>
      resolve(err ? { err } : { res }),
    );
  });
}

const modes = [
  { fast: true, path: 'the fast path' },
  { fast: false, path: "grpc-js's call handling" },
];

describe.each(modes)('KV calls through $path', ({ fast }) => {
  it('answer, with the call deadline and the forwarded flag in the handler context', async () => {
    const s = await serve(fast);
    const c = client(s.address);
    const before = Date.now();
    const out = await call(c, 'Put', { key: Buffer.from('k'), value: Buffer.alloc(5) }, { timeoutMs: 3_000 });
    expect(out.err).toBeUndefined();
    expect((out.res as pb.PutResponse).header.index).toBe('5');
    const md = new grpc.Metadata();
    md.set(METADATA_FORWARDED, '3');
    await call(c, 'Put', { key: Buffer.from('k'), value: Buffer.alloc(1) }, { md });
    const [first, second] = s.handlers.contexts;
    // The deadline travels as grpc-timeout, rounded by the client: within a few ms of 3 s from the call.
    expect(first!.deadlineMs).toBeGreaterThan(before + 2_900);
    expect(first!.deadlineMs).toBeLessThanOrEqual(Date.now() + 3_000);
    expect(first!.forwarded).toBe(false);
    expect(second!.forwarded).toBe(true);
    if (fast) expect(s.counters).toEqual({ served: 2, passedOn: 0 });
  });

  it('caps a deadline at ten times the default timeout', async () => {
    const s = await serve(fast);
    const c = client(s.address);
    await call(c, 'Get', { key: Buffer.from('k') }, { timeoutMs: 3_600_000 });
    expect(s.handlers.contexts[0]!.deadlineMs).toBeLessThanOrEqual(Date.now() + 10 * DEFAULT_TIMEOUT_MS);
  });

  it('fail with the raftkv code and the leader hint in the trailing metadata', async () => {
    const s = await serve(fast);
    const { err } = await call(client(s.address), 'Get', { key: Buffer.from('not-leader') });
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(err?.details).toMatch(/^NOT_LEADER: /);
    expect(err?.metadata.get(METADATA_CODE)).toEqual(['NOT_LEADER']);
    expect(err?.metadata.get(METADATA_LEADER_ID)).toEqual(['2']);
    expect(err?.metadata.get(METADATA_LEADER_ADDRESS)).toEqual(['127.0.0.1:7402']);
  });

  it('keep non-ASCII text, "%" and a newline in error details', async () => {
    const s = await serve(fast);
    const { err } = await call(client(s.address), 'Get', { key: Buffer.from('odd-text') });
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('INVALID_ARGUMENT: ключ 100% \u00e9 bad\nline');
  });

  it('turn an unexpected error into INTERNAL', async () => {
    const s = await serve(fast);
    const { err } = await call(client(s.address), 'Get', { key: Buffer.from('plain-error') });
    expect(err?.code).toBe(grpc.status.INTERNAL);
    expect(err?.details).toBe('INTERNAL: boom');
    expect(err?.metadata.get(METADATA_CODE)).toEqual(['INTERNAL']);
  });

  it(`refuse a request over the message limit with RESOURCE_EXHAUSTED, and serve on`, async () => {
    const s = await serve(fast);
    const c = client(s.address);
    const { err } = await call(c, 'Put', { key: Buffer.from('k'), value: Buffer.alloc(MAX_MESSAGE_BYTES) });
    expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    if (fast) expect(err?.details).toContain(`limit --max-message-bytes=${MAX_MESSAGE_BYTES}`);
    expect((await call(c, 'Put', { key: Buffer.from('k'), value: Buffer.alloc(3) })).err).toBeUndefined();
  });

  it('refuse an answer over the message limit with RESOURCE_EXHAUSTED', async () => {
    const s = await serve(fast);
    const c = client(s.address);
    expect((await call(c, 'Range', { limit: 5 })).err).toBeUndefined();
    const { err } = await call(c, 'Range', { limit: 30 });
    expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    if (fast) expect(err?.details).toContain(`limit --max-message-bytes=${MAX_MESSAGE_BYTES}`);
  });

  it('drop the answer of a call the client gave up on, and serve on', async () => {
    const s = await serve(fast);
    const c = client(s.address);
    const held = call(c, 'Get', { key: Buffer.from('hang') }, { timeoutMs: 200 });
    expect((await held).err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(s.handlers.release, 'the held call reached its handler').toBeDefined();
    // A call on the same connection after the reset: the server has seen the reset once it answers.
    expect((await call(c, 'Get', { key: Buffer.from('k') })).res).toMatchObject({ found: true });
    s.handlers.release!();
    expect((await call(c, 'Get', { key: Buffer.from('k') })).res).toMatchObject({ found: true });
  });

  it('let a graceful shutdown wait for a call in progress, which gets its answer', async () => {
    const s = await serve(fast);
    const c = client(s.address);
    const held = call(c, 'Get', { key: Buffer.from('hang') });
    await until(() => s.handlers.release !== undefined, 'the held call to reach its handler');
    let shutDown = false;
    const shutdown = new Promise<void>((resolve) =>
      s.server.tryShutdown(() => {
        shutDown = true;
        resolve();
      }),
    );
    s.handlers.release!();
    expect((await held).res).toMatchObject({ found: true });
    await shutdown;
    expect(shutDown).toBe(true);
  });

  it('answer with the same response headers and trailers', async () => {
    const s = await serve(fast);
    const out = await rawCall(s.address, '/raftkv.v1.KV/Put', grpcFrame(putRequest()));
    expect(out.headers).toMatchObject({
      ':status': 200,
      'content-type': 'application/grpc+proto',
      'grpc-accept-encoding': 'identity,deflate,gzip',
      'grpc-encoding': 'identity',
    });
    expect(out.headers['grpc-status']).toBeUndefined();
    expect(out.trailers).toMatchObject({ 'grpc-status': '0', 'grpc-message': 'OK' });
    const failed = await rawCall(s.address, '/raftkv.v1.KV/Get', grpcFrame(kvServiceDefinition.Get!.requestSerialize({ key: Buffer.from('not-leader') })));
    // Trailers-only: the status in the response headers, no trailers.
    expect(failed.headers).toMatchObject({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-status': '14', [METADATA_CODE]: 'NOT_LEADER' });
    expect(failed.trailers).toBeUndefined();
  });

  it('serve compressed requests (grpc-js decompresses them) and leave other services to grpc-js', async () => {
    const s = await serve(fast);
    const gzip = client(s.address, { 'grpc.default_compression_algorithm': grpc.compressionAlgorithms.gzip });
    const out = await call(gzip, 'Put', { key: Buffer.from('k'), value: Buffer.alloc(600, 'a') });
    expect(out.err).toBeUndefined();
    expect((out.res as pb.PutResponse).header.index).toBe('600');
    if (fast) expect(s.counters).toEqual({ served: 0, passedOn: 1 });
    const unknown = await rawCall(s.address, '/raftkv.v1.KV/NoSuchMethod', grpcFrame(Buffer.alloc(0)));
    expect(unknown.status).toBe(String(grpc.status.UNIMPLEMENTED));
  });
});

/** A gRPC message frame: flag, 32-bit length, bytes. */
function grpcFrame(message: Uint8Array, flag = 0): Buffer {
  const f = Buffer.alloc(5 + message.length);
  f[0] = flag;
  f.writeUInt32BE(message.length, 1);
  f.set(message, 5);
  return f;
}

const putRequest = (value = 'v'): Uint8Array => kvServiceDefinition.Put!.requestSerialize({ key: Buffer.from('k'), value: Buffer.from(value) });

/** Waits for `cond`, polling, up to 5 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface RawOutcome {
  readonly status: string | undefined;
  readonly message: string | undefined;
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders | undefined;
  readonly body: Buffer;
}

/**
 * One POST over a fresh HTTP/2 connection, as any gRPC client would send it: `body` as its DATA, in
 * one write or, given pieces, one write per piece (each written once the one before has gone out,
 * and `gapMs` later: a slow client, not a wait for anything to settle).
 */
function rawCall(address: string, path: string, body: Buffer | Buffer[], extra: http2.OutgoingHttpHeaders = {}, gapMs = 0): Promise<RawOutcome> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...extra });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    let message: string | undefined;
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const take = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) message = String(h['grpc-message']);
    };
    req.on('response', (h) => {
      headers = h;
      take(h);
    });
    req.on('trailers', (h) => {
      trailers = h;
      take(h);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    // A write after the server ended the call fails; the outcome is what the server sent.
    req.on('error', () => {});
    req.on('close', () => {
      session.close();
      resolve({ status, message, headers, trailers, body: Buffer.concat(chunks) });
    });
    const pieces = Array.isArray(body) ? body : [body];
    const writeFrom = (i: number): void => {
      if (i === pieces.length - 1) req.end(pieces[i]);
      else req.write(pieces[i], () => (gapMs > 0 ? setTimeout(() => writeFrom(i + 1), gapMs) : writeFrom(i + 1)));
    };
    writeFrom(0);
  });
}

describe('the fast path on raw HTTP/2 requests: malformed ones refused with INTERNAL, limits, pieces, deadlines', () => {
  it.each([
    { what: 'no message', body: (): Buffer => Buffer.alloc(0), details: /no complete request message/ },
    { what: 'a cut message', body: (): Buffer => grpcFrame(putRequest()).subarray(0, 7), details: /no complete request message/ },
    { what: 'two messages', body: (): Buffer => Buffer.concat([grpcFrame(putRequest()), grpcFrame(putRequest())]), details: /more than one request message/ },
    { what: 'a compressed flag without grpc-encoding', body: (): Buffer => grpcFrame(putRequest(), 1), details: /compressed flag 1/ },
    { what: 'bytes that are not a PutRequest', body: (): Buffer => grpcFrame(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), details: /Error deserializing request/ },
  ])('$what', async ({ body, details }) => {
    const s = await serve(true);
    const out = await rawCall(s.address, '/raftkv.v1.KV/Put', body());
    expect(out.status).toBe(String(grpc.status.INTERNAL));
    expect(decodeURIComponent(out.message ?? '')).toMatch(details);
    expect(s.handlers.contexts).toHaveLength(0);
    const good = await rawCall(s.address, '/raftkv.v1.KV/Put', grpcFrame(putRequest()));
    expect(good.status).toBe('0');
    expect(kvServiceDefinition.Put!.responseDeserialize(good.body.subarray(5))).toMatchObject({ header: { index: '1' } });
    expect(s.counters!.served).toBe(2);
  });

  it('reads a message that comes in pieces, its prefix split between them', async () => {
    const s = await serve(true);
    const frame = grpcFrame(putRequest('x'.repeat(300)));
    const out = await rawCall(s.address, '/raftkv.v1.KV/Put', [frame.subarray(0, 3), frame.subarray(3, 40), frame.subarray(40)]);
    expect(out.status).toBe('0');
    expect(kvServiceDefinition.Put!.responseDeserialize(out.body.subarray(5))).toMatchObject({ header: { index: '300' } });
  });

  it('refuses a request over the limit at its prefix, and reads the rest of a body far past the flow-control window', async () => {
    const s = await serve(true);
    const big = grpcFrame(Buffer.alloc(300_000, 1));
    const pieces = Array.from({ length: 10 }, (_, i) => big.subarray(i * 30_001, (i + 1) * 30_001));
    const out = await rawCall(s.address, '/raftkv.v1.KV/Put', pieces);
    expect(out.status).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(decodeURIComponent(out.message ?? '')).toContain(`(300000 vs. ${MAX_MESSAGE_BYTES}): limit --max-message-bytes=${MAX_MESSAGE_BYTES}`);
    expect(s.handlers.contexts).toHaveLength(0);
    expect((await rawCall(s.address, '/raftkv.v1.KV/Put', grpcFrame(putRequest()))).status).toBe('0');
  });

  it('gives the method the time left to the deadline, counted from the headers', async () => {
    const s = await serve(true);
    const frame = grpcFrame(putRequest());
    const before = Date.now();
    // The message's last piece comes 500 ms after the headers: that time counts against the deadline.
    const out = await rawCall(s.address, '/raftkv.v1.KV/Put', [frame.subarray(0, 4), frame.subarray(4)], { 'grpc-timeout': '2S' }, 500);
    const after = Date.now();
    expect(out.status).toBe('0');
    expect(after - before).toBeGreaterThanOrEqual(500);
    expect(s.handlers.contexts[0]!.deadlineMs).toBeLessThanOrEqual(before + 2_000 + 100);
    expect(s.handlers.contexts[0]!.deadlineMs).toBeGreaterThan(before + 1_000);
  });

  it('leaves a call with a malformed grpc-timeout to grpc-js', async () => {
    const s = await serve(true);
    const out = await rawCall(s.address, '/raftkv.v1.KV/Put', grpcFrame(putRequest()), { 'grpc-timeout': '5 seconds' });
    expect(out.status).toBeDefined();
    expect(s.counters).toEqual({ served: 0, passedOn: 1 });
  });
});

describe('unary fast path helpers', () => {
  it('parses grpc-timeout values in every unit, and refuses malformed ones', () => {
    expect(parseGrpcTimeout('2H')).toBe(7_200_000);
    expect(parseGrpcTimeout('3M')).toBe(180_000);
    expect(parseGrpcTimeout('10S')).toBe(10_000);
    expect(parseGrpcTimeout('250m')).toBe(250);
    expect(parseGrpcTimeout('1500u')).toBe(1.5);
    expect(parseGrpcTimeout('99999999n')).toBeCloseTo(99.999999);
    for (const bad of ['', '5', 'S', '123456789S', '-1S', '1.5S', '10s', ' 1S']) expect(parseGrpcTimeout(bad), bad).toBeUndefined();
  });

  it('percent-encodes grpc-message as the gRPC spec asks, and leaves plain text alone', () => {
    expect(percentEncodeMessage('plain text: ok')).toBe('plain text: ok');
    expect(percentEncodeMessage('100%')).toBe('100%25');
    expect(percentEncodeMessage('é\n')).toBe('%C3%A9%0A');
    // A lone surrogate cannot be UTF-8: it becomes U+FFFD instead of throwing.
    expect(percentEncodeMessage('a\ud800')).toBe('a%EF%BF%BD');
  });

  const statusOf = (): { code: grpc.status; details: string } => ({ code: grpc.status.INTERNAL, details: '' });

  it('is not installed, and changes nothing, on a server without HTTP/2 servers', () => {
    expect(installUnaryFastPath(new grpc.Server(serverOptions()), new Map(), fastOptions(statusOf))).toBeUndefined();
  });

  it.each([
    { what: 'with channelz on', options: { 'grpc.enable_channelz': 1 } },
    { what: 'with a connection idle timeout', options: { 'grpc.max_connection_idle_ms': 60_000 } },
    { what: 'with an interceptor', options: { interceptors: [(_methodDescriptor: unknown, call: unknown) => call] } },
  ])('is not installed $what, which it would bypass', ({ options }) => {
    const server = new grpc.Server({ ...serverOptions(), ...options } as grpc.ServerOptions);
    server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    expect(installUnaryFastPath(server, new Map(), fastOptions(statusOf))).toBeUndefined();
    expect(grpcHttp2Servers(server)!.every((e) => e.listenerCount('stream') === 1)).toBe(true);
  });

  it('is not installed when the HTTP/2 server has another stream handler than grpc-js', () => {
    const server = new grpc.Server(serverOptions());
    server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const [h2] = grpcHttp2Servers(server)!;
    const other = (): void => {};
    h2!.on('stream', other);
    expect(installUnaryFastPath(server, new Map(), fastOptions(statusOf))).toBeUndefined();
    expect(h2!.listeners('stream')).toContain(other);
    h2!.off('stream', other);
    expect(installUnaryFastPath(server, new Map(), fastOptions(statusOf))).toBeDefined();
  });
});
