import { describe, expect, it } from 'vitest';
import { createRng, type SeededRng } from '../../src/raft/rng.js';
import {
  decodeHello,
  decodeStatus,
  encodeHello,
  encodeStatus,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  frameHeader,
  HELLO_HEADER_BYTES,
  isPeerWireHead,
  MAX_CLUSTER_ID_BYTES,
  MAX_HELLO_BODY_BYTES,
  MAX_STATUS_DETAILS_BYTES,
  MAX_WIRE_NODE_ID,
  PEER_WIRE_MAGIC,
  PEER_WIRE_VERSION,
  PeerWireError,
  STATUS_HEADER_BYTES,
  type Hello,
  type WireStatus,
} from '../../src/transport/peer-wire.js';

// Replay a failing run with PEER_WIRE_SEED=<seed> npx vitest run test/transport/peer-wire.test.ts
const SEED = process.env['PEER_WIRE_SEED'] !== undefined ? Number(process.env['PEER_WIRE_SEED']) : (Date.now() % 2 ** 32) >>> 0;
const ROUNDS = 500;

/** The start of an HTTP/2 client preface: what a gRPC client sends to the same port. */
const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** 341 three-byte characters and one ASCII byte: exactly MAX_CLUSTER_ID_BYTES of UTF-8, 342 UTF-16 units. */
const MULTI_BYTE_1024 = '日'.repeat(341) + 'a';

function expectWireError(f: () => unknown, pattern: RegExp): PeerWireError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(PeerWireError);
    const err = e as PeerWireError;
    expect(err.name).toBe('PeerWireError');
    expect(err.message).toMatch(pattern);
    return err;
  }
  throw new Error(`expected a PeerWireError matching ${pattern}, but nothing was thrown`);
}

interface RawHello {
  magic?: string;
  version?: number;
  /** Defaults to 10 + the cluster id's length. */
  bodyLength?: number;
  from?: number;
  to?: number;
  /** Defaults to the cluster id's length. */
  clusterLength?: number;
  cluster?: readonly number[];
}

/** A hello built byte by byte, independent of encodeHello, so malformed ones can be made. */
function rawHello(r: RawHello = {}): Buffer {
  const cluster = Buffer.from(r.cluster ?? Array.from(Buffer.from('c1')));
  const clusterLength = r.clusterLength ?? cluster.length;
  const bodyLength = r.bodyLength ?? 10 + cluster.length;
  const head = Buffer.alloc(HELLO_HEADER_BYTES + 10);
  head.write(r.magic ?? 'RKVP', 0, 'latin1');
  head[4] = r.version ?? 1;
  head.writeUInt16BE(bodyLength, 5);
  head.writeUInt32BE(r.from ?? 1, 7);
  head.writeUInt32BE(r.to ?? 2, 11);
  head.writeUInt16BE(clusterLength, 15);
  return Buffer.concat([head, cluster]);
}

