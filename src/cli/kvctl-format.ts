// How kvctl reads keys and values from the command line and prints results: byte encodings, the
// stable JSON shapes, and aligned tables. Pure functions; kvctl.ts does the I/O.

import type { KeyValue, NodeStatus, ResponseHeader } from '../client/index.js';

/** How bytes are written on the command line and printed. */
export type Encoding = 'raw' | 'hex' | 'base64';
export const ENCODINGS: readonly Encoding[] = ['raw', 'hex', 'base64'];

export type OutputMode = 'text' | 'json' | 'table';
export const OUTPUT_MODES: readonly OutputMode[] = ['text', 'json', 'table'];

/** A value that cannot be decoded in the encoding asked for (a usage error). */
export class EncodingError extends Error {}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Text (an argument, or stdin/file contents as a string) to bytes. hex/base64 ignore whitespace. */
export function decodeText(text: string, encoding: Encoding, what: string): Uint8Array {
  switch (encoding) {
    case 'raw':
      return Buffer.from(text, 'utf8');
    case 'hex': {
      const t = text.replace(/\s+/g, '');
      if (!/^(?:[0-9a-fA-F]{2})*$/.test(t)) throw new EncodingError(`${what} is not valid hex (pairs of 0-9, a-f)`);
      return Buffer.from(t, 'hex');
    }
    case 'base64': {
      const t = text.replace(/\s+/g, '');
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(t) || t.length % 4 !== 0) throw new EncodingError(`${what} is not valid base64`);
      return Buffer.from(t, 'base64');
    }
  }
}

/** Bytes read from stdin or a file: as they are for raw, else decoded from their text. */
export function decodeInput(bytes: Uint8Array, encoding: Encoding, what: string): Uint8Array {
  return encoding === 'raw' ? bytes : decodeText(Buffer.from(bytes).toString('latin1'), encoding, what);
}

/** The UTF-8 text of `b`, or undefined if it is not valid UTF-8. */
export function asUtf8(b: Uint8Array): string | undefined {
  try {
    return utf8Strict.decode(b);
  } catch {
    return undefined;
  }
}

/** Bytes in an encoding for JSON: raw becomes "utf8" when valid UTF-8, else "base64". */
export function jsonBytes(b: Uint8Array, encoding: Encoding): { text: string; encoding: 'utf8' | 'hex' | 'base64' } {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (encoding === 'hex') return { text: buf.toString('hex'), encoding: 'hex' };
  if (encoding === 'raw') {
    const s = asUtf8(b);
    if (s !== undefined) return { text: s, encoding: 'utf8' };
  }
  return { text: buf.toString('base64'), encoding: 'base64' };
}

/** Bytes for text output: raw as they are, hex/base64 as text. */
export function textBytes(b: Uint8Array, encoding: Encoding): Uint8Array | string {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (encoding === 'hex') return buf.toString('hex');
  if (encoding === 'base64') return buf.toString('base64');
  return buf;
}

/** Longest cell of a key or value in a table; longer ones end in "…". */
const TABLE_CELL_CHARS = 64;

/**
 * Bytes for a table cell (always one line): raw shows UTF-8 text when valid and free of control
 * characters, else 0x-prefixed hex; hex/base64 as asked. Cut at TABLE_CELL_CHARS.
 */
export function cellBytes(b: Uint8Array, encoding: Encoding): string {
  let s: string;
  if (encoding === 'raw') {
    const u = asUtf8(b);
    s = u !== undefined && !/[\u0000-\u001f\u007f]/.test(u) ? u : `0x${Buffer.from(b).toString('hex')}`;
  } else {
    s = textBytes(b, encoding) as string;
  }
  return s.length > TABLE_CELL_CHARS ? `${s.slice(0, TABLE_CELL_CHARS - 1)}…` : s;
}

/** A key for a one-line message: quoted UTF-8 when printable, else as its cell. */
export function describeKey(key: Uint8Array, encoding: Encoding): string {
  const cell = cellBytes(key, encoding);
  return encoding === 'raw' && !cell.startsWith('0x') ? JSON.stringify(cell) : cell;
}

/** The JSON shape of a pair (see the kvctl help: "JSON output"). */
export function kvJson(kv: KeyValue, keyEncoding: Encoding, valueEncoding: Encoding, keysOnly = false): Record<string, unknown> {
  const k = jsonBytes(kv.key, keyEncoding);
  if (keysOnly) return { key: k.text, keyEncoding: k.encoding };
  const v = jsonBytes(kv.value, valueEncoding);
  return {
    key: k.text,
    keyEncoding: k.encoding,
    value: v.text,
    valueEncoding: v.encoding,
    createIndex: kv.createIndex,
    modIndex: kv.modIndex,
    version: kv.version,
  };
}

