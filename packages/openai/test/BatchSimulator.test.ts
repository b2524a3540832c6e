/**
 * Batch against the simulator over real HTTP on 127.0.0.1 (OpenAiBatch, the workflow engine on a
 * SQLite file): 10,000 items cost exactly half of the same run sent synchronously; a run of about
 * 5M input tokens finishes against a 2M enqueued-token allowance; an expired batch keeps its
 * answered lines and the rest run again.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Batch from "@keel/core/Batch"
import * as BatchEngine from "@keel/core/Batch/Engine"
import * as Budget from "@keel/core/Budget"
import * as CallLog from "@keel/core/CallLog"
import * as Llm from "@keel/core/Llm"
import * as Money from "@keel/core/Money"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as OpenAiBatch from "../src/OpenAiBatch.js"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as OpenAiPricing from "../src/OpenAiPricing.js"
import * as OpenAiTokenizer from "../src/OpenAiTokenizer.js"
import * as Simulator from "../src/Simulator.js"
import type { Listing } from "./utils/batchWorker.js"
import { items, model, runOptions, scope } from "./utils/batchWorker.js"
import { fakeKey } from "./utils/fakeKey.js"

const picoOf = (usd: string) => Money.unsafeParse(usd)

interface World {
  readonly store: Budget.BudgetStore.Service
  readonly log: CallLog.Memory
}

/** Batch (and Llm, for sync) over a simulator with the given options, an engine on a fresh SQLite file, a fresh ledger. */
const world = (simulator: Simulator.Options, batch: Batch.Options = {}) => {
  const store = Budget.makeMemoryStore()
  const log = CallLog.memory()
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-batch-sim-"))
  const sim = Simulator.layer({ seed: 7, ...simulator })
  const client = Layer.unwrapEffect(
    Effect.map(
      Simulator.Simulator,
      (s) => OpenAiClient.layerUndici({ apiKey: Redacted.make(fakeKey("simulator-batch")), baseUrl: s.url })
    )
  )
  const budget = Budget.layer({ limits: [{ scope, limit: "1000" }] }).pipe(
    Layer.provideMerge(Layer.succeed(Budget.BudgetStore, store))
  )
  const stages = Layer.mergeAll(budget, OpenAiPricing.layer(), OpenAiTokenizer.layer, log.layer)
  const llm = Llm.layer({ defaultModel: model }).pipe(
    Layer.provide(Layer.mergeAll(OpenAiLanguageModel.layer().pipe(Layer.provide(client)), stages))
  )
  const layer = Batch.layer({ pollEvery: 200, concurrency: 4, ...batch }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        OpenAiBatch.layer().pipe(Layer.provide(client)),
        stages,
        llm,
        BatchEngine.layerSqlite({ filename: Path.join(dir, "engine.db"), pollInterval: 100 })
      )
    ),
    Layer.provideMerge(sim),
    Layer.orDie
  )
  const cleanup = Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  return { world: { store, log } satisfies World, layer, cleanup }
}

const spent = (store: Budget.BudgetStore.Service) =>
  Effect.map(store.balances([`${scope}|total|total`]), ([balance]) => balance!)

const run = (stream: Stream.Stream<Batch.ItemResult<unknown>, Batch.BatchConfigError, Batch.Batch>) =>
  Effect.map(Stream.runCollect(stream), Chunk.toReadonlyArray)

const onceEach = (results: ReadonlyArray<Batch.ItemResult<unknown>>, count: number) => {
  const ids = new Set(results.map((result) => result.id))
  assert.strictEqual(results.length, count, "an item ended more than once or not at all")
  assert.strictEqual(ids.size, count)
}

const fast = { validatingMs: 100, inProgressMs: 1_000, finalizingMs: 100 }

