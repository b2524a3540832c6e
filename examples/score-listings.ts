/**
 * Scores job listings with structured output against the bundled simulator (with injected faults),
 * under a budget, writing one call record per listing as JSON lines.
 *
 *   npx tsx --conditions=@keel/source examples/score-listings.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Budget from "@keel/core/Budget"
import * as JsonLines from "@keel/core/CallLog/JsonLines"
import * as Llm from "@keel/core/Llm"
import * as Money from "@keel/core/Money"
import * as OpenAiClient from "@keel/openai/OpenAiClient"
import * as OpenAiLanguageModel from "@keel/openai/OpenAiLanguageModel"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

const Score = Schema.Struct({
  score: Schema.Int.pipe(Schema.between(0, 100)),
  seniority: Schema.Literal("junior", "mid", "senior", "staff"),
  remote: Schema.optional(Schema.Boolean),
  skills: Schema.Array(Schema.String).pipe(Schema.minItems(1), Schema.maxItems(5))
}).annotations({ identifier: "Score" })

const listings = [
  "Senior Backend Engineer (TypeScript, Node.js), Berlin, remote friendly",
  "Junior Frontend Developer (React), Lisbon, on site",
  "Staff Platform Engineer (Kubernetes, Go), remote",
  "Data Engineer (Python, Airflow, Postgres), Warsaw, hybrid"
]

const score = (listing: string, index: number) =>
  Llm.generateObject({
    schema: Score,
    scope: "run:example",
    task: "score-listing",
    maxOutputTokens: 300,
    messages: [
      { role: "system", content: "Score the listing's fit for a senior TypeScript engineer." },
      { role: "user", content: listing }
    ]
  }).pipe(
    Effect.map((value) => ({ index, value })),
    Effect.catchAll((error) => Effect.succeed({ index, error: `${error._tag}: ${error.message}` }))
  )

const logPath = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-example-")), "calls.jsonl")

const program = Effect.gen(function*() {
  const results = yield* Effect.forEach(listings, score, { concurrency: 4 })
  for (const result of results) {
    console.log(listings[result.index], "→", "value" in result ? result.value : result.error)
  }
  for (const status of yield* Budget.status("run:example")) {
    const limit = status.limit === undefined ? "no limit" : `limit $${Money.format(status.limit)}`
    console.log(`budget ${status.scope} (${status.window}): spent $${Money.format(status.spent)}, ${limit}`)
  }
  console.log(`call log: ${logPath}`)
})

// The simulator stands in for OpenAI; with a real key, use OpenAiClient.layerConfigUndici instead.
const Model = Layer.unwrapEffect(
  Effect.map(Simulator.Simulator, (simulator) =>
    OpenAiLanguageModel.layer().pipe(
      Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-simulated"), baseUrl: simulator.url }))
    ))
).pipe(Layer.provide(Simulator.layer({ seed: 7, faults: { rate_limit: 0.2, invalid_output: 0.2, "503": 0.1 } })))

const Stages = Layer.mergeAll(
  OpenAiPricing.layer(),
  Budget.layerMemory({ limits: [{ scope: "run:example", limit: "0.01" }] }),
  JsonLines.layer({ path: logPath })
)

const Live = Llm.layer({ defaultModel: "gpt-4.1-mini" }).pipe(Layer.provideMerge(Layer.merge(Model, Stages)))

// runMain: on SIGINT or SIGTERM the calls in flight are interrupted, recorded and their reservations released
NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
