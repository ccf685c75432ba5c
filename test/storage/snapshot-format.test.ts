// The snapshot stream format: round trips however the stream is chunked, and every kind of damage is
// detected with a clear message. Random chunking prints its seed; SEED=<n> replays one run.

import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RaftKvError, SnapshotFormatError } from '../../src/errors.js';
import { createRng, type SeededRng } from '../../src/raft/rng.js';
import { concatBytes } from '../../src/storage/bytes.js';
import {
  encodeSnapshot,
  SnapshotDecoder,
  type SnapshotHeader,
  type SnapshotLimits,
  type SnapshotRecord,
} from '../../src/storage/snapshot-format.js';
import { seedOf } from '../support/seed.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const LIMITS: SnapshotLimits = { maxKeyBytes: 1024, maxValueBytes: 4096 };
const HEADER: SnapshotHeader = { clusterId: 'c1', index: 42, term: 7, sessionClockMs: 1_700_000_000_000 };

async function* from<T>(items: readonly T[]): AsyncGenerator<T> {
  for (const x of items) yield x;
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}

async function encodeAll(header: SnapshotHeader, records: readonly SnapshotRecord[], chunkBytes = 1 << 20): Promise<Uint8Array> {
  return concatBytes(...(await collect(encodeSnapshot(header, from(records), chunkBytes))));
}

/** Decodes `chunks` completely; throws what the decoder throws. */
function decodeAll(chunks: readonly Uint8Array[], limits: SnapshotLimits = LIMITS): { records: SnapshotRecord[]; summary: ReturnType<SnapshotDecoder['end']> } {
  const d = new SnapshotDecoder(limits);
  const records: SnapshotRecord[] = [];
  for (const c of chunks) records.push(...d.push(c));
  return { records, summary: d.end() };
}

function decodeError(stream: Uint8Array, limits: SnapshotLimits = LIMITS): SnapshotFormatError {
  try {
    decodeAll([stream], limits);
  } catch (err) {
    expect(err).toBeInstanceOf(SnapshotFormatError);
    expect(err).toBeInstanceOf(RaftKvError);
    expect((err as SnapshotFormatError).code).toBe('SNAPSHOT_CORRUPT');
    return err as SnapshotFormatError;
  }
  throw new Error('decoding was expected to fail');
}

/** Replaces the stream's digest with a valid one for its (edited) bytes. */
function resign(stream: Uint8Array): Uint8Array {
  const body = stream.subarray(0, stream.length - 32);
  return concatBytes(body, new Uint8Array(createHash('sha256').update(body).digest()));
}

function randomBytes(rng: SeededRng, max: number): Uint8Array {
  const b = new Uint8Array(rng.int(max + 1));
  for (let i = 0; i < b.length; i++) b[i] = rng.int(256);
  return b;
}

/** Splits `b` into random pieces of 0..maxPiece bytes (empty pieces included). */
function rechunk(rng: SeededRng, b: Uint8Array, maxPiece: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < b.length; ) {
    const n = rng.int(maxPiece + 1);
    out.push(b.slice(at, at + n));
    at += n;
  }
  return out;
}

const small: SnapshotRecord[] = [
  { kind: 'session', key: enc('client-1'), value: enc('session value') },
  { kind: 'data', key: enc('a'), value: enc('1') },
  { kind: 'data', key: new Uint8Array(0), value: new Uint8Array(0) },
];

