// A compact binary encoding of the Raft core's messages, for peer traffic. Hand-written rather than
// protobuf so that one frame carries many messages with no per-message object overhead, and so that
// decoding can hand out entry data as views of the frame instead of copies.
//
// Wire format (every integer is an unsigned LEB128 varint of at most 8 bytes holding a JS safe
// integer, encoded minimally; "u8" is one byte):
//
//   batch        = version:u8 (= 1)  count:varint  message{count}
//   message      = tag:u8  from:varint  to:varint  term:varint  body
//   body by tag:
//     1 PreVote, 2 Vote         lastLogIndex:varint  lastLogTerm:varint
//     3 PreVoteResp, 4 VoteResp granted:u8 (0 | 1)
//     5 App                     prevIndex:varint  prevTerm:varint  commit:varint
//                               entryCount:varint  entry{entryCount}
//    11 App, noReply set        the body of 5 with entryCount 0 (a commit-only append the follower
//                               does not answer)
//     6 AppResp                 index:varint  flags:u8 (bit 0 reject, bit 1 hint present)
//                               [conflictTerm:varint  conflictIndex:varint]   when bit 1 is set
//     7 Heartbeat               commit:varint  context:varint
//     8 HeartbeatResp           context:varint
//     9 ReadIndex               context:varint
//    10 ReadIndexResp           context:varint  index:varint
//   entry        = index:varint  term:varint  type:u8 (0 normal, 1 noop)  dataLength:varint  data
//
// Decoding rejects, with MalformedFrameError: a truncated buffer, an unknown version, tag, entry type
// or flag bit, a boolean byte other than 0 or 1, a varint longer than 8 bytes, not minimal, or beyond
// Number.MAX_SAFE_INTEGER, a length or count that cannot fit in what is left of the frame, and bytes
// left over after the last message.
//
// Decoded entry data are views into the decoded buffer, not copies: the caller must not mutate the
// frame while it holds them, and holding one keeps the whole frame's memory alive.
//
// A Snap message has no encoding: it never travels on the peer stream (the leader's node streams the
// snapshot over InstallSnapshot, and the follower's node builds the Snap once a transfer completes).
// Encoding one is a programmer error and throws RangeError.

import { RaftKvError } from '../errors.js';
import type { Entry, EntryType, Message, SnapshotRequest } from '../raft/types.js';

export const CODEC_VERSION = 1;

/** A frame or message that does not follow the wire format. Maps to gRPC INVALID_ARGUMENT. */
export class MalformedFrameError extends RaftKvError {
  /** Byte offset in the frame where decoding failed. */
  readonly offset: number;
  constructor(offset: number, detail: string) {
    super('INVALID_ARGUMENT', `malformed peer frame at byte ${offset}: ${detail}`);
    this.offset = offset;
  }
}

/** The messages that travel on the peer stream: all but Snap. */
export type WireMessage = Exclude<Message, SnapshotRequest>;
export type WireMessageType = WireMessage['type'];

/** Throws the programmer error of encoding a Snap message. */
function snapNotEncodable(): never {
  throw new RangeError(
    'codec: a Snap message never travels on the peer stream; stream the snapshot with PeerTransport.sendSnapshot()',
  );
}

const TAG_BY_TYPE: Readonly<Record<WireMessageType, number>> = {
  PreVote: 1,
  Vote: 2,
  PreVoteResp: 3,
  VoteResp: 4,
  App: 5,
  AppResp: 6,
  Heartbeat: 7,
  HeartbeatResp: 8,
  ReadIndex: 9,
  ReadIndexResp: 10,
};
/** An App with noReply set; the body is an App's. */
const TAG_APP_NO_REPLY = 11;

const ENTRY_NORMAL = 0;
const ENTRY_NOOP = 1;

const FLAG_REJECT = 1;
const FLAG_HINT = 2;

/** The smallest encoded message: tag, from, to, term, no body. Bounds the count a batch can claim. */
const MIN_MESSAGE_BYTES = 4;
/** The smallest encoded entry: index, term, type, dataLength. */
const MIN_ENTRY_BYTES = 4;
/** A varint holds at most 8 * 7 = 56 bits; safe integers need 53. */
const MAX_VARINT_BYTES = 8;

// ---------------------------------------------------------------------------------------------
// Sizes

