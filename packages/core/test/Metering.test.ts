/**
 * The cost stage of `Llm` from the outside: what a budget refuses, what a call is charged and what a
 * failing budget store does to a call. Expected amounts come from literal prices and token counts,
 * never from `Pricing`'s own functions.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as TestClock from "effect/TestClock"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import { ProviderUnavailable } from "../src/LlmError.js"
import type * as LlmRequest from "../src/LlmRequest.js"
import * as Money from "../src/Money.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as TestPrices from "./utils/prices.js"

const user = (content: string) => ({ role: "user" as const, content })

/** A tokenizer that counts every request as `tokens` input tokens. */
const fixedTokenizer = (tokens: number) =>
  Tokenizer.layer({ name: `fixed ${tokens}`, load: Effect.void, input: () => Effect.succeed(tokens) })

const statusOf = (statuses: ReadonlyArray<Budget.Status>, scope: string) => {
  const found = statuses.find((s) => s.scope === scope && s.window === "total")
  if (found === undefined) throw new Error(`no total counter for ${scope}`)
  return found
}

/** A store that works until `down` is set, then fails every operation as an unreachable database would. */
const flakyStore = () => {
  const state = { down: false }
  const memory = Budget.makeMemoryStore()
  const fail = (operation: string) =>
    Effect.fail(new Budget.BudgetStoreError({ operation, reason: "connection refused" }))
  const guard = <A, E>(operation: string, run: () => Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | Budget.BudgetStoreError> => state.down ? fail(operation) : run())
  const store = Budget.BudgetStore.of({
    reserve: (request) => guard("reserve", () => memory.reserve(request)),
    extend: (request) => guard("extend", () => memory.extend(request)),
    settle: (id, amount, estimated) => guard("settle", () => memory.settle(id, amount, estimated)),
    release: (id) => guard("release", () => memory.release(id)),
    renew: (owner, lease) => guard("renew", () => memory.renew(owner, lease)),
    reclaim: guard("reclaim", () => memory.reclaim),
    balances: (keys) => guard("read balances", () => memory.balances(keys))
  })
  return { state, layer: Layer.succeed(Budget.BudgetStore, store) }
}

describe("Budget worst case", () => {
  // A 5,000-word prompt: ~25,000 bytes, so the default byte tokenizer reserves ≥ 25,000 input tokens.
  const prompt = Array.from({ length: 5_000 }, (_, i) => `word${i % 10}`).join(" ")

  it.effect("a long prompt against a tiny limit is refused before anything is sent: input counts", () =>
    Effect.gen(function*() {
      // $0.0001: the output allowance alone (100 × $0.60/M = $0.00006) fits; the prompt's input does not
      // (≥ 25,000 × $0.15/M = $0.00375).
      const model = TestKit.scripted([], {
        otherwise: TestKit.response({ usage: { inputTokens: 6_500, outputTokens: 100 } })
      })
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provideMerge(Budget.layerMemory({ limits: [{ scope: "tenant:tiny", limit: "0.0001" }] }))
      )
      const { error, status } = yield* Effect.gen(function*() {
        const error = yield* Effect.flip(
          Llm.generate({ model: "gpt-4o-mini", scope: "tenant:tiny", messages: [user(prompt)], maxOutputTokens: 100 })
        )
        return { error, status: statusOf(yield* Budget.status("tenant:tiny"), "tenant:tiny") }
      }).pipe(Effect.provide(llm))
      assert.strictEqual(error._tag, "BudgetExceeded")
      assert.strictEqual(model.requests.length, 0)
      assert.deepStrictEqual([status.spent, status.reserved], [0n, 0n])
      // The refusal names what was asked: more than the input's price alone.
      assert.isTrue(
        error._tag === "BudgetExceeded" && Money.unsafeParse(error.requested) > Money.unsafeParse("0.00375")
      )
    }))

  it.effect("the reservation is exactly input tokens × input price + max output × output price", () =>
    Effect.gen(function*() {
      let budget: Budget.Budget.Service | undefined
      let reserved: Money.Money | undefined
      const model = TestKit.scripted([
        () =>
          Effect.map(budget!.status("run:exact"), (statuses) => {
            reserved = statusOf(statuses, "run:exact").reserved
            return TestKit.response({ usage: { inputTokens: 1_000, outputTokens: 10 } })
          }).pipe(Effect.orDie)
      ])
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer(), fixedTokenizer(1_000))),
        Layer.provideMerge(Budget.layerMemory())
      )
      yield* Effect.gen(function*() {
        budget = yield* Budget.Budget
        yield* Llm.generate({ model: "gpt-4o-mini", scope: "run:exact", messages: [user("hi")], maxOutputTokens: 200 })
      }).pipe(Effect.provide(llm))
      // 1,000 × $0.15/M + 200 × $0.60/M = $0.00015 + $0.00012
      assert.strictEqual(reserved, 270_000_000n)
    }))
})

