// prefixEnd must not change its argument. gRPC decodes bytes fields as Buffers, whose slice() is a
// view: an earlier prefixEnd wrote the incremented byte into the request's own prefix, so a Range
// by prefix "a" searched ["b", "b") and found nothing.

import { describe, expect, it } from 'vitest';
import { prefixEnd } from '../../src/storage/bytes.js';

describe('prefixEnd', () => {
  it('returns the next prefix and leaves a Buffer argument as it was', () => {
    const prefix = Buffer.from('ab');
    expect(Buffer.from(prefixEnd(prefix)!).toString()).toBe('ac');
    expect(prefix.toString()).toBe('ab');
  });

  it('drops trailing 0xff bytes, and has no end for an empty or all-0xff prefix', () => {
    const prefix = new Uint8Array([1, 0xff, 0xff]);
    expect([...prefixEnd(prefix)!]).toEqual([2]);
    expect([...prefix]).toEqual([1, 0xff, 0xff]);
    expect(prefixEnd(new Uint8Array([0xff, 0xff]))).toBeUndefined();
    expect(prefixEnd(new Uint8Array(0))).toBeUndefined();
  });
});
