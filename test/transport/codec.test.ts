import { describe, expect, it } from 'vitest';
import { createRng, type SeededRng } from '../../src/raft/rng.js';
import type { Entry, Message, MessageType } from '../../src/raft/types.js';
import {
  batchHeaderBytes,
  decodeBatch,
  decodeMessage,
  encodeBatch,
  encodedMessageBytes,
  encodeMessage,
  MalformedFrameError,
  varintBytes,
  type WireMessage,
  type WireMessageType,
} from '../../src/transport/codec.js';

// Replay a failing run with CODEC_SEED=<seed> npx vitest run test/transport/codec.test.ts
const SEED = process.env['CODEC_SEED'] !== undefined ? Number(process.env['CODEC_SEED']) : (Date.now() % 2 ** 32) >>> 0;
const ROUNDS = 300;

const EDGES = [0, 1, 127, 128, 16383, 16384, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 49, Number.MAX_SAFE_INTEGER];

function uint(rng: SeededRng): number {
  switch (rng.int(4)) {
    case 0:
      return rng.int(200);
    case 1:
      return rng.next();
    case 2:
      return (rng.next() & 0x1fffff) * 2 ** 32 + rng.next(); // up to 2^53 - 1
    default:
      return EDGES[rng.int(EDGES.length)]!;
  }
}

function data(rng: SeededRng): Uint8Array {
  const n = rng.int(4) === 0 ? 0 : rng.int(rng.int(10) === 0 ? 5000 : 64);
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i++) d[i] = rng.int(256);
  return d;
}

const TYPES: readonly WireMessageType[] = [
  'PreVote',
  'Vote',
  'PreVoteResp',
  'VoteResp',
  'App',
  'AppResp',
  'Heartbeat',
  'HeartbeatResp',
  'ReadIndex',
  'ReadIndexResp',
];

function message(rng: SeededRng): WireMessage {
  const base = { from: uint(rng), to: uint(rng), term: uint(rng) };
  const type = TYPES[rng.int(TYPES.length)]!;
  switch (type) {
    case 'PreVote':
    case 'Vote':
      return { ...base, type, lastLogIndex: uint(rng), lastLogTerm: uint(rng) };
    case 'PreVoteResp':
    case 'VoteResp':
      return { ...base, type, granted: rng.int(2) === 1 };
    case 'App': {
      const entries: Entry[] = [];
      const n = rng.int(3) === 0 ? 0 : rng.int(20);
      for (let i = 0; i < n; i++) {
        entries.push({ index: uint(rng), term: uint(rng), type: rng.int(5) === 0 ? 'noop' : 'normal', data: data(rng) });
      }
      const m = { ...base, type, prevIndex: uint(rng), prevTerm: uint(rng), commit: uint(rng), entries };
      return entries.length === 0 && rng.int(2) === 0 ? { ...m, noReply: true } : m;
    }
    case 'AppResp': {
      const reject = rng.int(2) === 1;
      const m = { ...base, type, index: uint(rng), reject };
      return reject && rng.int(4) !== 0 ? { ...m, hint: { conflictTerm: uint(rng), conflictIndex: uint(rng) } } : m;
    }
    case 'Heartbeat':
      return { ...base, type, commit: uint(rng), context: uint(rng) };
    case 'HeartbeatResp':
    case 'ReadIndex':
      return { ...base, type, context: uint(rng) };
    case 'ReadIndexResp':
      return { ...base, type, context: uint(rng), index: uint(rng) };
  }
}

/** Entry data decode as views of the frame; compare them as plain arrays. */
function plain(ms: readonly Message[]): unknown {
  return ms.map((m) =>
    m.type === 'App' ? { ...m, entries: m.entries.map((e) => ({ ...e, data: Array.from(e.data) })) } : m,
  );
}

function expectMalformed(bytes: number[] | Uint8Array, pattern: RegExp): MalformedFrameError {
  try {
    decodeBatch(Uint8Array.from(bytes));
  } catch (e) {
    expect(e).toBeInstanceOf(MalformedFrameError);
    const err = e as MalformedFrameError;
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(pattern);
    return err;
  }
  throw new Error(`decoded malformed input [${Array.from(bytes).join(',')}] without an error`);
}

/** A batch header for one message, then a HeartbeatResp header (from 1, to 2, term 3). */
const ONE = [1, 1];

