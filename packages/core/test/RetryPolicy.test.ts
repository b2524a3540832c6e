import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as TestClock from "effect/TestClock"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import { recordingTimes, runUnderPolicy } from "./utils/retry.js"

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

// The herds (500 and 1,000 fibers through the pipeline) are in RetryPolicyHerd.test.ts: each costs about a
// minute under Stryker's instrumentation, so the mutation run of RetryPolicy leaves them out.
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

  it.effect("a 503 with a 1.5 s hint is retried after exactly the hint, not the shorter backoff", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([
        recordingTimes(times, new LlmError.ProviderUnavailable({ status: 503, retryAfter: Duration.millis(1500) })),
        recordingTimes(times, TestKit.response())
      ])
      const response = yield* runUnderPolicy(Llm.generate(request), model, {
        base: Duration.millis(10),
        jitter: "none"
      })
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
      const error = yield* Effect.flip(runUnderPolicy(Llm.generate(request), model))
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
      const response = yield* runUnderPolicy(Llm.generate(request), model, { base: Duration.millis(10) })
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
      const error = yield* Effect.flip(runUnderPolicy(Llm.generate(request), model))
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
      yield* runUnderPolicy(Llm.generate(request), model, { maxRetryAfter: Duration.minutes(5) })
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
        const error = yield* Effect.flip(runUnderPolicy(Llm.generate(request), model))
        assert.strictEqual(error._tag, final._tag)
        assert.strictEqual(model.requests.length, 1, final._tag)
      }
    }))

  it.effect("retries stop after maxAttempts with the last error", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      const error = yield* Effect.flip(runUnderPolicy(Llm.generate(request), model, { maxAttempts: 3 }))
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(model.requests.length, 3)
    }))

  it.effect("the overall deadline stops retries", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        runUnderPolicy(Llm.generate(request), model, {
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
        runUnderPolicy(Llm.generate(request), model, {
          attemptTimeout: Duration.minutes(10),
          deadline: Duration.seconds(30)
        })
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(exit)
      assert.isTrue(error._tag === "Timeout" && error.level === "call")
    }))

  it.effect("at the deadline the call ends: two attempts, 30 s of virtual time, no retry of the call's Timeout", () =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const model = TestKit.scripted([], { otherwise: recordingTimes(times, TestKit.hang) })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        runUnderPolicy(Llm.generate(request), model, {
          attemptTimeout: Duration.seconds(20),
          deadline: Duration.seconds(30),
          base: Duration.seconds(1),
          jitter: "none"
        })
      )
      // The first attempt times out at 20 s, the second starts at 21 s and is cut by the deadline at 30 s.
      assert.isTrue(error._tag === "Timeout" && error.level === "call", error.message)
      assert.deepStrictEqual(times, [0, 21_000])
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 30_000)
    }))

  it.effect("a hanging attempt becomes Timeout and is retried", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang, TestKit.hang], { otherwise: TestKit.response({ text: "late" }) })
      const response = yield* runUnderPolicy(Llm.generate(request), model, { attemptTimeout: Duration.seconds(5) })
      assert.strictEqual(response.text, "late")
      assert.strictEqual(model.requests.length, 3)
    }))

  it.effect("a hanging attempt that never recovers ends in an attempt Timeout", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.hang })
      const error = yield* Effect.flip(
        runUnderPolicy(Llm.generate(request), model, { attemptTimeout: Duration.seconds(5) })
      )
      assert.isTrue(error._tag === "Timeout" && error.level === "attempt")
      assert.strictEqual(model.requests.length, 4)
    }))
})

