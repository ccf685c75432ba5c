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
//        0x07 state generation u32              which generation of the 0x03 keyspace is current
//        0x08 log start        u64 index, u64 term
//                                               entries <= index are compacted; term is the term of
//                                               the entry at index; {0, 0} for a log never compacted
//   0x02 log        [0x02, u64 index]           u64 term, u8 type (0 normal, 1 noop), data (rest)
//                                               8-byte big-endian index: LevelDB order = log order
//   0x03 state      [0x03, u32 gen, ...]        the state machine, one generation per install:
//        [.., 0x00, 0x01]                       applied: u64 index, u64 term (of the entry at index)
//        [.., 0x00, 0x02]                       session clock: u64 ms, the high-water mark of applied
//                                               commands' proposedAtMs
//        [.., 0x01, ...clientId UTF-8]          a client session (codec: src/kv/session-table.ts)
//        [.., 0x02, ...user key bytes]          a KV record (codec: src/kv/record.ts)
//
// The applied index is written in the same batch as the data it covers, inside the generation, so ONE
// iterator over [0x03, gen] (an implicit LevelDB snapshot) reads a consistent applied index, clock,
// session table and data, in that order: that is how a snapshot is read while writes go on.
//
// Installing a received snapshot writes it into generation current + 1 (staging), then switches the
// meta key 0x07 in one synced batch; any generation other than the current one is garbage (a crash
// or abort mid-install) and is cleared on open.
//
// All numbers are big-endian: 8 bytes (u64) unless noted, and hold safe integers (checked on decode).
// The storage layer treats KV records and sessions as opaque bytes; src/kv gives them meaning.

import type { Entry, EntryType, HardState, SnapshotMeta } from '../raft/types.js';
import { DecodeError, Reader, Writer } from './bytes.js';

/** Bump on any incompatible change to the layout or a value's codec. 2: state generations, log start. */
export const FORMAT_VERSION = 2;

export const PREFIX_META = 0x01;
export const PREFIX_LOG = 0x02;
export const PREFIX_STATE = 0x03;

export const META_FORMAT_VERSION = new Uint8Array([PREFIX_META, 0x01]);
export const META_CLUSTER_ID = new Uint8Array([PREFIX_META, 0x02]);
export const META_NODE_ID = new Uint8Array([PREFIX_META, 0x03]);
export const META_HARD_STATE = new Uint8Array([PREFIX_META, 0x04]);
// 0x05 (applied) and 0x06 (session clock) were meta keys in format 1; they live in the generation now.
export const META_STATE_GENERATION = new Uint8Array([PREFIX_META, 0x07]);
export const META_LOG_START = new Uint8Array([PREFIX_META, 0x08]);

/** The third byte of a state key, after [0x03, u32 gen]: what kind of key it is. */
export const STATE_KIND_META = 0x00;
export const STATE_KIND_SESSION = 0x01;
export const STATE_KIND_DATA = 0x02;
const STATE_META_APPLIED = 0x01;
const STATE_META_SESSION_CLOCK = 0x02;

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

/** Bytes of a state key before its kind byte: [0x03, u32 gen]. */
export const STATE_GEN_PREFIX_BYTES = 5;

function stateKey(gen: number, kind: number, rest: Uint8Array): Uint8Array {
  const k = new Uint8Array(STATE_GEN_PREFIX_BYTES + 1 + rest.length);
  k[0] = PREFIX_STATE;
  // Byte stores, not a DataView: asking a small typed array for its .buffer makes V8 move it off-heap.
  const g = checkGeneration(gen);
  k[1] = g >>> 24;
  k[2] = (g >>> 16) & 0xff;
  k[3] = (g >>> 8) & 0xff;
  k[4] = g & 0xff;
  k[STATE_GEN_PREFIX_BYTES] = kind;
  k.set(rest, STATE_GEN_PREFIX_BYTES + 1);
  return k;
}

function checkGeneration(gen: number): number {
  if (!Number.isInteger(gen) || gen < 0 || gen > 0xffff_ffff) throw new RangeError(`state generation out of range: ${gen}`);
  return gen;
}

/** The generation after `gen` (u32, wrapping). */
export function nextGeneration(gen: number): number {
  return (checkGeneration(gen) + 1) % 2 ** 32;
}

/** Bounds of one generation of the state keyspace: [0x03, gen] up to the next generation. */
export function generationRange(gen: number): { gte: Uint8Array; lt: Uint8Array } {
  const gte = new Writer(5).u8(PREFIX_STATE).u32(checkGeneration(gen)).finish();
  const lt = gen === 0xffff_ffff ? new Uint8Array([PREFIX_STATE + 1]) : new Writer(5).u8(PREFIX_STATE).u32(gen + 1).finish();
  return { gte, lt };
}

/** Bounds of one kind of key (sessions or data) within a generation. */
export function stateKindRange(gen: number, kind: number): { gte: Uint8Array; lt: Uint8Array } {
  return { gte: stateKey(gen, kind, new Uint8Array(0)), lt: stateKey(gen, kind + 1, new Uint8Array(0)) };
}

export function appliedKey(gen: number): Uint8Array {
  return stateKey(gen, STATE_KIND_META, new Uint8Array([STATE_META_APPLIED]));
}

export function sessionClockKey(gen: number): Uint8Array {
  return stateKey(gen, STATE_KIND_META, new Uint8Array([STATE_META_SESSION_CLOCK]));
}

export function dataKey(gen: number, key: Uint8Array): Uint8Array {
  return stateKey(gen, STATE_KIND_DATA, key);
}

export function sessionKey(gen: number, clientIdUtf8: Uint8Array): Uint8Array {
  return stateKey(gen, STATE_KIND_SESSION, clientIdUtf8);
}

/** The generation and kind of a state key, and its bytes after the kind (a view). */
export function parseStateKey(key: Uint8Array): { gen: number; kind: number; rest: Uint8Array } {
  const r = new Reader(key);
  if (r.u8('prefix') !== PREFIX_STATE) throw new DecodeError('not a state key');
  const gen = r.u32('state generation');
  const kind = r.u8('state key kind');
  return { gen, kind, rest: r.rest() };
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

/** A log start or an applied position: u64 index, u64 term. */
export function encodeSnapshotMeta(m: SnapshotMeta): Uint8Array {
  return new Writer(16).u64(m.index, 'index').u64(m.term, 'term').finish();
}

export function decodeSnapshotMeta(b: Uint8Array): SnapshotMeta {
  const r = new Reader(b);
  const m: SnapshotMeta = { index: r.u64('index'), term: r.u64('term') };
  r.end('index and term');
  return m;
}

const ENTRY_TYPE_CODE: Record<EntryType, number> = { normal: 0, noop: 1 };

/**
 * The value of a log key: the index lives in the key, so it is not repeated here. A view of a
 * transient writer's slab: for a LevelDB write, not to be kept.
 */
export function encodeEntryValue(e: Entry): Uint8Array {
  return Writer.transient(9 + e.data.length).u64(e.term, 'term').u8(ENTRY_TYPE_CODE[e.type]).raw(e.data).finish();
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
