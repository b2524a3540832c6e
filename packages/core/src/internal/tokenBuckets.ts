/**
 * The RateLimiter's token buckets, behind two operations: `take` (the delay before the tokens are there)
 * and `lower` (down to what a provider says remains). Either in this process's memory or in a shared
 * `RateLimiterStore` (`@effect/experimental`'s, e.g. Redis), which falls back to memory while it fails.
 *
 * The memory buckets are `@effect/experimental`'s memory store (`layerStoreMemory`) as plain calls: the
 * same arithmetic (whole tokens refilled every `window / limit`, in `Duration`s, so the same delays to the
 * nanosecond), without the half-dozen
 * Effects per operation that the store and its `RateLimiter.consume` cost. A limited call makes two to five
 * bucket operations, so that was a third of the limiter's CPU per call. A property test holds the two to
 * the same answers.
 */
import * as ExperimentalLimiter from "@effect/experimental/RateLimiter"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/** A token bucket: `limit` tokens at most, refilled evenly over `windowMs`. */
export interface Bucket {
  readonly key: string
  readonly limit: number
  readonly windowMs: number
}

export interface Buckets {
  /** Takes `tokens` (the bucket may go below empty); the delay in ms before they are there. */
  readonly take: (bucket: Bucket, tokens: number, now: number) => Effect.Effect<number>
  /** Brings a bucket down to `remaining`, never below empty. */
  readonly lower: (bucket: Bucket, remaining: number, now: number) => Effect.Effect<void>
}

/** The time one token takes to come back, as a `Duration` (whole nanoseconds), as the store reckons it. */
const refillOf = (bucket: Bucket) => Duration.unsafeDivide(Duration.millis(bucket.windowMs), bucket.limit)

/** `@effect/experimental`'s memory store's token buckets, as plain calls on a clock reading. */
class Memory {
  private readonly levels = new Map<string, { tokens: number; lastRefill: number }>()

  /** The store's `tokenBucket`: takes `tokens` unless short (then only with `overflow`); what is left, negative when short. */
  consume(key: string, tokens: number, limit: number, refillMs: number, overflow: boolean, now: number): number {
    let level = this.levels.get(key)
    if (level === undefined) {
      level = { tokens: limit, lastRefill: now }
      this.levels.set(key, level)
    } else {
      const added = Math.floor((now - level.lastRefill) / refillMs)
      if (added > 0) {
        level.tokens = Math.min(limit, level.tokens + added)
        level.lastRefill += added * refillMs
      }
    }
    const left = level.tokens - tokens
    if (overflow || left >= 0) level.tokens = left
    return left
  }

  take(bucket: Bucket, tokens: number, now: number): number {
    if (tokens > bucket.limit) return bucket.windowMs
    const refill = refillOf(bucket)
    const left = this.consume(bucket.key, tokens, bucket.limit, Duration.toMillis(refill), true, now)
    return left >= 0 ? 0 : Duration.toMillis(Duration.times(refill, -left))
  }

  lower(bucket: Bucket, remaining: number, now: number): void {
    const refillMs = Duration.toMillis(refillOf(bucket))
    const level = this.consume(bucket.key, 0, bucket.limit, refillMs, true, now)
    const excess = level - Math.max(0, remaining)
    // `consume` refuses a take larger than the bucket (a level above it is left by a negative take)
    if (level > remaining && excess <= bucket.limit) {
      this.consume(bucket.key, excess, bucket.limit, refillMs, false, now)
    }
  }
}

/** Buckets in this process's memory. */
export const memory = (): Buckets => {
  const buckets = new Memory()
  return {
    take: (bucket, tokens, now) => Effect.sync(() => buckets.take(bucket, tokens, now)),
    lower: (bucket, remaining, now) => Effect.sync(() => buckets.lower(bucket, remaining, now))
  }
}

/**
 * Buckets in the `RateLimiterStore` in context. While the store fails, they are kept in this process's
 * memory instead, logged once (and once when the store answers again).
 */
export const shared: Effect.Effect<Buckets, never, ExperimentalLimiter.RateLimiterStore> = Effect.gen(function*() {
  const shared = yield* ExperimentalLimiter.RateLimiterStore
  const local = new Memory()
  let storeFailing = false
  const store = ExperimentalLimiter.RateLimiterStore.of({
    fixedWindow: (o) => shared.fixedWindow(o),
    tokenBucket: (o) =>
      shared.tokenBucket(o).pipe(
        Effect.tap(() => {
          if (!storeFailing) return Effect.void
          storeFailing = false
          return Effect.logInfo("RateLimiter: the shared store answers again; limits are shared again")
        }),
        Effect.catchAll((error) => {
          const fallback = Effect.clockWith((clock) =>
            Effect.sync(() =>
              local.consume(
                o.key,
                o.tokens,
                o.limit,
                Duration.toMillis(o.refillRate),
                o.allowOverflow,
                clock.unsafeCurrentTimeMillis()
              )
            )
          )
          if (storeFailing) return fallback
          storeFailing = true
          return Effect.zipRight(
            Effect.logWarning(
              `RateLimiter: the shared store failed (${error.message}); limiting in this process only until it answers again`
            ),
            fallback
          )
        })
      )
  })
  const limiter = yield* Effect.provideService(ExperimentalLimiter.make, ExperimentalLimiter.RateLimiterStore, store)
  const options = (bucket: Bucket) => ({
    algorithm: "token-bucket" as const,
    key: bucket.key,
    limit: bucket.limit,
    window: Duration.millis(bucket.windowMs)
  })

  const take = (bucket: Bucket, tokens: number) =>
    limiter.consume({ ...options(bucket), onExceeded: "delay", tokens }).pipe(
      Effect.map((result) => Duration.toMillis(result.delay)),
      Effect.orElseSucceed(() => 0)
    )
  /**
   * Read with a zero take, then take the difference, refused by the store (not delayed) when it is not
   * all there. Fibers and processes lowering the same bucket at once each read the level before the
   * others' takes land; were each take let through, the bucket would go as far below empty as there are
   * readers (three processes learning together stalled for a minute, 0.41 of the limit). Refused, it
   * stops at empty at worst; a refused take reads again (the level may have dropped by other attempts'
   * takes rather than by another lowering), three times at most.
   */
  const lower = (bucket: Bucket, remaining: number, tries = 3): Effect.Effect<void> =>
    limiter.consume({ ...options(bucket), onExceeded: "delay", tokens: 0 }).pipe(
      Effect.flatMap((result) =>
        result.remaining > remaining
          ? limiter.consume({
            ...options(bucket),
            onExceeded: "fail",
            tokens: result.remaining - Math.max(0, remaining)
          })
            .pipe(
              // Refused (the store's own failures are caught by the fallback above).
              Effect.catchAll(() => tries > 1 ? lower(bucket, remaining, tries - 1) : Effect.void)
            )
          : Effect.void
      ),
      Effect.ignore
    )
  return { take: (bucket, tokens) => take(bucket, tokens), lower: (bucket, remaining) => lower(bucket, remaining) }
})
