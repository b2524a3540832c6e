/**
 * A Redis store for the `RateLimiter`, so that several processes share one provider quota: the
 * requests and tokens buckets of each model live in Redis, updated atomically by Lua scripts.
 *
 * The scripts are `@effect/experimental`'s `RateLimiter/Redis` ones, and the store implements its
 * `RateLimiterStore`. Its own `make` is not used because it owns an ioredis client it does not expose:
 * with no `error` listener, ioredis prints every failed reconnect to the console, and its offline queue
 * holds commands while Redis is down. Here the client fails commands at once while disconnected (no
 * offline queue, a 1 s command timeout), so the limiter falls back to process memory and says so once
 * (see `RateLimiter`), and reconnects in the background.
 *
 * ```ts
 * const limiter = RateLimiter.layer({ limits: { requestsPerMinute: 3_000 } }).pipe(
 *   Layer.provide(RedisLimiter.layerStore({ host: "127.0.0.1", port: 6379 }))
 * )
 * ```
 */
import * as ExperimentalLimiter from "@effect/experimental/RateLimiter"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { Redis, type RedisOptions } from "ioredis"

interface RedisWithRateLimiting extends Redis {
  fixedWindow(key: string, tokens: number, refillMillis: number, limit?: number): Promise<[number, number]>
  tokenBucket(
    key: string,
    tokens: number,
    refillMillis: number,
    limit: number,
    now: number,
    overflow: 0 | 1
  ): Promise<number>
}

const fixedWindowLua = `
local key = KEYS[1]
local tokens = tonumber(ARGV[1])
local refillms = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local current = tonumber(redis.call("GET", key))
if not current then
  local nextpttl = refillms * tokens
  redis.call("SET", key, tokens, "PX", nextpttl)
  return { tokens, nextpttl }
end
local currentpttl = tonumber(redis.call("PTTL", key) or "0")
local next = current + tokens
if limit and next > limit then
  return { next, currentpttl }
end
local nextpttl = currentpttl + (refillms * tokens)
redis.call("SET", key, next, "PX", nextpttl)
return { next, nextpttl }
`

const tokenBucketLua = `
local key = KEYS[1]
local last_refill_key = key .. ":refill"
local tokens = tonumber(ARGV[1])
local refill_ms = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local overflow = ARGV[5] == "1"
local current = tonumber(redis.call("GET", key))
local last_refill = tonumber(redis.call("GET", last_refill_key))
if not current then
  current = limit
  last_refill = now
  redis.call("SET", key, current)
  redis.call("SET", last_refill_key, last_refill)
end
local elapsed = now - last_refill
local refill_amount = math.floor(elapsed / refill_ms)
if refill_amount > 0 then
  current = math.min(current + refill_amount, limit)
  last_refill = last_refill + (refill_amount * refill_ms)
  redis.call("SET", last_refill_key, last_refill)
end
local next = current - tokens
if next < 0 and not overflow then
  redis.call("SET", key, current)
  return next
end
redis.call("SET", key, next)
return next
`

export type Options = RedisOptions & {
  /** Prefix of every key, before the limiter's own. Default none. */
  readonly prefix?: string | undefined
}

const failure = (operation: string, where: string) => (cause: unknown) =>
  new ExperimentalLimiter.RateLimitStoreError({
    message: `Redis at ${where}: ${operation} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

/**
 * The store over a new ioredis client, closed with the scope. Building it waits up to the connect
 * timeout (default 1 s) for Redis and never fails: an unreachable Redis shows in the first call's
 * fallback, logged by the limiter.
 */
export const make = (
  options: Options = {}
): Effect.Effect<ExperimentalLimiter.RateLimiterStore["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? ""
    const redis = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const client = new Redis({
          enableOfflineQueue: false,
          maxRetriesPerRequest: 1,
          commandTimeout: 1_000,
          connectTimeout: 1_000,
          retryStrategy: (times) => Math.min(times * 200, 2_000),
          ...options
        }) as RedisWithRateLimiting
        // Failures reach the limiter through the commands; without a listener ioredis prints each one.
        client.on("error", () => {})
        client.defineCommand("fixedWindow", { lua: fixedWindowLua, numberOfKeys: 1, readOnly: false })
        client.defineCommand("tokenBucket", { lua: tokenBucketLua, numberOfKeys: 1, readOnly: false })
        return client
      }),
      (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
    )
    const where = `${options.host ?? "127.0.0.1"}:${options.port ?? 6379}`
    yield* Effect.async<void>((resume) => {
      if (redis.status === "ready") return resume(Effect.void)
      const done = () => resume(Effect.void)
      redis.once("ready", done)
      const timer = setTimeout(done, options.connectTimeout ?? 1_000)
      return Effect.sync(() => {
        clearTimeout(timer)
        redis.off("ready", done)
      })
    })

    return ExperimentalLimiter.RateLimiterStore.of({
      fixedWindow: (o) =>
        Effect.tryPromise({
          try: () => redis.fixedWindow(`${prefix}${o.key}`, o.tokens, Duration.toMillis(o.refillRate), o.limit),
          catch: failure("fixedWindow", where)
        }),
      tokenBucket: (o) =>
        Effect.clockWith((clock) =>
          Effect.tryPromise({
            try: () =>
              redis.tokenBucket(
                `${prefix}${o.key}`,
                o.tokens,
                Duration.toMillis(o.refillRate),
                o.limit,
                clock.unsafeCurrentTimeMillis(),
                o.allowOverflow ? 1 : 0
              ),
            catch: failure("tokenBucket", where)
          })
        )
    })
  })

/** The Redis store as a layer, for `RateLimiter.layer`. */
export const layerStore = (options: Options = {}): Layer.Layer<ExperimentalLimiter.RateLimiterStore> =>
  Layer.scoped(ExperimentalLimiter.RateLimiterStore, make(options))