function checkUint(v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new RangeError(`codec: ${what} must be a non-negative safe integer, got ${v}`);
  }
}

/** Bytes of the varint encoding of v. Throws RangeError when v is not a non-negative safe integer. */
export function varintBytes(v: number, what = 'value'): number {
  if (v < 0x80 && v >= 0 && Number.isInteger(v)) return 1;
  checkUint(v, what);
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  for (let x = Math.floor(v / 0x10000000); x > 0; x = Math.floor(x / 0x80)) n++;
  return n;
}

function entryBytes(e: Entry): number {
  const dataLength = e.data.length;
  return (
    varintBytes(e.index, 'entry index') +
    varintBytes(e.term, 'entry term') +
    1 +
    varintBytes(dataLength) +
    dataLength
  );
}

/**
 * Bytes of one encoded message (not counting the batch header). Throws RangeError for a Snap message
 * or a number that is not a non-negative safe integer.
 */
export function encodedMessageBytes(m: Message): number {
  if (m.type === 'Snap') snapNotEncodable();
  let n = 1 + varintBytes(m.from, 'from') + varintBytes(m.to, 'to') + varintBytes(m.term, 'term');
  switch (m.type) {
    case 'PreVote':
    case 'Vote':
      return n + varintBytes(m.lastLogIndex, 'lastLogIndex') + varintBytes(m.lastLogTerm, 'lastLogTerm');
    case 'PreVoteResp':
    case 'VoteResp':
      return n + 1;
    case 'App': {
      n += varintBytes(m.prevIndex, 'prevIndex') + varintBytes(m.prevTerm, 'prevTerm');
      n += varintBytes(m.commit, 'commit') + varintBytes(m.entries.length);
      for (const e of m.entries) n += entryBytes(e);
      return n;
    }
    case 'AppResp':
      n += varintBytes(m.index, 'index') + 1;
      if (m.hint !== undefined) {
        n += varintBytes(m.hint.conflictTerm, 'conflictTerm') + varintBytes(m.hint.conflictIndex, 'conflictIndex');
      }
      return n;
    case 'Heartbeat':
      return n + varintBytes(m.commit, 'commit') + varintBytes(m.context, 'context');
    case 'HeartbeatResp':
    case 'ReadIndex':
      return n + varintBytes(m.context, 'context');
    case 'ReadIndexResp':
      return n + varintBytes(m.context, 'context') + varintBytes(m.index, 'index');
  }
}

/** Bytes of the batch header for `count` messages. */
export function batchHeaderBytes(count: number): number {
  return 1 + varintBytes(count);
}

/** The largest batch header: a count needs at most 5 bytes below 2^35. */
export const MAX_BATCH_HEADER_BYTES = 1 + MAX_VARINT_BYTES;

// ---------------------------------------------------------------------------------------------
// Encoding

/** Writes v (already checked by varintBytes) at pos; returns the position after it. */
function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    // `& 0x7f` goes through ToInt32, which keeps the low 7 bits of any integer up to 2^53.
    buf[pos++] = (v & 0x7f) | 0x80;
    v = v >= 0x80000000 ? Math.floor(v / 0x80) : v >>> 7;
  }
  buf[pos++] = v;
  return pos;
}