describe('codec round trip', () => {
  it(`decodes what it encodes, for every message type and edge number (seed ${SEED})`, () => {
    console.log(`codec round trip seed: ${SEED} (replay with CODEC_SEED=${SEED})`);
    const rng = createRng(SEED);
    const seen = new Set<MessageType>();
    for (let round = 0; round < ROUNDS; round++) {
      const batch: Message[] = [];
      const n = rng.int(8) === 0 ? 0 : 1 + rng.int(30);
      for (let i = 0; i < n; i++) batch.push(message(rng));
      for (const m of batch) seen.add(m.type);

      const frame = encodeBatch(batch);
      const expectedBytes = batchHeaderBytes(batch.length) + batch.reduce((s, m) => s + encodedMessageBytes(m), 0);
      expect(frame.length, `seed ${SEED} round ${round}`).toBe(expectedBytes);
      expect(plain(decodeBatch(frame)), `seed ${SEED} round ${round}`).toEqual(plain(batch));

      for (const m of batch) {
        const one = encodeMessage(m);
        expect(one.length).toBe(encodedMessageBytes(m));
        expect(plain([decodeMessage(one)])).toEqual(plain([m]));
      }

      // Every proper prefix of a frame is malformed (truncated, or a count/length beyond it).
      if (round % 10 === 0) {
        for (let cut = 0; cut < frame.length; cut += 1 + rng.int(7)) {
          expect(() => decodeBatch(frame.subarray(0, cut)), `seed ${SEED} round ${round} cut ${cut}`).toThrow(MalformedFrameError);
        }
      }
    }
    expect(seen.size).toBe(TYPES.length);
  });

  it('hands out entry data as views of the frame, without copies', () => {
    const entries: Entry[] = [
      { index: 5, term: 2, type: 'normal', data: Uint8Array.from([1, 2, 3]) },
      { index: 6, term: 2, type: 'noop', data: new Uint8Array(0) },
    ];
    const frame = encodeBatch([{ type: 'App', from: 1, to: 2, term: 2, prevIndex: 4, prevTerm: 1, commit: 3, entries }]);
    const [m] = decodeBatch(frame);
    if (m?.type !== 'App') throw new Error('expected an App message');
    const d = m.entries[0]!.data;
    expect(d.buffer).toBe(frame.buffer);
    expect(Array.from(d)).toEqual([1, 2, 3]);
    expect(m.entries[1]!.type).toBe('noop');
  });

  it('keeps noReply on an App only when it was set (tag 11, the body of tag 5)', () => {
    const base = { type: 'App', from: 1, to: 2, term: 3, prevIndex: 9, prevTerm: 3, commit: 9, entries: [] } as const;
    const plainFrame = encodeBatch([base]);
    const noReplyFrame = encodeBatch([{ ...base, noReply: true }]);
    expect(plainFrame[2]).toBe(5);
    expect(noReplyFrame[2]).toBe(11);
    expect(noReplyFrame.subarray(3)).toEqual(plainFrame.subarray(3));
    const [a] = decodeBatch(plainFrame);
    const [b] = decodeBatch(noReplyFrame);
    expect(a).not.toHaveProperty('noReply');
    expect(b).toEqual({ ...base, noReply: true });
    // With entries it is neither encoded nor decoded: entries are always acknowledged.
    const entry = { index: 10, term: 3, type: 'normal' as const, data: Uint8Array.from([1]) };
    expect(() => encodeBatch([{ ...base, entries: [entry], noReply: true }])).toThrow(/noReply may carry no entries/);
    const withEntry = encodeBatch([{ ...base, entries: [entry] }]);
    withEntry[2] = 11;
    expectMalformed(withEntry, /an App with noReply carries 1 entries/);
  });

  it('keeps an AppResp hint only when one was sent', () => {
    const base = { type: 'AppResp', from: 2, to: 1, term: 3, index: 9 } as const;
    const [noHint] = decodeBatch(encodeBatch([{ ...base, reject: true }]));
    expect(noHint).toEqual({ ...base, reject: true });
    expect(noHint).not.toHaveProperty('hint');
    const [withHint] = decodeBatch(encodeBatch([{ ...base, reject: true, hint: { conflictTerm: 0, conflictIndex: 4 } }]));
    expect(withHint).toEqual({ ...base, reject: true, hint: { conflictTerm: 0, conflictIndex: 4 } });
  });

  it('encodes small numbers in one byte and MAX_SAFE_INTEGER in eight', () => {
    expect(varintBytes(0)).toBe(1);
    expect(varintBytes(127)).toBe(1);
    expect(varintBytes(128)).toBe(2);
    expect(varintBytes(Number.MAX_SAFE_INTEGER)).toBe(8);
    // A heartbeat response with small numbers: tag, from, to, term, context.
    expect(encodeMessage({ type: 'HeartbeatResp', from: 1, to: 2, term: 3, context: 0 }).length).toBe(5);
  });
});

