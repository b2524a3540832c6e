import { assert, describe, it } from "@effect/vitest"
import * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Batch from "../src/Batch.js"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import * as LlmError from "../src/LlmError.js"
import * as Pricing from "../src/Pricing.js"
import * as TestKit from "../src/TestKit.js"
import * as FakeBatch from "./utils/batchProvider.js"
import * as TestPrices from "./utils/prices.js"

const Score = Schema.Struct({ id: Schema.String, score: Schema.Int }).annotations({ identifier: "Score" })
const Listing = Schema.Struct({ title: Schema.NonEmptyString })
const model = "gpt-4o-mini"

const items = (n: number, prefix = "item") =>
  Stream.range(1, n).pipe(Stream.map((i): Batch.Item => ({ id: `${prefix}-${i}`, input: { title: `listing ${i}` } })))

const options = (overrides: Partial<Batch.GenerateObjectsOptions<any, any, any>> = {}) => ({
  runId: "run-1",
  task: "score",
  schema: Score,
  input: Listing,
  request: (listing: typeof Listing.Type) => ({
    messages: [{ role: "user" as const, content: `Score: ${listing.title}` }],
    maxOutputTokens: 50
  }),
  model,
  scope: "tenant:acme",
  ...overrides
})

interface Env {
  readonly fake: FakeBatch.Fake
  readonly store: Budget.BudgetStore.Service
  readonly log: CallLog.Memory
}

const setup = (
  fakeOptions: FakeBatch.FakeOptions = {},
  batchOptions: Batch.Options = {},
  extra: { readonly llm?: boolean; readonly budgetOptions?: Budget.Options } = {}
) => {
  const fake = FakeBatch.make(fakeOptions)
  const store = Budget.makeMemoryStore()
  const log = CallLog.memory()
  const storeLayer = Layer.succeed(Budget.BudgetStore, store)
  const budget = Budget.layer({ limits: [{ scope: "tenant:acme", limit: "100" }], ...extra.budgetOptions }).pipe(
    Layer.provideMerge(storeLayer)
  )
  const scripted = TestKit.scripted([], {
    otherwise: () =>
      Effect.succeed(TestKit.response({
        model,
        text: undefined,
        toolCalls: [{
          id: "call_1",
          name: "Score",
          arguments: JSON.stringify({ id: "sync", score: 3 })
        }],
        finishReason: "tool_calls",
        usage: { inputTokens: 100, outputTokens: 20 }
      }))
  })
  const base = Layer.mergeAll(fake.layer, TestPrices.layer(), budget, log.layer, WorkflowEngine.layerMemory)
  const withLlm = extra.llm === true
    ? Layer.provideMerge(Llm.layer().pipe(Layer.provide(Layer.mergeAll(scripted.layer, TestPrices.layer()))), base)
    : base
  const layer = Batch.layer({ pollEvery: "1 minute", ...batchOptions }).pipe(Layer.provideMerge(withLlm))
  const env: Env = { fake, store, log }
  return { env, layer }
}

const runAll = <A>(stream: Stream.Stream<Batch.ItemResult<A>, Batch.BatchConfigError, Batch.Batch>) =>
  TestKit.runWithTestClock(Effect.map(Stream.runCollect(stream), Chunk.toReadonlyArray), { limit: "3 days" })

const spent = (store: Budget.BudgetStore.Service) =>
  Effect.map(store.balances(["tenant:acme|total|total"]), ([balance]) => balance!)

const price = Effect.runSync(Effect.provide(Pricing.Pricing, TestPrices.layer())).lookup(model)!
const perLine = { inputTokens: 100, cachedInputTokens: 0, outputTokens: 20, reasoningTokens: 0 }

const byId = <A>(results: ReadonlyArray<Batch.ItemResult<A>>) => {
  const map = new Map<string, Batch.ItemResult<A>>()
  for (const result of results) {
    assert.isFalse(map.has(result.id), `item ${result.id} ended twice`)
    map.set(result.id, result)
  }
  return map
}

