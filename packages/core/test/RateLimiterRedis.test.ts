/**
 * The RateLimiter over a real Redis (127.0.0.1:6379), on the live clock: two limiters, as two
 * processes would hold them, share one quota; answers that say no token remains, read by several
 * limiters at once, empty the shared bucket but do not drive it below empty; with Redis unreachable a limiter
 * still limits, in process memory, and says so once.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as LlmError from "../src/LlmError.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RedisLimiter from "../src/RateLimiter/Redis.js"
import * as TestKit from "../src/TestKit.js"

/** 120 requests/min: one every 500 ms, the bucket holding one (10 ms of the rate, at least one request). */
const limits = { limits: { requestsPerMinute: 120 } }
const attempt = (model: string): RateLimiter.RateLimiter.Attempt => ({
  model,
  retry: false,
  tokens: Effect.succeed(1),
  deadlineAt: Date.now() + 60_000,
  onDeadline: () => new LlmError.Timeout({ after: Duration.seconds(60), level: "call" })
})
const answer = Effect.succeed(TestKit.response())

/** How long (ms) the limiter holds one more attempt after `count` went through at once. */
const admitAfter = (limiter: RateLimiter.RateLimiter.Service, model: string, count: number) =>
  Effect.gen(function*() {
    yield* Effect.forEach(Array.from({ length: count }), () => limiter.admit(attempt(model), answer), {
      concurrency: "unbounded",
      discard: true
    })
    const started = Date.now()
    yield* limiter.admit(attempt(model), answer)
    return Date.now() - started
  })

const redisLimiter = (prefix: string, port = 6379, options: RateLimiter.Options = limits) =>
  Layer.build(
    RateLimiter.layer(options).pipe(Layer.provide(RedisLimiter.layerStore({ host: "127.0.0.1", port, prefix })))
  ).pipe(Effect.map((context) => context.unsafeMap.get(RateLimiter.RateLimiter.key) as RateLimiter.RateLimiter.Service))

describe("RateLimiter over Redis", () => {
  it.scopedLive("two limiters on one Redis share one quota: what one spends, the other waits for", () =>
    Effect.gen(function*() {
      const prefix = `keel-test-${process.pid}-${Date.now()}:`
      const a = yield* redisLimiter(prefix)
      const b = yield* redisLimiter(prefix)
      // A spends the bucket (one request); B's first attempt then waits for the refill (500 ms).
      const firstA = yield* admitAfter(a, "gpt-4o-mini", 0)
      assert.isBelow(firstA, 200, "A's first goes at once")
      const started = Date.now()
      yield* b.admit(attempt("gpt-4o-mini"), answer)
      assert.isAtLeast(Date.now() - started, 400, "B waited for the quota A spent")
      // Separate memory limiters would not have waited at all.
      const alone = yield* Layer.build(RateLimiter.layerMemory(limits)).pipe(
        Effect.map((c) => c.unsafeMap.get(RateLimiter.RateLimiter.key) as RateLimiter.RateLimiter.Service)
      )
      const aloneStarted = Date.now()
      yield* alone.admit(attempt("gpt-4o-mini"), answer)
      assert.isBelow(Date.now() - aloneStarted, 100)
    }))

  it.scopedLive("answers saying no token remains, read by three limiters at once, empty the shared bucket, not below", () =>
    Effect.gen(function*() {
      const prefix = `keel-test-lower-${process.pid}-${Date.now()}:`
      // 1,200 tokens/min: a bucket of 1,200 (tokens are not paced in small bursts), one back every 50 ms.
      const tokens = { limits: { tokensPerMinute: 1_200 } }
      const limiters = [
        yield* redisLimiter(prefix, 6379, tokens),
        yield* redisLimiter(prefix, 6379, tokens),
        yield* redisLimiter(prefix, 6379, tokens)
      ]
      // Each limiter's 8 attempts (1 token each, billed 1) answer together, saying the provider has no token
      // left: each lowers the shared bucket to 0 from what it read, many reads before any take lands.
      const none = Effect.succeed(
        TestKit.response({ usage: { inputTokens: 1, outputTokens: 0 }, rateLimit: { remainingTokens: 0 } })
      )
      yield* Effect.forEach(
        limiters.flatMap((limiter) => Array.from({ length: 8 }, () => limiter)),
        (limiter) => limiter.admit(attempt("gpt-4o-mini"), none),
        { concurrency: "unbounded", discard: true }
      )
      // Empty, the next attempt waits about one refill (50 ms); lowered below empty by every reader (up to
      // 24 × ~1,200 tokens), it would wait past its deadline a minute away and fail at once.
      const started = Date.now()
      yield* limiters[0]!.admit(attempt("gpt-4o-mini"), answer)
      const waited = Date.now() - started
      assert.isBelow(waited, 1_000, `waited ${waited} ms`)
    }))

  it.scopedLive("with Redis unreachable the limiter keeps limiting in memory and logs it once", () =>
    Effect.gen(function*() {
      const messages: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") messages.push(String(Array.isArray(message) ? message[0] : message))
      })
      const waited = yield* Effect.gen(function*() {
        // Nothing listens on port 1: every Redis command fails at once.
        const limiter = yield* redisLimiter(`keel-test-down-${process.pid}:`, 1)
        return yield* admitAfter(limiter, "gpt-4o-mini", 1)
      }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Logger.withMinimumLogLevel(LogLevel.Debug))
      assert.isAtLeast(waited, 400, "the second attempt waited for the memory bucket's refill")
      const fallbacks = messages.filter((m) => m.includes("limiting in this process only"))
      assert.strictEqual(fallbacks.length, 1, messages.join("\n"))
      assert.include(fallbacks[0], "127.0.0.1:1")
    }))
})
