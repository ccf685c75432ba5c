// The key layout of a node's one LevelDB, and the codecs of the values the storage layer owns.
//
// Every key starts with a one-byte prefix naming its keyspace, so each keyspace is one contiguous key
// range that an iterator can walk without touching the others:
//
//   0x01 meta       [0x01, id]                  one key per field:
//        0x01 format version   u32              FORMAT_VERSION; checked first on open
//        0x02 cluster id       UTF-8            a store of another cluster is refused
//        0x03 node id          u64              a store of another node is refused
//        0x04 hard state       u64 term, u64 vote, u64 commit
//        0x05 applied index    u64              written in the same batch as the data it covers
//        0x06 session clock    u64 ms           high-water mark of applied commands' proposedAtMs
//   0x02 log        [0x02, u64 index]           u64 term, u8 type (0 normal, 1 noop), data (rest)
//                                               8-byte big-endian index: LevelDB order = log order
//   0x03 kv data    [0x03, ...key bytes]        a KV record (codec: src/kv/record.ts)
//   0x04 sessions   [0x04, ...clientId UTF-8]   a client session (codec: src/kv/session-table.ts)
//
// All numbers are 8-byte big-endian (u64) unless noted, and hold safe integers (checked on decode).
// The storage layer treats KV records and sessions as opaque bytes; src/kv gives them meaning.

import type { Entry, EntryType, HardState } from '../raft/types.js';
import { DecodeError, Reader, Writer } from './bytes.js';

/** Bump on any incompatible change to the layout or a value's codec. */
export const FORMAT_VERSION = 1;

export const PREFIX_META = 0x01;
export const PREFIX_LOG = 0x02;
export const PREFIX_DATA = 0x03;
export const PREFIX_SESSION = 0x04;

export const META_FORMAT_VERSION = new Uint8Array([PREFIX_META, 0x01]);
export const META_CLUSTER_ID = new Uint8Array([PREFIX_META, 0x02]);
export const META_NODE_ID = new Uint8Array([PREFIX_META, 0x03]);
export const META_HARD_STATE = new Uint8Array([PREFIX_META, 0x04]);
export const META_APPLIED = new Uint8Array([PREFIX_META, 0x05]);
export const META_SESSION_CLOCK = new Uint8Array([PREFIX_META, 0x06]);

/** Bounds of a whole keyspace: [prefix, prefix + 1). */
export function keyspace(prefix: number): { gte: Uint8Array; lt: Uint8Array } {
  return { gte: new Uint8Array([prefix]), lt: new Uint8Array([prefix + 1]) };
}

export function logKey(index: number): Uint8Array {
  return new Writer(9).u8(PREFIX_LOG).u64(index, 'log index').finish();
}

/** The index a log key names; throws DecodeError on a key of the wrong shape. */
export function logKeyIndex(key: Uint8Array): number {
  const r = new Reader(key);
  if (r.u8('prefix') !== PREFIX_LOG) throw new DecodeError('not a log key');
  const index = r.u64('log index');
  r.end('log key');
  return index;
}

export function dataKey(key: Uint8Array): Uint8Array {
  const k = new Uint8Array(key.length + 1);
  k[0] = PREFIX_DATA;
  k.set(key, 1);
  return k;
}

export function sessionKey(clientIdUtf8: Uint8Array): Uint8Array {
  const k = new Uint8Array(clientIdUtf8.length + 1);
  k[0] = PREFIX_SESSION;
  k.set(clientIdUtf8, 1);
  return k;
}

export function encodeU64(n: number): Uint8Array {
  return new Writer(8).u64(n).finish();
}

export function decodeU64(b: Uint8Array, what: string): number {
  const r = new Reader(b);
  const n = r.u64(what);
  r.end(what);
  return n;
}

export function encodeU32(n: number): Uint8Array {
  return new Writer(4).u32(n).finish();
}

export function decodeU32(b: Uint8Array, what: string): number {
  const r = new Reader(b);
  const n = r.u32(what);
  r.end(what);
  return n;
}

export function encodeHardState(hs: HardState): Uint8Array {
  return new Writer(24).u64(hs.term, 'term').u64(hs.vote, 'vote').u64(hs.commit, 'commit').finish();
}

export function decodeHardState(b: Uint8Array): HardState {
  const r = new Reader(b);
  const hs: HardState = { term: r.u64('term'), vote: r.u64('vote'), commit: r.u64('commit') };
  r.end('hard state');
  return hs;
}

const ENTRY_TYPE_CODE: Record<EntryType, number> = { normal: 0, noop: 1 };

/** The value of a log key: the index lives in the key, so it is not repeated here. */
export function encodeEntryValue(e: Entry): Uint8Array {
  return new Writer(9 + e.data.length).u64(e.term, 'term').u8(ENTRY_TYPE_CODE[e.type]).raw(e.data).finish();
}

export function decodeEntryValue(index: number, b: Uint8Array): Entry {
  const r = new Reader(b);
  const term = r.u64('term');
  const code = r.u8('entry type');
  let type: EntryType;
  if (code === 0) type = 'normal';
  else if (code === 1) type = 'noop';
  else throw new DecodeError(`unknown entry type ${code}`);
  return { index, term, type, data: r.rest() };
}
