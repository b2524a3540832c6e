/**
 * Budget: a $0.005 limit on one scope. Calls reserve their worst case before they are sent and
 * settle at the exact cost after; once the limit is reached, a call fails with `BudgetExceeded`
 * before anything is sent, so the limit is never overspent.
 *
 *   npx tsx --conditions=@keel/source examples/budget.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Budget from "@keel/core/Budget"
import * as Llm from "@keel/core/Llm"
import * as Money from "@keel/core/Money"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { simulatedModel } from "./simulated.js"

const scope = "tenant:acme/feature:summaries"

const program = Effect.gen(function*() {
  for (let i = 1; i <= 10; i++) {
    const outcome = yield* Llm.generate({
      scope,
      messages: [{ role: "user", content: `Summarise report ${i} in one paragraph.` }],
      maxOutputTokens: 300
    }).pipe(Effect.match({ onFailure: (error) => error._tag, onSuccess: () => "ok" }))
    const status = (yield* Budget.status(scope)).find((s) => s.scope === scope)
    console.log(`call ${i}: ${outcome}; spent $${Money.format(status!.spent)} of $${Money.format(status!.limit ?? 0n)}`)
  }
})

const Live = Llm.layer({ defaultModel: "gpt-4.1", require: ["budget"] }).pipe(
  Layer.provideMerge(Layer.mergeAll(
    simulatedModel({ seed: 1 }),
    OpenAiPricing.layer(),
    Budget.layerMemory({ limits: [{ scope, limit: "0.005" }] })
  ))
)

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
