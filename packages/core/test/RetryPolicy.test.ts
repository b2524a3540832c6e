import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Random from "effect/Random"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"

const unavailable = new LlmError.ProviderUnavailable({ status: 503 })
const request = { model: "test-model", messages: [{ role: "user" as const, content: "hi" }] }

/** Steps a schedule by hand, as `Effect.retry` would, and returns the delays it chose (ms). */
const delaysOf = (policy: RetryPolicy.Options, error: LlmError.LlmError, steps: number) =>
  Effect.gen(function*() {
    const schedule = RetryPolicy.schedule(policy)
    let state = schedule.initial
    let now = 0
    const delays: Array<number> = []
    for (let i = 0; i < steps; i++) {
      const [next, delay, decision] = yield* schedule.step(now, error, state)
      if (ScheduleDecision.isDone(decision)) break
      delays.push(Duration.toMillis(delay))
      now += Duration.toMillis(delay)
      state = next
    }
    return delays
  })

/** Times (virtual ms) at which each attempt reached the model. */
const recordingTimes = (times: Array<number>, step: TestKit.Step): TestKit.Step => (request, attempt) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    times.push(now)
    return typeof step === "function"
      ? step(request, attempt)
      : LlmError.isLlmError(step)
      ? Effect.fail(step)
      : Effect.succeed(step)
  })

const run = <A, E>(
  effect: Effect.Effect<A, E, Llm.Llm>,
  model: TestKit.Scripted,
  policy: RetryPolicy.Options = {},
  clock: { readonly step?: Duration.DurationInput } = {}
) =>
  effect.pipe(
    RetryPolicy.withPolicy(RetryPolicy.make(policy)),
    Effect.provide(Llm.layer()),
    Effect.provide(model.layer),
    (self) => TestKit.runWithTestClock(self, clock)
  )

