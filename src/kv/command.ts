// The commands the KV state machine replicates (the `data` of 'normal' Raft entries), and the
// results of applying them. Both have a compact binary form; decoding validates everything and
// throws a RaftKvError('INVALID_ARGUMENT') on malformed input.
//
// Command encoding:
//   u8 COMMAND_CODEC_VERSION, u8 op (1 put, 2 delete, 3 cas), u8 flags (version 2 on; bit 0: prevKv,
//   other bits zero), u64 proposedAtMs, str clientId, u64 seq, bytes key, then per op:
//     put:    bytes value
//     delete: (nothing)
//     cas:    u8 compare (1 value equals: bytes; 2 modIndex equals: u64; 3 key absent), bytes value
//   (str and bytes are a u32 length, then the bytes; u64 is 8 bytes big-endian, a safe integer)
// Version 1 (no flags byte) is still read, from logs written before version 2: its puts and deletes
// decode with prevKv set, since their results always kept the previous record.
//
// Result encoding (kept in the session table, to answer a retried command with its first result):
//   u8 kind (1 put, 2 delete, 3 cas), u64 index, then per kind:
//     put:    bool hasPrev, [record]
//     delete: bool deleted, bool hasPrev, [record]
//     cas:    bool succeeded, bool hasCurrent, [record]
//   (record: u64 createIndex, u64 modIndex, u64 version, bytes value)

import { RaftKvError } from '../errors.js';
import { DecodeError, Reader, utf8, Writer } from '../storage/bytes.js';
import { readRecord, writeRecord, writtenRecordBytes, type KvRecord } from './record.js';

export const COMMAND_CODEC_VERSION = 2;
/** The version before the flags byte; still decoded. */
const COMMAND_CODEC_VERSION_1 = 1;
const FLAG_PREV_KV = 1;

/** What a compare-and-swap checks before it writes. */
export type Compare =
  /** The key exists and its value equals these bytes. */
  | { readonly kind: 'value'; readonly value: Uint8Array }
  /** The key's modIndex equals this (an absent key has modIndex 0, as in etcd). */
  | { readonly kind: 'modIndex'; readonly modIndex: number }
  /** The key is absent: create-only-if-absent. */
  | { readonly kind: 'absent' };

interface CommandBase {
  readonly key: Uint8Array;
  /**
   * The proposing node's wall clock when it proposed. Used only to expire client sessions, and
   * deterministically: every replica sees the same value in the log.
   */
  readonly proposedAtMs: number;
  /** With seq: the client's session, for exactly-once writes. Omitted or '': no deduplication. */
  readonly clientId?: string;
  /** The client's sequence number for this command (>= 1), increasing per client. Omitted or 0: none. */
  readonly seq?: number;
}

export interface PutCommand extends CommandBase {
  readonly op: 'put';
  readonly value: Uint8Array;
  /**
   * The client asked for the record the put replaces. Only then does the result carry it, and only
   * then does the session table keep it (a retry asks the same), so a plain put stores no copy.
   */
  readonly prevKv?: boolean;
}

export interface DeleteCommand extends CommandBase {
  readonly op: 'delete';
  /** As PutCommand.prevKv, for the record removed. */
  readonly prevKv?: boolean;
}

export interface CasCommand extends CommandBase {
  readonly op: 'cas';
  readonly compare: Compare;
  /** Written when the compare holds. */
  readonly value: Uint8Array;
}

export type Command = PutCommand | DeleteCommand | CasCommand;

/** A result names the index of the entry that carried the command: where the write was committed. */
export interface PutResult {
  readonly kind: 'put';
  readonly index: number;
  /** The record the put replaced, if the key existed and the command asked for it (prevKv). */
  readonly prev?: KvRecord;
  /** Set when this is the stored result of an earlier apply of the same clientId+seq. */
  readonly duplicate?: true;
}

export interface DeleteResult {
  readonly kind: 'delete';
  readonly index: number;
  readonly deleted: boolean;
  /** The record removed, if the key existed and the command asked for it (prevKv). */
  readonly prev?: KvRecord;
  readonly duplicate?: true;
}

