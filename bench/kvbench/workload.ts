// What kvbench asks of the store: the workload spec, its validation, and the per-worker choosers
// (seeded PRNG, key distribution, operation mix, value bytes). Everything random comes from the
// seed: the same spec and seed give every worker the same sequence of keys and operations.

export type OpKind = 'put' | 'get' | 'cas';
export type ReadConsistency = 'linearizable' | 'lease' | 'stale';

export const OP_KINDS: readonly OpKind[] = ['put', 'get', 'cas'];
export const READ_CONSISTENCIES: readonly ReadConsistency[] = ['linearizable', 'lease', 'stale'];
export const KEY_DISTRIBUTIONS = ['uniform', 'zipf', 'sequential'] as const;

export interface WorkloadSpec {
  /** Closed-loop workers, each its own client (its own write session). */
  readonly clients: number;
  /** Length of the measured window; exactly one of durationMs / ops. */
  readonly durationMs?: number;
  /** Operations started in the measured window, over all clients; exactly one of durationMs / ops. */
  readonly ops?: number;
  /** Operations during warm-up are not recorded. */
  readonly warmupMs: number;
  /** Size of the key space. */
  readonly keys: number;
  readonly keyDistribution: 'uniform' | 'zipf' | 'sequential';
  /** Zipf skew, in (0, 1). */
  readonly zipfTheta: number;
  /** Keys are `${keyPrefix}${index zero-padded to 10 digits}`. */
  readonly keyPrefix: string;
  readonly valueBytes: number;
  /** Relative weights of the operations. */
  readonly mix: { readonly put: number; readonly get: number; readonly cas: number };
  readonly consistency: ReadConsistency;
  /** Put every key once before the run, with `clients` workers; not measured. */
  readonly preload: boolean;
  /** Seed of every PRNG of the run (uint32). */
  readonly seed: number;
}

/** Limits. */
export const MAX_CLIENTS = 10_000;
/** The index has 10 digits; zeta over more keys would also take long. */
export const MAX_KEYS = 100_000_000;
export const MAX_VALUE_BYTES = 16 * 1024 * 1024;
export const MAX_KEY_PREFIX_BYTES = 1024;
const KEY_INDEX_DIGITS = 10;

/** Parses "put=1", "put=50,get=50", "get=90,cas=10". Kinds not named get weight 0. */
export function parseMix(s: string): WorkloadSpec['mix'] {
  const mix = { put: 0, get: 0, cas: 0 };
  const seen = new Set<string>();
  const parts = s.split(',').map((p) => p.trim());
  if (s.trim() === '') throw new RangeError('mix: empty; expected e.g. "put=50,get=50"');
  for (const part of parts) {
    const m = /^([a-z]+)\s*=\s*(\d+(?:\.\d+)?)$/.exec(part);
    if (m === null) throw new RangeError(`mix: "${part}" is not KIND=WEIGHT (KIND: put, get or cas; WEIGHT: a number >= 0)`);
    const kind = m[1]!;
    if (kind !== 'put' && kind !== 'get' && kind !== 'cas') throw new RangeError(`mix: unknown operation "${kind}" (put, get or cas)`);
    if (seen.has(kind)) throw new RangeError(`mix: "${kind}" given twice`);
    seen.add(kind);
    mix[kind] = Number(m[2]);
  }
  if (mix.put + mix.get + mix.cas <= 0) throw new RangeError(`mix: the weights of "${s}" add up to 0`);
  return mix;
}

/** "put=50,get=50" (weights of 0 left out). */
export function formatMix(mix: WorkloadSpec['mix']): string {
  return OP_KINDS.filter((k) => mix[k] > 0)
    .map((k) => `${k}=${mix[k]}`)
    .join(',');
}

export function defaultWorkload(overrides: Partial<WorkloadSpec> = {}): WorkloadSpec {
  const base: WorkloadSpec = {
    clients: 16,
    warmupMs: 1000,
    keys: 10_000,
    keyDistribution: 'uniform',
    zipfTheta: 0.99,
    keyPrefix: 'kvbench/',
    valueBytes: 256,
    mix: { put: 1, get: 0, cas: 0 },
    consistency: 'linearizable',
    preload: false,
    seed: 1,
  };
  const w: WorkloadSpec = { ...base, ...overrides };
  // Default to 10 s only when neither bound was given.
  return w.durationMs === undefined && w.ops === undefined ? { ...w, durationMs: 10_000 } : w;
}

function check(ok: boolean, field: string, value: unknown, want: string): void {
  if (!ok) throw new RangeError(`workload.${field} must be ${want}, got ${JSON.stringify(value) ?? String(value)}`);
}

const isInt = (v: unknown, min: number, max: number): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;