describe("RetryPolicy", () => {
  it.effect("full jitter: every delay lies in [0, min(cap, base·2ⁿ)] and the upper bound doubles", () =>
    Effect.gen(function*() {
      const base = 100
      const cap = 3_000
      const maxByRetry: Array<number> = []
      const minByRetry: Array<number> = []
      const sumByRetry: Array<number> = []
      for (let run = 0; run < 500; run++) {
        const delays = yield* delaysOf(
          { base: Duration.millis(base), cap: Duration.millis(cap), maxAttempts: 8, deadline: Duration.days(1) },
          unavailable,
          10
        )
        assert.strictEqual(delays.length, 7)
        delays.forEach((delay, n) => {
          const bound = Math.min(cap, base * 2 ** n)
          assert.isAtLeast(delay, 0)
          assert.isAtMost(delay, bound, `retry ${n}: ${delay} ms > ${bound} ms`)
          maxByRetry[n] = Math.max(maxByRetry[n] ?? 0, delay)
          minByRetry[n] = Math.min(minByRetry[n] ?? Infinity, delay)
          sumByRetry[n] = (sumByRetry[n] ?? 0) + delay
        })
      }
      // The largest delay seen at each step approaches its bound: 100, 200, 400, … then the cap.
      maxByRetry.forEach((max, n) => assert.isAbove(max, 0.9 * Math.min(cap, base * 2 ** n)))
      assert.isAbove(maxByRetry[3]!, 2 * maxByRetry[2]! * 0.9)
      // And every step is spread over its whole window: some delays near 0, a mean near half the bound.
      minByRetry.forEach((min, n) => assert.isBelow(min, 0.05 * Math.min(cap, base * 2 ** n), `retry ${n}`))
      sumByRetry.forEach((sum, n) => {
        const bound = Math.min(cap, base * 2 ** n)
        assert.closeTo(sum / 500, bound / 2, bound * 0.1, `retry ${n}: mean ${sum / 500} ms`)
      })
    }).pipe(Effect.withRandom(Random.make("bounds"))))

  it.effect("equal, decorrelated and none stay within their bounds", () =>
    Effect.gen(function*() {
      const options = {
        base: Duration.millis(100),
        cap: Duration.seconds(2),
        maxAttempts: 6,
        deadline: Duration.days(1)
      }
      for (let i = 0; i < 200; i++) {
        const equal = yield* delaysOf({ ...options, jitter: "equal" }, unavailable, 10)
        equal.forEach((d, n) => {
          const bound = Math.min(2000, 100 * 2 ** n)
          assert.isTrue(d >= bound / 2 && d <= bound)
        })
        const decorrelated = yield* delaysOf({ ...options, jitter: "decorrelated" }, unavailable, 10)
        decorrelated.forEach((d) => assert.isTrue(d >= 100 && d <= 2000))
      }
      assert.deepStrictEqual(yield* delaysOf({ ...options, jitter: "none" }, unavailable, 10), [
        100,
        200,
        400,
        800,
        1600
      ])
    }).pipe(Effect.withRandom(Random.make("variants"))))

  const herd = (jitter: RetryPolicy.Jitter) =>
    Effect.gen(function*() {
      const fibers = 1_000
      const retries: Array<number> = []
      const model = TestKit.scripted(Array.from({ length: fibers }, () => unavailable), {
        otherwise: recordingTimes(retries, TestKit.response())
      })
      yield* run(
        Effect.forEach(Array.from({ length: fibers }), () => Llm.generate(request), { concurrency: "unbounded" }),
        model,
        { base: Duration.seconds(1), jitter },
        { step: Duration.millis(10) }
      )
      assert.strictEqual(retries.length, fibers)
      // The first retry window is [0, base]: ten buckets of 100 ms.
      const buckets = Array.from({ length: 11 }, () => 0)
      for (const t of retries) buckets[Math.min(10, Math.floor(t / 100))]!++
      return buckets
    }).pipe(Effect.withRandom(Random.make(`herd-${jitter}`)))

  it.effect("1,000 fibers failing together spread their first retry: no 100 ms bucket above 3× the mean", () =>
    Effect.gen(function*() {
      const buckets = yield* herd("full")
      const mean = 1_000 / 10
      const max = Math.max(...buckets.slice(0, 10))
      assert.isAtMost(max, 3 * mean, `buckets: ${buckets.join(",")}`)
      assert.isTrue(buckets.slice(0, 10).every((count) => count > 0), `buckets: ${buckets.join(",")}`)
    }))

  it.effect("without jitter the herd retries in one bucket", () =>
    Effect.gen(function*() {
      const buckets = yield* herd("none")
      // Every retry lands at exactly base = 1 s, the first instant past the window.
      assert.strictEqual(buckets[10], 1_000, `buckets: ${buckets.join(",")}`)
    }))

  it.effect("500 fibers failing three times each spread every retry, not just the first, over its window", () =>
    Effect.gen(function*() {
      const fibers = 500
      const base = 1_000
      // Attempt times per fiber; each fiber fails its first three attempts, then is answered.
      const times = new Map<string, Array<number>>()
      const model = TestKit.scripted([], {
        otherwise: (request) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const key = request.messages[0]!.content as string
            const seen = times.get(key) ?? []
            seen.push(now)
            times.set(key, seen)
            return seen.length <= 3 ? Effect.fail(unavailable) : Effect.succeed(TestKit.response())
          })
      })
      yield* run(
        Effect.forEach(
          Array.from({ length: fibers }, (_, i) => i),
          (i) => Llm.generate({ ...request, messages: [{ role: "user", content: `fiber ${i}` }] }),
          { concurrency: "unbounded" }
        ),
        model,
        { base: Duration.millis(base) },
        { step: Duration.millis(25) }
      )
      assert.strictEqual(times.size, fibers)
      for (const retry of [1, 2, 3]) {
        // Retry n waits U[0, base·2ⁿ⁻¹]: ten buckets over that window, each within 3× of the mean (50).
        const window = base * 2 ** (retry - 1)
        const buckets = Array.from({ length: 10 }, () => 0)
        for (const seen of times.values()) {
          assert.strictEqual(seen.length, 4)
          const delay = seen[retry]! - seen[retry - 1]!
          assert.isAtMost(delay, window + 25)
          buckets[Math.min(9, Math.floor(delay / (window / 10)))]!++
        }
        assert.isAtMost(Math.max(...buckets), 150, `retry ${retry}: ${buckets.join(",")}`)
        assert.isTrue(buckets.every((count) => count > 0), `retry ${retry}: ${buckets.join(",")}`)
      }
    }).pipe(Effect.withRandom(Random.make("whole-herd"))))

  it.effect("a 503 with a 1.5 s hint is retried after exactly the hint, not the shorter backoff", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([
        recordingTimes(times, new LlmError.ProviderUnavailable({ status: 503, retryAfter: Duration.millis(1500) })),
        recordingTimes(times, TestKit.response())
      ])
      const response = yield* run(Llm.generate(request), model, { base: Duration.millis(10), jitter: "none" })
      assert.strictEqual(response.text, "ok")
      assert.deepStrictEqual(times, [0, 1500])
    }))

  it.effect("a 503 whose hint is above the ceiling fails at once, as a 429 does", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([
        new LlmError.ProviderUnavailable({ status: 503, retryAfter: Duration.minutes(5) })
      ], {
        otherwise: TestKit.response()
      })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(run(Llm.generate(request), model))
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(model.requests.length, 1)
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 0)
    }))

  it.effect("a 1.5 s hint (retry-after-ms: 1500) is waited out in full, even when backoff is shorter", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([
        recordingTimes(times, new LlmError.RateLimited({ retryAfter: Duration.millis(1500) })),
        recordingTimes(times, TestKit.response())
      ])
      const response = yield* run(Llm.generate(request), model, { base: Duration.millis(10) })
      assert.strictEqual(response.text, "ok")
      assert.strictEqual(times.length, 2)
      assert.isAtLeast(times[1]! - times[0]!, 1500)
    }))

  it.effect("a hint above the ceiling (retry-after: 120) fails at once with RateLimited holding 120 s", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([new LlmError.RateLimited({ retryAfter: Duration.seconds(120) })], {
        otherwise: TestKit.response()
      })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(run(Llm.generate(request), model))
      assert.strictEqual(error._tag, "RateLimited")
      assert.isTrue(error._tag === "RateLimited" && Duration.equals(error.retryAfter!, Duration.seconds(120)))
      assert.strictEqual(model.requests.length, 1)
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 0)
    }))

  it.effect("a hint within a raised ceiling is honoured", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([
        recordingTimes(times, new LlmError.RateLimited({ retryAfter: Duration.seconds(120) })),
        recordingTimes(times, TestKit.response())
      ])
      yield* run(Llm.generate(request), model, { maxRetryAfter: Duration.minutes(5) })
      assert.isAtLeast(times[1]! - times[0]!, 120_000)
    }))

  it.effect("QuotaExhausted, InvalidRequest, AuthenticationFailed and Refused are attempted exactly once", () =>
    Effect.gen(function*() {
      const finals = [
        new LlmError.QuotaExhausted({ code: "insufficient_quota" }),
        new LlmError.InvalidRequest({ reason: "bad", status: 400 }),
        new LlmError.AuthenticationFailed({ status: 401 }),
        new LlmError.Refused({ refusal: "no" })
      ]
      for (const final of finals) {
        const model = TestKit.scripted([final], { otherwise: TestKit.response() })
        const error = yield* Effect.flip(run(Llm.generate(request), model))
        assert.strictEqual(error._tag, final._tag)
        assert.strictEqual(model.requests.length, 1, final._tag)
      }
    }))

  it.effect("retries stop after maxAttempts with the last error", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      const error = yield* Effect.flip(run(Llm.generate(request), model, { maxAttempts: 3 }))
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(model.requests.length, 3)
    }))

  it.effect("the overall deadline stops retries", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        run(Llm.generate(request), model, {
          maxAttempts: 1_000,
          base: Duration.seconds(1),
          cap: Duration.seconds(1),
          jitter: "none",
          deadline: Duration.seconds(10)
        })
      )
      const elapsed = (yield* Clock.currentTimeMillis) - started
      assert.strictEqual(error._tag, "ProviderUnavailable")
      // Attempts at 0, 1, …, 9 s: the next would start at the deadline, so the last real error is returned.
      assert.strictEqual(model.requests.length, 10)
      assert.isBelow(elapsed, 10_000)
    }))

  it.effect("the deadline also bounds an attempt in flight: the call ends in Timeout", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang])
      const exit = yield* Effect.exit(
        run(Llm.generate(request), model, { attemptTimeout: Duration.minutes(10), deadline: Duration.seconds(30) })
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(exit)
      assert.isTrue(error._tag === "Timeout" && error.scope === "call")
    }))

  it.effect("at the deadline the call ends: two attempts, 30 s of virtual time, no retry of the call's Timeout", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], { otherwise: recordingTimes(times, TestKit.hang) })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        run(Llm.generate(request), model, {
          attemptTimeout: Duration.seconds(20),
          deadline: Duration.seconds(30),
          base: Duration.seconds(1),
          jitter: "none"
        })
      )
      // The first attempt times out at 20 s, the second starts at 21 s and is cut by the deadline at 30 s.
      assert.isTrue(error._tag === "Timeout" && error.scope === "call", error.message)
      assert.deepStrictEqual(times, [0, 21_000])
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 30_000)
    }))

  it.effect("a hanging attempt becomes Timeout and is retried", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang, TestKit.hang], { otherwise: TestKit.response({ text: "late" }) })
      const response = yield* run(Llm.generate(request), model, { attemptTimeout: Duration.seconds(5) })
      assert.strictEqual(response.text, "late")
      assert.strictEqual(model.requests.length, 3)
    }))

  it.effect("a hanging attempt that never recovers ends in an attempt Timeout", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.hang })
      const error = yield* Effect.flip(run(Llm.generate(request), model, { attemptTimeout: Duration.seconds(5) }))
      assert.isTrue(error._tag === "Timeout" && error.scope === "attempt")
      assert.strictEqual(model.requests.length, 4)
    }))
})