export interface CasResult {
  readonly kind: 'cas';
  readonly index: number;
  readonly succeeded: boolean;
  /** The key's record after this entry: the new one on success, the unchanged one (if any) on failure. */
  readonly current?: KvRecord;
  readonly duplicate?: true;
}

export interface NoopResult {
  readonly kind: 'noop';
  readonly index: number;
}

/**
 * The entry changed nothing: a stale sequence number (seq below the client's last), or a command
 * that does not decode (every replica rejects it alike, and the applied index still advances).
 */
export interface ErrorResult {
  readonly kind: 'error';
  readonly index: number;
  readonly code: 'STALE_SEQUENCE' | 'MALFORMED_COMMAND';
  readonly message: string;
}

export type WriteResult = PutResult | DeleteResult | CasResult;
export type ApplyResult = WriteResult | NoopResult | ErrorResult;

const OP_PUT = 1;
const OP_DELETE = 2;
const OP_CAS = 3;
const CMP_VALUE = 1;
const CMP_MOD_INDEX = 2;
const CMP_ABSENT = 3;

/** Encodes a command for a Raft entry. Throws RangeError on out-of-range numbers (a caller bug). */
export function encodeCommand(c: Command): Uint8Array {
  const clientId = utf8(c.clientId ?? '');
  // The exact size, so the Writer never grows and finish() does not copy: version, op, flags,
  // proposedAtMs, clientId, seq, key, then the op's fields.
  let size = 1 + 1 + 1 + 8 + 4 + clientId.length + 8 + 4 + c.key.length;
  switch (c.op) {
    case 'put':
      size += 4 + c.value.length;
      break;
    case 'delete':
      break;
    case 'cas':
      size += 1 + 4 + c.value.length;
      if (c.compare.kind === 'value') size += 4 + c.compare.value.length;
      else if (c.compare.kind === 'modIndex') size += 8;
      break;
  }
  // Kept by the Raft log until compaction, which drops entries in order: a queued writer's slab.
  const w = Writer.queued(size);
  const op = c.op === 'put' ? OP_PUT : c.op === 'delete' ? OP_DELETE : OP_CAS;
  const flags = c.op !== 'cas' && c.prevKv === true ? FLAG_PREV_KV : 0;
  w.u8(COMMAND_CODEC_VERSION).u8(op).u8(flags).u64(c.proposedAtMs, 'proposedAtMs');
  w.bytes(clientId).u64(c.seq ?? 0, 'seq').bytes(c.key);
  switch (c.op) {
    case 'put':
      w.bytes(c.value);
      break;
    case 'delete':
      break;
    case 'cas':
      switch (c.compare.kind) {
        case 'value':
          w.u8(CMP_VALUE).bytes(c.compare.value);
          break;
        case 'modIndex':
          w.u8(CMP_MOD_INDEX).u64(c.compare.modIndex, 'compare modIndex');
          break;
        case 'absent':
          w.u8(CMP_ABSENT);
          break;
      }
      w.bytes(c.value);
      break;
  }
  return w.finish();
}