function writeMessage(buf: Uint8Array, pos: number, m: Message): number {
  if (m.type === 'Snap') snapNotEncodable();
  if (m.type === 'App' && m.noReply === true && m.entries.length > 0) {
    throw new RangeError(`codec: an App with noReply may carry no entries, got ${m.entries.length}`);
  }
  buf[pos++] = m.type === 'App' && m.noReply === true ? TAG_APP_NO_REPLY : TAG_BY_TYPE[m.type];
  pos = writeVarint(buf, pos, m.from);
  pos = writeVarint(buf, pos, m.to);
  pos = writeVarint(buf, pos, m.term);
  switch (m.type) {
    case 'PreVote':
    case 'Vote':
      pos = writeVarint(buf, pos, m.lastLogIndex);
      return writeVarint(buf, pos, m.lastLogTerm);
    case 'PreVoteResp':
    case 'VoteResp':
      buf[pos++] = m.granted ? 1 : 0;
      return pos;
    case 'App':
      pos = writeVarint(buf, pos, m.prevIndex);
      pos = writeVarint(buf, pos, m.prevTerm);
      pos = writeVarint(buf, pos, m.commit);
      pos = writeVarint(buf, pos, m.entries.length);
      for (const e of m.entries) {
        pos = writeVarint(buf, pos, e.index);
        pos = writeVarint(buf, pos, e.term);
        buf[pos++] = e.type === 'noop' ? ENTRY_NOOP : ENTRY_NORMAL;
        pos = writeVarint(buf, pos, e.data.length);
        buf.set(e.data, pos);
        pos += e.data.length;
      }
      return pos;
    case 'AppResp':
      pos = writeVarint(buf, pos, m.index);
      buf[pos++] = (m.reject ? FLAG_REJECT : 0) | (m.hint !== undefined ? FLAG_HINT : 0);
      if (m.hint !== undefined) {
        pos = writeVarint(buf, pos, m.hint.conflictTerm);
        pos = writeVarint(buf, pos, m.hint.conflictIndex);
      }
      return pos;
    case 'Heartbeat':
      pos = writeVarint(buf, pos, m.commit);
      return writeVarint(buf, pos, m.context);
    case 'HeartbeatResp':
    case 'ReadIndex':
      return writeVarint(buf, pos, m.context);
    case 'ReadIndexResp':
      pos = writeVarint(buf, pos, m.context);
      return writeVarint(buf, pos, m.index);
  }
}

/**
 * Encodes messages as one batch. Entry data are copied once, into the returned buffer. Throws
 * RangeError (a programmer error) for a Snap message, or when a number in a message is not a
 * non-negative safe integer.
 */
export function encodeBatch(messages: readonly Message[]): Buffer {
  let total = batchHeaderBytes(messages.length);
  for (const m of messages) total += encodedMessageBytes(m);
  const buf = Buffer.allocUnsafe(total);
  buf[0] = CODEC_VERSION;
  let pos = writeVarint(buf, 1, messages.length);
  for (const m of messages) pos = writeMessage(buf, pos, m);
  if (pos !== total) throw new Error(`codec: encoded ${pos} bytes, computed ${total}`);
  return buf;
}

/** Encodes one message, without a batch header. */
export function encodeMessage(m: Message): Buffer {
  const total = encodedMessageBytes(m);
  const buf = Buffer.allocUnsafe(total);
  const pos = writeMessage(buf, 0, m);
  if (pos !== total) throw new Error(`codec: encoded ${pos} bytes, computed ${total}`);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Decoding

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  fail(detail: string, at = this.pos): never {
    throw new MalformedFrameError(at, detail);
  }

  u8(what: string): number {
    const b = this.buf[this.pos];
    if (b === undefined) this.fail(`truncated: expected ${what}`);
    this.pos++;
    return b;
  }

  bool(what: string): boolean {
    const start = this.pos;
    const b = this.u8(what);
    if (b > 1) this.fail(`${what}: boolean byte must be 0 or 1, got ${b}`, start);
    return b === 1;
  }

  varint(what: string): number {
    const start = this.pos;
    let b = this.u8(what);
    if (b < 0x80) return b;
    let v = b & 0x7f;
    let scale = 0x80;
    for (let i = 1; ; i++) {
      if (i === MAX_VARINT_BYTES) this.fail(`${what}: varint longer than ${MAX_VARINT_BYTES} bytes`, start);
      b = this.u8(what);
      v += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (b === 0) this.fail(`${what}: varint not minimally encoded`, start);
        break;
      }
      scale *= 0x80;
    }
    if (!Number.isSafeInteger(v)) this.fail(`${what}: ${v} is beyond Number.MAX_SAFE_INTEGER`, start);
    return v;
  }

  /** A count of items of at least minItemBytes each, checked against what is left. */
  count(what: string, minItemBytes: number): number {
    const start = this.pos;
    const n = this.varint(what);
    if (n * minItemBytes > this.remaining) {
      this.fail(`${what} ${n} cannot fit in the ${this.remaining} bytes left`, start);
    }
    return n;
  }

  /** A view of the next n bytes (no copy). */
  bytes(n: number, what: string): Uint8Array {
    if (n > this.remaining) this.fail(`${what}: length ${n} exceeds the ${this.remaining} bytes left`);
    const view = new Uint8Array(this.buf.buffer, this.buf.byteOffset + this.pos, n);
    this.pos += n;
    return view;
  }
}

