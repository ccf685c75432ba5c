import { describe, expect, it, vi } from 'vitest';
import { RaftKvError } from '../../src/errors.js';
import {
  decodeCommand,
  decodeResult,
  encodeCommand,
  encodeResult,
  type Command,
  type WriteResult,
} from '../../src/kv/index.js';
import { createRng } from '../../src/raft/rng.js';
import { DecodeError } from '../../src/storage/bytes.js';
import { enc } from './harness.js';

const commands: Command[] = [
  { op: 'put', key: enc('a'), value: enc('1'), proposedAtMs: 1_700_000_000_000 },
  { op: 'put', key: new Uint8Array(0), value: new Uint8Array(0), proposedAtMs: 0, clientId: 'cli-é', seq: 2 ** 40 },
  { op: 'delete', key: enc('a/b'), proposedAtMs: 5, clientId: 'x', seq: 1 },
  { op: 'put', key: enc('p'), value: enc('2'), proposedAtMs: 6, prevKv: true },
  { op: 'delete', key: enc('p'), proposedAtMs: 7, clientId: 'x', seq: 2, prevKv: true },
  { op: 'cas', key: enc('k'), compare: { kind: 'value', value: enc('old') }, value: enc('new'), proposedAtMs: 9 },
  { op: 'cas', key: enc('k'), compare: { kind: 'modIndex', modIndex: Number.MAX_SAFE_INTEGER }, value: enc('v'), proposedAtMs: 9 },
  { op: 'cas', key: enc('k'), compare: { kind: 'absent' }, value: enc('v'), proposedAtMs: 9, clientId: 'c', seq: 3 },
];

function malformed(b: Uint8Array): string {
  try {
    decodeCommand(b);
  } catch (err) {
    expect(err).toBeInstanceOf(RaftKvError);
    expect((err as RaftKvError).code).toBe('INVALID_ARGUMENT');
    return (err as Error).message;
  }
  throw new Error('decode was expected to fail');
}

