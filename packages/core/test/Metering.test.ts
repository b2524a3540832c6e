/**
 * The cost stage of `Llm` from the outside: what a budget refuses, what a call is charged and what a
 * failing budget store does to a call. Expected amounts come from literal prices and token counts,
 * never from `Pricing`'s own functions.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import { AuthenticationFailed, ProviderUnavailable } from "../src/LlmError.js"
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

/**
 * A store that works until `down` is set, then fails every operation as an unreachable database would;
 * with `downAfterReserve`, it goes down as soon as the next reservation is written.
 */
const flakyStore = () => {
  const state = { down: false, downAfterReserve: false }
  const memory = Budget.makeMemoryStore()
  const fail = (operation: string) =>
    Effect.fail(new Budget.BudgetStoreError({ operation, reason: "connection refused" }))
  const guard = <A, E>(operation: string, run: () => Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | Budget.BudgetStoreError> => state.down ? fail(operation) : run())
  const store = Budget.BudgetStore.of({
    reserve: (request) =>
      guard("reserve", () =>
        Effect.tap(memory.reserve(request), () =>
          Effect.sync(() => {
            if (state.downAfterReserve) state.down = true
          }))),
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

describe("a round that retries after unanswered attempts", () => {
  // log-model: $1/M input, $0.5/M cached, $2/M output; 1,000 input tokens counted; maxOutputTokens 50.
  // One worst case: 1,000 × 1,000,000 + 50 × 2,000,000 = 1,100,000,000 pico ($0.0011).
  const worst = 1_100_000_000n
  const pricing = TestPrices.layer({ models: { "log-model": { input: "1", cachedInput: "0.5", output: "2" } } })
  const policy = RetryPolicy.make({ maxAttempts: 3, attemptTimeout: "1 second", base: "10 millis" })
  const request = (scope: string): LlmRequest.Input => ({
    model: "log-model",
    scope,
    messages: [user("hi")],
    maxOutputTokens: 50
  })
  const setup = (steps: ReadonlyArray<TestKit.Step>, limit: string, scope: string) => {
    const model = TestKit.scripted(steps)
    const log = CallLog.memory()
    const llm = Llm.layer().pipe(
      Layer.provide(Layer.mergeAll(model.layer, log.layer, pricing, fixedTokenizer(1_000))),
      Layer.provideMerge(Budget.layerMemory({ limits: [{ scope, limit }] }))
    )
    return { model, log, llm }
  }

  it.effect("holds one more worst case per unanswered attempt: three worst cases on the third attempt, none lost", () =>
    Effect.gen(function*() {
      let budget: Budget.Budget.Service | undefined
      let reserved: Money.Money | undefined
      // A limit of exactly three worst cases: the third attempt fits, with nothing to spare.
      const { llm, log, model } = setup(
        [
          TestKit.hang,
          TestKit.hang,
          () =>
            Effect.map(budget!.status("run:twice"), (statuses) => {
              reserved = statusOf(statuses, "run:twice").reserved
              return TestKit.response({ usage: { inputTokens: 900, cachedInputTokens: 100, outputTokens: 20 } })
            }).pipe(Effect.orDie)
        ],
        "0.0033",
        "run:twice"
      )
      const { response, status } = yield* TestKit.runWithTestClock(Effect.gen(function*() {
        budget = yield* Budget.Budget
        const response = yield* Llm.generate(request("run:twice"))
        return { response, status: statusOf(yield* Budget.status("run:twice"), "run:twice") }
      })).pipe(RetryPolicy.withPolicy(policy), Effect.provide(llm))
      assert.strictEqual(response.text, "ok")
      assert.strictEqual(model.requests.length, 3)
      assert.strictEqual(reserved, 3n * worst)
      // 2 worst cases + (800 × $1 + 100 × $0.5 + 20 × $2)/M; nothing above the reservation.
      assert.deepStrictEqual([status.spent, status.reserved, status.overrun], [2n * worst + 890_000_000n, 0n, 0n])
      assert.strictEqual(log.records[0]!.costUsd, "0.00309")
      assert.isUndefined(log.records[0]!.overrunUsd)
    }))

  it.effect("a limit of exactly two worst cases stops the call before its third attempt, with BudgetExceeded", () =>
    Effect.gen(function*() {
      const { llm, log, model } = setup([TestKit.hang, TestKit.hang], "0.0022", "run:two")
      const { error, status } = yield* TestKit.runWithTestClock(Effect.gen(function*() {
        const error = yield* Effect.flip(Llm.generate(request("run:two")))
        return { error, status: statusOf(yield* Budget.status("run:two"), "run:two") }
      })).pipe(RetryPolicy.withPolicy(policy), Effect.provide(llm))
      assert.strictEqual(error._tag, "BudgetExceeded", error.message)
      assert.strictEqual(model.requests.length, 2)
      // The two attempts sent are charged at their estimate; the limit is reached, not passed.
      assert.deepStrictEqual([status.spent, status.reserved, status.overrun], [2n * worst, 0n, 0n])
      assert.strictEqual(log.records[0]!.costUsd, "0.0022")
      assert.strictEqual(log.records[0]!.estimated, true)
    }))

  it.effect("a repair round after an unanswered attempt reserves one worst case of its own, no more", () =>
    Effect.gen(function*() {
      let budget: Budget.Budget.Service | undefined
      let reserved: Money.Money | undefined
      const Score = Schema.Struct({ score: Schema.Int })
      const answer = (text: string, cachedInputTokens = 0) =>
        TestKit.response({ text, usage: { inputTokens: 100, cachedInputTokens, outputTokens: 20 } })
      // Round 1: a hang, then an invalid answer (charged: one worst case + 60 × $1/M + 40 × $0.5/M + 20 × $2/M =
      // 1,220,000,000). Round 2, the repair: a valid answer, nothing cached (100 × $1/M + 20 × $2/M = 140,000,000).
      // The limit leaves round 2 exactly one worst case.
      const { llm, log, model } = setup(
        [
          TestKit.hang,
          answer(`{"score":"high"}`, 40),
          () =>
            Effect.map(budget!.status("run:repair"), (statuses) => {
              reserved = statusOf(statuses, "run:repair").reserved
              return answer(`{"score":7}`)
            }).pipe(Effect.orDie)
        ],
        "0.00232",
        "run:repair"
      )
      const { status, value } = yield* TestKit.runWithTestClock(Effect.gen(function*() {
        budget = yield* Budget.Budget
        const value = yield* Llm.generateObject({
          ...request("run:repair"),
          schema: Score,
          mode: "json_schema",
          name: "score",
          repair: 1
        })
        return { value, status: statusOf(yield* Budget.status("run:repair"), "run:repair") }
      })).pipe(RetryPolicy.withPolicy(policy), Effect.provide(llm))
      assert.deepStrictEqual(value, { score: 7 })
      assert.strictEqual(model.requests.length, 3)
      assert.strictEqual(reserved, worst)
      assert.deepStrictEqual([status.spent, status.reserved], [worst + 260_000_000n, 0n])
      assert.strictEqual(log.records[0]!.costUsd, "0.00136")
    }))
})

describe("what the call record says about its cost", () => {
  const unlisted = { input: "1", cachedInput: "0.5", output: "2" }

  it.effect("an answer with usage is charged its usage, not marked estimated (Pricing alone and with a Budget)", () =>
    Effect.gen(function*() {
      for (const budget of [false, true]) {
        const model = TestKit.scripted([TestKit.response({ usage: { inputTokens: 1_000, outputTokens: 100 } })])
        const log = CallLog.memory()
        const stages = Layer.mergeAll(model.layer, log.layer, TestPrices.layer())
        const llm = budget
          ? Llm.layer().pipe(Layer.provide(stages), Layer.provide(Budget.layerMemory()))
          : Llm.layer().pipe(Layer.provide(stages))
        yield* Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] }).pipe(Effect.provide(llm))
        // 1,000 × $0.15/M + 100 × $0.60/M
        assert.strictEqual(log.records[0]!.costUsd, "0.00021", `budget: ${budget}`)
        assert.isUndefined(log.records[0]!.estimated, `budget: ${budget}`)
        assert.isUndefined(log.records[0]!.priceFallback, `budget: ${budget}`)
      }
    }))

  it.effect("an answer with more output than input tokens is charged in the ledger, not released", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.response({ usage: { inputTokens: 10, outputTokens: 300 } })])
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provideMerge(Budget.layerMemory())
      )
      const status = yield* Effect.zipRight(
        Llm.generate({ model: "gpt-4o-mini", scope: "run:chatty", messages: [user("hi")] }),
        Budget.status("run:chatty")
      ).pipe(Effect.provide(llm))
      // 10 × $0.15/M + 300 × $0.60/M
      assert.deepStrictEqual([statusOf(status, "run:chatty").spent, statusOf(status, "run:chatty").reserved], [
        181_500_000n,
        0n
      ])
    }))

  it.effect("an answer without usage is charged its worst case and marked estimated", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([
        TestKit.response({ usageMissing: true, usage: { inputTokens: 0, outputTokens: 0 } })
      ])
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, TestPrices.layer({ models: { "log-model": unlisted } }))),
        Layer.provide(fixedTokenizer(1_000))
      )
      yield* Llm.generate({ model: "log-model", messages: [user("hi")], maxOutputTokens: 50 }).pipe(
        Effect.provide(llm)
      )
      // 1,000 × $1/M + 50 × $2/M
      assert.strictEqual(log.records[0]!.costUsd, "0.0011")
      assert.strictEqual(log.records[0]!.estimated, true)
    }))

  it.effect("a model priced by the fallback is marked priceFallback; a listed one is not", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], {
        otherwise: TestKit.response({ usage: { inputTokens: 10, outputTokens: 5 } })
      })
      const log = CallLog.memory()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, log.layer, TestPrices.layer({ fallback: unlisted })))
      )
      yield* Effect.zipRight(
        Llm.generate({ model: "house-model-7", messages: [user("hi")] }),
        Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] })
      ).pipe(Effect.provide(llm))
      const [fallback, listed] = log.records
      // 10 × $1/M + 5 × $2/M at the fallback price; 10 × $0.15/M + 5 × $0.60/M at the table's.
      assert.deepStrictEqual([fallback!.model, fallback!.costUsd, fallback!.priceFallback], [
        "house-model-7",
        "0.00002",
        true
      ])
      assert.deepStrictEqual([listed!.costUsd, listed!.priceFallback], ["0.0000045", undefined])
    }))

  it.effect("a model with no price fails with PricingUnknown before anything is sent (Pricing alone and with a Budget)", () =>
    Effect.gen(function*() {
      for (const budget of [false, true]) {
        const model = TestKit.scripted([], { otherwise: TestKit.response() })
        const stages = Layer.mergeAll(model.layer, TestPrices.layer())
        const llm = budget
          ? Llm.layer().pipe(Layer.provide(stages), Layer.provide(Budget.layerMemory()))
          : Llm.layer().pipe(Layer.provide(stages))
        const error = yield* Effect.flip(
          Llm.generate({ model: "house-model-7", messages: [user("hi")] }).pipe(Effect.provide(llm))
        )
        assert.isTrue(error._tag === "PricingUnknown" && error.model === "house-model-7", `budget: ${budget}`)
        assert.strictEqual(model.requests.length, 0, `budget: ${budget}`)
      }
    }))

  it.effect("the ledger is told which charges hold an estimate", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      const settles: Array<[Money.Money, boolean]> = []
      const store = Budget.BudgetStore.of({
        ...memory,
        settle: (id, amount, estimated) => {
          settles.push([amount, estimated])
          return memory.settle(id, amount, estimated)
        }
      })
      const answer = TestKit.response({ usage: { inputTokens: 1_000, outputTokens: 10 } })
      const model = TestKit.scripted([TestKit.hang, answer, answer])
      const llm = Llm.layer().pipe(
        Layer.provide(
          Layer.mergeAll(model.layer, TestPrices.layer({ models: { "log-model": unlisted } }), fixedTokenizer(1_000))
        ),
        Layer.provide(Budget.layer()),
        Layer.provide(Layer.succeed(Budget.BudgetStore, store))
      )
      const request = { model: "log-model", messages: [user("hi")], maxOutputTokens: 50 }
      // A hang then an answer, then a call answered at once.
      yield* TestKit.runWithTestClock(Effect.zipRight(Llm.generate(request), Llm.generate(request))).pipe(
        RetryPolicy.withPolicy(RetryPolicy.make({ maxAttempts: 2, attemptTimeout: "1 second", base: "10 millis" })),
        Effect.provide(llm)
      )
      // 1,100,000,000 (the hang's worst case) + 1,000 × $1/M + 10 × $2/M; then the answer alone.
      assert.deepStrictEqual(settles, [[2_120_000_000n, true], [1_020_000_000n, false]])
    }))
})