describe("RetryPolicy: the spread of each jitter", () => {
  const options = { base: Duration.millis(100), cap: Duration.seconds(2), maxAttempts: 6, deadline: Duration.days(1) }

  it.effect("equal: each delay in [d/2, d] and spread over that whole half, mean near 3d/4", () =>
    Effect.gen(function*() {
      const runs = 300
      const byRetry: Array<Array<number>> = []
      for (let i = 0; i < runs; i++) {
        const delays = yield* delaysOf({ ...options, jitter: "equal" }, unavailable, 10)
        assert.strictEqual(delays.length, 5)
        delays.forEach((d, n) => (byRetry[n] ??= []).push(d))
      }
      byRetry.forEach((delays, n) => {
        const bound = Math.min(2000, 100 * 2 ** n)
        assert.isBelow(Math.min(...delays), 0.55 * bound, `retry ${n}`)
        assert.isAbove(Math.max(...delays), 0.95 * bound, `retry ${n}`)
        const mean = delays.reduce((a, b) => a + b, 0) / runs
        assert.closeTo(mean, 0.75 * bound, 0.05 * bound, `retry ${n}: mean ${mean}`)
      })
    }).pipe(Effect.withRandom(Random.make("equal-spread"))))

  it.effect("decorrelated: each delay in [base, min(cap, 3 × the previous)], reaching up to that bound", () =>
    Effect.gen(function*() {
      let largestFirst = 0
      let capped = 0
      for (let i = 0; i < 300; i++) {
        const delays = yield* delaysOf({ ...options, jitter: "decorrelated" }, unavailable, 10)
        let previous = 100
        for (const d of delays) {
          assert.isAtLeast(d, 100)
          assert.isAtMost(d, Math.min(2000, 3 * previous) + 1e-9, `after ${previous} ms: ${d} ms`)
          if (d === 2000) capped++
          previous = d
        }
        largestFirst = Math.max(largestFirst, delays[0]!)
      }
      // The first delay is U[100, 300]: the largest of 300 draws is near 300.
      assert.isAbove(largestFirst, 290)
      assert.isAbove(capped, 0)
    }).pipe(Effect.withRandom(Random.make("decorrelated-spread"))))

  it.effect("full jitter goes above a hint: a 1.5 s hint and a 1 s base wait U[1.5 s, 2.5 s], never less", () =>
    Effect.gen(function*() {
      const hinted = new LlmError.RateLimited({ retryAfter: Duration.millis(1500) })
      const waits: Array<number> = []
      for (let i = 0; i < 300; i++) {
        const [wait] = yield* delaysOf({ base: Duration.seconds(1), maxAttempts: 2 }, hinted, 1)
        waits.push(wait!)
      }
      assert.isAtLeast(Math.min(...waits), 1500)
      assert.isAtMost(Math.max(...waits), 2500)
      // Spread, not one instant: fibers given the same hint do not all wake together.
      assert.isBelow(Math.min(...waits), 1550)
      assert.isAbove(Math.max(...waits), 2450)
    }).pipe(Effect.withRandom(Random.make("hint-spread"))))

  it.effect("a hint of exactly the ceiling is waited out; one past it is not", () =>
    Effect.gen(function*() {
      const at = (ms: number) => new LlmError.RateLimited({ retryAfter: Duration.millis(ms) })
      const options = { jitter: "none" as const, base: Duration.millis(10), maxRetryAfter: Duration.seconds(60) }
      assert.deepStrictEqual(yield* delaysOf(options, at(60_000), 1), [60_000])
      assert.deepStrictEqual(yield* delaysOf(options, at(60_001), 1), [])
    }))
})

