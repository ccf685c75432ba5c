// Making kvnode's JSON log lines readable in a terminal, prefixed with the node's name:
//
//   {"time":"…T12:00:01.123Z","level":"info","node":1,"event":"role","role":"leader","leader":1,"term":2}
//   node1 | 12:00:01.123 info  role role=leader leader=1 term=2
//
// Lines that are not JSON objects (kvnode's own messages before logging starts) pass unchanged.

export interface Palette {
  readonly enabled: boolean;
}

const ESC = '\u001b[';
const wrap = (p: Palette, code: string, s: string): string => (p.enabled ? `${ESC}${code}m${s}${ESC}0m` : s);
/** Prefix colours, one per node, in turn: cyan, magenta, yellow, blue, green, bright variants. */
const NODE_COLOURS = ['36', '35', '33', '34', '32', '96', '95', '93', '94'];
const LEVEL_COLOURS: Record<string, string> = { debug: '2', info: '32', warn: '33', error: '31;1' };
/** Fields shown elsewhere in the line (or implied by the prefix). */
const HEAD_FIELDS = new Set(['time', 'level', 'event', 'node']);

/** Whether to colour output written to `stream`: a TTY, unless NO_COLOR is set; FORCE_COLOR forces it. */
export function colourFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): Palette {
  if (env['FORCE_COLOR'] !== undefined && env['FORCE_COLOR'] !== '0') return { enabled: true };
  return { enabled: stream.isTTY === true && env['NO_COLOR'] === undefined };
}

/** "node1 | " padded so that the bars line up for names up to `width` characters. */
export function prefix(p: Palette, name: string, index: number, width: number): string {
  return wrap(p, NODE_COLOURS[index % NODE_COLOURS.length]!, name.padEnd(width)) + ' | ';
}

export function warnText(p: Palette, s: string): string {
  return wrap(p, '33;1', s);
}

/** One kvnode log line, readable. */
export function formatLogLine(p: Palette, line: string): string {
  if (!line.startsWith('{')) return line;
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return line;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return line;
  const rec = o as Record<string, unknown>;
  const level = typeof rec['level'] === 'string' ? rec['level'] : 'info';
  const parts = [
    wrap(p, '2', clock(rec['time'])),
    wrap(p, LEVEL_COLOURS[level] ?? '0', level.padEnd(5)),
    wrap(p, '1', String(rec['event'] ?? '')),
  ];
  for (const [k, v] of Object.entries(rec)) {
    if (!HEAD_FIELDS.has(k)) parts.push(`${wrap(p, '2', k + '=')}${value(v)}`);
  }
  return parts.join(' ');
}

/** An ISO time as local HH:MM:SS.mmm (the date is noise in a live view). */
function clock(t: unknown): string {
  const d = typeof t === 'string' ? new Date(t) : undefined;
  if (d === undefined || Number.isNaN(d.getTime())) return typeof t === 'string' ? t : '--:--:--.---';
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v) ?? String(v);
}

/** The time stamp of a kvnode log line (ms since the epoch), for putting lines of several nodes in order. */
export function logLineTime(line: string): number | undefined {
  const m = /^\{"time":"([^"]+)"/.exec(line);
  if (m === null) return undefined;
  const t = Date.parse(m[1]!);
  return Number.isNaN(t) ? undefined : t;
}
