/** Small statistics for benchmark rounds: median, range, percentiles, and how a figure is printed. */

/** The median of a non-empty list (the lower middle for an even count). */
export const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? NaN
}

/** [min, max] of a list. */
export const range = (xs: ReadonlyArray<number>): readonly [number, number] => [Math.min(...xs), Math.max(...xs)]

/** The p-th quantile (0..1) of an already sorted list, nearest rank. */
export const percentile = (sorted: ArrayLike<number>, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!

/** A round-by-round figure: its rounds, median and range. */
export interface Figure {
  readonly median: number
  readonly min: number
  readonly max: number
  readonly rounds: ReadonlyArray<number>
}

export const figure = (rounds: ReadonlyArray<number>): Figure => {
  const [min, max] = range(rounds)
  return { median: median(rounds), min, max, rounds }
}

/** `123 (110–140)` with `digits` decimals. */
export const showFigure = (f: Figure, digits = 0): string =>
  `${f.median.toFixed(digits)} (${f.min.toFixed(digits)}–${f.max.toFixed(digits)})`

/** 12,345 */
export const thousands = (n: number): string => Math.round(n).toLocaleString("en-US")