describe('codec rejects malformed input', () => {
  it('rejects an empty buffer and an unknown version', () => {
    expectMalformed([], /truncated: expected version/);
    expectMalformed([2, 0], /unknown codec version 2/);
  });

  it('rejects truncated buffers', () => {
    const frame = encodeBatch([{ type: 'Vote', from: 1, to: 2, term: 300, lastLogIndex: 70000, lastLogTerm: 299 }]);
    expectMalformed(frame.subarray(0, frame.length - 1), /truncated: expected lastLogTerm/);
    expectMalformed(frame.subarray(0, 4), /truncated|cannot fit/);
  });

  it('rejects unknown message tags and entry types', () => {
    for (const tag of [0, 12, 255]) expectMalformed([...ONE, tag, 1, 2, 3, 0], new RegExp(`unknown message tag ${tag}`));
    // App from 1 to 2 term 3, prev 0/0, commit 0, one entry: index 1 term 1 type 7.
    const err = expectMalformed([...ONE, 5, 1, 2, 3, 0, 0, 0, 1, 1, 1, 7, 0], /unknown entry type 7/);
    expect(err.offset).toBe(12);
  });

  it('rejects a boolean byte other than 0 or 1 and unknown flag bits', () => {
    expectMalformed([...ONE, 4, 1, 2, 3, 2], /granted: boolean byte must be 0 or 1, got 2/);
    expectMalformed([...ONE, 6, 1, 2, 3, 9, 4], /unknown AppResp flag bits 0x4/);
  });

  it('rejects varints that are too long, not minimal, or beyond MAX_SAFE_INTEGER', () => {
    const nineBytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    expectMalformed([...ONE, 8, ...nineBytes, 2, 3, 0], /from: varint longer than 8 bytes/);
    expectMalformed([...ONE, 8, 0x81, 0x00, 2, 3, 0], /from: varint not minimally encoded/);
    // 2^53 = 2^(7*7) * 16: seven 0x80 bytes, then 16.
    const twoTo53 = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
    expectMalformed([...ONE, 8, 1, 2, ...twoTo53, 0], /term: 9007199254740992 is beyond Number.MAX_SAFE_INTEGER/);
  });

  it('rejects counts and lengths beyond the frame', () => {
    expectMalformed([1, 100, 8, 1, 2, 3, 0], /message count 100 cannot fit/);
    // App with an entry count of 50 and nothing after it.
    expectMalformed([...ONE, 5, 1, 2, 3, 0, 0, 0, 50], /entry count 50 cannot fit/);
    // One entry claiming 100 bytes of data, with 2 present.
    expectMalformed([...ONE, 5, 1, 2, 3, 0, 0, 0, 1, 1, 1, 0, 100, 9, 9], /entry data length 100 exceeds the 2 bytes left/);
    // A huge (but safe) length must not allocate anything.
    expectMalformed([...ONE, 5, 1, 2, 3, 0, 0, 0, 1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f], /exceeds/);
  });

  it('rejects trailing garbage', () => {
    const frame = encodeBatch([{ type: 'HeartbeatResp', from: 1, to: 2, term: 3, context: 0 }]);
    expectMalformed(Buffer.concat([frame, Buffer.from([0])]), /1 trailing bytes after 1 messages/);
    expect(() => decodeMessage(Uint8Array.from([8, 1, 2, 3, 0, 0]))).toThrow(/trailing/);
  });

  it('refuses to encode a Snap message: it never travels on the peer stream', () => {
    const snap: Message = { type: 'Snap', from: 1, to: 2, term: 3 };
    const withMeta: Message = { ...snap, snapshot: { index: 10, term: 2 } };
    for (const m of [snap, withMeta]) {
      expect(() => encodedMessageBytes(m)).toThrow(/Snap message never travels on the peer stream.*sendSnapshot/);
      expect(() => encodeMessage(m)).toThrow(RangeError);
      expect(() => encodeBatch([{ type: 'HeartbeatResp', from: 1, to: 2, term: 3, context: 0 }, m])).toThrow(RangeError);
    }
  });

  it('refuses to encode numbers that are not non-negative safe integers', () => {
    const hb = { type: 'HeartbeatResp', from: 1, to: 2, term: 3, context: 0 } as const;
    for (const term of [-1, 1.5, Number.NaN, 2 ** 53, Infinity]) {
      expect(() => encodeBatch([{ ...hb, term }]), String(term)).toThrow(RangeError);
    }
  });
});
