// The pure parts of bench/grpc-floor.ts: peer payloads of a chosen size and the pacer's arithmetic.
// Its TCP framing is the peer wire's (test/transport/peer-wire.test.ts). No assertion on speed.

import { describe, expect, it } from 'vitest';
import { appendPayload, entryDataBytesFor, FIRST_ENTRY_INDEX, framesToSend, MIN_FRAME_BYTES } from '../../bench/grpc-floor.js';
import { decodeBatch } from '../../src/transport/codec.js';

describe('appendPayload and entryDataBytesFor', () => {
  it('make payloads of the size asked (one byte less where the length varint grows), the same for every index', () => {
    const sizes = [...Array.from({ length: 300 }, (_, i) => MIN_FRAME_BYTES + i), 400, 16_384, 16_385, 1024 * 1024];
    for (const size of sizes) {
      const data = new Uint8Array(entryDataBytesFor(size));
      const first = appendPayload(FIRST_ENTRY_INDEX, data);
      expect(first.length === size || first.length === size - 1, `size ${size}: got ${first.length}`).toBe(true);
      expect(appendPayload(FIRST_ENTRY_INDEX + 10_000_000, data).length).toBe(first.length);
    }
    expect(appendPayload(FIRST_ENTRY_INDEX, new Uint8Array(entryDataBytesFor(400))).length).toBe(400);
  });

  it('encode one App with one entry that decodes back', () => {
    const data = new Uint8Array(entryDataBytesFor(400)).fill(7);
    const [m, ...rest] = decodeBatch(appendPayload(FIRST_ENTRY_INDEX + 5, data));
    expect(rest).toEqual([]);
    expect(m?.type).toBe('App');
    if (m?.type !== 'App') return;
    expect(m.prevIndex).toBe(FIRST_ENTRY_INDEX + 4);
    expect(m.entries).toHaveLength(1);
    expect(m.entries[0]!.index).toBe(FIRST_ENTRY_INDEX + 5);
    expect(Buffer.from(m.entries[0]!.data).equals(Buffer.from(data))).toBe(true);
  });

  it('refuses a size below the smallest payload', () => {
    expect(() => entryDataBytesFor(MIN_FRAME_BYTES - 1)).toThrow(RangeError);
    expect(entryDataBytesFor(MIN_FRAME_BYTES)).toBe(0);
  });
});

describe('framesToSend', () => {
  it('sends what is due at the rate, and skips what is owed beyond the backlog', () => {
    expect(framesToSend(0, 2000, 0, 200)).toEqual({ send: 0, skip: 0 });
    expect(framesToSend(1, 2000, 0, 200)).toEqual({ send: 2, skip: 0 });
    expect(framesToSend(1.4, 2000, 2, 200)).toEqual({ send: 0, skip: 0 });
    // A late tick catches up in one go.
    expect(framesToSend(3.2, 2000, 2, 200)).toEqual({ send: 4, skip: 0 });
    // A stall of a second: 100 ms worth is sent, the rest skipped.
    expect(framesToSend(1000, 2000, 0, 200)).toEqual({ send: 200, skip: 1800 });
    // A low rate sends one frame per period.
    expect(framesToSend(999, 1, 0, 1)).toEqual({ send: 0, skip: 0 });
    expect(framesToSend(1000, 1, 0, 1)).toEqual({ send: 1, skip: 0 });
  });
});
