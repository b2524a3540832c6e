/**
 * The RateLimiter in the pipeline, under TestClock: learning a model's limit from one answer's headers,
 * one 429 pausing every fiber, tokens/min corrected by billed usage, the concurrency cap, the retry
 * budget holding a failing model, slow start after it recovers, a limit learned after an outage pacing
 * the calls held during it, the deadline while waiting, and bad
 * options rejected when the layer is built.
 */
import * as ExperimentalLimiter from "@effect/experimental/RateLimiter"
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import type { RateLimitSnapshot } from "../src/LlmResponse.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import * as Tokenizer from "../src/Tokenizer.js"
import { recordingTimes } from "./utils/retry.js"

const request = (i = 0) => ({ model: "m", messages: [{ role: "user" as const, content: `call ${i}` }] })
const unavailable = new LlmError.ProviderUnavailable({ status: 503 })

/** Runs `calls` concurrent calls through a pipeline with the limiter; returns their outcomes. */
const runCalls = (
  calls: number,
  model: TestKit.Scripted,
  options: {
    readonly limiter?: RateLimiter.Options
    readonly policy?: RetryPolicy.Options
    readonly tokenizer?: Tokenizer.Tokenizer.Service
    readonly maxOutputTokens?: number
    readonly step?: Duration.DurationInput
    readonly concurrency?: number
    readonly stall?: Stall
    readonly store?: Layer.Layer<ExperimentalLimiter.RateLimiterStore> | undefined
  } = {}
) =>
  Effect.forEach(
    Array.from({ length: calls }, (_, i) => i),
    (i) => Effect.either(Llm.generate({ ...request(i), maxOutputTokens: options.maxOutputTokens })),
    { concurrency: options.concurrency ?? "unbounded" }
  ).pipe(
    Effect.provide(
      Llm.layer({ defaultModel: "m" }).pipe(
        Layer.provide(Layer.mergeAll(
          model.layer,
          options.store === undefined
            ? RateLimiter.layerMemory(options.limiter)
            : RateLimiter.layer(options.limiter).pipe(Layer.provide(options.store)),
          Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make(options.policy)),
          Tokenizer.layer(options.tokenizer ?? Tokenizer.bytesUpperBound)
        ))
      )
    ),
    (self) =>
      options.stall === undefined
        ? self
        : Effect.clockWith((clock) => Effect.withClock(self, stalled(clock, options.stall!))),
    (self) => TestKit.runWithTestClock(self, { step: options.step ?? Duration.millis(5) })
  )

/** A stretch of virtual time (ms from the start) in which the process runs nothing, as under a long GC or a busy loop. */
interface Stall {
  readonly from: number
  readonly to: number
}

/** `clock`, except that a sleep due inside the stall wakes at its end, together with every other one due in it. */
const stalled = (clock: Clock.Clock, stall: Stall): Clock.Clock => ({
  [Clock.ClockTypeId]: Clock.ClockTypeId,
  unsafeCurrentTimeMillis: () => clock.unsafeCurrentTimeMillis(),
  unsafeCurrentTimeNanos: () => clock.unsafeCurrentTimeNanos(),
  currentTimeMillis: clock.currentTimeMillis,
  currentTimeNanos: clock.currentTimeNanos,
  sleep: (duration) =>
    Effect.flatMap(clock.currentTimeMillis, (now) => {
      const due = now + Duration.toMillis(duration)
      return clock.sleep(Duration.millis(due >= stall.from && due < stall.to ? stall.to - now : due - now))
    })
})

/** A shared store whose buckets always have room (as other processes may see them): only the process's own pace spaces its attempts. */
const roomyStore = Layer.succeed(ExperimentalLimiter.RateLimiterStore, {
  fixedWindow: ({ tokens }) => Effect.succeed([tokens, 0] as const),
  tokenBucket: ({ limit }) => Effect.succeed(limit)
})

const withSnapshot = (rateLimit: RateLimitSnapshot) => TestKit.response({ rateLimit })

/** Attempts per 100 ms bucket, from `from`. */
const perHundred = (times: ReadonlyArray<number>, from: number) => {
  const buckets: Array<number> = []
  for (const t of times) {
    if (t < from) continue
    const i = Math.floor((t - from) / 100)
    while (buckets.length <= i) buckets.push(0)
    buckets[i]!++
  }
  return buckets
}