export function headerJson(h: ResponseHeader): Record<string, unknown> {
  return { index: h.index, nodeId: h.nodeId, term: h.term, leaderId: h.leaderId, consistency: h.consistency, stalenessMs: h.stalenessMs };
}

export function statusJson(s: NodeStatus): Record<string, unknown> {
  return {
    endpoint: s.endpoint,
    nodeId: s.nodeId,
    clusterId: s.clusterId,
    role: s.role,
    term: s.term,
    leaderId: s.leaderId,
    leaderAddress: s.leaderAddress,
    commitIndex: s.commitIndex,
    appliedIndex: s.appliedIndex,
    lastIndex: s.lastIndex,
    writable: s.writable,
    readOnlyReason: s.readOnlyReason,
    msSinceLeaderContact: s.msSinceLeaderContact,
    snapshots: s.snapshots,
    members: s.members.map((m) => ({ id: m.id, clientAddress: m.clientAddress, peerAddress: m.peerAddress, matchIndex: m.matchIndex })),
  };
}

/** Rows as left-aligned columns separated by two spaces; the first row is the heading. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, [...cell].length)));
  return rows
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - [...cell].length))).join('  ').trimEnd())
    .map((line) => `${line}\n`)
    .join('');
}

export function stateOf(s: NodeStatus): string {
  return s.writable ? 'writable' : `read-only: ${s.readOnlyReason || 'unknown reason'}`;
}

/** A node's status as "field: value" lines. */
export function statusText(s: NodeStatus): string {
  const leader = s.leaderId === 0 ? 'none known' : `${s.leaderId}${s.leaderAddress ? ` (${s.leaderAddress})` : ''}`;
  const members = s.members.map((m) => `${m.id}=${m.clientAddress}${m.matchIndex > 0 ? ` (match ${m.matchIndex})` : ''}`).join(', ');
  const lines: Array<[string, string]> = [
    ['node', String(s.nodeId)],
    ['endpoint', s.endpoint],
    ['cluster', s.clusterId],
    ['role', s.role],
    ['term', String(s.term)],
    ['leader', leader],
    ['commit index', String(s.commitIndex)],
    ['applied index', String(s.appliedIndex)],
    ['last index', String(s.lastIndex)],
    ['log start', `${s.snapshots.logStartIndex}${s.snapshots.lastSnapshotIndex > 0 ? ` (last snapshot at ${s.snapshots.lastSnapshotIndex}, ${new Date(s.snapshots.lastSnapshotUnixMs).toISOString()})` : ''}`],
    [
      'snapshot transfers',
      `${s.snapshots.sent} sent, ${s.snapshots.installed} installed, ${s.snapshots.failed} failed` +
        (s.snapshots.sendingTo.length > 0 ? `; sending to ${s.snapshots.sendingTo.join(', ')}` : ''),
    ],
    ['state', stateOf(s)],
    ['leader contact', s.role === 'leader' ? 'is the leader' : s.msSinceLeaderContact >= Number.MAX_SAFE_INTEGER ? 'never' : `${s.msSinceLeaderContact} ms ago`],
    ['members', members],
  ];
  const w = Math.max(...lines.map(([k]) => k.length)) + 1;
  return lines.map(([k, v]) => `${`${k}:`.padEnd(w)} ${v}\n`).join('');
}

// ---- snapshots ----------------------------------------------------------------------------------

/** A byte count for people: "512 B", "120.6 KiB", "45.2 MiB", "1.3 GiB". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** Width of the bar in a progress line, in characters. */
const PROGRESS_BAR_CHARS = 24;

/**
 * One line of a transfer's progress: bytes so far, of the approximate total when known (a bar and a
 * percentage, never 100% before the end: the total is an estimate), and the rate.
 */
export function progressLine(bytes: number, approximateTotal: number, bytesPerSecond: number): string {
  const rate = `${formatBytes(Math.round(bytesPerSecond))}/s`;
  if (approximateTotal <= 0) return `${formatBytes(bytes)}  ${rate}`;
  const fraction = Math.min(0.99, bytes / approximateTotal);
  const filled = Math.floor(fraction * PROGRESS_BAR_CHARS);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(PROGRESS_BAR_CHARS - filled)}]`;
  return `${formatBytes(bytes)} / ~${formatBytes(approximateTotal)} ${bar} ${Math.floor(fraction * 100)}%  ${rate}`;
}

/** "field: value" lines, the values aligned. */
export function fieldLines(lines: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(...lines.map(([k]) => k.length)) + 1;
  return lines.map(([k, v]) => `${`${k}:`.padEnd(w)} ${v}\n`).join('');
}
