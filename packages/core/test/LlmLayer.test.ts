/**
 * How `Llm.layer` takes its stages: all when it is built, from what is provided to it. Composed the
 * way the Effect docs compose, a stage merged beside the layer instead of provided to it must not be
 * silently ignored: a budget fails closed, a required stage fails the build naming it.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as TestClock from "effect/TestClock"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as TestPrices from "./utils/prices.js"

const request = { model: "gpt-4o-mini", messages: [{ role: "user" as const, content: "hi" }] }
const unavailable = () => new LlmError.ProviderUnavailable({ status: 503 })
const budget = Budget.layerMemory({ limits: [{ scope: "global", limit: "1" }] })

describe("Llm.layer composition", () => {
  it.effect("a Budget merged beside the layer (not provided to it) fails the call closed, sending nothing", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const app = Layer.mergeAll(Llm.layer().pipe(Layer.provide(model.layer)), budget, TestPrices.layer())
      const error = yield* Effect.flip(Llm.generate(request).pipe(Effect.provide(app)))
      assert.strictEqual(error._tag, "BudgetUnavailable")
      assert.include(error.message, "provide the Budget to Llm.layer")
      assert.strictEqual(model.requests.length, 0)
    }))

  it.effect("a Budget the app requires but merged beside the layer fails the build, naming the stage", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const app = Layer.mergeAll(
        Llm.layer({ require: ["budget"] }).pipe(Layer.provide(model.layer)),
        budget,
        TestPrices.layer()
      )
      const error = yield* Effect.flip(Llm.generate(request).pipe(Effect.provide(app)))
      assert.isTrue(error._tag === "LlmConfigError" && error.stage === "budget")
      assert.include(error.message, "provide a Budget layer")
      assert.strictEqual(model.requests.length, 0)
    }))

  it.effect("the same Budget provided to the layer limits the calls", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const tight = Budget.layerMemory({ limits: [{ scope: "global", limit: "0.000001" }] })
      const app = Llm.layer({ require: ["budget", "pricing"] }).pipe(
        Layer.provide(Layer.mergeAll(model.layer, tight, TestPrices.layer()))
      )
      const error = yield* Effect.flip(Llm.generate(request).pipe(Effect.provide(app)))
      assert.isTrue(error._tag === "BudgetExceeded" && error.limit === "0.000001")
      assert.strictEqual(model.requests.length, 0)
    }))

  it.effect("a Budget without Pricing fails the build, naming pricing", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([])
      const error = yield* Effect.flip(
        Llm.generate(request).pipe(Effect.provide(Llm.layer().pipe(Layer.provide(Layer.merge(model.layer, budget)))))
      )
      assert.isTrue(error._tag === "LlmConfigError" && error.stage === "pricing")
    }))

  it.effect("a RetryPolicy provided to the layer is its policy; withPolicy overrides it per call", () =>
    Effect.gen(function*() {
      const once = RetryPolicy.make({ maxAttempts: 1 })
      const model = TestKit.scripted([], { otherwise: unavailable() })
      const layer = Llm.layer().pipe(
        Layer.provide(Layer.merge(model.layer, Layer.succeed(RetryPolicy.RetryPolicy, once)))
      )
      const error = yield* Effect.flip(Llm.generate(request).pipe(Effect.provide(layer)))
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(model.requests.length, 1)

      const twice = RetryPolicy.make({ maxAttempts: 2, base: "1 millis", jitter: "none" })
      yield* TestKit.runWithTestClock(
        Effect.flip(Llm.generate(request).pipe(RetryPolicy.withPolicy(twice), Effect.provide(layer)))
      )
      assert.strictEqual(model.requests.length, 3)
    }))

  it.effect("a required CallLog merged beside the layer fails the build; provided to it, every call is recorded", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const log = CallLog.memory()
      const beside = Layer.merge(Llm.layer({ require: ["callLog"] }).pipe(Layer.provide(model.layer)), log.layer)
      const error = yield* Effect.flip(Llm.generate(request).pipe(Effect.provide(beside)))
      assert.isTrue(error._tag === "LlmConfigError" && error.stage === "callLog")

      const provided = Llm.layer({ require: ["callLog"] }).pipe(Layer.provide(Layer.merge(model.layer, log.layer)))
      yield* Llm.generate(request).pipe(Effect.provide(provided))
      assert.strictEqual(log.records.length, 1)
    }))

  it.effect("logs one line at build naming the stages in force", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => lines.push(Array.isArray(message) ? message.join(" ") : String(message)))
      )
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      yield* Llm.generate(request).pipe(
        Effect.provide(Llm.layer().pipe(Layer.provide(Layer.mergeAll(model.layer, budget, TestPrices.layer())))),
        Effect.provide(logger)
      )
      const line = lines.find((l) => l.startsWith("Llm:"))
      assert.isDefined(line)
      assert.match(line!, /stages: budget, observe \(spans, metrics\), retry \(/)
      assert.include(line!, "tokenizer bytes (upper bound)")
    }))
  it.effect("the tokenizer is loaded when the layer is built if a Budget or a RateLimiter will count tokens, not otherwise", () =>
    Effect.gen(function*() {
      const built = <A, E>(stages: Layer.Layer<A, E>) =>
        Effect.gen(function*() {
          let loads = 0
          const counting: Tokenizer.Tokenizer.Service = {
            name: "counting",
            load: Effect.sync(() => void loads++),
            input: () => Effect.succeed(1)
          }
          const model = TestKit.scripted([], { otherwise: TestKit.response() })
          yield* Effect.scoped(Layer.build(
            Llm.layer().pipe(Layer.provide(Layer.mergeAll(model.layer, Tokenizer.layer(counting), stages)))
          ))
          yield* TestClock.adjust("1 millis") // the load runs in a fiber of its own
          return loads
        })
      assert.strictEqual(yield* built(Layer.merge(budget, TestPrices.layer())), 1)
      assert.strictEqual(yield* built(RateLimiter.layerMemory()), 1)
      assert.strictEqual(yield* built(TestPrices.layer()), 0)
    }))
})
