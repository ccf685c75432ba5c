import { describe, expect, it } from 'vitest';
import { DecodeError, Reader, Writer } from '../../src/storage/bytes.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('Writer', () => {
  it('finish() on an exactly filled writer returns exactly the bytes written', () => {
    const b = new Writer(14).u8(0xab).u32(0x01020304).u64(2 ** 32 + 5).u8(7).finish();
    expect(b).toBeInstanceOf(Uint8Array);
    expect(b.constructor).toBe(Uint8Array);
    expect(hex(b)).toBe('ab' + '01020304' + '0000000100000005' + '07');
    expect(b.byteOffset).toBe(0);
    expect(b.buffer.byteLength).toBe(14);
  });

  it('finish() on a partly filled or grown writer returns a copy trimmed to size', () => {
    const under = new Writer(64).u32(0xdeadbeef).finish();
    expect(hex(under)).toBe('deadbeef');
    expect(under.buffer.byteLength).toBe(4);
    const grown = new Writer(2).u8(1).raw(new Uint8Array([2, 3, 4, 5])).finish();
    expect([...grown]).toEqual([1, 2, 3, 4, 5]);
    expect(grown.buffer.byteLength).toBe(5);
    expect(new Writer(0).u8(9).finish()).toEqual(new Uint8Array([9]));
    expect(new Writer(0).finish()).toEqual(new Uint8Array(0));
  });

  it('throws on any write after finish(), and on a second finish()', () => {
    const writes: ((w: Writer) => unknown)[] = [
      (w) => w.u8(1),
      (w) => w.u32(1),
      (w) => w.u64(1),
      (w) => w.bool(true),
      (w) => w.raw(new Uint8Array(1)),
      (w) => w.raw(new Uint8Array(0)),
      (w) => w.bytes(new Uint8Array(0)),
      (w) => w.string('x'),
    ];
    for (const exact of [true, false]) {
      for (const write of writes) {
        const w = new Writer(exact ? 1 : 16).u8(5);
        const b = w.finish();
        expect(() => write(w)).toThrow(/write after finish\(\)/);
        expect([...b]).toEqual([5]);
      }
      const w = new Writer(exact ? 1 : 16).u8(5);
      w.finish();
      expect(() => w.finish()).toThrow(/finish\(\) called twice/);
    }
  });

  it('writes u64 big-endian and round-trips it exactly at the edges', () => {
    const cases: [number, string][] = [
      [0, '0000000000000000'],
      [2 ** 32 - 1, '00000000ffffffff'],
      [2 ** 32, '0000000100000000'],
      [2 ** 32 + 1, '0000000100000001'],
      [Number.MAX_SAFE_INTEGER, '001fffffffffffff'],
    ];
    for (const [n, expected] of cases) {
      const b = new Writer(8).u64(n).finish();
      expect(hex(b)).toBe(expected);
      const r = new Reader(b);
      expect(r.u64()).toBe(n);
      r.end();
    }
  });

  it('writes u32 big-endian and round-trips it at the edges', () => {
    for (const n of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) {
      const b = new Writer(4).u32(n).finish();
      expect(hex(b)).toBe(n.toString(16).padStart(8, '0'));
      expect(new Reader(b).u32()).toBe(n);
    }
  });

  it('keeps its range checks and messages', () => {
    expect(() => new Writer().u8(256)).toThrow('u8 out of range: 256');
    expect(() => new Writer().u32(2 ** 32)).toThrow('u32 out of range: 4294967296');
    expect(() => new Writer().u32(-1)).toThrow(RangeError);
    expect(() => new Writer().u32(1.5)).toThrow(RangeError);
    expect(() => new Writer().u64(2 ** 53, 'term')).toThrow('term must be a non-negative safe integer, got 9007199254740992');
    expect(() => new Writer().u64(-1)).toThrow('u64 must be a non-negative safe integer, got -1');
    expect(() => new Writer().u64(0.5)).toThrow(RangeError);
  });
});

