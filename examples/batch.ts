/**
 * Batch: 200 items scored through the Batch API at half the price, on a durable engine (SQLite in a
 * temporary folder) so that a crash resumes where it stopped; results stream back keyed by item id.
 * The simulator runs the batch lifecycle in a few seconds here.
 *
 *   npx tsx --conditions=@keel/source examples/batch.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Batch from "@keel/core/Batch"
import * as BatchEngine from "@keel/core/Batch/Engine"
import * as CallLog from "@keel/core/CallLog"
import * as Money from "@keel/core/Money"
import * as OpenAiBatch from "@keel/openai/OpenAiBatch"
import * as OpenAiClient from "@keel/openai/OpenAiClient"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

const Review = Schema.Struct({ text: Schema.String })
const Sentiment = Schema.Struct({ sentiment: Schema.Literal("positive", "neutral", "negative") }).annotations({
  identifier: "Sentiment"
})
const log = CallLog.memory()

const items = Stream.range(1, 200).pipe(
  Stream.map((i): Batch.Item => ({ id: `review-${i}`, input: { text: `Review ${i}: it arrived on time.` } }))
)

const program = Batch.generateObjects(items, {
  runId: "example-reviews",
  task: "sentiment",
  schema: Sentiment,
  input: Review,
  request: (review) => ({ messages: [{ role: "user", content: `Sentiment of: ${review.text}` }], maxOutputTokens: 10 }),
  model: "gpt-4o-mini"
}).pipe(
  Stream.runCollect,
  Effect.map((results) => {
    const ok = [...results].filter((result) => result.result._tag === "Right").length
    const cost = Money.sum(log.records.map((record) => Money.unsafeParse(record.costUsd ?? "0")))
    console.log(
      `${ok}/${results.length} items decoded; ${log.records.length} call records; cost $${
        Money.format(cost)
      } at batch prices`
    )
  })
)

const Client = Layer.unwrapEffect(
  Effect.map(
    Simulator.Simulator,
    (simulator) => OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-simulated"), baseUrl: simulator.url })
  )
).pipe(Layer.provide(Simulator.layer({ batch: { validatingMs: 200, inProgressMs: 2000, finalizingMs: 200 } })))

const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-batch-example-"))

const Live = Batch.layer({ pollEvery: "500 millis" }).pipe(
  Layer.provide(Layer.mergeAll(
    OpenAiBatch.layer().pipe(Layer.provide(Client)),
    BatchEngine.layerSqlite({ filename: Path.join(folder, "engine.sqlite"), pollInterval: 100 }),
    OpenAiPricing.layer(),
    log.layer
  ))
)

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
