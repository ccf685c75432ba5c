// A high-dynamic-range histogram of latencies in microseconds, after Gil Tene's HdrHistogram
// (written here, not a port): log-linear buckets whose relative width stays under
// 10^-significantDigits over the whole range, so p50 of 80 µs and p99.9 of 3 s are both reported
// to 3 significant digits from a fixed counts array of ~17k slots.
//
// Layout. Values are integers (microseconds, fractions floored). Bucket 0 covers [0, subBucketCount)
// with width 1 << unitMagnitude; bucket b > 0 covers [subBucketCount << (b-1), subBucketCount << b)
// with width 1 << (b + unitMagnitude), i.e. its lower half overlaps bucket b-1 and only its upper
// half (subBucketHalfCount slots) is stored. counts[i] for i < subBucketCount is bucket 0; after it,
// each bucket adds subBucketHalfCount slots.

export interface HdrHistogramOptions {
  /** The smallest value told apart from 0 (values below it share its bucket). Default 1. */
  readonly lowestUs?: number;
  /** Limit: larger values are recorded as this and counted in `clamped`. Default 60 s. */
  readonly highestUs?: number;
  /** Relative precision: 1..5 decimal digits. Default 3 (buckets narrower than 0.1% of their values). */
  readonly significantDigits?: number;
}

/** Highest supported highestUs: bucket indexes are computed with 32-bit clz. */
const MAX_HIGHEST_US = 2 ** 31 - 1;

/**
 * Empty histogram: count 0, and min, max, mean and every percentile are NaN (there is no value to
 * report; 0 would look like a measurement).
 */
export class HdrHistogram {
  readonly lowestUs: number;
  readonly highestUs: number;
  readonly significantDigits: number;
  /** Values recorded above highestUs (each counted at highestUs). */
  clamped = 0;

  private readonly unitMagnitude: number;
  private readonly subBucketHalfCountMagnitude: number;
  private readonly subBucketHalfCount: number;
  private readonly subBucketMask: number;
  /** clz32 of (subBucketMask), so bucketIndex(v) = base - clz32(v | mask). */
  private readonly leadingZeroCountBase: number;
  private readonly counts: Float64Array;
  private total = 0;
  /** Exact extremes and sum of the values as given (before flooring and clamping). */
  private minValue = Number.POSITIVE_INFINITY;
  private maxValue = Number.NEGATIVE_INFINITY;
  private sum = 0;

  constructor(opts: HdrHistogramOptions = {}) {
    const lowest = opts.lowestUs ?? 1;
    const highest = opts.highestUs ?? 60_000_000;
    const digits = opts.significantDigits ?? 3;
    if (!Number.isSafeInteger(lowest) || lowest < 1) throw new RangeError(`HdrHistogram: lowestUs must be an integer >= 1, got ${lowest}`);
    if (!Number.isSafeInteger(highest) || highest < 2 * lowest || highest > MAX_HIGHEST_US) {
      throw new RangeError(`HdrHistogram: highestUs must be an integer in [2 * lowestUs, ${MAX_HIGHEST_US}], got ${highest}`);
    }
    if (!Number.isInteger(digits) || digits < 1 || digits > 5) throw new RangeError(`HdrHistogram: significantDigits must be 1..5, got ${digits}`);
    this.lowestUs = lowest;
    this.highestUs = highest;
    this.significantDigits = digits;

    // Enough linear sub-buckets that one unit in the last digit is resolved: 2 * 10^digits, rounded
    // up to a power of two (the factor 2 because only the upper half of each bucket is distinct).
    const largestSingleUnitResolution = 2 * 10 ** digits;
    const subBucketCountMagnitude = Math.ceil(Math.log2(largestSingleUnitResolution));
    this.subBucketHalfCountMagnitude = Math.max(subBucketCountMagnitude, 1) - 1;
    this.unitMagnitude = Math.floor(Math.log2(lowest));
    const subBucketCount = 2 ** (this.subBucketHalfCountMagnitude + 1);
    this.subBucketHalfCount = subBucketCount / 2;
    this.subBucketMask = (subBucketCount - 1) * 2 ** this.unitMagnitude;
    if (this.subBucketMask > MAX_HIGHEST_US) throw new RangeError('HdrHistogram: lowestUs * 10^significantDigits is too large');
    this.leadingZeroCountBase = 32 - this.unitMagnitude - this.subBucketHalfCountMagnitude - 1;

    // Buckets needed for highest: the smallest b with (subBucketCount << (b - 1 + unit)) > highest.
    let smallestUntrackable = subBucketCount * 2 ** this.unitMagnitude;
    let bucketCount = 1;
    while (smallestUntrackable <= highest) {
      smallestUntrackable *= 2;
      bucketCount++;
    }
    this.counts = new Float64Array((bucketCount + 1) * this.subBucketHalfCount);
  }

