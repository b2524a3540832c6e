/**
 * A deterministic test with swapped layers: the same program as in production, with the model
 * replaced by a scripted one (a 429 with a 2 s hint, then an answer) and time by `TestClock`, so the
 * backoff plays out in virtual time. Run it as a script; in a test file use `it.effect` the same way.
 *
 *   npx tsx --conditions=@keel/source examples/deterministic-test.ts
 */
import * as Llm from "@keel/core/Llm"
import { RateLimited } from "@keel/core/LlmError"
import * as TestKit from "@keel/core/TestKit"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import * as Assert from "node:assert/strict"

const script = TestKit.scripted([
  new RateLimited({ model: "test-model", retryAfter: Duration.seconds(2) }),
  TestKit.response({ text: "hello" })
])

const program = Llm.generate({ messages: [{ role: "user", content: "hi" }] })

const test = Effect.gen(function*() {
  const started = yield* TestClock.currentTimeMillis
  const answer = yield* TestKit.runWithTestClock(program)
  const waited = (yield* TestClock.currentTimeMillis) - started
  Assert.equal(answer.text, "hello")
  Assert.equal(script.requests.length, 2)
  Assert.ok(waited >= 2000, `waited ${waited} ms of virtual time, at least the hint`)
  console.log(
    `answered "${answer.text}" after ${script.requests.length} attempts and ${Math.round(waited)} ms of virtual time`
  )
}).pipe(Effect.provide(Llm.layer({ defaultModel: "test-model" })), Effect.provide(script.layer))

Effect.runPromise(test.pipe(Effect.provide(TestContext.TestContext))).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