describe('hello', () => {
  const hellos: Hello[] = [
    { from: 1, to: 2, clusterId: '' },
    { from: MAX_WIRE_NODE_ID, to: 1, clusterId: 'raftkv-test' },
    { from: 1, to: MAX_WIRE_NODE_ID, clusterId: 'ßüñ-日本-🚀' },
    { from: 3, to: 2 ** 31, clusterId: 'x'.repeat(MAX_CLUSTER_ID_BYTES) },
    { from: 2 ** 31 - 1, to: 5, clusterId: MULTI_BYTE_1024 },
  ];

  it('keeps the wire layout of the header comment (magic, version, lengths, big-endian ids)', () => {
    expect(MAX_WIRE_NODE_ID).toBe(2 ** 32 - 1);
    expect(HELLO_HEADER_BYTES).toBe(7);
    expect(MAX_HELLO_BODY_BYTES).toBe(10 + MAX_CLUSTER_ID_BYTES);
    const b = encodeHello({ from: 0x01020304, to: 0xa0b0c0d0, clusterId: 'ab' });
    expect(Array.from(b)).toEqual([
      ...Buffer.from('RKVP', 'latin1'), 1, 0, 12, // magic, version, bodyLength
      1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0, 0, 2, 0x61, 0x62, // from, to, clusterIdLength, clusterId
    ]);
    expect(rawHello({ from: 0x01020304, to: 0xa0b0c0d0, cluster: [0x61, 0x62] }).equals(b)).toBe(true);
  });

  it('round-trips edge ids and empty, multi-byte and longest cluster ids', () => {
    expect(Buffer.byteLength(MULTI_BYTE_1024, 'utf8')).toBe(MAX_CLUSTER_ID_BYTES);
    for (const h of hellos) {
      const b = encodeHello(h);
      expect(b.length).toBe(HELLO_HEADER_BYTES + 10 + Buffer.byteLength(h.clusterId, 'utf8'));
      expect(decodeHello(b)).toEqual({ hello: h, bytes: b.length });
      // A plain Uint8Array, and a view at an offset into a larger buffer, read the same.
      expect(decodeHello(new Uint8Array(b))).toEqual({ hello: h, bytes: b.length });
      const bigger = Buffer.concat([Buffer.from([9, 9, 9]), b, Buffer.from([8])]);
      expect(decodeHello(bigger.subarray(3, 3 + b.length))).toEqual({ hello: h, bytes: b.length });
    }
  });

  it('refuses ids that are 0, not integers, or above MAX_WIRE_NODE_ID, with a RangeError', () => {
    const bad = [0, -1, 1.5, NaN, Infinity, MAX_WIRE_NODE_ID + 1, 2 ** 53];
    for (const id of bad) {
      expect(() => encodeHello({ from: id, to: 2, clusterId: 'c' }), `from ${id}`).toThrow(RangeError);
      expect(() => encodeHello({ from: 1, to: id, clusterId: 'c' }), `to ${id}`).toThrow(RangeError);
    }
    expect(() => encodeHello({ from: 0, to: 2, clusterId: 'c' })).toThrow(/from/);
    expect(() => encodeHello({ from: 1, to: 0, clusterId: 'c' })).toThrow(/to/);
  });

  it('refuses a cluster id over MAX_CLUSTER_ID_BYTES of UTF-8, counting bytes not characters', () => {
    expect(() => encodeHello({ from: 1, to: 2, clusterId: 'x'.repeat(MAX_CLUSTER_ID_BYTES + 1) })).toThrow(RangeError);
    // 342 characters, 1026 bytes.
    expect(() => encodeHello({ from: 1, to: 2, clusterId: '日'.repeat(342) })).toThrow(/MAX_CLUSTER_ID_BYTES/);
  });

  it('returns undefined, not a throw, on every proper prefix of a hello', () => {
    for (const h of hellos) {
      const b = encodeHello(h);
      for (let cut = 0; cut < b.length; cut++) {
        expect(decodeHello(b.subarray(0, cut)), `cluster id of ${h.clusterId.length} chars, cut ${cut}`).toBeUndefined();
      }
    }
  });

  it('counts only the hello in bytes when more follows it', () => {
    const hello = encodeHello({ from: 7, to: 9, clusterId: 'prod' });
    const rest = Buffer.concat([frameHeader(3), Buffer.from([1, 2, 3]), Buffer.from('RKVP', 'latin1')]);
    expect(decodeHello(Buffer.concat([hello, rest]))).toEqual({ hello: { from: 7, to: 9, clusterId: 'prod' }, bytes: hello.length });
  });

  describe('decodeHello refuses', () => {
    it('a bad magic as soon as 4 bytes are in, such as an HTTP/2 preface', () => {
      expectWireError(() => decodeHello(HTTP2_PREFACE.subarray(0, 4)), /magic/);
      expectWireError(() => decodeHello(HTTP2_PREFACE), /magic/);
      const good = rawHello();
      for (let i = 0; i < PEER_WIRE_MAGIC.length; i++) {
        const b = Buffer.from(good);
        b[i] = b[i]! ^ 0x20; // 'RKVP' -> 'rKVP', 'RkVP', ...
        expectWireError(() => decodeHello(b.subarray(0, 4)), /magic/);
        expectWireError(() => decodeHello(b), /magic/);
      }
    });

    it('an unknown version, before the body arrives', () => {
      for (const version of [0, 2, 255]) {
        const b = rawHello({ version });
        expectWireError(() => decodeHello(b.subarray(0, HELLO_HEADER_BYTES)), new RegExp(`version ${version}\\b`));
        expectWireError(() => decodeHello(b), /version/);
      }
      expect(PEER_WIRE_VERSION).toBe(1);
    });

    it('a body length below 10 or above MAX_HELLO_BODY_BYTES, before the body arrives', () => {
      for (const bodyLength of [0, 9, MAX_HELLO_BODY_BYTES + 1, 0xffff]) {
        const b = rawHello({ bodyLength });
        expectWireError(() => decodeHello(b.subarray(0, HELLO_HEADER_BYTES)), new RegExp(`body of ${bodyLength} bytes`));
        expectWireError(() => decodeHello(b), /body/);
      }
      // The limits themselves are fine.
      expect(decodeHello(rawHello({ cluster: [] }))?.hello.clusterId).toBe('');
      const longest = rawHello({ cluster: Array(MAX_CLUSTER_ID_BYTES).fill(0x78) });
      expect(decodeHello(longest)?.bytes).toBe(HELLO_HEADER_BYTES + MAX_HELLO_BODY_BYTES);
    });

    it('a cluster id length that does not fill the body exactly', () => {
      // Body of 12 bytes (two ids, the length, 2 bytes of cluster id), but the length says otherwise.
      for (const clusterLength of [0, 1, 3, 0xffff]) {
        expectWireError(
          () => decodeHello(rawHello({ cluster: [0x61, 0x62], clusterLength })),
          new RegExp(`cluster id of ${clusterLength} bytes in a body of 12`),
        );
      }
    });

    it('a node id of 0', () => {
      expectWireError(() => decodeHello(rawHello({ from: 0 })), /node id 0/);
      expectWireError(() => decodeHello(rawHello({ to: 0 })), /node id 0/);
    });

    it('a cluster id that is not valid UTF-8', () => {
      const invalid = [[0xff], [0x61, 0xc3], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80]];
      for (const cluster of invalid) {
        expectWireError(() => decodeHello(rawHello({ cluster })), /UTF-8/);
      }
    });
  });
});