describe('Writer.transient', () => {
  const fill = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte);

  it('hands out pieces of one shared slab, which never overlap, with exactly the bytes written', () => {
    const written: [Uint8Array, number, number][] = [];
    for (let i = 0; i < 400; i++) {
      const n = 65 + ((i * 37) % 500);
      const b = Writer.transient(n).raw(fill(n, i % 251)).finish();
      written.push([b, n, i % 251]);
    }
    const [first] = written[0]!;
    expect(first.constructor).toBe(Uint8Array);
    expect(first.buffer.byteLength).toBeGreaterThan(first.length);
    expect(written.filter(([b]) => b.buffer === first.buffer).length).toBeGreaterThan(10);
    // Every piece still holds its own bytes after all the others were written.
    for (const [b, n, byte] of written) {
      expect(b.length).toBe(n);
      expect(b.every((x) => x === byte)).toBe(true);
    }
  });

  it('grows within the slab, keeps what it wrote, and returns a view trimmed to size without a copy', () => {
    const grown = Writer.transient(100).raw(fill(100, 1)).raw(fill(60, 2)).finish();
    expect(grown.length).toBe(160);
    expect([...grown.subarray(98, 102)]).toEqual([1, 1, 2, 2]);
    const under = Writer.transient(200).u32(0xdeadbeef).raw(fill(100, 3)).finish();
    expect(under.length).toBe(104);
    expect(under.buffer.byteLength).toBeGreaterThan(200);
    expect([...under.subarray(0, 5)]).toEqual([0xde, 0xad, 0xbe, 0xef, 3]);
  });

  it('gives small and very large writers buffers of their own, as Writer does', () => {
    const small = Writer.transient(64).raw(fill(64, 7)).finish();
    expect(small.buffer.byteLength).toBe(64);
    const large = Writer.transient(64 * 1024).raw(fill(64 * 1024, 8)).finish();
    expect(large.buffer.byteLength).toBe(64 * 1024);
    expect(large.every((x) => x === 8)).toBe(true);
  });

  it('keeps the single-use rule', () => {
    const w = Writer.transient(100).u8(1);
    w.finish();
    expect(() => w.u8(2)).toThrow(/single-use/);
    expect(() => w.finish()).toThrow(/twice/);
  });
});

describe('Writer.queued', () => {
  const fill = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte);

  it('hands out pieces of a slab of its own, never shared with transient writers', () => {
    const queued: Uint8Array[] = [];
    const transient: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) {
      queued.push(Writer.queued(300).raw(fill(300, i % 251)).finish());
      transient.push(Writer.transient(300).raw(fill(300, 250 - (i % 251))).finish());
    }
    const queuedSlabs = new Set(queued.map((b) => b.buffer));
    const transientSlabs = new Set(transient.map((b) => b.buffer));
    // 300 pieces of 304 bytes (8-aligned) fill two slabs of 64 KiB, and start a third.
    expect(queuedSlabs.size).toBe(Math.ceil(300 / Math.floor((64 * 1024) / 304)));
    for (const slab of queuedSlabs) expect(transientSlabs.has(slab)).toBe(false);
    queued.forEach((b, i) => expect(b.every((x) => x === i % 251)).toBe(true));
  });

  it('keeps exact sizes, growth and the single-use rule as a plain Writer does', () => {
    const exact = Writer.queued(12).u32(7).u64(9).finish();
    expect([...exact]).toEqual([0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9]);
    const grown = Writer.queued(80).raw(fill(80, 1)).raw(fill(20, 2)).finish();
    expect(grown.length).toBe(100);
    expect(grown.buffer.byteLength).toBe(64 * 1024);
    const w = Writer.queued(100).u8(1);
    w.finish();
    expect(() => w.finish()).toThrow(/twice/);
  });
});

describe('Reader', () => {
  it('reads from a view at an offset into a larger buffer (as LevelDB Buffers are)', () => {
    const backing = new Uint8Array(32).fill(0xee);
    backing.set(new Writer(12).u32(0xfedcba98).u64(2 ** 40 + 3).finish(), 7);
    for (const view of [backing.subarray(7, 19), Buffer.from(backing.buffer, 7, 12)]) {
      const r = new Reader(view);
      expect(r.u32()).toBe(0xfedcba98);
      expect(r.u64()).toBe(2 ** 40 + 3);
      r.end();
    }
  });

  it('rejects a u64 beyond 2^53 with the high word in the message', () => {
    const b = new Uint8Array([0x00, 0x20, 0, 0, 0, 0, 0, 0]);
    expect(() => new Reader(b).u64('index')).toThrow(new DecodeError('index is not a safe integer (high word 2097152)'));
    expect(() => new Reader(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])).u64()).toThrow(/high word 4294967295/);
  });
});