/** Returns w if valid; else throws a RangeError naming the field and its value. */
export function validateWorkload(w: WorkloadSpec): WorkloadSpec {
  check(isInt(w.clients, 1, MAX_CLIENTS), 'clients', w.clients, `an integer in [1, ${MAX_CLIENTS}]`);
  const hasDuration = w.durationMs !== undefined;
  const hasOps = w.ops !== undefined;
  if (hasDuration === hasOps) throw new RangeError(`workload: exactly one of durationMs and ops must be set, got durationMs=${w.durationMs} ops=${w.ops}`);
  if (hasDuration) check(isInt(w.durationMs, 1, 7 * 24 * 3600_000), 'durationMs', w.durationMs, 'an integer number of ms >= 1');
  if (hasOps) check(isInt(w.ops, 1, Number.MAX_SAFE_INTEGER), 'ops', w.ops, 'an integer >= 1');
  check(isInt(w.warmupMs, 0, 24 * 3600_000), 'warmupMs', w.warmupMs, 'an integer number of ms >= 0');
  check(isInt(w.keys, 1, MAX_KEYS), 'keys', w.keys, `an integer in [1, ${MAX_KEYS}]`);
  check((KEY_DISTRIBUTIONS as readonly string[]).includes(w.keyDistribution), 'keyDistribution', w.keyDistribution, KEY_DISTRIBUTIONS.join(', ') + ' (one of)');
  check(typeof w.zipfTheta === 'number' && w.zipfTheta > 0 && w.zipfTheta < 1, 'zipfTheta', w.zipfTheta, 'a number in (0, 1)');
  check(typeof w.keyPrefix === 'string' && Buffer.byteLength(w.keyPrefix) <= MAX_KEY_PREFIX_BYTES, 'keyPrefix', w.keyPrefix, `a string of at most ${MAX_KEY_PREFIX_BYTES} bytes`);
  check(isInt(w.valueBytes, 0, MAX_VALUE_BYTES), 'valueBytes', w.valueBytes, `an integer in [0, ${MAX_VALUE_BYTES}]`);
  const mix = w.mix as Partial<WorkloadSpec['mix']> | undefined;
  for (const k of OP_KINDS) check(typeof mix?.[k] === 'number' && Number.isFinite(mix[k]) && mix[k] >= 0, `mix.${k}`, mix?.[k], 'a finite number >= 0');
  check(w.mix.put + w.mix.get + w.mix.cas > 0, 'mix', w.mix, 'weights that add up to more than 0');
  check((READ_CONSISTENCIES as readonly string[]).includes(w.consistency), 'consistency', w.consistency, READ_CONSISTENCIES.join(', ') + ' (one of)');
  check(typeof w.preload === 'boolean', 'preload', w.preload, 'a boolean');
  check(isInt(w.seed, 0, 0xffff_ffff), 'seed', w.seed, 'an integer in [0, 2^32 - 1]');
  return w;
}

// ---- PRNG ---------------------------------------------------------------------------------------

