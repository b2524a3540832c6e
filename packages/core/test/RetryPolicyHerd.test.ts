/**
 * Herds of fibers failing together through the pipeline: their retries must spread over the whole window,
 * on every retry, not only the first. Kept apart from RetryPolicy.test.ts because each herd runs for about
 * a minute under Stryker's instrumentation; `stryker.config.mjs` leaves this file out of RetryPolicy's
 * mutation run (RetryPolicy.test.ts checks the same schedule step by step).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import type * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import { recordingTimes, runUnderPolicy } from "./utils/retry.js"

const unavailable = new LlmError.ProviderUnavailable({ status: 503 })
const request = { model: "test-model", messages: [{ role: "user" as const, content: "hi" }] }

describe("RetryPolicy herds", () => {
  const herd = (jitter: RetryPolicy.Jitter) =>
    Effect.gen(function*() {
      const fibers = 1_000
      const retries: Array<number> = []
      const model = TestKit.scripted(Array.from({ length: fibers }, () => unavailable), {
        otherwise: recordingTimes(retries, TestKit.response())
      })
      yield* runUnderPolicy(
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
      yield* runUnderPolicy(
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
})
