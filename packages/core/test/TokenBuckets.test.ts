/**
 * The RateLimiter's memory buckets are `@effect/experimental`'s memory store as plain calls: for any
 * sequence of takes (corrections below zero included), lowerings and clock steps, they answer the same
 * delays as the shared buckets over that store.
 */
import * as ExperimentalLimiter from "@effect/experimental/RateLimiter"
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import * as TokenBuckets from "../src/internal/tokenBuckets.js"

const buckets: ReadonlyArray<TokenBuckets.Bucket> = [
  { key: "requests", limit: 5, windowMs: 50 },
  { key: "tokens", limit: 1_000, windowMs: 60_000 },
  // a refill interval that is not a whole number of ms
  { key: "odd", limit: 7, windowMs: 10 }
]

type Op =
  | { readonly _tag: "take"; readonly bucket: number; readonly tokens: number }
  | { readonly _tag: "lower"; readonly bucket: number; readonly remaining: number }
  | { readonly _tag: "advance"; readonly ms: number }

const op: FastCheck.Arbitrary<Op> = FastCheck.oneof(
  FastCheck.record({
    _tag: FastCheck.constant("take" as const),
    bucket: FastCheck.nat(2),
    tokens: FastCheck.integer({ min: -300, max: 1_100 })
  }),
  FastCheck.record({
    _tag: FastCheck.constant("lower" as const),
    bucket: FastCheck.nat(2),
    remaining: FastCheck.oneof(FastCheck.integer({ min: -3, max: 3 }), FastCheck.integer({ min: 0, max: 1_100 }))
  }),
  FastCheck.record({
    _tag: FastCheck.constant("advance" as const),
    ms: FastCheck.oneof(FastCheck.integer({ min: 0, max: 30 }), FastCheck.integer({ min: 0, max: 5_000 }))
  })
)

/** Runs the ops, then a full take on every bucket (its delay shows the level left); the delays answered. */
const delays = (make: Effect.Effect<TokenBuckets.Buckets>, ops: ReadonlyArray<Op>) => {
  let now = 1_700_000_000_000
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => now,
    unsafeCurrentTimeNanos: () => BigInt(now) * 1_000_000n,
    currentTimeMillis: Effect.sync(() => now),
    currentTimeNanos: Effect.sync(() => BigInt(now) * 1_000_000n),
    sleep: () => Effect.void
  }
  return Effect.gen(function*() {
    const b = yield* make
    const answered: Array<number> = []
    for (
      const o of [...ops, ...buckets.map((bucket, i) => ({ _tag: "take" as const, bucket: i, tokens: bucket.limit }))]
    ) {
      if (o._tag === "advance") now += o.ms
      else if (o._tag === "take") answered.push(yield* b.take(buckets[o.bucket]!, o.tokens, now))
      else yield* b.lower(buckets[o.bucket]!, o.remaining, now)
    }
    return answered
  }).pipe(Effect.withClock(clock), Effect.runSync)
}

describe("TokenBuckets", () => {
  it("memory buckets answer what the shared ones over @effect/experimental's memory store answer", () => {
    FastCheck.assert(
      FastCheck.property(FastCheck.array(op, { maxLength: 60 }), (ops) => {
        const shared = delays(Effect.provide(TokenBuckets.shared, ExperimentalLimiter.layerStoreMemory), ops)
        assert.deepStrictEqual(delays(Effect.sync(TokenBuckets.memory), ops), shared)
      }),
      { numRuns: 2_000 }
    )
  })
})
