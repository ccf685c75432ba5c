// A KV record, as etcd keeps them: the value plus where in the log it was created and last changed.
// Stored encoding (the value of a data key, see src/storage/keys.ts):
//   u64 createIndex, u64 modIndex, u64 version, value bytes (rest)

import { DecodeError, Reader, Writer } from '../storage/bytes.js';

export interface KvRecord {
  readonly value: Uint8Array;
  /** Index of the log entry that created the key (since it was last absent). */
  readonly createIndex: number;
  /** Index of the log entry that last modified the key. Invariant: createIndex <= modIndex. */
  readonly modIndex: number;
  /** Number of modifications since creation: 1 after the creating write. */
  readonly version: number;
}

/** A view of a transient writer's slab (see Writer.transient): for a LevelDB write, not to be kept. */
export function encodeRecord(r: KvRecord): Uint8Array {
  return Writer.transient(24 + r.value.length)
    .u64(r.createIndex, 'createIndex')
    .u64(r.modIndex, 'modIndex')
    .u64(r.version, 'version')
    .raw(r.value)
    .finish();
}

/** Throws DecodeError on malformed bytes; the caller adds context. */
export function decodeRecord(b: Uint8Array): KvRecord {
  const r = new Reader(b);
  const createIndex = r.u64('createIndex');
  const modIndex = r.u64('modIndex');
  const version = r.u64('version');
  return checked({ createIndex, modIndex, version, value: r.rest() });
}

function checked(rec: KvRecord): KvRecord {
  if (rec.createIndex < 1 || rec.modIndex < rec.createIndex || rec.version < 1) {
    throw new DecodeError(`inconsistent record: createIndex ${rec.createIndex}, modIndex ${rec.modIndex}, version ${rec.version}`);
  }
  return rec;
}

/** The bytes writeRecord writes for `r`: three u64, a u32 length, the value. */
export function writtenRecordBytes(r: KvRecord): number {
  return 28 + r.value.length;
}

/** As a length-prefixed field inside a larger value (apply results). */
export function writeRecord(w: Writer, r: KvRecord): void {
  w.u64(r.createIndex, 'createIndex').u64(r.modIndex, 'modIndex').u64(r.version, 'version').bytes(r.value);
}

export function readRecord(r: Reader): KvRecord {
  const createIndex = r.u64('createIndex');
  const modIndex = r.u64('modIndex');
  const version = r.u64('version');
  return checked({ createIndex, modIndex, version, value: r.bytes('value') });
}
