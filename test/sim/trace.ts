// The simulator's trace: the last events of a run, kept as raw records in a ring buffer and turned
// into one-line strings only when someone reads them (on a failure, or in a verbose replay), so
// tracing costs almost nothing on the passing seeds. A running hash over every event lets a test
// compare two runs of one seed event by event.

import type { Message, NodeId } from '../../src/raft/types.js';

export type TraceKind =
  | 'tick'
  | 'recv'
  | 'drop'
  | 'propose'
  | 'read'
  | 'campaign'
  | 'crash'
  | 'restart'
  | 'partition'
  | 'heal'
  | 'role'
  | 'phase'
  | 'send'
  | 'snapshot'
  | 'liveness';

const KIND_CODES: Record<TraceKind, number> = {
  tick: 1,
  recv: 2,
  drop: 3,
  propose: 4,
  campaign: 5,
  crash: 6,
  restart: 7,
  partition: 8,
  heal: 9,
  role: 10,
  phase: 11,
  liveness: 12,
  read: 13,
  send: 14,
  snapshot: 15,
};

interface TraceRecord {
  time: number;
  node: NodeId;
  kind: TraceKind;
  msg: Message | undefined;
  detail: string | undefined;
}

export const DEFAULT_TRACE_TAIL = 40;

export class Trace {
  private readonly ring: TraceRecord[] = [];
  private readonly capacity: number;
  private next = 0;
  private count = 0;
  private readonly sink: ((line: string) => void) | undefined;
  /** FNV-1a style hash over every event added. */
  private h = 0x811c9dc5;

  constructor(capacity = DEFAULT_TRACE_TAIL, sink?: (line: string) => void) {
    if (capacity < 1) throw new Error('trace capacity must be at least 1');
    this.capacity = capacity;
    this.sink = sink;
  }

  get hash(): number {
    return this.h >>> 0;
  }

  add(time: number, node: NodeId, kind: TraceKind, msg?: Message, detail?: string): void {
    let h = this.h;
    h = Math.imul(h ^ time, 0x01000193);
    h = Math.imul(h ^ node, 0x01000193);
    h = Math.imul(h ^ KIND_CODES[kind], 0x01000193);
    if (msg !== undefined) {
      h = Math.imul(h ^ msg.term, 0x01000193);
      h = Math.imul(h ^ msg.from ^ (msg.to << 8) ^ (msg.type.length << 16), 0x01000193);
    }
    if (detail !== undefined) h = Math.imul(h ^ detail.length, 0x01000193);
    this.h = h;

    let rec = this.ring[this.next];
    if (rec === undefined) {
      rec = { time, node, kind, msg, detail };
      this.ring[this.next] = rec;
    } else {
      rec.time = time;
      rec.node = node;
      rec.kind = kind;
      rec.msg = msg;
      rec.detail = detail;
    }
    this.next = (this.next + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
    if (this.sink !== undefined) this.sink(formatRecord(rec));
  }

  /** The kept events, oldest first, one line each. */
  lines(): string[] {
    const out: string[] = [];
    const start = (this.next - this.count + this.capacity) % this.capacity;
    for (let k = 0; k < this.count; k++) out.push(formatRecord(this.ring[(start + k) % this.capacity]!));
    return out;
  }
}

function formatRecord(r: TraceRecord): string {
  const head = `t=${String(r.time).padStart(6)} ${r.node > 0 ? `n${r.node}` : '--'} ${r.kind.padEnd(9)}`;
  const parts = [head];
  if (r.msg !== undefined) parts.push(formatMessage(r.msg));
  if (r.detail !== undefined) parts.push(r.detail);
  return parts.join(' ');
}

export function formatMessage(m: Message): string {
  const head = `${m.type} ${m.from}->${m.to} term=${m.term}`;
  switch (m.type) {
    case 'PreVote':
    case 'Vote':
      return `${head} last=${m.lastLogIndex}/${m.lastLogTerm}`;
    case 'PreVoteResp':
    case 'VoteResp':
      return `${head} ${m.granted ? 'granted' : 'rejected'}`;
    case 'App': {
      const first = m.entries[0];
      const last = m.entries[m.entries.length - 1];
      const range = first && last ? ` entries=${first.index}..${last.index}(term ${last.term})` : ' entries=none';
      return `${head} prev=${m.prevIndex}/${m.prevTerm}${range} commit=${m.commit}${m.noReply === true ? ' noReply' : ''}`;
    }
    case 'AppResp':
      return m.reject
        ? `${head} reject index=${m.index}${m.hint ? ` hint=${m.hint.conflictIndex}/${m.hint.conflictTerm}` : ''}`
        : `${head} ok index=${m.index}`;
    case 'Heartbeat':
      return `${head} commit=${m.commit} ctx=${m.context}`;
    case 'HeartbeatResp':
      return `${head} ctx=${m.context}`;
    case 'ReadIndex':
      return `${head} ctx=${m.context}`;
    case 'ReadIndexResp':
      return `${head} ctx=${m.context} index=${m.index}`;
    case 'Snap':
      return m.snapshot ? `${head} snapshot=${m.snapshot.index}/${m.snapshot.term}` : `${head} (transfer requested)`;
  }
}