/** Decodes a command; throws RaftKvError('INVALID_ARGUMENT') on anything malformed. */
export function decodeCommand(b: Uint8Array): Command {
  try {
    const r = new Reader(b);
    const version = r.u8('codec version');
    if (version !== COMMAND_CODEC_VERSION && version !== COMMAND_CODEC_VERSION_1) {
      throw new DecodeError(`unknown command codec version ${version}`);
    }
    const op = r.u8('op');
    // Version 1 kept the previous record in every put's and delete's result.
    const flags = version !== COMMAND_CODEC_VERSION_1 ? r.u8('flags') : op === OP_CAS ? 0 : FLAG_PREV_KV;
    if ((flags & ~FLAG_PREV_KV) !== 0) throw new DecodeError(`unknown command flags ${flags}`);
    if (op === OP_CAS && flags !== 0) throw new DecodeError(`flags ${flags} on a cas command`);
    const prevKv = (flags & FLAG_PREV_KV) !== 0;
    const proposedAtMs = r.u64('proposedAtMs');
    const clientId = r.string('clientId');
    const seq = r.u64('seq');
    const key = r.bytes('key');
    // Object literals of one fixed shape each, without spreads: this runs for every entry on every
    // node, and spreading optional fields costs more than the rest of the decoding.
    const id = clientId !== '' ? clientId : undefined;
    const sq = seq !== 0 ? seq : undefined;
    const pk = prevKv ? true : undefined;
    let c: Command;
    switch (op) {
      case OP_PUT:
        c = { op: 'put', key, proposedAtMs, clientId: id, seq: sq, value: r.bytes('value'), prevKv: pk };
        break;
      case OP_DELETE:
        c = { op: 'delete', key, proposedAtMs, clientId: id, seq: sq, prevKv: pk };
        break;
      case OP_CAS: {
        const kind = r.u8('compare kind');
        let compare: Compare;
        if (kind === CMP_VALUE) compare = { kind: 'value', value: r.bytes('compare value') };
        else if (kind === CMP_MOD_INDEX) compare = { kind: 'modIndex', modIndex: r.u64('compare modIndex') };
        else if (kind === CMP_ABSENT) compare = { kind: 'absent' };
        else throw new DecodeError(`unknown compare kind ${kind}`);
        c = { op: 'cas', key, proposedAtMs, clientId: id, seq: sq, compare, value: r.bytes('value') };
        break;
      }
      default:
        throw new DecodeError(`unknown op ${op}`);
    }
    r.end('command');
    return c;
  } catch (err) {
    if (err instanceof DecodeError) throw new RaftKvError('INVALID_ARGUMENT', `malformed command: ${err.message}`);
    throw err;
  }
}

/** Encodes a write result (for the session table). */
export function encodeResult(res: WriteResult): Uint8Array {
  // The exact size, so the Writer never grows and finish() does not copy: kind, index, the bool(s),
  // the record if present.
  const rec = res.kind === 'cas' ? res.current : res.prev;
  const w = new Writer(1 + 8 + (res.kind === 'put' ? 1 : 2) + (rec !== undefined ? writtenRecordBytes(rec) : 0));
  switch (res.kind) {
    case 'put':
      w.u8(OP_PUT).u64(res.index, 'index');
      writeOptionalRecord(w, res.prev);
      break;
    case 'delete':
      w.u8(OP_DELETE).u64(res.index, 'index').bool(res.deleted);
      writeOptionalRecord(w, res.prev);
      break;
    case 'cas':
      w.u8(OP_CAS).u64(res.index, 'index').bool(res.succeeded);
      writeOptionalRecord(w, res.current);
      break;
  }
  return w.finish();
}

/** Decodes what encodeResult wrote; throws DecodeError on malformed bytes. */
export function decodeResult(b: Uint8Array): WriteResult {
  const r = new Reader(b);
  const kind = r.u8('result kind');
  const index = r.u64('index');
  let res: WriteResult;
  if (kind === OP_PUT) {
    const prev = readOptionalRecord(r);
    res = { kind: 'put', index, ...(prev !== undefined ? { prev } : {}) };
  } else if (kind === OP_DELETE) {
    const deleted = r.bool('deleted');
    const prev = readOptionalRecord(r);
    res = { kind: 'delete', index, deleted, ...(prev !== undefined ? { prev } : {}) };
  } else if (kind === OP_CAS) {
    const succeeded = r.bool('succeeded');
    const current = readOptionalRecord(r);
    res = { kind: 'cas', index, succeeded, ...(current !== undefined ? { current } : {}) };
  } else {
    throw new DecodeError(`unknown result kind ${kind}`);
  }
  r.end('result');
  return res;
}

function writeOptionalRecord(w: Writer, rec: KvRecord | undefined): void {
  w.bool(rec !== undefined);
  if (rec !== undefined) writeRecord(w, rec);
}

function readOptionalRecord(r: Reader): KvRecord | undefined {
  return r.bool('record present') ? readRecord(r) : undefined;
}