  /** Records one value (µs). Negative or non-finite values are programmer errors. */
  record(valueUs: number): void {
    if (!(valueUs >= 0) || !Number.isFinite(valueUs)) throw new RangeError(`HdrHistogram.record: value must be a finite number >= 0, got ${valueUs}`);
    let v = Math.floor(valueUs);
    if (v > this.highestUs) {
      v = this.highestUs;
      this.clamped++;
    }
    this.counts[this.countsIndex(v)]! += 1;
    this.total++;
    this.sum += valueUs;
    if (valueUs < this.minValue) this.minValue = valueUs;
    if (valueUs > this.maxValue) this.maxValue = valueUs;
  }

  /** Adds every value of `other`, which must have the same layout (same options). */
  merge(other: HdrHistogram): void {
    if (other.lowestUs !== this.lowestUs || other.highestUs !== this.highestUs || other.significantDigits !== this.significantDigits) {
      throw new RangeError('HdrHistogram.merge: the histograms have different options');
    }
    const src = other.counts;
    const dst = this.counts;
    for (let i = 0; i < src.length; i++) {
      const c = src[i]!;
      if (c !== 0) dst[i]! += c;
    }
    this.total += other.total;
    this.sum += other.sum;
    this.clamped += other.clamped;
    if (other.minValue < this.minValue) this.minValue = other.minValue;
    if (other.maxValue > this.maxValue) this.maxValue = other.maxValue;
  }

  get count(): number {
    return this.total;
  }

  /** Exact smallest value recorded; NaN when empty. */
  get min(): number {
    return this.total === 0 ? Number.NaN : this.minValue;
  }

  /** Exact largest value recorded (before clamping); NaN when empty. */
  get max(): number {
    return this.total === 0 ? Number.NaN : this.maxValue;
  }

  /** Exact mean of the values recorded (before clamping); NaN when empty. */
  get mean(): number {
    return this.total === 0 ? Number.NaN : this.sum / this.total;
  }

  /**
   * The value at percentile q (0..100): the highest value equivalent to (in the same bucket as) the
   * value of rank ceil(q/100 * count), as HdrHistogram's valueAtPercentile, then bounded by the exact
   * min and max (so percentile(100) === max and percentile(0) === min). NaN when empty.
   */
  percentile(q: number): number {
    if (!(q >= 0 && q <= 100)) throw new RangeError(`HdrHistogram.percentile: q must be in [0, 100], got ${q}`);
    if (this.total === 0) return Number.NaN;
    if (q === 0) return this.minValue;
    const rank = Math.max(1, Math.ceil((q / 100) * this.total));
    let seen = 0;
    const counts = this.counts;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i]!;
      if (seen >= rank) {
        const v = this.highestEquivalentValue(this.valueFromIndex(i));
        return Math.min(Math.max(v, this.minValue), this.maxValue);
      }
    }
    return this.maxValue;
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.sum = 0;
    this.clamped = 0;
    this.minValue = Number.POSITIVE_INFINITY;
    this.maxValue = Number.NEGATIVE_INFINITY;
  }

  // ---- layout -----------------------------------------------------------------------------------

  private bucketIndex(v: number): number {
    return this.leadingZeroCountBase - Math.clz32(v | this.subBucketMask);
  }

  private countsIndex(v: number): number {
    const bucket = this.bucketIndex(v);
    const subBucket = Math.floor(v / 2 ** (bucket + this.unitMagnitude));
    // Bucket 0 uses all its sub-buckets; later ones only their upper half (subBucket >= half).
    return ((bucket + 1) << this.subBucketHalfCountMagnitude) + (subBucket - this.subBucketHalfCount);
  }

  /** The lowest value of counts slot i. */
  private valueFromIndex(i: number): number {
    let bucket = (i >> this.subBucketHalfCountMagnitude) - 1;
    let subBucket = (i & (this.subBucketHalfCount - 1)) + this.subBucketHalfCount;
    if (bucket < 0) {
      subBucket -= this.subBucketHalfCount;
      bucket = 0;
    }
    return subBucket * 2 ** (bucket + this.unitMagnitude);
  }

  /** The highest value in v's bucket slot. */
  private highestEquivalentValue(v: number): number {
    const width = 2 ** (this.bucketIndex(v) + this.unitMagnitude);
    const lowest = Math.floor(v / width) * width;
    return lowest + width - 1;
  }
}
