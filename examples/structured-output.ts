/**
 * Structured output: an Effect Schema sent as a strict tool, the answer decoded with it, and one
 * repair re-ask when the model answers something that does not decode (the simulator spoils 30%
 * of answers here). What comes back is typed, or a typed `OutputInvalid`.
 *
 *   npx tsx --conditions=@keel/source examples/structured-output.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Llm from "@keel/core/Llm"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { simulatedModel } from "./simulated.js"

const Invoice = Schema.Struct({
  vendor: Schema.String,
  total: Schema.Number.pipe(Schema.nonNegative()),
  currency: Schema.Literal("EUR", "USD", "GBP"),
  lines: Schema.Array(Schema.Struct({ item: Schema.String, amount: Schema.Number })).pipe(Schema.maxItems(5))
}).annotations({ identifier: "Invoice" })

const program = Effect.forEach(
  ["ACME GmbH, 3 widgets, EUR 120", "Initech, consulting, USD 900"],
  (text) =>
    Llm.generateObject({ schema: Invoice, repair: 1, messages: [{ role: "user", content: `Extract: ${text}` }] }).pipe(
      Effect.match({
        onFailure: (error) => `${error._tag}: ${error.message}`,
        onSuccess: (invoice) => `${invoice.vendor}: ${invoice.total} ${invoice.currency}, ${invoice.lines.length} lines`
      }),
      Effect.tap((line) => Effect.sync(() => console.log(line)))
    )
)

const Live = Llm.layer({ defaultModel: "gpt-4o-mini" }).pipe(
  Layer.provide(simulatedModel({ seed: 5, faults: { invalid_output: 0.3 } }))
)

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