describe('isPeerWireHead', () => {
  it('is true for the magic, with or without more bytes after it', () => {
    expect(isPeerWireHead(PEER_WIRE_MAGIC)).toBe(true);
    expect(isPeerWireHead(Uint8Array.from([0x52, 0x4b, 0x56, 0x50]))).toBe(true);
    expect(isPeerWireHead(encodeHello({ from: 1, to: 2, clusterId: 'c' }))).toBe(true);
  });

  it('is false for an HTTP/2 preface, a near miss, and fewer than 4 bytes', () => {
    expect(isPeerWireHead(Buffer.from('PRI * HTTP/2.0', 'latin1'))).toBe(false);
    expect(isPeerWireHead(HTTP2_PREFACE)).toBe(false);
    expect(isPeerWireHead(Buffer.from('RKVQ', 'latin1'))).toBe(false);
    expect(isPeerWireHead(Buffer.from('rkvp', 'latin1'))).toBe(false);
    expect(isPeerWireHead(Buffer.from('RKV', 'latin1'))).toBe(false);
    expect(isPeerWireHead(new Uint8Array(0))).toBe(false);
  });
});

describe('status', () => {
  const statuses: WireStatus[] = [
    { code: 0, details: '' },
    { code: 1, details: 'cancelled' },
    { code: 9, details: 'wrong cluster: ßüñ-日本-🚀' },
    { code: 255, details: 'x'.repeat(MAX_STATUS_DETAILS_BYTES) },
    { code: 14, details: MULTI_BYTE_1024 },
  ];

  it('round-trips codes 0 to 255 and details up to the limit', () => {
    for (const s of statuses) {
      const b = encodeStatus(s);
      expect(b.length).toBe(STATUS_HEADER_BYTES + Buffer.byteLength(s.details, 'utf8'));
      expect(b[0]).toBe(s.code);
      expect(b.readUInt16BE(1)).toBe(Buffer.byteLength(s.details, 'utf8'));
      expect(decodeStatus(b)).toEqual({ status: s, bytes: b.length });
      expect(decodeStatus(new Uint8Array(b))).toEqual({ status: s, bytes: b.length });
      // Trailing bytes (the frames or the close that follow) are not the status's.
      expect(decodeStatus(Buffer.concat([b, Buffer.from([0, 0, 0, 0, 0xff])]))).toEqual({ status: s, bytes: b.length });
    }
  });

  it('refuses a code outside [0, 255] or not an integer, with a RangeError', () => {
    for (const code of [-1, 256, 1.5, NaN, Infinity]) {
      expect(() => encodeStatus({ code, details: '' }), `code ${code}`).toThrow(RangeError);
    }
  });

  it('cuts details longer than MAX_STATUS_DETAILS_BYTES to the limit', () => {
    const long = 'abcdefghij'.repeat(300); // 3000 bytes
    const b = encodeStatus({ code: 3, details: long });
    expect(b.length).toBe(STATUS_HEADER_BYTES + MAX_STATUS_DETAILS_BYTES);
    expect(b.readUInt16BE(1)).toBe(MAX_STATUS_DETAILS_BYTES);
    expect(decodeStatus(b)).toEqual({ status: { code: 3, details: long.slice(0, MAX_STATUS_DETAILS_BYTES) }, bytes: b.length });

    // A cut through a multi-byte character still decodes (the broken tail is replaced, as documented).
    const wide = encodeStatus({ code: 3, details: '日'.repeat(500) }); // 1500 bytes, cut at 1024 = 341 chars + 1 byte
    expect(wide.length).toBe(STATUS_HEADER_BYTES + MAX_STATUS_DETAILS_BYTES);
    const decoded = decodeStatus(wide);
    expect(decoded?.bytes).toBe(wide.length);
    expect(decoded?.status.details.startsWith('日'.repeat(341))).toBe(true);
    expect(decoded?.status.details.slice(341)).toMatch(/^\uFFFD+$/);
  });

  it('returns undefined on every proper prefix of a status', () => {
    for (const s of statuses) {
      const b = encodeStatus(s);
      for (let cut = 0; cut < b.length; cut++) {
        expect(decodeStatus(b.subarray(0, cut)), `code ${s.code}, cut ${cut}`).toBeUndefined();
      }
    }
  });

  it('refuses a details length over the limit as soon as the header is in', () => {
    for (const length of [MAX_STATUS_DETAILS_BYTES + 1, 0xffff]) {
      const head = Buffer.from([0, length >> 8, length & 0xff]);
      expectWireError(() => decodeStatus(head), new RegExp(`status details of ${length} bytes`));
      expectWireError(() => decodeStatus(Buffer.concat([head, Buffer.alloc(length, 0x61)])), /details/);
    }
  });
});

