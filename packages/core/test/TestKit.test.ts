import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as LanguageModel from "../src/LanguageModel.js"
import * as LlmError from "../src/LlmError.js"
import * as TestKit from "../src/TestKit.js"

const request = { model: "m", messages: [{ role: "user" as const, content: "hi" }] }

describe("TestKit", () => {
  it.effect("scripted: answers in order, records every request, then defects when the script runs out", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.response({ text: "one" }), new LlmError.Transport({ reason: "reset" })])
      const complete = Effect.flatMap(LanguageModel.LanguageModel, (lm) => lm.complete(request)).pipe(
        Effect.provide(model.layer)
      )
      assert.strictEqual((yield* complete).text, "one")
      assert.strictEqual((yield* Effect.flip(complete))._tag, "Transport")
      const exit = yield* Effect.exit(complete)
      assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause))
      assert.strictEqual(model.requests.length, 3)
    }))

  it.effect("runWithTestClock: an hour of virtual waiting takes no real time", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.delayed("1 hour", TestKit.response({ text: "late" }))])
      const lm = model.model
      const before = yield* Clock.currentTimeMillis
      const response = yield* TestKit.runWithTestClock(lm.complete(request))
      assert.strictEqual(response.text, "late")
      assert.strictEqual((yield* Clock.currentTimeMillis) - before, 3_600_000)
    }))

  it.effect("runWithTestClock: an effect waiting on something other than time is a defect, not a hang", () =>
    Effect.gen(function*() {
      const never = yield* Deferred.make<void>()
      const exit = yield* Effect.exit(TestKit.runWithTestClock(Deferred.await(never)))
      assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause))
    }))
})