describe("Batch.generateObjects", () => {
  it.effect("decodes every item of a run cut into chunks, charges batch prices (half of sync) and records each item", () => {
    const { env, layer } = setup({}, { maxLines: 10 })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(25), options()))
      const map = byId(results)
      assert.strictEqual(map.size, 25)
      for (const [id, result] of map) {
        assert.deepStrictEqual(result.result, Either.right({ id, score: 7 }))
        assert.strictEqual(result.mode, "batch")
      }
      assert.strictEqual(env.fake.batches.length, 3)
      assert.strictEqual(env.fake.deleted.length, 3)
      assert.deepStrictEqual(env.fake.batches.map((b) => b.lines), [10, 10, 5])
      const balance = yield* spent(env.store)
      assert.strictEqual(balance.reserved, 0n)
      assert.strictEqual(balance.spent, 25n * Pricing.costOf(price, perLine, "batch"))
      assert.strictEqual(balance.spent * 2n, 25n * Pricing.costOf(price, perLine, "sync"))
      assert.strictEqual(env.log.records.length, 25)
      for (const record of env.log.records) {
        assert.strictEqual(record.mode, "batch")
        assert.isTrue(record.batchId?.startsWith("batch-"))
        assert.strictEqual(record.outcome, "ok")
        assert.strictEqual(record.costUsd, "0.0000135")
      }
    }).pipe(Effect.provide(layer))
  })

  it.effect("re-attaches to the batch a lost create made instead of creating a second one", () => {
    const { env, layer } = setup({ loseFirstCreate: true })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(5), options()))
      assert.strictEqual(byId(results).size, 5)
      assert.strictEqual(env.fake.batches.length, 1)
      assert.strictEqual(env.fake.creates.count, 1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("keeps the answered lines of an expired batch, charges them once, and reruns the rest in a new batch", () => {
    const { env, layer } = setup({ expireAfterMs: 30_000, durationMs: 60_000, partial: 4 })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(10), options()))
      const map = byId(results)
      assert.strictEqual(map.size, 10)
      for (const result of map.values()) assert.isTrue(Either.isRight(result.result))
      assert.strictEqual(env.fake.batches.length, 2)
      assert.strictEqual(env.fake.batches[1]!.lines, 6)
      const first = env.fake.batches[0]!.id
      assert.strictEqual([...map.values()].filter((r) => r.batchId === first).length, 4)
      const balance = yield* spent(env.store)
      assert.strictEqual(balance.spent, 10n * Pricing.costOf(price, perLine, "batch"))
      assert.strictEqual(balance.reserved, 0n)
      assert.strictEqual(env.log.records.length, 10)
    }).pipe(Effect.provide(layer))
  })

  it.effect("lines still missing after the resubmissions end as BatchItemFailed with the reason", () => {
    const { env, layer } = setup({ expireAfterMs: 30_000, durationMs: 60_000, partial: 2, expireEvery: true })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(10), options({ maxResubmits: 1 })))
      const map = byId(results)
      assert.strictEqual(map.size, 10)
      const failed = [...map.values()].filter((r) => Either.isLeft(r.result))
      assert.strictEqual(failed.length, 6)
      const error = (failed[0]!.result as Either.Left<Batch.ItemError, unknown>).left
      assert.strictEqual(error._tag, "BatchItemFailed")
      assert.include(error.message, "expired")
      assert.strictEqual(env.fake.batches.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("retry sync finishes the lines a batch left through Llm", () => {
    const { env, layer } = setup({ expireAfterMs: 30_000, durationMs: 60_000, partial: 7 }, {}, { llm: true })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(10), options({ retry: "sync" })))
      const map = byId(results)
      assert.strictEqual([...map.values()].filter((r) => r.mode === "sync").length, 3)
      for (const result of map.values()) assert.isTrue(Either.isRight(result.result))
      assert.strictEqual(env.fake.batches.length, 1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("queues chunks against the enqueued-token allowance instead of failing them", () => {
    // Each 5-line chunk is ~2,000 tokens by the byte bound: a 4,500 allowance takes two at once.
    const { env, layer } = setup({ allowance: 4_500 }, { maxLines: 5, concurrency: 4 })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(40), options()))
      const map = byId(results)
      assert.strictEqual(map.size, 40)
      for (const result of map.values()) assert.isTrue(Either.isRight(result.result))
      const balance = yield* spent(env.store)
      assert.strictEqual(balance.spent, 40n * Pricing.costOf(price, perLine, "batch"))
    }).pipe(Effect.provide(layer))
  })

  it.effect("a configured allowance queues chunks without a single refusal", () => {
    const { env, layer } = setup({ allowance: 4_500 }, { maxLines: 5, concurrency: 4, allowance: 4_500 })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(40), options()))
      assert.strictEqual(byId(results).size, 40)
      assert.strictEqual(env.fake.batches.filter((b) => b.failed !== undefined).length, 0)
    }).pipe(Effect.provide(layer))
  })

  it.effect("splits a chunk too big for the allowance on its own", () => {
    const { env, layer } = setup({ allowance: 2_000 }, { maxLines: 20 })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(20), options()))
      const map = byId(results)
      assert.strictEqual(map.size, 20)
      for (const result of map.values()) assert.isTrue(Either.isRight(result.result))
      assert.isAbove(env.fake.batches.filter((b) => b.failed === undefined).length, 1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("reports bad input per item and keeps the rest", () => {
    const { env, layer } = setup({ garbleFirst: { unreadable: [2], unknown: true, duplicate: true } })
    return Effect.gen(function*() {
      const input = Stream.concat(
        items(6),
        Stream.make<Array<Batch.Item>>({ id: "bad", input: { title: "" } }, { id: "item-1", input: { title: "again" } })
      )
      const results = yield* runAll(Batch.generateObjects(input, options()))
      const map = byId(results.filter((r) => !(r.id === "item-1" && Either.isLeft(r.result))))
      const bad = map.get("bad")!.result as Either.Left<Batch.ItemError, unknown>
      assert.strictEqual(bad.left._tag, "InvalidRequest")
      assert.include(bad.left.message, "input.title")
      const duplicates = results.filter((r) => r.id === "item-1")
      assert.strictEqual(duplicates.length, 2)
      assert.include(
        (duplicates.find((r) => Either.isLeft(r.result))!.result as Either.Left<Batch.ItemError, unknown>).left.message,
        "duplicate item id"
      )
      // The unreadable line's item went again in a second batch; the unknown and duplicate lines were not items.
      for (let i = 1; i <= 6; i++) {
        assert.deepStrictEqual(map.get(`item-${i}`)!.result, Either.right({ id: `item-${i}`, score: 7 }))
      }
      assert.strictEqual(env.fake.batches.length, 2)
      assert.strictEqual(env.fake.batches[1]!.lines, 1)
      // What the provider billed is charged, the unknown and duplicate lines included.
      const balance = yield* spent(env.store)
      assert.strictEqual(balance.spent, 8n * Pricing.costOf(price, perLine, "batch"))
    }).pipe(Effect.provide(layer))
  })

  it.effect("a batch failed with validation errors fails the lines it names; the others go again", () => {
    const { env, layer } = setup({ failValidation: [2, 4] })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(5), options()))
      const map = byId(results)
      assert.strictEqual(map.size, 5)
      for (const id of ["item-2", "item-4"]) {
        const error = (map.get(id)!.result as Either.Left<Batch.ItemError, unknown>).left
        assert.strictEqual(error._tag, "InvalidRequest")
        assert.include(error.message, "bad url")
      }
      for (const id of ["item-1", "item-3", "item-5"]) assert.isTrue(Either.isRight(map.get(id)!.result))
      const balance = yield* spent(env.store)
      assert.strictEqual(balance.spent, 3n * Pricing.costOf(price, perLine, "batch"))
      assert.strictEqual(balance.reserved, 0n)
    }).pipe(Effect.provide(layer))
  })

  it.effect("per-line errors: final ones are reported, invalid output is OutputInvalid, retryable ones go again", () => {
    let calls = 0
    const { layer } = setup({
      respond: (line) => {
        calls++
        if (line.customId === "item-1") {
          return Either.left(new LlmError.InvalidRequest({ reason: "context_length_exceeded", status: 400 }))
        }
        if (line.customId === "item-2") {
          return Either.right({
            ...FakeBatch.answer(line),
            toolCalls: [{ id: "c", name: "Score", arguments: "{\"id\":1}" }]
          })
        }
        if (line.customId === "item-3" && calls <= 5) {
          return Either.left(new LlmError.ProviderUnavailable({ status: 500 }))
        }
        return Either.right(FakeBatch.answer(line))
      }
    })
    return Effect.gen(function*() {
      const map = byId(yield* runAll(Batch.generateObjects(items(5), options())))
      assert.strictEqual((map.get("item-1")!.result as any).left._tag, "InvalidRequest")
      assert.strictEqual((map.get("item-2")!.result as any).left._tag, "OutputInvalid")
      assert.deepStrictEqual(map.get("item-3")!.result, Either.right({ id: "item-3", score: 7 }))
      assert.notStrictEqual(map.get("item-3")!.batchId, map.get("item-4")!.batchId)
    }).pipe(Effect.provide(layer))
  })

  it.effect("a reservation outlives the budget's lease while its batch runs (renewed at each poll)", () => {
    const { env, layer } = setup({ durationMs: 2 * 60 * 60_000 }, {}, { budgetOptions: { lease: "10 minutes" } })
    return Effect.gen(function*() {
      const results = yield* runAll(Batch.generateObjects(items(5), options()))
      assert.strictEqual(byId(results).size, 5)
      const balance = yield* spent(env.store)
      // Reclaimed, it would be charged at its worst case.
      assert.strictEqual(balance.spent, 5n * Pricing.costOf(price, perLine, "batch"))
    }).pipe(Effect.provide(layer))
  })

  it.effect("mode auto runs few items synchronously and many as batches", () => {
    const { env, layer } = setup({}, { autoThreshold: 5 }, { llm: true })
    return Effect.gen(function*() {
      const few = yield* runAll(Batch.generateObjects(items(5), options({ mode: "auto" })))
      assert.isTrue(few.every((r) => r.mode === "sync"))
      assert.strictEqual(env.fake.batches.length, 0)
      const many = yield* runAll(Batch.generateObjects(items(6, "more"), options({ mode: "auto", runId: "run-2" })))
      assert.isTrue(many.every((r) => r.mode === "batch"))
      assert.strictEqual(many.length, 6)
      const deadline = (yield* Clock.currentTimeMillis) + 60 * 60_000
      const near = yield* runAll(
        Batch.generateObjects(items(50, "near"), options({ mode: "auto", runId: "run-3", deadline }))
      )
      assert.isTrue(near.every((r) => r.mode === "sync"))
    }).pipe(Effect.provide(layer))
  })

  it.effect("sync mode without Llm is a BatchConfigError", () => {
    const { layer } = setup()
    return Effect.gen(function*() {
      const error = yield* Effect.flip(runAll(Batch.generateObjects(items(2), options({ mode: "sync" }))))
      assert.strictEqual(error._tag, "BatchConfigError")
      assert.strictEqual(error.field, "mode")
    }).pipe(Effect.provide(layer))
  })
})