describe('command codec', () => {
  it.each(commands.map((c) => [c.op, c] as const))('round-trips a %s command', (_op, c) => {
    expect(decodeCommand(encodeCommand(c))).toEqual(c);
  });

  it('decodes an empty client id and a zero seq as no session (undefined)', () => {
    const c = decodeCommand(encodeCommand({ op: 'delete', key: enc('k'), proposedAtMs: 1, clientId: '', seq: 0 }));
    expect(c).toEqual({ op: 'delete', key: enc('k'), proposedAtMs: 1 });
    expect(c.clientId).toBeUndefined();
    expect(c.seq).toBeUndefined();
  });

  it('rejects truncated input at every length', () => {
    for (const c of commands) {
      const b = encodeCommand(c);
      for (let n = 0; n < b.length; n++) expect(malformed(b.subarray(0, n))).toMatch(/^malformed command: /);
    }
  });

  it('rejects trailing bytes, unknown versions, ops and compares', () => {
    const put = encodeCommand(commands[0] as Command);
    expect(malformed(new Uint8Array([...put, 0]))).toBe('malformed command: 1 trailing bytes after command');
    expect(malformed(new Uint8Array([3, ...put.subarray(1)]))).toBe('malformed command: unknown command codec version 3');
    expect(malformed(new Uint8Array([0, ...put.subarray(1)]))).toBe('malformed command: unknown command codec version 0');
    expect(malformed(new Uint8Array([2, 9, ...put.subarray(2)]))).toBe('malformed command: unknown op 9');
    const cas = encodeCommand(commands[7] as Command);
    // The compare kind follows: version, op, flags, proposedAtMs, clientId "c", seq, key "k".
    const at = 1 + 1 + 1 + 8 + 4 + 1 + 8 + 4 + 1;
    expect(cas[at]).toBe(3);
    const bad = cas.slice();
    bad[at] = 7;
    expect(malformed(bad)).toBe('malformed command: unknown compare kind 7');
  });

  it('rejects unknown flags, and flags on a cas', () => {
    const put = encodeCommand(commands[0] as Command);
    expect(put[2]).toBe(0); // the flags byte
    const unknown = put.slice();
    unknown[2] = 2;
    expect(malformed(unknown)).toBe('malformed command: unknown command flags 2');
    const cas = encodeCommand(commands[5] as Command).slice();
    cas[2] = 1;
    expect(malformed(cas)).toBe('malformed command: flags 1 on a cas command');
  });

  it('keeps prevKv only on puts and deletes that ask for it', () => {
    const cas = { op: 'cas', key: enc('k'), compare: { kind: 'absent' }, value: enc('v'), proposedAtMs: 9, prevKv: true } as unknown as Command;
    expect(encodeCommand(cas)[2]).toBe(0);
    expect(decodeCommand(encodeCommand({ op: 'put', key: enc('k'), value: enc('v'), proposedAtMs: 1, prevKv: false }))).toEqual({
      op: 'put',
      key: enc('k'),
      value: enc('v'),
      proposedAtMs: 1,
    });
  });

  it('reads version 1 commands (no flags byte) as asking for the previous record', () => {
    // Bytes written by the version 1 encoder: logs from before the flags byte still replay.
    const v1: [string, Command][] = [
      ['01010000018bcfe5680000000000000000000000000000000001610000000131', { op: 'put', key: enc('a'), value: enc('1'), proposedAtMs: 1_700_000_000_000, prevKv: true }],
      ['0102000000000000000500000006636c692dc3a9000001000000000000000003612f62', { op: 'delete', key: enc('a/b'), proposedAtMs: 5, clientId: 'cli-é', seq: 2 ** 40, prevKv: true }],
      ['0103000000000000000900000001630000000000000003000000016b030000000176', { op: 'cas', key: enc('k'), compare: { kind: 'absent' }, value: enc('v'), proposedAtMs: 9, clientId: 'c', seq: 3 }],
    ];
    for (const [hex, c] of v1) expect(decodeCommand(Buffer.from(hex, 'hex'))).toEqual(c);
  });

  it('rejects invalid UTF-8 in the client id and integers beyond 2^53', () => {
    const c = encodeCommand({ op: 'delete', key: enc('k'), proposedAtMs: 0, clientId: 'ab', seq: 1 });
    const badUtf8 = c.slice();
    badUtf8[15] = 0xff; // first byte of the client id
    expect(malformed(badUtf8)).toBe('malformed command: invalid UTF-8');
    const bigTime = c.slice();
    bigTime[3] = 0x01; // high byte of proposedAtMs
    expect(malformed(bigTime)).toMatch(/proposedAtMs is not a safe integer/);
  });

  it('rejects garbage without crashing', () => {
    const rng = createRng(1);
    const rand = (): number => rng.int(256);
    let rejected = 0;
    for (let i = 0; i < 500; i++) {
      const b = new Uint8Array(1 + (i % 40)).map(() => rand());
      try {
        decodeCommand(b);
      } catch (err) {
        expect(err).toBeInstanceOf(RaftKvError);
        rejected++;
      }
    }
    expect(rejected).toBe(500);
  });

  it('encodes commands byte for byte as specified', () => {
    // The version 1 fixtures with the version byte set to 2 and the flags byte inserted after the op.
    const cases: [Command, string][] = [
      [{ op: 'put', key: enc('a'), value: enc('1'), proposedAtMs: 1_700_000_000_000 }, '0201' + '00' + '0000018bcfe5680000000000000000000000000000000001610000000131'],
      [{ op: 'put', key: enc('a'), value: enc('1'), proposedAtMs: 1_700_000_000_000, prevKv: true }, '0201' + '01' + '0000018bcfe5680000000000000000000000000000000001610000000131'],
      [
        { op: 'delete', key: enc('a/b'), proposedAtMs: 5, clientId: 'cli-é', seq: 2 ** 40 },
        '0202' + '00' + '000000000000000500000006636c692dc3a9000001000000000000000003612f62',
      ],
      [
        { op: 'cas', key: enc('k'), compare: { kind: 'value', value: enc('old') }, value: enc('new'), proposedAtMs: 9 },
        '0203' + '00' + '0000000000000009000000000000000000000000000000016b01000000036f6c64000000036e6577',
      ],
      [
        { op: 'cas', key: enc('k'), compare: { kind: 'modIndex', modIndex: Number.MAX_SAFE_INTEGER }, value: enc('v'), proposedAtMs: 9 },
        '0203' + '00' + '0000000000000009000000000000000000000000000000016b02001fffffffffffff0000000176',
      ],
      [
        { op: 'cas', key: enc('k'), compare: { kind: 'absent' }, value: enc('v'), proposedAtMs: 9, clientId: 'c', seq: 3 },
        '0203' + '00' + '00000000000000090000000163' + '0000000000000003000000016b030000000176',
      ],
    ];
    for (const [c, hex] of cases) {
      const b = encodeCommand(c);
      expect(Buffer.from(b).toString('hex')).toBe(hex);
      expect(b.buffer.byteLength).toBe(b.length);
    }
  });

  it('refuses to encode numbers it could not decode', () => {
    expect(() => encodeCommand({ op: 'delete', key: enc('k'), proposedAtMs: -1 })).toThrow(RangeError);
    expect(() => encodeCommand({ op: 'delete', key: enc('k'), proposedAtMs: 0, seq: 2 ** 53 })).toThrow(RangeError);
  });
});