describe("Batch against the simulator", () => {
  it.live(
    "10,000 items in batch mode: all decoded, none lost or twice, at exactly half the ledger cost of sync",
    () => {
      const count = 10_000
      const batch = world({ batch: fast }, { maxLines: 2_500 })
      const sync = world({ batch: fast })
      return Effect.gen(function*() {
        const batched = yield* run(Batch.generateObjects(items(count), runOptions("ten-thousand"))).pipe(
          Effect.provide(batch.layer)
        )
        onceEach(batched, count)
        for (const result of batched) assert.isTrue(Either.isRight(result.result), `${result.id} did not decode`)
        const batchSpent = yield* spent(batch.world.store)
        assert.strictEqual(batchSpent.reserved, 0n)
        assert.strictEqual(batch.world.log.records.length, count)
        assert.isTrue(
          batch.world.log.records.every((record) => record.mode === "batch" && record.batchId !== undefined)
        )
        assert.strictEqual(
          batchSpent.spent,
          batch.world.log.records.reduce((sum, record) => sum + picoOf(record.costUsd!), 0n)
        )

        const synced = yield* run(Batch.generateObjects(items(count), runOptions("ten-thousand-sync", "sync"))).pipe(
          Effect.provide(sync.layer)
        )
        onceEach(synced, count)
        for (const result of synced) assert.isTrue(Either.isRight(result.result))
        const syncSpent = yield* spent(sync.world.store)
        assert.isAbove(Number(syncSpent.spent), 0)
        assert.strictEqual(batchSpent.spent * 2n, syncSpent.spent)
      }).pipe(Effect.ensuring(Effect.zipRight(batch.cleanup, sync.cleanup)))
    },
    300_000
  )

  it.live(
    "about 5M input tokens against a 2M enqueued-token allowance: queued, learned from refusals, no item failed",
    () => {
      // ~5,000 tokens per item, 100 items per chunk: ten chunks of ~500k tokens, four fit at once.
      const long = "word ".repeat(4_990)
      const count = 1_000
      const { cleanup, layer, world: w } = world(
        { batch: { ...fast, inProgressMs: 1_500, enqueuedTokens: 2_000_000 } },
        { maxLines: 100 }
      )
      const big = Stream.range(1, count).pipe(
        Stream.map((i): Batch.Item => ({ id: `big-${i}`, input: { title: `${i} ${long}` } }))
      )
      return Effect.gen(function*() {
        const results = yield* run(
          Batch.generateObjects(big, {
            ...runOptions("five-million"),
            request: (l: typeof Listing.Type) => ({
              messages: [{ role: "user", content: l.title }],
              maxOutputTokens: 50
            })
          })
        )
        onceEach(results, count)
        for (const result of results) assert.isTrue(Either.isRight(result.result), `${result.id} failed`)
        const sim = yield* Simulator.Simulator
        const batches = (yield* sim.stats).batches.filter((b) => b.metadata.keel_run === "five-million")
        const completed = batches.filter((b) => b.status === "completed")
        const refused = batches.filter((b) => b.status === "failed")
        assert.strictEqual(completed.reduce((sum, b) => sum + b.requestCounts.total, 0), count)
        assert.isAbove(refused.length, 0, "the allowance was never reached: the test shows nothing")
        const records = w.log.records
        assert.isAbove(records.reduce((sum, r) => sum + r.inputTokens, 0), 4_900_000)
        assert.strictEqual((yield* spent(w.store)).reserved, 0n)
      }).pipe(Effect.provide(layer), Effect.ensuring(cleanup))
    },
    300_000
  )

  it.live(
    "an expired batch keeps its answered lines, charged once, and the rest run again (synchronously, by policy)",
    () => {
      // Lines finish one after another over 1 s; a batch expires 0.7 s after it is created.
      const { cleanup, layer, world: w } = world(
        { batch: { validatingMs: 50, inProgressMs: 1_000, finalizingMs: 50, windowMs: 700 } },
        {}
      )
      return Effect.gen(function*() {
        const results = yield* run(Batch.generateObjects(items(20), { ...runOptions("expiring"), retry: "sync" }))
        onceEach(results, 20)
        for (const result of results) assert.isTrue(Either.isRight(result.result), `${result.id} failed`)
        const sim = yield* Simulator.Simulator
        const batches = (yield* sim.stats).batches.filter((b) => b.metadata.keel_run === "expiring")
        assert.strictEqual(batches.length, 1)
        const expired = batches[0]!
        assert.strictEqual(expired.status, "expired")
        assert.isAbove(expired.requestCounts.completed, 0)
        assert.isBelow(expired.requestCounts.completed, 20)
        // The answered lines are kept (not asked again); only the others went synchronously.
        const kept = results.filter((r) => r.batchId === expired.id)
        assert.strictEqual(kept.length, expired.requestCounts.completed)
        assert.strictEqual(results.filter((r) => r.mode === "sync").length, 20 - kept.length)
        // One record per item, and the ledger charged exactly what they cost: batch lines at batch prices, once.
        assert.strictEqual(w.log.records.length, 20)
        assert.strictEqual(
          w.log.records.filter((r) => r.mode === "batch" && r.batchId === expired.id).length,
          kept.length
        )
        const balance = yield* spent(w.store)
        assert.strictEqual(balance.spent, w.log.records.reduce((sum, r) => sum + picoOf(r.costUsd!), 0n))
        assert.strictEqual(balance.reserved, 0n)
      }).pipe(Effect.provide(layer), Effect.ensuring(cleanup))
    },
    120_000
  )
})