/** splitmix32: spreads a seed into well-mixed 32-bit words (used to seed xoshiro128**). */
function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** xoshiro128** (Blackman and Vigna): a small, fast PRNG with 128 bits of state. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    const next = splitmix32(seed);
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    // The all-zero state is a fixed point; splitmix32 never gives four zeros, but be certain.
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** A uniform uint32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform integer in [0, n). */
  nextInt(n: number): number {
    return Math.floor(this.nextFloat() * n);
  }

  /** Fills `buf` with random bytes. */
  fill(buf: Uint8Array): void {
    for (let i = 0; i < buf.length; i += 4) {
      let w = this.nextU32();
      for (let j = i; j < Math.min(i + 4, buf.length); j++) {
        buf[j] = w & 0xff;
        w >>>= 8;
      }
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The seed of worker `worker`'s PRNG: distinct per worker, all derived from the run's seed. */
export function workerSeed(seed: number, worker: number): number {
  return (seed + Math.imul(worker + 1, 0x9e3779b1)) >>> 0;
}

// ---- key distributions --------------------------------------------------------------------------

/** Zeta(n, theta) = sum_{i=1..n} 1 / i^theta; cached, as it is O(n) and the same for every worker. */
const zetaCache = new Map<string, number>();
/** Limit: entries of the zeta cache (one per (n, theta) a process uses: a handful). */
const MAX_ZETA_CACHE = 64;

export function zeta(n: number, theta: number): number {
  const key = `${n}/${theta}`;
  const cached = zetaCache.get(key);
  if (cached !== undefined) return cached;
  let sum = 0;
  for (let i = 1; i <= n; i++) sum += 1 / i ** theta;
  if (zetaCache.size >= MAX_ZETA_CACHE) zetaCache.clear();
  zetaCache.set(key, sum);
  return sum;
}

/**
 * Zipf-distributed indexes in [0, n), index 0 the most popular, by the constant-time method of
 * Gray et al., "Quickly generating billion-record synthetic databases" (SIGMOD 1994), as YCSB's
 * ZipfianGenerator uses it. The hot keys are the low indexes (not scrambled).
 */
export class ZipfChooser {
  private readonly n: number;
  private readonly theta: number;
  private readonly alpha: number;
  private readonly zetaN: number;
  private readonly eta: number;
  private readonly halfPowTheta: number;

  constructor(n: number, theta: number) {
    if (!(theta > 0 && theta < 1)) throw new RangeError(`zipf theta must be in (0, 1), got ${theta}`);
    this.n = n;
    this.theta = theta;
    this.zetaN = zeta(n, theta);
    const zeta2 = zeta(2, theta);
    this.alpha = 1 / (1 - theta);
    this.eta = (1 - (2 / n) ** (1 - theta)) / (1 - zeta2 / this.zetaN);
    this.halfPowTheta = 0.5 ** theta;
  }

  next(u: number): number {
    const uz = u * this.zetaN;
    if (uz < 1) return 0;
    if (uz < 1 + this.halfPowTheta) return Math.min(1, this.n - 1);
    const i = Math.floor(this.n * (this.eta * u - this.eta + 1) ** this.alpha);
    return Math.min(i, this.n - 1);
  }

  get skew(): number {
    return this.theta;
  }
}

/** One worker's source of key indexes. */
export interface KeyChooser {
  next(): number;
}

export function keyChooser(w: WorkloadSpec, worker: number, prng: Prng): KeyChooser {
  switch (w.keyDistribution) {
    case 'uniform':
      return { next: () => prng.nextInt(w.keys) };
    case 'zipf': {
      const z = new ZipfChooser(w.keys, w.zipfTheta);
      return { next: () => z.next(prng.nextFloat()) };
    }
    case 'sequential': {
      // Each worker walks the whole key space from its own start, so workers rarely collide.
      let i = Math.floor((worker * w.keys) / w.clients);
      return {
        next: () => {
          const k = i;
          i = i + 1 === w.keys ? 0 : i + 1;
          return k;
        },
      };
    }
  }
}

/** Picks operation kinds by the mix's weights. */
export function opChooser(mix: WorkloadSpec['mix'], prng: Prng): () => OpKind {
  const total = mix.put + mix.get + mix.cas;
  const putBelow = mix.put / total;
  const getBelow = (mix.put + mix.get) / total;
  const only = OP_KINDS.filter((k) => mix[k] > 0);
  if (only.length === 1) {
    const k = only[0]!;
    return () => k;
  }
  return () => {
    const u = prng.nextFloat();
    return u < putBelow ? 'put' : u < getBelow ? 'get' : 'cas';
  };
}

/**
 * The key of index i, written into a reused buffer: the prefix once, then the 10 digits per call.
 * Invariant (kept by the runner): a key returned is not rewritten before the operation that uses it
 * has settled, since a worker starts its next operation only after the previous one.
 */
export class KeyWriter {
  private readonly buf: Buffer;
  private readonly prefixBytes: number;

  constructor(prefix: string) {
    this.prefixBytes = Buffer.byteLength(prefix);
    this.buf = Buffer.alloc(this.prefixBytes + KEY_INDEX_DIGITS);
    this.buf.write(prefix, 0, 'utf8');
  }

  key(index: number): Buffer {
    let v = index;
    for (let p = this.buf.length - 1; p >= this.prefixBytes; p--) {
      this.buf[p] = 0x30 + (v % 10);
      v = Math.floor(v / 10);
    }
    return this.buf;
  }
}

/** The key of index i as a string (for checks and reports). */
export function keyOf(prefix: string, index: number): string {
  return `${prefix}${String(index).padStart(KEY_INDEX_DIGITS, '0')}`;
}

/** A worker's value: valueBytes of seeded bytes, allocated once and sent with every write. */
export function workerValue(w: WorkloadSpec, prng: Prng): Buffer {
  const buf = Buffer.alloc(w.valueBytes);
  prng.fill(buf);
  return buf;
}

/** Everything a worker draws from the seed. */
export interface WorkerSource {
  readonly prng: Prng;
  readonly nextKey: KeyChooser;
  readonly nextOp: () => OpKind;
  readonly keys: KeyWriter;
  readonly value: Buffer;
}

export function workerSource(w: WorkloadSpec, worker: number): WorkerSource {
  const prng = new Prng(workerSeed(w.seed, worker));
  const value = workerValue(w, prng);
  return { prng, value, nextKey: keyChooser(w, worker, prng), nextOp: opChooser(w.mix, prng), keys: new KeyWriter(w.keyPrefix) };
}
