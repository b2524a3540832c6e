/**
 * A child process for the Batch durability tests: runs one `Batch.generateObjects` run against the
 * simulator (OpenAiBatch over HTTP), with the workflow engine on a SQLite file, the budget ledger on
 * another, and a JSON-lines call log. With `killAt`, it SIGKILLs itself at the first time the run
 * reaches that moment: after an upload returned (before create), after a create returned (before
 * the engine records it), at the second poll, while downloading results, or right after a settle
 * committed in the ledger (before the engine records it). Prints `result <id> ok|<error tag>` per
 * item and `done <n>`.
 *
 * Run: node --import tsx --conditions=@keel/source packages/openai/test/utils/batchWorker.ts '<json options>'
 */
import * as Batch from "@keel/core/Batch"
import * as BatchEngine from "@keel/core/Batch/Engine"
import { BatchProvider } from "@keel/core/BatchProvider"
import * as Budget from "@keel/core/Budget"
import * as BudgetSql from "@keel/core/Budget/Sql"
import * as JsonLines from "@keel/core/CallLog/JsonLines"
import * as Llm from "@keel/core/Llm"
import * as Sqlite from "@keel/core/Sqlite"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as OpenAiBatch from "../../src/OpenAiBatch.js"
import * as OpenAiClient from "../../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../../src/OpenAiLanguageModel.js"
import * as OpenAiPricing from "../../src/OpenAiPricing.js"
import * as OpenAiTokenizer from "../../src/OpenAiTokenizer.js"
import { fakeKey } from "./fakeKey.js"

export type KillAt = "upload" | "create" | "poll" | "download" | "settle"

export interface WorkerOptions {
  readonly url: string
  readonly engineDb: string
  readonly budgetDb: string
  readonly logPath: string
  readonly items: number
  readonly maxLines: number
  readonly runId: string
  readonly pollMs: number
  readonly killAt?: KillAt | undefined
  readonly mode?: "batch" | "sync" | undefined
}

export const model = "gpt-4.1-mini"
export const scope = "tenant:acme"

export const Score = Schema.Struct({
  score: Schema.Int.pipe(Schema.between(0, 100)),
  reason: Schema.String
}).annotations({ identifier: "Score" })
export const Listing = Schema.Struct({ title: Schema.NonEmptyString })

export const items = (count: number) =>
  Stream.range(1, count).pipe(
    Stream.map((i): Batch.Item => ({ id: `listing-${i}`, input: { title: `Listing number ${i}` } }))
  )

export const runOptions = (runId: string, mode: "batch" | "sync" = "batch") => ({
  runId,
  task: "score",
  schema: Score,
  input: Listing,
  request: (listing: typeof Listing.Type) => ({
    messages: [
      { role: "system" as const, content: "You score job listings from 0 to 100." },
      { role: "user" as const, content: listing.title }
    ],
    maxOutputTokens: 200,
    seed: 7
  }),
  model,
  scope,
  mode
})

const die = (): never => {
  process.kill(process.pid, "SIGKILL")
  throw new Error("unreachable")
}

const main = (options: WorkerOptions) => {
  let killed = false
  let polls = 0
  const killHere = (point: KillAt) => {
    if (options.killAt === point && !killed) {
      killed = true
      die()
    }
  }
  const client = OpenAiClient.layerUndici({
    apiKey: Redacted.make(fakeKey("simulator-batch-worker")),
    baseUrl: options.url
  })
  const provider = Layer.effect(
    BatchProvider,
    Effect.map(OpenAiBatch.make(), (service) =>
      BatchProvider.of({
        ...service,
        upload: (lines) => Effect.tap(service.upload(lines), () => killHere("upload")),
        create: (fileId, metadata) => Effect.tap(service.create(fileId, metadata), () => killHere("create")),
        retrieve: (id) =>
          Effect.suspend(() => {
            if (++polls === 2) killHere("poll")
            return service.retrieve(id)
          }),
        results: (batch) => Effect.tap(service.results(batch), () => killHere("download"))
      }))
  ).pipe(Layer.provide(client))
  const store = Layer.effect(
    Budget.BudgetStore,
    Effect.map(BudgetSql.make(), (service) =>
      Budget.BudgetStore.of({
        ...service,
        settle: (id, amount, estimated) => Effect.tap(service.settle(id, amount, estimated), () => killHere("settle"))
      }))
  ).pipe(Layer.provide(Sqlite.layer({ filename: options.budgetDb })))
  const budget = Budget.layer({ limits: [{ scope, limit: "1000" }] }).pipe(Layer.provideMerge(store))
  const stages = Layer.mergeAll(
    budget,
    OpenAiPricing.layer(),
    OpenAiTokenizer.layer,
    JsonLines.layer({ path: options.logPath })
  )
  const llm = Llm.layer({ defaultModel: model }).pipe(
    Layer.provide(Layer.mergeAll(OpenAiLanguageModel.layer().pipe(Layer.provide(client)), stages))
  )
  const batch = Batch.layer({
    maxLines: options.maxLines,
    pollEvery: options.pollMs,
    concurrency: 4
  }).pipe(
    Layer.provideMerge(Layer.mergeAll(provider, stages, llm, BatchEngine.layerSqlite({ filename: options.engineDb })))
  )
  return Batch.generateObjects(items(options.items), runOptions(options.runId, options.mode)).pipe(
    Stream.runForEach((result) =>
      Effect.sync(() => {
        process.stdout.write(
          `result ${result.id} ${Either.isRight(result.result) ? "ok" : result.result.left._tag} ${
            result.batchId ?? "-"
          }\n`
        )
      })
    ),
    Effect.zipRight(Effect.sync(() => process.stdout.write(`done\n`))),
    Effect.provide(batch)
  )
}

if (process.argv[2] !== undefined) {
  Effect.runPromise(main(JSON.parse(process.argv[2]) as WorkerOptions)).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`worker failed: ${String(error)}\n`)
      process.exit(1)
    }
  )
}
