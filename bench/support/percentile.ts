// The nearest-rank percentile the bench scripts report.

/** The value at quantile q (0 to 1) of ascending `sorted`, by nearest rank; NaN when it is empty. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