describe("Budget store failures", () => {
  it.effect("a store that fails fails the call with BudgetUnavailable, and the model receives nothing", () =>
    Effect.gen(function*() {
      const store = flakyStore()
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provide(Budget.layer({ limits: [{ scope: "global", limit: "10" }] })),
        Layer.provide(store.layer)
      )
      const errors = yield* Effect.gen(function*() {
        const ok = yield* Llm.generate({ model: "gpt-4o-mini", messages: [user("before")] })
        assert.strictEqual(ok.text, "ok")
        store.state.down = true
        return yield* Effect.forEach(
          ["a", "b", "c"],
          (text) => Effect.flip(Llm.generate({ model: "gpt-4o-mini", messages: [user(text)] }))
        )
      }).pipe(Effect.provide(llm))
      for (const error of errors) {
        assert.strictEqual(error._tag, "BudgetUnavailable")
        assert.isTrue(error._tag === "BudgetUnavailable" && error.operation === "reserve")
        assert.include(error.message, "connection refused")
      }
      // Only the call made while the store worked reached the model.
      assert.deepStrictEqual(model.requests.map((r) => r.messages[0]!.content), ["before"])
    }))

  it.effect("a store already down when the layer is built fails the build (nothing runs unbudgeted)", () =>
    Effect.gen(function*() {
      const store = flakyStore()
      store.state.down = true
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provide(Budget.layer()),
        Layer.provide(store.layer)
      )
      const error = yield* Effect.flip(
        Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] }).pipe(Effect.provide(llm))
      )
      assert.strictEqual(error._tag, "BudgetStoreError")
      assert.strictEqual(model.requests.length, 0)
    }))

  it.effect("a store that fails before a retry's extension stops the call: no second attempt goes out", () =>
    Effect.gen(function*() {
      const store = flakyStore()
      // The first attempt hangs (it may have been billed): the retry needs a second worst case first.
      const model = TestKit.scripted([
        () =>
          Effect.suspend(() => {
            store.state.down = true
            return Effect.never
          })
      ], { otherwise: TestKit.response() })
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provide(Budget.layer()),
        Layer.provide(store.layer)
      )
      const error = yield* TestKit.runWithTestClock(
        Effect.flip(Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] }))
      ).pipe(
        RetryPolicy.withPolicy(RetryPolicy.make({ attemptTimeout: "5 seconds", jitter: "none" })),
        Effect.provide(llm)
      )
      assert.isTrue(error._tag === "BudgetUnavailable" && error.operation === "extend", error.message)
      assert.strictEqual(model.requests.length, 1)
    }))
})

describe("the estimate of an attempt that may have been billed without an answer", () => {
  // log-model: $1/M input, $2/M output; the tokenizer counts 1,000 input tokens; maxOutputTokens 50.
  // One unanswered attempt is charged 1,000 × 1,000,000 + 50 × 2,000,000 pico-dollars = 1,100,000,000.
  const estimate = 1_100_000_000n
  const pricing = TestPrices.layer({ models: { "log-model": { input: "1", cachedInput: "0.5", output: "2" } } })
  const request: LlmRequest.Input = {
    model: "log-model",
    scope: "run:hang",
    messages: [user("hi")],
    maxOutputTokens: 50
  }
  const policy = RetryPolicy.make({ maxAttempts: 2, attemptTimeout: "1 second", base: "10 millis" })

  it.effect("with Pricing alone, a hang then a 502 is charged exactly one worst case", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang, new ProviderUnavailable({ status: 502 })])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(1_000)))
      )
      yield* TestKit.runWithTestClock(Effect.flip(Llm.generate(request))).pipe(
        RetryPolicy.withPolicy(policy),
        Effect.provide(llm)
      )
      const record = log.records[0]!
      assert.strictEqual(record.estimated, true)
      assert.strictEqual(record.costUsd, Money.format(estimate))
      assert.strictEqual(record.costUsd, "0.0011")
    }))

  it.effect("with a Budget, the same call settles exactly one worst case in the ledger", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang, new ProviderUnavailable({ status: 502 })])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(1_000))),
        Layer.provideMerge(Budget.layerMemory())
      )
      const status = yield* TestKit.runWithTestClock(
        Effect.zipRight(Effect.flip(Llm.generate(request)), Budget.status("run:hang"))
      ).pipe(RetryPolicy.withPolicy(policy), Effect.provide(llm))
      assert.deepStrictEqual([statusOf(status, "run:hang").spent, statusOf(status, "run:hang").reserved], [
        estimate,
        0n
      ])
      assert.strictEqual(log.records[0]!.costUsd, "0.0011")
    }))

  it.effect("two hung attempts are two worst cases; an answered attempt is charged its usage", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([
        TestKit.hang,
        TestKit.hang,
        TestKit.response({ usage: { inputTokens: 900, cachedInputTokens: 100, outputTokens: 20 } })
      ])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(1_000))),
        Layer.provideMerge(Budget.layerMemory())
      )
      const status = yield* TestKit.runWithTestClock(
        Effect.zipRight(Llm.generate(request), Budget.status("run:hang"))
      ).pipe(
        RetryPolicy.withPolicy(RetryPolicy.make({ maxAttempts: 3, attemptTimeout: "1 second", base: "10 millis" })),
        Effect.provide(llm)
      )
      // 2 × 1,100,000,000 + (800 × $1 + 100 × $0.5 + 20 × $2)/M = 2,200,000,000 + 890,000,000
      assert.strictEqual(statusOf(status, "run:hang").spent, 3_090_000_000n)
      assert.strictEqual(log.records[0]!.costUsd, "0.00309")
      assert.strictEqual(log.records[0]!.estimated, true)
    }))
})

