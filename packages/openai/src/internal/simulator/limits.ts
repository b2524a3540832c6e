/**
 * Per-model request and token limits, enforced in real time. Each limit is a bucket that holds up to
 * `limit` units and refills continuously at `limit` per minute (a sliding window without its
 * per-request log), which is how OpenAI describes its limits: the `x-ratelimit-reset-*` headers say
 * when the bucket is full again, and a rejected request learns when enough has refilled.
 */

/** A limit that is not configured: large enough never to bind, still reported in headers. */
const UNLIMITED_REQUESTS = 1_000_000_000
const UNLIMITED_TOKENS = 1_000_000_000_000

class Bucket {
  private level: number
  private last: number
  readonly perMs: number

  constructor(readonly capacity: number, now: number) {
    this.level = capacity
    this.last = now
    this.perMs = capacity / 60_000
  }

  /** Refills up to `now` and returns the units available. */
  available(now: number): number {
    if (now > this.last) {
      this.level = Math.min(this.capacity, this.level + (now - this.last) * this.perMs)
      this.last = now
    }
    return this.level
  }

  take(amount: number): void {
    this.level -= amount
  }

  /** Milliseconds until `amount` units are available (after `available` was called). */
  waitFor(amount: number): number {
    return Math.max(0, Math.ceil((amount - this.level) / this.perMs))
  }

  /** Milliseconds until the bucket is full again. */
  resetMs(): number {
    return Math.max(0, Math.ceil((this.capacity - this.level) / this.perMs))
  }
}

/** What `x-ratelimit-*` headers report after a decision. */
export interface Snapshot {
  readonly limitRequests: number
  readonly remainingRequests: number
  readonly resetRequestsMs: number
  readonly limitTokens: number
  readonly remainingTokens: number
  readonly resetTokensMs: number
}

export type Decision =
  | { readonly ok: true; readonly snapshot: Snapshot }
  | {
    readonly ok: false
    readonly snapshot: Snapshot
    readonly kind: "requests" | "tokens"
    /** undefined when the request can never fit (it asks for more tokens than the limit) */
    readonly retryAfterMs: number | undefined
    readonly used: number
  }

/** The two buckets of one model. */
export class ModelLimiter {
  private readonly requests: Bucket
  private readonly tokens: Bucket

  constructor(requestsPerMinute: number | undefined, tokensPerMinute: number | undefined, now: number) {
    this.requests = new Bucket(requestsPerMinute ?? UNLIMITED_REQUESTS, now)
    this.tokens = new Bucket(tokensPerMinute ?? UNLIMITED_TOKENS, now)
  }

  private snapshot(now: number): Snapshot {
    return {
      limitRequests: this.requests.capacity,
      remainingRequests: Math.max(0, Math.floor(this.requests.available(now))),
      resetRequestsMs: this.requests.resetMs(),
      limitTokens: this.tokens.capacity,
      remainingTokens: Math.max(0, Math.floor(this.tokens.available(now))),
      resetTokensMs: this.tokens.resetMs()
    }
  }

  /** Admits one request estimated at `tokens` tokens, or says which limit it hits and for how long. */
  admit(now: number, tokens: number): Decision {
    const requestsLeft = this.requests.available(now)
    const tokensLeft = this.tokens.available(now)
    if (requestsLeft < 1) {
      return {
        ok: false,
        kind: "requests",
        retryAfterMs: this.requests.waitFor(1),
        used: Math.round(this.requests.capacity - requestsLeft),
        snapshot: this.snapshot(now)
      }
    }
    if (tokensLeft < tokens) {
      return {
        ok: false,
        kind: "tokens",
        retryAfterMs: tokens > this.tokens.capacity ? undefined : this.tokens.waitFor(tokens),
        used: Math.round(this.tokens.capacity - tokensLeft),
        snapshot: this.snapshot(now)
      }
    }
    this.requests.take(1)
    this.tokens.take(tokens)
    return { ok: true, snapshot: this.snapshot(now) }
  }

  /** Charges tokens learned after admission (the answer's output); the level may go below zero. */
  charge(tokens: number): void {
    if (tokens > 0) this.tokens.take(tokens)
  }

  /** The current state, for headers on answers that were not admitted through `admit`. */
  peek(now: number): Snapshot {
    return this.snapshot(now)
  }
}

/** A Go `time.Duration` string as OpenAI sends in `x-ratelimit-reset-*`: "0s", "12ms", "1.5s", "6m0s", "1h2m3s". */
export const goDuration = (ms: number): string => {
  const total = Math.max(0, Math.round(ms))
  if (total === 0) return "0s"
  if (total < 1000) return `${total}ms`
  const hours = Math.floor(total / 3_600_000)
  const minutes = Math.floor((total % 3_600_000) / 60_000)
  const seconds = (total % 60_000) / 1000
  const s = `${Number.isInteger(seconds) ? seconds : seconds.toFixed(3).replace(/0+$/, "")}s`
  if (hours > 0) return `${hours}h${minutes}m${s}`
  if (minutes > 0) return `${minutes}m${s}`
  return s
}
