// Node's HTTP/2 sessions with an IntKeyMap for their streams (http2-stream-map.ts): the Map is found
// and replaced on this Node and grpc-js, HTTP/2 and gRPC work as before through it (many streams at
// once, a session destroyed with streams open), and anything not laid out as expected is left alone.
// All on 127.0.0.1, ports picked by the OS.

import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { IntKeyMap } from '../../src/transport/int-key-map.js';
import { onGrpcSessions, replaceStreamMap } from '../../src/transport/http2-stream-map.js';
import { NodeListener } from '../../src/transport/node-listener.js';
import { waitFor } from '../support/wait.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The session's streams map, read the way replaceStreamMap finds it. */
function streamsOf(session: object): unknown {
  const k = Object.getOwnPropertySymbols(session).find((s) => s.description === 'state')!;
  return ((session as Record<symbol, unknown>)[k] as { streams: unknown }).streams;
}

/** A plain HTTP/2 server whose sessions get an IntKeyMap; answers each request with its path. */
async function h2Server(): Promise<{ port: number; sessions: http2.ServerHttp2Session[]; replaced: boolean[] }> {
  const server = http2.createServer();
  const sessions: http2.ServerHttp2Session[] = [];
  const replaced: boolean[] = [];
  server.on('session', (s) => {
    sessions.push(s);
    replaced.push(replaceStreamMap(s));
  });
  server.on('stream', (stream, headers) => {
    if (headers[':path'] === '/hang') return; // left open
    stream.respond({ ':status': 200 });
    stream.end(String(headers[':path']));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as { port: number }).port, sessions, replaced };
}

function connect(port: number): http2.ClientHttp2Session {
  const c = http2.connect(`http://127.0.0.1:${port}`);
  c.on('error', () => {});
  cleanups.push(() => void c.destroy());
  return c;
}

function get(c: http2.ClientHttp2Session, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = c.request({ ':path': path });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => resolve(body));
    req.on('error', reject);
    req.end();
  });
}

describe('replaceStreamMap', () => {
  it("replaces a Node HTTP/2 session's streams Map, and the session serves many streams at once through it", async () => {
    const { port, sessions, replaced } = await h2Server();
    const c = connect(port);
    const paths = Array.from({ length: 300 }, (_, i) => `/p${i}`);
    expect(await Promise.all(paths.map((p) => get(c, p)))).toEqual(paths);
    expect(replaced).toEqual([true]);
    const streams = streamsOf(sessions[0]!);
    expect(streams).toBeInstanceOf(IntKeyMap);
    await waitFor(() => (streams as IntKeyMap<unknown>).size === 0, 5000, 'every finished stream to leave the map');
  });

  it('lets a session destroyed with streams open close every one of them', async () => {
    const { port, sessions } = await h2Server();
    const c = connect(port);
    const closed = Array.from({ length: 5 }, () => {
      const req = c.request({ ':path': '/hang' });
      req.on('error', () => {});
      req.end();
      return new Promise<void>((resolve) => req.on('close', () => resolve()));
    });
    await waitFor(() => sessions.length === 1 && (streamsOf(sessions[0]!) as IntKeyMap<unknown>).size === 5, 5000, 'five open streams on the server');
    const serverClosed = [...(streamsOf(sessions[0]!) as IntKeyMap<http2.ServerHttp2Stream>).values()].map(
      (s) => new Promise<void>((resolve) => s.on('close', () => resolve())),
    );
    sessions[0]!.destroy();
    await Promise.all([...serverClosed, ...closed]);
    expect((streamsOf(sessions[0]!) as IntKeyMap<unknown>).size).toBe(0);
  });

  it('copies the streams a session has already', () => {
    const kState = Symbol('state');
    const session = { [kState]: { streams: new Map<number, string>([[1, 'a'], [3, 'b']]) } };
    expect(replaceStreamMap(session)).toBe(true);
    const streams = session[kState].streams as unknown as IntKeyMap<string>;
    expect(streams).toBeInstanceOf(IntKeyMap);
    expect([...streams]).toEqual([[1, 'a'], [3, 'b']]);
  });

  it('leaves alone what is not laid out as expected', () => {
    expect(replaceStreamMap({})).toBe(false);
    const noStreams = { [Symbol('state')]: { flags: 0 } };
    expect(replaceStreamMap(noStreams)).toBe(false);
    const kState = Symbol('state');
    const notAMap = { [kState]: { streams: { 1: 'a' } } };
    expect(replaceStreamMap(notAMap)).toBe(false);
    expect(notAMap[kState].streams).toEqual({ 1: 'a' });
    const stringKeys = { [kState]: { streams: new Map([['x', 'a']]) } };
    expect(replaceStreamMap(stringKeys)).toBe(false);
    expect(stringKeys[kState].streams).toBeInstanceOf(Map);
    const twoStates = { [Symbol('state')]: { streams: new Map() }, [Symbol('state')]: { streams: new Map() } };
    expect(replaceStreamMap(twoStates)).toBe(false);
  });
});

describe('NodeListener and grpc-js sessions', () => {
  // A unary method on raw bytes: no proto needed.
  const echo: grpc.ServiceDefinition = {
    Echo: {
      path: '/test.Echo/Echo',
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  };

  async function serve(replaceStreamMaps?: boolean): Promise<{ listener: NodeListener; client: grpc.Client }> {
    const server = new grpc.Server();
    server.addService(echo, { Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
    const listener = new NodeListener({ grpcServer: server, ...(replaceStreamMaps === undefined ? {} : { replaceStreamMaps }) });
    const port = await listener.listen('127.0.0.1:0');
    const client = new (grpc.makeGenericClientConstructor(echo, 'Echo'))(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    cleanups.push(async () => {
      client.close();
      const closed = listener.close(0);
      server.forceShutdown();
      await closed;
    });
    return { listener, client };
  }

  function call(client: grpc.Client, payload: string): Promise<string> {
    return new Promise((resolve, reject) =>
      (client as unknown as Record<string, (b: Buffer, cb: (e: Error | null, r?: Buffer) => void) => void>).Echo!(Buffer.from(payload), (e, r) =>
        e ? reject(e) : resolve(r!.toString()),
      ),
    );
  }

  it("replaces the stream map of each session grpc-js makes from the listener's connections, and calls go through", async () => {
    const { listener, client } = await serve();
    const payloads = Array.from({ length: 200 }, (_, i) => `call ${i}`);
    expect(await Promise.all(payloads.map((p) => call(client, p)))).toEqual(payloads);
    expect(listener.counters.streamMapsReplaced).toBe(1);
    expect(listener.counters.streamMapsKept).toBe(0);
  });

  it('leaves the Map when asked to, and calls go through the same', async () => {
    const { listener, client } = await serve(false);
    expect(await call(client, 'x')).toBe('x');
    expect(listener.counters.streamMapsReplaced).toBe(0);
    expect(listener.counters.streamMapsKept).toBe(0);
  });

  it('finds no sessions to watch on a gRPC server that has no HTTP/2 server yet', () => {
    expect(onGrpcSessions(new grpc.Server(), () => {})).toBe(false);
  });
});