describe("an interrupted call", () => {
  it.effect("is charged one worst case for the attempt in flight, marked estimated", () =>
    Effect.gen(function*() {
      const pricing = TestPrices.layer({ models: { "log-model": { input: "1", cachedInput: "0.5", output: "2" } } })
      const model = TestKit.scripted([TestKit.hang])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(1_000))),
        Layer.provideMerge(Budget.layerMemory())
      )
      const status = yield* Effect.gen(function*() {
        const fiber = yield* Effect.fork(
          Llm.generate({ model: "log-model", scope: "run:cut", messages: [user("hi")], maxOutputTokens: 50 })
        )
        yield* TestClock.adjust("1 second")
        yield* Fiber.interrupt(fiber)
        return yield* Budget.status("run:cut")
      }).pipe(Effect.provide(llm))
      // The request went out and may have been billed: 1,000 × $1/M + 50 × $2/M.
      assert.strictEqual(model.requests.length, 1)
      assert.deepStrictEqual([statusOf(status, "run:cut").spent, statusOf(status, "run:cut").reserved], [
        1_100_000_000n,
        0n
      ])
      assert.strictEqual(log.records[0]!.estimated, true)
    }))
})

describe("a settle above its reservation", () => {
  const name = "overrun-model"
  const pricing = TestPrices.layer({ models: { [name]: { input: "0.15", cachedInput: "0.075", output: "0.60" } } })

  const overrunCounter = () =>
    Metric.unsafeSnapshot()
      .filter((pair) =>
        pair.metricKey.name === "keel.budget.overrun" &&
        pair.metricKey.tags.some((tag) => tag.key === "gen_ai.request.model" && tag.value === name)
      )
      .reduce((sum, pair) => sum + (pair.metricState as any).count, 0)

  it.effect("is charged in full, recorded on the call record and the ledger, and counted in keel.budget.overrun", () =>
    Effect.gen(function*() {
      // The tokenizer says 100 input tokens and the call allows 10 output: reserved 100 × $0.15/M + 10 × $0.60/M
      // = 21,000,000 pico. The provider bills 10,000 input and 10 output: 1,506,000,000. Overrun 1,485,000,000.
      const model = TestKit.scripted([TestKit.response({ usage: { inputTokens: 10_000, outputTokens: 10 } })])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(100))),
        Layer.provideMerge(Budget.layerMemory({ limits: [{ scope: "run:over", limit: "1" }] }))
      )
      const before = overrunCounter()
      const status = yield* Effect.zipRight(
        Llm.generate({ model: name, scope: "run:over", messages: [user("hi")], maxOutputTokens: 10 }),
        Budget.status("run:over")
      ).pipe(Effect.provide(llm))
      const record = log.records[0]!
      assert.strictEqual(record.costUsd, "0.001506")
      assert.strictEqual(record.overrunUsd, "0.001485")
      const ledger = statusOf(status, "run:over")
      assert.deepStrictEqual([ledger.spent, ledger.reserved, ledger.overrun], [1_506_000_000n, 0n, 1_485_000_000n])
      assert.closeTo(overrunCounter() - before, 0.001485, 1e-12)
    }))

  it.effect("a settle within its reservation records no overrun", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.response({ usage: { inputTokens: 100, outputTokens: 10 } })])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(100))),
        Layer.provideMerge(Budget.layerMemory())
      )
      const before = overrunCounter()
      const status = yield* Effect.zipRight(
        Llm.generate({ model: name, scope: "run:fits", messages: [user("hi")], maxOutputTokens: 10 }),
        Budget.status("run:fits")
      ).pipe(Effect.provide(llm))
      assert.strictEqual(log.records[0]!.costUsd, "0.000021")
      assert.isUndefined(log.records[0]!.overrunUsd)
      assert.strictEqual(statusOf(status, "run:fits").overrun, 0n)
      assert.strictEqual(overrunCounter(), before)
    }))
})
