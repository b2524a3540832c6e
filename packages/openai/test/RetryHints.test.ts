/**
 * The foundation's retry-hint rules end to end: OpenAI's headers, read by the error mapping, drive
 * the core RetryPolicy, all under TestClock (no real waiting); `x-should-retry: false` stops retries.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Llm from "@keel/core/Llm"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as TestKit from "@keel/core/TestKit"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as FakeHttp from "./utils/FakeHttp.js"

const rateLimited = (headers: Record<string, string>) =>
  FakeHttp.json(429, {
    error: { message: "Rate limit reached for requests", type: "requests", param: null, code: "rate_limit_exceeded" }
  }, headers)

/** Calls `Llm.generate` once against answers in order; returns the outcome, the requests sent and the virtual time taken. */
const call = (answers: ReadonlyArray<Response>) =>
  Effect.gen(function*() {
    const fake = FakeHttp.make((_request, index) => answers[Math.min(index, answers.length - 1)]!.clone())
    const model = OpenAiLanguageModel.layer().pipe(
      Layer.provide(OpenAiClient.layer({ apiKey: Redacted.make("sk-test"), baseUrl: "https://api.test/v1" })),
      Layer.provide(fake.layer)
    )
    const started = yield* Clock.currentTimeMillis
    const outcome = yield* Llm.generate({ model: "gpt-4.1-mini", messages: [{ role: "user", content: "hi" }] }).pipe(
      RetryPolicy.withPolicy(RetryPolicy.make({ base: Duration.millis(10), cap: Duration.millis(10) })),
      Effect.provide(Llm.layer().pipe(Layer.provide(model))),
      TestKit.runWithTestClock,
      Effect.either
    )
    return { outcome, requests: fake.requests.length, elapsed: (yield* Clock.currentTimeMillis) - started }
  })

describe("retry hints from OpenAI's headers", () => {
  it.effect("retry-after-ms: 1500 waits at least 1.5 s, though backoff alone would wait 10 ms", () =>
    Effect.gen(function*() {
      const { elapsed, outcome, requests } = yield* call([
        rateLimited({ "retry-after-ms": "1500" }),
        FakeHttp.json(200, FakeHttp.completion())
      ])
      assert.strictEqual(outcome._tag, "Right")
      assert.strictEqual(requests, 2)
      assert.isAtLeast(elapsed, 1500)
    }))

  it.effect("retry-after: 120 is over the 60 s ceiling: RateLimited holding 120 s, at once, one request", () =>
    Effect.gen(function*() {
      const { elapsed, outcome, requests } = yield* call([rateLimited({ "retry-after": "120" })])
      assert.strictEqual(outcome._tag, "Left")
      const error = outcome._tag === "Left" ? outcome.left : undefined
      assert.isTrue(error?._tag === "RateLimited" && Duration.equals(error.retryAfter!, Duration.seconds(120)))
      assert.strictEqual(requests, 1)
      assert.strictEqual(elapsed, 0)
    }))

  it.effect("an HTTP-date retry-after waits until that date", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-11-29T08:00:00Z"))
      const { elapsed, outcome, requests } = yield* call([
        rateLimited({ "retry-after": "Sun, 29 Nov 2026 08:00:03 GMT" }),
        FakeHttp.json(200, FakeHttp.completion())
      ])
      assert.strictEqual(outcome._tag, "Right")
      assert.strictEqual(requests, 2)
      assert.isAtLeast(elapsed, 3000)
    }))
})

describe("x-should-retry from the provider", () => {
  const unavailable = (headers: Record<string, string>) =>
    FakeHttp.json(
      503,
      { error: { message: "Service overloaded", type: "server_error", param: null, code: null } },
      headers
    )

  it.effect("false on a 503: ProviderUnavailable (the provider is down, the request was fine), one request, no wait", () =>
    Effect.gen(function*() {
      const { elapsed, outcome, requests } = yield* call([
        unavailable({ "x-should-retry": "false" }),
        FakeHttp.json(200, FakeHttp.completion())
      ])
      assert(outcome._tag === "Left" && outcome.left._tag === "ProviderUnavailable", String(outcome))
      assert.strictEqual(outcome.left.status, 503)
      assert.isFalse(outcome.left.retryable)
      assert.strictEqual(requests, 1)
      assert.strictEqual(elapsed, 0)
    }))

  it.effect("without it the same 503 is retried", () =>
    Effect.gen(function*() {
      const { outcome, requests } = yield* call([unavailable({}), FakeHttp.json(200, FakeHttp.completion())])
      assert.strictEqual(outcome._tag, "Right")
      assert.strictEqual(requests, 2)
    }))
})