describe("reservations of calls running at once", () => {
  it.effect("a call that fits only once another's reservation settles waits for it, within its deadline", () =>
    Effect.gen(function*() {
      // One worst case is $0.0011 and the limit $0.002: the second call's reservation waits for the first's
      // settle (100 × $1/M + 10 × $2/M = $0.00012 spent), then fits.
      const pricing = TestPrices.layer({ models: { "log-model": { input: "1", cachedInput: "0.5", output: "2" } } })
      const answer = TestKit.response({ usage: { inputTokens: 100, outputTokens: 10 } })
      const sent: Array<number> = []
      const step = (delay: Duration.DurationInput) => () =>
        Effect.zipRight(
          Effect.flatMap(TestClock.currentTimeMillis, (now) => Effect.sync(() => sent.push(now))),
          Effect.delay(Effect.succeed(answer), delay)
        )
      const model = TestKit.scripted([step("2 seconds"), step("0 millis")])
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, pricing, fixedTokenizer(1_000))),
        Layer.provideMerge(Budget.layerMemory({ limits: [{ scope: "run:queue", limit: "0.002" }] }))
      )
      const request = { model: "log-model", scope: "run:queue", messages: [user("hi")], maxOutputTokens: 50 }
      const { responses, start, status } = yield* TestKit.runWithTestClock(Effect.gen(function*() {
        const start = yield* TestClock.currentTimeMillis
        const responses = yield* Effect.all([Llm.generate(request), Llm.generate(request)], { concurrency: 2 })
        return { responses, start, status: statusOf(yield* Budget.status("run:queue"), "run:queue") }
      })).pipe(Effect.provide(llm))
      assert.deepStrictEqual(responses.map((r) => r.text), ["ok", "ok"])
      // The second request went out when the first answered, two seconds in.
      assert.deepStrictEqual(sent.map((at) => at - start), [0, 2_000])
      assert.deepStrictEqual([status.spent, status.reserved], [240_000_000n, 0n])
    }))
})