describe('frameHeader', () => {
  it('is the payload length as a big-endian u32', () => {
    expect(FRAME_HEADER_BYTES).toBe(4);
    expect(Array.from(frameHeader(0))).toEqual([0, 0, 0, 0]);
    expect(Array.from(frameHeader(0x01020304))).toEqual([1, 2, 3, 4]);
    expect(Array.from(frameHeader(2 ** 32 - 1))).toEqual([0xff, 0xff, 0xff, 0xff]);
  });
});

describe('FrameDecoder', () => {
  const MAX = 300;
  const SIZES = [0, 1, 3, 4, 5, 100, MAX];

  function payload(rng: SeededRng, n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = rng.int(256);
    return b;
  }

  function stream(payloads: readonly Buffer[]): Buffer {
    return Buffer.concat(payloads.flatMap((p) => [frameHeader(p.length), p]));
  }

  /**
   * Pushes the chunks into a new decoder and returns every payload, each checked against a copy
   * taken when it was returned (so a later push that disturbs it shows), and that nothing stays buffered.
   */
  function decodeAll(chunks: readonly Buffer[], what: string): Buffer[] {
    const d = new FrameDecoder(MAX);
    const out: Buffer[] = [];
    const copies: Buffer[] = [];
    for (const c of chunks) {
      for (const p of d.push(c)) {
        out.push(p);
        copies.push(Buffer.from(p));
      }
      // Limit: never more than one incomplete frame (or header) is held.
      expect(d.bufferedBytes, what).toBeLessThan(Math.max(FRAME_HEADER_BYTES, MAX));
    }
    expect(d.bufferedBytes, what).toBe(0);
    for (let i = 0; i < out.length; i++) expect(out[i]!.equals(copies[i]!), `${what}: payload ${i} changed after later pushes`).toBe(true);
    return out;
  }

  function expectPayloads(got: readonly Buffer[], want: readonly Buffer[], what: string): void {
    expect(got.map((p) => p.toString('hex')), what).toEqual(want.map((p) => p.toString('hex')));
  }

  const fixedRng = createRng(1);
  const FIXED = SIZES.map((n) => payload(fixedRng, n));
  // Payload bytes that look like frame headers too.
  FIXED.push(Buffer.concat([frameHeader(2), frameHeader(MAX + 1)]));
  const FIXED_STREAM = stream(FIXED);

  it('splits frames of 0, 1, 3, 4, 5, 100 and maxPayloadBytes bytes fed whole', () => {
    expectPayloads(decodeAll([FIXED_STREAM], 'whole'), FIXED, 'whole');
  });

  it('splits them fed one byte at a time', () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < FIXED_STREAM.length; i++) chunks.push(FIXED_STREAM.subarray(i, i + 1));
    expectPayloads(decodeAll(chunks, 'bytewise'), FIXED, 'bytewise');
  });

  it('splits them fed as two chunks, cut at every position', () => {
    for (let cut = 0; cut <= FIXED_STREAM.length; cut++) {
      const what = `cut at ${cut}`;
      expectPayloads(decodeAll([FIXED_STREAM.subarray(0, cut), FIXED_STREAM.subarray(cut)], what), FIXED, what);
    }
  });

  it(`splits random frame sequences fed in random chunk sizes (seed ${SEED})`, () => {
    console.log(`peer-wire FrameDecoder seed: ${SEED} (replay with PEER_WIRE_SEED=${SEED})`);
    const rng = createRng(SEED);
    for (let round = 0; round < ROUNDS; round++) {
      const frames: Buffer[] = [];
      const n = 1 + rng.int(12);
      for (let i = 0; i < n; i++) frames.push(payload(rng, rng.int(3) === 0 ? rng.int(MAX + 1) : SIZES[rng.int(SIZES.length)]!));
      const bytes = stream(frames);
      // Vary the chunk size mix per round: tiny, around a header, around a frame, or anything.
      const mix = rng.int(4);
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length; ) {
        const size =
          mix === 0 ? rng.int(3) : mix === 1 ? rng.int(2 * FRAME_HEADER_BYTES + 2) : mix === 2 ? rng.int(MAX + 10) : rng.int(bytes.length + 1);
        chunks.push(bytes.subarray(at, at + size)); // size 0 pushes an empty chunk
        at += size;
      }
      const what = `seed ${SEED} round ${round} (mix ${mix}, ${chunks.length} chunks)`;
      expectPayloads(decodeAll(chunks, what), frames, what);
    }
  });

  it('hands out a frame that spans chunks as a copy, so overwriting the chunks after push leaves it intact', () => {
    const p = payload(createRng(2), 100);
    const bytes = stream([p]);
    const d = new FrameDecoder(MAX);
    const a = Buffer.from(bytes.subarray(0, 50));
    const b = Buffer.from(bytes.subarray(50));
    expect(d.push(a)).toEqual([]);
    a.fill(0xee);
    const [got] = d.push(b);
    b.fill(0xee);
    expect(got?.toString('hex')).toBe(p.toString('hex'));
  });

  // Documented in FrameDecoder's comment: a frame within one chunk comes back as a view of that chunk.
  // So a caller that reuses or overwrites a chunk while it still holds such payloads sees them change.
  it('hands out a frame that lies within one chunk as a view of that chunk (documented; not a copy)', () => {
    const chunk = stream([Buffer.from([1, 2, 3]), Buffer.from([4, 5])]);
    const d = new FrameDecoder(MAX);
    const got = d.push(chunk);
    expect(got.map((p) => Array.from(p))).toEqual([[1, 2, 3], [4, 5]]);
    chunk.fill(0xee);
    expect(got.map((p) => Array.from(p))).toEqual([[0xee, 0xee, 0xee], [0xee, 0xee]]);
  });

  // A caller that reads into a reused buffer (net.Socket's `onread: { buffer }`) and uses each push's
  // payloads before the next read must still get every frame whole. Every chunk is overwritten with
  // 0xEE right after its push, so any chunk bytes the decoder kept without copying show up as 0xEE.
  function decodeReusingChunks(bytes: Buffer, sizes: readonly number[]): string[] {
    const d = new FrameDecoder(MAX);
    const out: string[] = [];
    let at = 0;
    for (const size of sizes) {
      const chunk = Buffer.from(bytes.subarray(at, at + size));
      at += size;
      for (const p of d.push(chunk)) out.push(p.toString('hex')); // used before the buffer is reused
      chunk.fill(0xee);
    }
    expect(at).toBe(bytes.length);
    return out;
  }

  it('keeps no view of a pushed chunk while a frame header is incomplete (header over three chunks)', () => {
    const p = Buffer.from([1, 2, 3]);
    const bytes = Buffer.concat([frameHeader(p.length), p, frameHeader(p.length), p]);
    // 1 + 1 + 2 bytes of header, then the payload; then the same one byte at a time.
    const sizes = [1, 1, 2, 3, ...Array<number>(7).fill(1)];
    expect(decodeReusingChunks(bytes, sizes)).toEqual([p.toString('hex'), p.toString('hex')]);
  });

  it('keeps no view of a pushed chunk while a frame payload is incomplete (payload over three chunks)', () => {
    const p = payload(createRng(3), 100);
    const bytes = stream([p]);
    // Header and 10 bytes, then 40, then the last 50.
    expect(decodeReusingChunks(bytes, [14, 40, 50])).toEqual([p.toString('hex')]);
  });

  describe('refuses a length over maxPayloadBytes, naming maxMessageBytes', () => {
    const TOO_LONG = new RegExp(`maxMessageBytes=${MAX}\\b`);
    const header = frameHeader(MAX + 1);

    it('when the header comes alone, before any of the payload', () => {
      expectWireError(() => new FrameDecoder(MAX).push(header), TOO_LONG);
      expectWireError(() => new FrameDecoder(MAX).push(frameHeader(2 ** 32 - 1)), /4294967295 bytes/);
      // Exactly the limit is fine, and nothing of it is buffered yet.
      const d = new FrameDecoder(MAX);
      expect(d.push(frameHeader(MAX))).toEqual([]);
      expect(d.bufferedBytes).toBe(0);
    });

    it('when the frame comes whole, and after a good frame in the same chunk', () => {
      const bad = Buffer.concat([header, Buffer.alloc(MAX + 1)]);
      expectWireError(() => new FrameDecoder(MAX).push(bad), TOO_LONG);
      expectWireError(() => new FrameDecoder(MAX).push(Buffer.concat([frameHeader(1), Buffer.from([7]), header])), TOO_LONG);
    });

    it('when the 4 header bytes arrive split over chunks', () => {
      const splits = [[1, 3], [2, 2], [3, 1], [1, 1, 2], [1, 1, 1, 1]];
      for (const sizes of splits) {
        for (const lead of [Buffer.alloc(0), Buffer.concat([frameHeader(2), Buffer.from([8, 9])])]) {
          // A good frame (or none) first, then the bad header split as `sizes` says; only the last part throws.
          const d = new FrameDecoder(MAX);
          let at = 0;
          const parts = sizes.map((n) => {
            const part = header.subarray(at, at + n);
            at += n;
            return part;
          });
          const what = `split ${sizes.join('+')}, lead ${lead.length} bytes`;
          const first = d.push(Buffer.concat([lead, parts[0]!]));
          expect(first.length, what).toBe(lead.length === 0 ? 0 : 1);
          for (const part of parts.slice(1, -1)) expect(d.push(part), what).toEqual([]);
          expectWireError(() => d.push(parts[parts.length - 1]!), TOO_LONG);
        }
      }
    });
  });
});
