/**
 * The default RetryPolicy rides out what production throws at it, under TestClock: a 2 s blip and a
 * long rate limit lose no call; the deadline counts from the call's start, so the last real error
 * stands when no wait fits; jitter goes above a provider hint, never below it.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"

const request = (i = 0) => ({ model: "m", messages: [{ role: "user" as const, content: `call ${i}` }] })
const unavailable = new LlmError.ProviderUnavailable({ status: 503 })

/** `calls` concurrent calls against `model` with the policy given to the layer (default: the default). */
const concurrently = (calls: number, model: TestKit.Scripted, policy?: RetryPolicy.Options) =>
  Effect.forEach(Array.from({ length: calls }, (_, i) => i), (i) => Effect.either(Llm.generate(request(i))), {
    concurrency: "unbounded"
  }).pipe(
    Effect.provide(
      Llm.layer().pipe(
        Layer.provide(
          policy === undefined
            ? model.layer
            : Layer.merge(model.layer, Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make(policy)))
        )
      )
    ),
    (self) => TestKit.runWithTestClock(self, { step: Duration.millis(10) })
  )

/** A model that fails every attempt with `error` until `untilMs` of virtual time, then answers. */
const failingUntil = (untilMs: number, error: LlmError.LlmError, times?: Array<number>) =>
  TestKit.scripted([], {
    otherwise: () =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        times?.push(now)
        return now < untilMs ? Effect.fail(error) : Effect.succeed(TestKit.response())
      })
  })

describe("RetryPolicy defaults", () => {
  it.effect("a 2 s blip of 503s without a hint: 100 calls, none failed (4 attempts lost 58 of 100 in issue 12)", () =>
    Effect.gen(function*() {
      const outcomes = yield* concurrently(100, failingUntil(2_000, unavailable))
      assert.deepStrictEqual(outcomes.filter((o) => o._tag === "Left"), [])
    }).pipe(Effect.withRandom(Random.make("blip"))))

  it.effect("a rate limit that stays saturated for 20 s (429s with 50 ms hints): 100 calls, none failed", () =>
    Effect.gen(function*() {
      const limited = new LlmError.RateLimited({ retryAfter: Duration.millis(50) })
      const outcomes = yield* concurrently(100, failingUntil(20_000, limited))
      assert.deepStrictEqual(outcomes.filter((o) => o._tag === "Left"), [])
    }).pipe(Effect.withRandom(Random.make("saturated"))))

  it.effect("a provider down for good: the call ends at the deadline with its 503, not a Timeout", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: unavailable })
      const started = yield* Clock.currentTimeMillis
      const [outcome] = yield* concurrently(1, model)
      const elapsed = (yield* Clock.currentTimeMillis) - started
      assert.isTrue(outcome!._tag === "Left" && outcome!.left._tag === "ProviderUnavailable", String(outcome))
      assert.isBelow(elapsed, 180_000)
      // Retried for the whole deadline, not 4 times: full jitter from 500 ms doubling to a 20 s cap.
      assert.isAbove(model.requests.length, 8)
    }).pipe(Effect.withRandom(Random.make("down"))))

  it.effect("the deadline counts from the call's start: a 700 ms failure, 1 s deadline, 600 ms waits ends at 700 ms with the 503", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.delayed("700 millis", unavailable)], { otherwise: TestKit.response() })
      const started = yield* Clock.currentTimeMillis
      const [outcome] = yield* concurrently(1, model, {
        deadline: "1 second",
        base: "600 millis",
        jitter: "none"
      })
      // A wait of 600 ms from 700 ms would end past the 1 s deadline: no wait fits, the provider's error stands.
      assert.isTrue(outcome!._tag === "Left" && outcome!.left._tag === "ProviderUnavailable", String(outcome))
      assert.strictEqual((yield* Clock.currentTimeMillis) - started, 700)
      assert.strictEqual(model.requests.length, 1)
    }))

  it.effect("the schedule alone, fed a first failure at 700 ms, measures from that failure (no call start known)", () =>
    Effect.gen(function*() {
      const schedule = RetryPolicy.schedule({ deadline: "1 second", base: "600 millis", jitter: "none" })
      const [, delay, decision] = yield* schedule.step(700, unavailable, schedule.initial)
      assert.strictEqual(decision._tag, "Continue")
      assert.strictEqual(Duration.toMillis(delay), 600)
    }))

  it.effect("1,000 fibers given retry-after: 1: none wakes before 1 s, the busiest 10 ms holds at most 5% of them", () =>
    Effect.gen(function*() {
      const fibers = 1_000
      const retries: Array<number> = []
      const limited = new LlmError.RateLimited({ retryAfter: Duration.seconds(1) })
      const model = TestKit.scripted(Array.from({ length: fibers }, () => limited), {
        otherwise: (_req) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            retries.push(now)
            return Effect.succeed(TestKit.response())
          })
      })
      const outcomes = yield* Effect.forEach(
        Array.from({ length: fibers }, (_, i) => i),
        (i) => Effect.either(Llm.generate(request(i))),
        { concurrency: "unbounded" }
      ).pipe(
        Effect.provide(Llm.layer().pipe(Layer.provide(model.layer))),
        (self) => TestKit.runWithTestClock(self, { step: Duration.millis(1) })
      )
      assert.isTrue(outcomes.every((o) => o._tag === "Right"))
      assert.strictEqual(retries.length, fibers)
      assert.isAtLeast(Math.min(...retries), 1_000)
      const buckets = new Map<number, number>()
      for (const t of retries) buckets.set(Math.floor(t / 10), (buckets.get(Math.floor(t / 10)) ?? 0) + 1)
      const busiest = Math.max(...buckets.values())
      assert.isAtMost(busiest, 0.05 * fibers, `busiest 10 ms: ${busiest}`)
    }).pipe(Effect.withRandom(Random.make("hint-herd"))))

  it.effect("without jitter the same herd wakes at one instant: the hint alone does not spread it", () =>
    Effect.gen(function*() {
      const schedule = RetryPolicy.schedule({ jitter: "none", base: "10 millis" })
      const limited = new LlmError.RateLimited({ retryAfter: Duration.seconds(1) })
      const [, delay] = yield* schedule.step(0, limited, schedule.initial)
      assert.strictEqual(Duration.toMillis(delay), 1_000)
    }))

  it.effect("the default description says retries run until the deadline", () =>
    Effect.sync(() => {
      assert.include(RetryPolicy.make().description, "retries until the deadline")
      assert.include(RetryPolicy.make({ maxAttempts: 3 }).description, "3 attempts")
    }))
})