describe("a store that fails after the reservation", () => {
  const capture = () => {
    const lines: Array<ReadonlyArray<unknown>> = []
    const logger = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ message }) => {
        lines.push(Array.isArray(message) ? message : [message])
      })
    )
    return { lines, logger }
  }

  it.effect("an attempt that needs no extension goes out without asking the store; the failed settle is logged", () =>
    Effect.gen(function*() {
      const store = flakyStore()
      store.state.downAfterReserve = true
      const model = TestKit.scripted([TestKit.response()])
      const { lines, logger } = capture()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provide(Budget.layer()),
        Layer.provide(store.layer)
      )
      const response = yield* Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] }).pipe(
        Effect.provide(llm),
        Effect.provide(logger)
      )
      assert.strictEqual(response.text, "ok")
      assert.strictEqual(model.requests.length, 1)
      const warning = lines.find((line) => line[0] === "Budget: closing the call's reservation failed")
      assert.isDefined(warning)
      assert.strictEqual(warning!.at(-1), "call succeeded")
      assert.isTrue(warning!.some((part) => (part as any)?.operation === "settle"))
    }))

  it.effect("a call that failed with nothing billed logs the failed release as such", () =>
    Effect.gen(function*() {
      const store = flakyStore()
      store.state.downAfterReserve = true
      const model = TestKit.scripted([new AuthenticationFailed({ status: 401 })])
      const { lines, logger } = capture()
      const llm = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(model.layer, TestPrices.layer())),
        Layer.provide(Budget.layer()),
        Layer.provide(store.layer)
      )
      const error = yield* Effect.flip(Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] })).pipe(
        Effect.provide(llm),
        Effect.provide(logger)
      )
      assert.strictEqual(error._tag, "AuthenticationFailed")
      const warning = lines.find((line) => line[0] === "Budget: closing the call's reservation failed")
      assert.isDefined(warning)
      assert.strictEqual(warning!.at(-1), "call failed")
      assert.isTrue(warning!.some((part) => (part as any)?.operation === "release"))
    }))

  it.effect("the layer names the cost stage it runs: budget with a Budget, pricing without", () =>
    Effect.gen(function*() {
      for (const budget of [false, true]) {
        const { lines, logger } = capture()
        const model = TestKit.scripted([TestKit.response()])
        const stages = Layer.mergeAll(model.layer, TestPrices.layer())
        const llm = budget
          ? Llm.layer().pipe(Layer.provide(stages), Layer.provide(Budget.layerMemory()))
          : Llm.layer().pipe(Layer.provide(stages))
        yield* Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] }).pipe(
          Effect.provide(llm),
          Effect.provide(logger)
        )
        const line = lines.map((parts) => String(parts[0])).find((text) => text.startsWith("Llm:"))
        assert.match(line ?? "", budget ? /stages: budget, / : /stages: pricing, /)
      }
    }))
})