describe("RateLimiter", () => {
  it.effect("learns a limit from one answer's headers: 30 calls at 600/min with none left are paced, not sent at once", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], {
        otherwise: recordingTimes(
          times,
          TestKit.delayed(
            "50 millis",
            withSnapshot({ limitRequests: 600, remainingRequests: 0, limitTokens: 1e9, remainingTokens: 1e9 })
          )
        )
      })
      const outcomes = yield* runCalls(30, model)
      assert.isTrue(outcomes.every((o) => o._tag === "Right"))
      assert.strictEqual(model.requests.length, 30)
      // The first attempt goes alone; the others wait for what it teaches.
      assert.strictEqual(times[0], 0)
      assert.isAtLeast(times[1]!, 50)
      // Then one attempt per 1/(600·0.97) min ≈ 103 ms: never two closer than 100 ms.
      for (let i = 2; i < times.length; i++) assert.isAtLeast(times[i]! - times[i - 1]!, 100, `attempt ${i}`)
      assert.isAbove(times[29]!, 28 * 100)
    }))

  it.effect("a 429 pauses later calls on the model too: a call started during the pause waits it out", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([
        recordingTimes(times, new LlmError.RateLimited({ retryAfter: Duration.seconds(3) }))
      ], {
        otherwise: recordingTimes(times, TestKit.response())
      })
      // Configured limits are known at once: no learning attempt goes first.
      const layer = Llm.layer({ defaultModel: "m" }).pipe(
        Layer.provide(
          Layer.mergeAll(model.layer, RateLimiter.layerMemory({ limits: { requestsPerMinute: 1_000_000 } }))
        )
      )
      yield* Effect.gen(function*() {
        const first = yield* Effect.fork(Llm.generate(request(0)))
        yield* Effect.sleep("500 millis")
        yield* Llm.generate(request(1))
        yield* first.await
      }).pipe(Effect.provide(layer), TestKit.runWithTestClock)
      // The second call, started at 500 ms, reached the model only after the pause ended at 3 s.
      assert.strictEqual(times[0], 0)
      assert.isAtLeast(times[1]!, 3_000)
    }))

  it.effect("tokens/min: estimated before each attempt, corrected with the billed usage after", () =>
    Effect.gen(function*() {
      const fixed: Tokenizer.Tokenizer.Service = { name: "fixed", load: Effect.void, input: () => Effect.succeed(100) }
      const model = TestKit.scripted([], {
        otherwise: TestKit.response({ usage: { inputTokens: 10, outputTokens: 5 } })
      })
      const started = yield* Clock.currentTimeMillis
      const outcomes = yield* runCalls(40, model, {
        limiter: { limits: { tokensPerMinute: 1_000 } },
        tokenizer: fixed,
        maxOutputTokens: 100,
        concurrency: 1
      })
      assert.isTrue(outcomes.every((o) => o._tag === "Right"), String(outcomes.find((o) => o._tag === "Left")))
      // Estimated at 200 tokens each, 40 calls in a row would need 8,000 tokens: 8 minutes at 1,000/min. Billed at 15
      // each, the difference goes back to the bucket after each call: 600 tokens in all, no wait.
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 0)
    }))

  it.effect("the concurrency cap holds: never more than 3 attempts in flight", () =>
    Effect.gen(function*() {
      let inFlight = 0
      let most = 0
      const model = TestKit.scripted([], {
        otherwise: () =>
          Effect.acquireUseRelease(
            Effect.sync(() => {
              inFlight++
              most = Math.max(most, inFlight)
            }),
            () => Effect.delay(Effect.succeed(TestKit.response()), "100 millis"),
            () => Effect.sync(() => inFlight--)
          )
      })
      const outcomes = yield* runCalls(20, model, { limiter: { limits: { maxConcurrent: 3 } } })
      assert.isTrue(outcomes.every((o) => o._tag === "Right"))
      assert.strictEqual(most, 3)
    }))

  it.effect("retry budget and slow start: 300 calls meet a 2 s outage, lose none, and come back ramped", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], {
        otherwise: recordingTimes(times, () =>
          Effect.flatMap(
            Clock.currentTimeMillis,
            (now) => now < 2_000 ? Effect.fail(unavailable) : Effect.succeed(TestKit.response())
          ))
      })
      const outcomes = yield* runCalls(300, model, {
        limiter: { limits: { requestsPerMinute: 30_000 }, minRetriesPerSecond: 1 }
      }).pipe(Effect.withRandom(Random.make("outage")))
      assert.isTrue(outcomes.every((o) => o._tag === "Right"), "no call failed")
      // During the outage: the 300 first attempts, retries up to 20% of them plus 10, and a probe per 200 ms.
      const during = times.filter((t) => t < 2_000).length
      assert.isAtMost(during, 300 + 60 + 10 + 2_000 / 200 + 1, `attempts during the outage: ${during}`)
      // After it: a ramp from 20/s doubling every 100 ms, capped at 30,000·0.97/min ≈ 485/s: never more than 49 per
      // 100 ms, and not the whole backlog at once in the first 100 ms.
      const recovered = times.find((t) => t >= 2_000)!
      assert.isAtMost(recovered, 2_200, "a probe finds the recovery within one probe interval")
      const buckets = perHundred(times, recovered)
      assert.isAtMost(buckets[0]!, 5, `first 100 ms: ${buckets.join(",")}`)
      assert.isAtMost(Math.max(...buckets), 50, `per 100 ms: ${buckets.join(",")}`)
      // …and the backlog is through within 1.5 s of the recovery.
      assert.isBelow(times[times.length - 1]! - recovered, 1_500, `per 100 ms: ${buckets.join(",")}`)
    }))

  it.effect("1,000 calls meet a 2 s outage before any limit is known: the limit learned after it paces them, not a herd", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      // Each answer takes 20 ms (so the one attempt at a time that learns sends about 100 during the outage, and
      // the retry budget does not hold the model); the provider announces 30,000/min (500/s: 50 per 100 ms)
      // once it answers again.
      const model = TestKit.scripted([], {
        otherwise: recordingTimes(times, () =>
          Effect.flatMap(
            Clock.currentTimeMillis,
            (now) =>
              Effect.delay(
                now < 2_000
                  ? Effect.fail(unavailable)
                  : Effect.succeed(withSnapshot({ limitRequests: 30_000, remainingRequests: 29_000 })),
                "20 millis"
              )
          ))
      })
      const outcomes = yield* runCalls(1_000, model).pipe(Effect.withRandom(Random.make("learn-after-outage")))
      assert.isTrue(outcomes.every((o) => o._tag === "Right"), "no call failed")
      // The calls held while the limit was unknown go out at 97% of 500/s once it is learned: a bucket holding a
      // minute's worth sent them all in the first 100 ms after recovery.
      const recovered = times.find((t) => t >= 2_000)!
      const buckets = perHundred(times, recovered)
      assert.isAtMost(Math.max(...buckets), 60, `per 100 ms: ${buckets.join(",")}`)
      // Every call done within 6 s of the outage's start (2 s + 1,000 at ~485/s, and the learning).
      assert.isBelow(times[times.length - 1]!, 6_000, `per 100 ms: ${buckets.join(",")}`)
    }))

  /**
   * 1,000 calls under a known 30,000/min (500/s: 50 per 100 ms) while the process stalls from 500 to 800 ms: no call
   * fails, nothing is sent during the stall, and no 100 ms holds more than 60. Returns the send times.
   */
  const throughStall = (store?: Layer.Layer<ExperimentalLimiter.RateLimiterStore>) =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], {
        otherwise: recordingTimes(times, () => Effect.delay(Effect.succeed(TestKit.response()), "20 millis"))
      })
      const outcomes = yield* runCalls(1_000, model, {
        limiter: { limits: { requestsPerMinute: 30_000 } },
        store,
        stall: { from: 500, to: 800 }
      })
      assert.isTrue(outcomes.every((o) => o._tag === "Right"), "no call failed")
      const buckets = perHundred(times, 0)
      assert.strictEqual(buckets[5] ?? 0, 0, "nothing is sent during the stall")
      assert.isAtMost(Math.max(...buckets), 60, `per 100 ms: ${buckets.join(",")}`)
      return times
    })

  // 1,000 calls take their slots in the requests bucket over ~2 s; ~145 slots fall due while nothing runs.
  it.effect("a process stall does not turn into a burst: attempts whose slots fell due in it go out at the rate", () =>
    Effect.asVoid(throughStall()))

  // The buckets always have room, so the 1,000 attempts take their send times at once, from 0 to ~2 s; the ~150 due
  // during the stall all wake at 800 ms.
  it.effect("a stall while attempts sleep to their send times does not turn into a burst either", () =>
    Effect.gen(function*() {
      const times = yield* throughStall(roomyStore)
      // Nothing is lost to the stall but its own 300 ms: 1,000 at ~485/s take ~2.1 s, and 0.3 s more.
      assert.isBelow(times[times.length - 1]!, 2_500, `last send at ${times[times.length - 1]} ms`)
    }))

  // The first estimate of a real tokenizer loads its encoder (half a second of CPU in a process): attempts the
  // requests pace had already spaced would all wait for it, and go out together when it is done.
  it.effect("a slow token estimate does not bunch attempts: the requests pace is the last gate before sending", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], {
        otherwise: recordingTimes(times, () => Effect.delay(Effect.succeed(TestKit.response()), "20 millis"))
      })
      const loadsFor300ms: Tokenizer.Tokenizer.Service = {
        name: "loading",
        load: Effect.void,
        input: () =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.as(Effect.sleep(Math.max(0, 300 - now)), 100))
      }
      const outcomes = yield* runCalls(300, model, {
        limiter: { limits: { requestsPerMinute: 30_000, tokensPerMinute: 1e9 } },
        tokenizer: loadsFor300ms
      })
      assert.isTrue(outcomes.every((o) => o._tag === "Right"), "no call failed")
      const buckets = perHundred(times, 0)
      assert.strictEqual(Math.min(...times), 300, "nothing goes before the first estimate")
      assert.isAtMost(Math.max(...buckets), 55, `per 100 ms: ${buckets.join(",")}`)
    }))

  it.effect("without a limiter the same outage sends the backlog back in bursts", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], {
        otherwise: recordingTimes(times, () =>
          Effect.flatMap(
            Clock.currentTimeMillis,
            (now) => now < 2_000 ? Effect.fail(unavailable) : Effect.succeed(TestKit.response())
          ))
      })
      yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), (i) => Llm.generate(request(i)), {
        concurrency: "unbounded"
      }).pipe(
        Effect.provide(Llm.layer({ defaultModel: "m" }).pipe(Layer.provide(model.layer))),
        (self) => TestKit.runWithTestClock(self, { step: Duration.millis(25) }),
        Effect.withRandom(Random.make("outage"))
      )
      // Every call retries on its own: many more attempts during the outage than with the retry budget.
      assert.isAbove(times.filter((t) => t < 2_000).length, 300 + 60 + 10 + 2_000 / 200 + 1)
    }))

  it.effect("a call held while the model is down ends at its deadline with the provider's 503, not a Timeout", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      const started = yield* Clock.currentTimeMillis
      const outcomes = yield* runCalls(50, model, {
        limiter: { minRetriesPerSecond: 0 },
        policy: { deadline: "5 seconds" }
      }).pipe(Effect.withRandom(Random.make("deadline")))
      const elapsed = (yield* Clock.currentTimeMillis) - started
      for (const outcome of outcomes) {
        assert.isTrue(outcome._tag === "Left" && outcome.left._tag === "ProviderUnavailable", String(outcome))
      }
      assert.isAtMost(elapsed, 5_000)
      // Held, the 50 calls sent far fewer than the ~300 attempts they would have made retrying on their own.
      assert.isBelow(model.requests.length, 50 + 10 + 5_000 / 200 + 5)
    }))

  it.effect("bad options are rejected when the layer is built, naming the field", () =>
    Effect.gen(function*() {
      const build = (options: RateLimiter.Options) =>
        Effect.flip(Effect.scoped(Layer.build(RateLimiter.layerMemory(options))))
      const share = yield* build({ retryBudget: 1.5 })
      assert.strictEqual(share.field, "retryBudget")
      assert.include(share.message, "must be in (0, 1]")
      const zero = yield* build({ limits: { requestsPerMinute: 0 } })
      assert.strictEqual(zero.field, "limits.requestsPerMinute")
      const negative = yield* build({ limitsByModel: { "gpt-4o": { tokensPerMinute: -5 } } })
      assert.strictEqual(negative.field, "limitsByModel.gpt-4o.tokensPerMinute")
      const cap = yield* build({ limits: { maxConcurrent: 1.5 } })
      assert.strictEqual(cap.field, "limits.maxConcurrent")
      const probe = yield* build({ probeInterval: "0 millis" })
      assert.strictEqual(probe.field, "probeInterval")
    }))
})