describe('snapshot stream format', () => {
  it('round-trips records that straddle chunk boundaries, however the stream is cut', async () => {
    const seed = seedOf('snapshot-format round trip');
    const rng = createRng(seed);
    for (let run = 0; run < 20; run++) {
      const records: SnapshotRecord[] = [];
      const n = rng.int(60);
      for (let i = 0; i < n; i++) {
        records.push({ kind: rng.int(4) === 0 ? 'session' : 'data', key: randomBytes(rng, 40), value: randomBytes(rng, 600) });
      }
      const header: SnapshotHeader = { clusterId: `cluster-${rng.int(1000)}`, index: rng.int(1e9), term: 1 + rng.int(100), sessionClockMs: rng.int(2 ** 31) };
      const chunkBytes = 1 + rng.int(300);
      const chunks = await collect(encodeSnapshot(header, from(records), chunkBytes));
      // Every chunk but the last is exactly chunkBytes.
      chunks.slice(0, -1).forEach((c) => expect(c.length, `seed ${seed} run ${run}`).toBe(chunkBytes));
      expect(chunks[chunks.length - 1]?.length ?? 0, `seed ${seed} run ${run}`).toBeLessThanOrEqual(chunkBytes);
      const stream = concatBytes(...chunks);

      const { records: got, summary } = decodeAll(rechunk(rng, stream, 1 + rng.int(200)));
      expect(got, `seed ${seed} run ${run}`).toEqual(records);
      expect(summary.header, `seed ${seed} run ${run}`).toEqual(header);
      expect(summary.records).toBe(records.length);
      expect(summary.bytes).toBe(stream.length);
      expect(summary.sha256).toBe(Buffer.from(stream.subarray(stream.length - 32)).toString('hex'));
    }
  });

  it('round-trips an empty snapshot', async () => {
    const stream = await encodeAll(HEADER, []);
    const d = new SnapshotDecoder(LIMITS);
    expect(d.header).toBeUndefined();
    expect(d.push(stream)).toEqual([]);
    expect(d.header).toEqual(HEADER);
    expect(d.end()).toMatchObject({ header: HEADER, records: 0, bytes: stream.length });
  });

  it('pulls records only as chunks are consumed', async () => {
    let pulled = 0;
    async function* records(): AsyncGenerator<SnapshotRecord> {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield { kind: 'data', key: enc(`k${i}`), value: new Uint8Array(100) };
      }
    }
    const gen = encodeSnapshot(HEADER, records(), 1024);
    await gen.next();
    await gen.next();
    // Two chunks of 1 KiB hold about 18 records of ~113 bytes; far from all 1000.
    expect(pulled).toBeGreaterThan(0);
    expect(pulled).toBeLessThan(30);
    await gen.return(undefined);
  });

  it('hands out records that do not alias the pushed chunks', async () => {
    const stream = await encodeAll(HEADER, small);
    const copy = stream.slice();
    const { records } = decodeAll([copy]);
    copy.fill(0);
    expect(records).toEqual(small);
  });

  describe('detects damage', () => {
    it('a flipped bit or byte anywhere', async () => {
      const stream = await encodeAll(HEADER, small);
      for (let i = 0; i < stream.length; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const bad = stream.slice();
          bad[i] = (bad[i] as number) ^ mask;
          try {
            decodeAll([bad]);
          } catch (err) {
            expect(err, `byte ${i} ^ ${mask}`).toBeInstanceOf(SnapshotFormatError);
            continue;
          }
          throw new Error(`flipping byte ${i} with ${mask} went unnoticed`);
        }
      }
    });

    it('a truncation at every offset', async () => {
      const stream = await encodeAll(HEADER, small);
      for (let n = 0; n < stream.length; n++) {
        const err = decodeError(stream.slice(0, n));
        if (n >= 8) expect(err.message, `truncated to ${n}`).toBe(
          `truncated snapshot: the stream ended before the trailer, at byte ${n} (${n < 8 + 4 + 2 + 24 ? 'in the header' : `after ${recordsBefore(n)} records`})`,
        );
      }
      function recordsBefore(n: number): number {
        // Record sizes: 1 + 4 + key + 4 + value.
        let at = 8 + 4 + 2 + 24;
        let count = 0;
        for (const r of small) {
          at += 9 + r.key.length + r.value.length;
          if (at > n) break;
          count++;
        }
        return count;
      }
    });

    it('bad magic bytes, even before a whole header arrived', async () => {
      expect(decodeError(enc('PK\x03\x04 a zip file, not a snapshot')).message).toBe('not a raftkv snapshot (bad magic bytes at the start of the stream)');
      const d = new SnapshotDecoder(LIMITS);
      expect(() => d.push(enc('RKX'))).toThrow(/not a raftkv snapshot/);
      // The error sticks.
      expect(() => d.push(new Uint8Array(0))).toThrow(/not a raftkv snapshot/);
      expect(() => d.end()).toThrow(/not a raftkv snapshot/);
    });

    it('an unknown format version', async () => {
      const stream = await encodeAll(HEADER, small);
      stream[7] = 2;
      expect(decodeError(stream).message).toBe('snapshot: unknown format version 2; this raftkv reads version 1');
    });

    it('a checksum mismatch', async () => {
      const stream = await encodeAll(HEADER, small);
      const message = /^snapshot: checksum mismatch: the trailer says sha256 [0-9a-f]{16}\.\.\., the stream hashes to [0-9a-f]{16}\.\.\.$/;
      for (const at of [45, 56, stream.length - 40, stream.length - 1]) {
        // In a key, a value, the record count, the digest itself.
        const bad = stream.slice();
        bad[at] = (bad[at] as number) ^ 1;
        expect(decodeError(bad).message, `byte ${at}`).toMatch(message);
      }
    });

    it('a record count that does not match (with a valid checksum)', async () => {
      const stream = await encodeAll(HEADER, small);
      stream[stream.length - 33] = 9; // low byte of the count
      expect(decodeError(resign(stream)).message).toBe('snapshot: record count mismatch: the trailer says 9, the stream held 3');
    });

    it('bytes after the trailer, in the same chunk or a later one', async () => {
      const stream = await encodeAll(HEADER, small);
      expect(decodeError(concatBytes(stream, new Uint8Array([0]))).message).toBe(
        `snapshot: 1 bytes after the trailer, which ends at byte ${stream.length}`,
      );
      const d = new SnapshotDecoder(LIMITS);
      d.push(stream);
      expect(() => d.push(new Uint8Array(3))).toThrow(`snapshot: 3 bytes after the trailer, which ends at byte ${stream.length}`);
    });

    it('a key or value over the limit, naming the limit', async () => {
      const stream = await encodeAll(HEADER, small);
      expect(decodeError(stream, { maxKeyBytes: 4, maxValueBytes: 100 }).message).toBe(
        'snapshot: record 0 at byte 38 has a key of 8 bytes, over the limit (maxKeyBytes=4)',
      );
      expect(decodeError(stream, { maxKeyBytes: 100, maxValueBytes: 5 }).message).toBe(
        'snapshot: record 0 has a value of 13 bytes, over the limit (maxValueBytes=5)',
      );
    });

    it('an unknown record kind', async () => {
      const stream = await encodeAll(HEADER, small);
      stream[38] = 3;
      expect(decodeError(stream).message).toBe('snapshot: record 0 at byte 38 has unknown kind 3');
    });

    it('a header position that is not one', async () => {
      const stream = await encodeAll({ ...HEADER, index: 5, term: 0 }, []);
      expect(decodeError(stream).message).toBe('snapshot: the header says index 5 with term 0');
    });
  });
});
