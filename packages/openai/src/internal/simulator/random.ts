/**
 * Seeded, reproducible randomness for the simulator: a 32-bit string hash (FNV-1a) to key requests,
 * and a small fast PRNG (sfc32) seeded from (seed, request hash, occurrence).
 */

/** FNV-1a over the UTF-16 code units of `text`, as an unsigned 32-bit integer. */
export const hashString = (text: string, basis = 0x811c9dc5): number => {
  let h = basis >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

const mix = (x: number): number => {
  // murmur3 finaliser: spreads every input bit over the output
  x ^= x >>> 16
  x = Math.imul(x, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return x >>> 0
}

/** A deterministic stream of numbers. */
export interface Rng {
  /** uniform in [0, 1) */
  readonly next: () => number
  /** uniform integer in [0, n) */
  readonly int: (n: number) => number
  /** uniform integer in [lo, hi] */
  readonly between: (lo: number, hi: number) => number
  /** an element of a non-empty array */
  readonly pick: <A>(items: ReadonlyArray<A>) => A
  /** a fresh unsigned 32-bit value */
  readonly u32: () => number
}

/** An sfc32 generator seeded from the given 32-bit words. */
export const makeRng = (a: number, b: number, c: number): Rng => {
  let s0 = mix(a ^ 0x9e3779b9)
  let s1 = mix(b ^ 0x243f6a88)
  let s2 = mix(c ^ 0xb7e15162)
  let counter = 1
  const u32 = (): number => {
    const t = (((s0 + s1) | 0) + counter) | 0
    counter = (counter + 1) | 0
    s0 = s1 ^ (s1 >>> 9)
    s1 = (s2 + (s2 << 3)) | 0
    s2 = (s2 << 21) | (s2 >>> 11)
    s2 = (s2 + t) | 0
    return t >>> 0
  }
  for (let i = 0; i < 12; i++) u32()
  const next = (): number => u32() / 4294967296
  const int = (n: number): number => Math.floor(next() * n)
  return {
    next,
    int,
    between: (lo, hi) => lo + int(hi - lo + 1),
    pick: (items) => items[int(items.length)]!,
    u32
  }
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/** `length` characters of [A-Za-z0-9] drawn from `rng`, for ids like `chatcmpl-…`. */
export const randomId = (rng: Rng, length: number): string => {
  let out = ""
  for (let i = 0; i < length; i++) out += alphabet[rng.int(62)]
  return out
}