describe("RetryPolicy: the deadline", () => {
  it.effect("counts from the call's start: a first failure after 10 s, a 12 s deadline and 5 s waits end at 10 s with the 503", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.delayed("10 seconds", unavailable)], { otherwise: TestKit.response() })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        runUnderPolicy(Llm.generate(request), model, { deadline: "12 seconds", base: "5 seconds", jitter: "none" })
      )
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(model.requests.length, 1)
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 10_000)
    }))

  it.effect("a call that starts late on the clock gets its whole deadline", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust(Duration.days(1))
      const model = TestKit.scripted([], { otherwise: unavailable })
      const started = yield* Clock.currentTimeMillis
      const error = yield* Effect.flip(
        runUnderPolicy(Llm.generate(request), model, {
          base: "1 second",
          cap: "1 second",
          jitter: "none",
          deadline: "10 seconds"
        })
      )
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(model.requests.length, 10)
      assert.isBelow((yield* Clock.currentTimeMillis) - started, 10_000)
    }))

  it.effect("retry stops at the deadline even under a schedule of its own that does not: nothing is sent at the deadline", () =>
    Effect.gen(function*() {
      // A policy whose schedule knows no deadline: retry every 10 s. The call's deadline, 20 s, still holds.
      const policy: RetryPolicy.RetryPolicy.Service = {
        ...RetryPolicy.make({ deadline: "20 seconds" }),
        schedule: Schedule.spaced("10 seconds").pipe(Schedule.as(Duration.seconds(10)))
      }
      const attempts: Array<{ readonly at: number; readonly millis: number }> = []
      const error = yield* TestKit.runWithTestClock(Effect.flip(
        RetryPolicy.retry((timeout) =>
          Effect.flatMap(Clock.currentTimeMillis, (at) => {
            attempts.push({ at, millis: timeout.millis })
            return Effect.fail(unavailable)
          }), { policy, model: "m" })
      ))
      // Each attempt is given what is left of the deadline; at 20 s nothing is left and nothing is sent.
      assert.deepStrictEqual(attempts, [{ at: 0, millis: 20_000 }, { at: 10_000, millis: 10_000 }])
      assert.isTrue(error._tag === "Timeout" && error.level === "call" && error.model === "m", error.message)
    }))
})

describe("RetryPolicy: which policy is in force", () => {
  const attemptsUnder = (maxAttempts: number) => RetryPolicy.make({ maxAttempts, base: "10 millis" })
  const count = (
    effect: (attempt: Effect.Effect<never, LlmError.LlmError>) => Effect.Effect<unknown, LlmError.LlmError>
  ) =>
    Effect.gen(function*() {
      let attempts = 0
      yield* TestKit.runWithTestClock(Effect.flip(effect(Effect.suspend(() => {
        attempts++
        return Effect.fail(unavailable)
      }))))
      return attempts
    })

  it.effect("withPolicy over the pipeline's own, the pipeline's over the one in context, and that over the default", () =>
    Effect.gen(function*() {
      const fromContext = yield* count((attempt) => RetryPolicy.retry(() => attempt)).pipe(
        Effect.provideService(RetryPolicy.RetryPolicy, attemptsUnder(2))
      )
      const pipelines = yield* count((attempt) => RetryPolicy.retry(() => attempt, { policy: attemptsUnder(3) })).pipe(
        Effect.provideService(RetryPolicy.RetryPolicy, attemptsUnder(2))
      )
      const overridden = yield* count((attempt) =>
        RetryPolicy.retry(() => attempt, { policy: attemptsUnder(3) }).pipe(RetryPolicy.withPolicy(attemptsUnder(4)))
      ).pipe(Effect.provideService(RetryPolicy.RetryPolicy, attemptsUnder(2)))
      assert.deepStrictEqual([fromContext, pipelines, overridden], [2, 3, 4])
      assert.strictEqual((yield* RetryPolicy.current()).description, RetryPolicy.make().description)
    }))

  it.effect("the policy given to Llm.layer is the pipeline's: no withPolicy needed", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      yield* Effect.flip(Llm.generate(request)).pipe(
        Effect.provide(Llm.layer()),
        Effect.provide(model.layer),
        Effect.provideService(RetryPolicy.RetryPolicy, attemptsUnder(3)),
        (self) => TestKit.runWithTestClock(self)
      )
      assert.strictEqual(model.requests.length, 3)
    }))

  it("describes itself in one line", () => {
    assert.strictEqual(
      RetryPolicy.make().description,
      "retries until the deadline, full jitter from 500ms, attempt timeout 1m, deadline 3m"
    )
    assert.strictEqual(
      RetryPolicy.make({
        maxAttempts: 3,
        jitter: "equal",
        base: "1 second",
        attemptTimeout: "5 seconds",
        deadline: "30 seconds"
      }).description,
      "3 attempts, equal jitter from 1s, attempt timeout 5s, deadline 30s"
    )
  })
})