describe('result codec', () => {
  const rec = { value: enc('v'), createIndex: 2, modIndex: 5, version: 3 };
  const results: WriteResult[] = [
    { kind: 'put', index: 7 },
    { kind: 'put', index: 7, prev: rec },
    { kind: 'delete', index: 8, deleted: false },
    { kind: 'delete', index: 8, deleted: true, prev: rec },
    { kind: 'cas', index: 9, succeeded: true, current: rec },
    { kind: 'cas', index: 9, succeeded: false },
  ];

  it.each(results.map((r) => [r.kind, r] as const))('round-trips a %s result', (_kind, r) => {
    expect(decodeResult(encodeResult(r))).toEqual(r);
  });

  it('encodes results byte for byte as before, at exactly their size', () => {
    // Expected bytes produced by the previous encoder (a Writer(64) that grew), kept as a fixture.
    const r = { value: enc('v'), createIndex: 2, modIndex: 2 ** 40 + 5, version: 3 };
    const recHex = '0000000000000002' + '0000010000000005' + '0000000000000003' + '00000001' + '76';
    const cases: [WriteResult, string][] = [
      [{ kind: 'put', index: 7 }, '01' + '0000000000000007' + '00'],
      [{ kind: 'put', index: 2 ** 32, prev: r }, '01' + '0000000100000000' + '01' + recHex],
      [{ kind: 'delete', index: 8, deleted: false }, '02' + '0000000000000008' + '00' + '00'],
      [{ kind: 'delete', index: 8, deleted: true, prev: r }, '02' + '0000000000000008' + '01' + '01' + recHex],
      [{ kind: 'cas', index: 9, succeeded: true, current: r }, '03' + '0000000000000009' + '01' + '01' + recHex],
      [{ kind: 'cas', index: Number.MAX_SAFE_INTEGER, succeeded: false }, '03' + '001fffffffffffff' + '00' + '00'],
      [{ kind: 'cas', index: 9, succeeded: false, current: r }, '03' + '0000000000000009' + '00' + '01' + recHex],
    ];
    for (const [res, hex] of cases) {
      const b = encodeResult(res);
      expect(Buffer.from(b).toString('hex')).toBe(hex);
      expect(b.buffer.byteLength).toBe(b.length);
      expect(decodeResult(b)).toEqual(res);
    }
    // A put that replaced a 256-byte value: 1 kind + 8 index + 1 flag + 28 record fields + 256.
    const big = { value: new Uint8Array(256).map((_, i) => i), createIndex: 1, modIndex: 2, version: 2 };
    const b = encodeResult({ kind: 'put', index: 3, prev: big });
    expect(b.length).toBe(1 + 8 + 1 + 28 + 256);
    expect(decodeResult(b)).toEqual({ kind: 'put', index: 3, prev: big });
  });

  it('sizes its Writer exactly: no regrowth, no trimming copy', () => {
    const big = { value: new Uint8Array(256), createIndex: 1, modIndex: 2, version: 2 };
    const slice = vi.spyOn(Uint8Array.prototype, 'slice');
    const set = vi.spyOn(Uint8Array.prototype, 'set');
    try {
      for (const r of [...results, { kind: 'put', index: 3, prev: big } as const]) encodeResult(r);
      for (const c of commands) encodeCommand(c);
      expect(slice).not.toHaveBeenCalled();
      // Only the raw() copies of values and keys, never a regrowth copy of the buffer so far.
      for (const call of set.mock.calls) expect(call[1]).toBeGreaterThan(0);
    } finally {
      slice.mockRestore();
      set.mockRestore();
    }
  });

  it('rejects malformed results', () => {
    const b = encodeResult({ kind: 'cas', index: 9, succeeded: true, current: rec });
    expect(() => decodeResult(b.subarray(0, b.length - 1))).toThrow(DecodeError);
    expect(() => decodeResult(new Uint8Array([...b, 1]))).toThrow(DecodeError);
    expect(() => decodeResult(new Uint8Array([4, ...b.subarray(1)]))).toThrow(/unknown result kind 4/);
  });
});