function readEntry(r: Reader): Entry {
  const index = r.varint('entry index');
  const term = r.varint('entry term');
  const typeAt = r.pos;
  const typeByte = r.u8('entry type');
  let type: EntryType;
  if (typeByte === ENTRY_NORMAL) type = 'normal';
  else if (typeByte === ENTRY_NOOP) type = 'noop';
  else r.fail(`unknown entry type ${typeByte}`, typeAt);
  const lengthAt = r.pos;
  const length = r.varint('entry data length');
  if (length > r.remaining) r.fail(`entry data length ${length} exceeds the ${r.remaining} bytes left`, lengthAt);
  const data = r.bytes(length, 'entry data');
  return { index, term, type, data };
}

function readMessage(r: Reader): WireMessage {
  const tagAt = r.pos;
  const tag = r.u8('message tag');
  const from = r.varint('from');
  const to = r.varint('to');
  const term = r.varint('term');
  switch (tag) {
    case 1:
    case 2: {
      const lastLogIndex = r.varint('lastLogIndex');
      const lastLogTerm = r.varint('lastLogTerm');
      return { type: tag === 1 ? 'PreVote' : 'Vote', from, to, term, lastLogIndex, lastLogTerm };
    }
    case 3:
    case 4:
      return { type: tag === 3 ? 'PreVoteResp' : 'VoteResp', from, to, term, granted: r.bool('granted') };
    case 5:
    case TAG_APP_NO_REPLY: {
      const prevIndex = r.varint('prevIndex');
      const prevTerm = r.varint('prevTerm');
      const commit = r.varint('commit');
      const countAt = r.pos;
      const n = r.count('entry count', MIN_ENTRY_BYTES);
      if (tag === TAG_APP_NO_REPLY && n > 0) r.fail(`an App with noReply carries ${n} entries (it may carry none)`, countAt);
      const entries: Entry[] = new Array<Entry>(n);
      for (let i = 0; i < n; i++) entries[i] = readEntry(r);
      const m = { type: 'App', from, to, term, prevIndex, prevTerm, commit, entries } as const;
      return tag === 5 ? m : { ...m, noReply: true };
    }
    case 6: {
      const index = r.varint('index');
      const flagsAt = r.pos;
      const flags = r.u8('AppResp flags');
      if ((flags & ~(FLAG_REJECT | FLAG_HINT)) !== 0) r.fail(`unknown AppResp flag bits 0x${flags.toString(16)}`, flagsAt);
      const reject = (flags & FLAG_REJECT) !== 0;
      if ((flags & FLAG_HINT) === 0) return { type: 'AppResp', from, to, term, index, reject };
      const conflictTerm = r.varint('conflictTerm');
      const conflictIndex = r.varint('conflictIndex');
      return { type: 'AppResp', from, to, term, index, reject, hint: { conflictTerm, conflictIndex } };
    }
    case 7: {
      const commit = r.varint('commit');
      return { type: 'Heartbeat', from, to, term, commit, context: r.varint('context') };
    }
    case 8:
      return { type: 'HeartbeatResp', from, to, term, context: r.varint('context') };
    case 9:
      return { type: 'ReadIndex', from, to, term, context: r.varint('context') };
    case 10: {
      const context = r.varint('context');
      return { type: 'ReadIndexResp', from, to, term, context, index: r.varint('index') };
    }
    default:
      return r.fail(`unknown message tag ${tag}`, tagAt);
  }
}

/** Decodes a batch. Throws MalformedFrameError on anything that does not follow the format. */
export function decodeBatch(frame: Uint8Array): WireMessage[] {
  const r = new Reader(frame);
  const version = r.u8('version');
  if (version !== CODEC_VERSION) r.fail(`unknown codec version ${version}`, 0);
  const n = r.count('message count', MIN_MESSAGE_BYTES);
  const messages: WireMessage[] = new Array<WireMessage>(n);
  for (let i = 0; i < n; i++) messages[i] = readMessage(r);
  if (r.remaining !== 0) r.fail(`${r.remaining} trailing bytes after ${n} messages`);
  return messages;
}

/** Decodes one message encoded by encodeMessage. Throws MalformedFrameError like decodeBatch. */
export function decodeMessage(bytes: Uint8Array): WireMessage {
  const r = new Reader(bytes);
  const m = readMessage(r);
  if (r.remaining !== 0) r.fail(`${r.remaining} trailing bytes after the message`);
  return m;
}
