/**
 * Router: calls that name no model go to a tier's chain, by the tier they name or by complexity
 * heuristics; when a model keeps failing (here gpt-4o-mini answers 503 every time) the call falls
 * back along its chain. The call record says where each call went and why.
 *
 *   npx tsx --conditions=@keel/source examples/router.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as CallLog from "@keel/core/CallLog"
import * as Llm from "@keel/core/Llm"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Router from "@keel/core/Router"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { simulatedModel } from "./simulated.js"

const log = CallLog.memory()

const program = Effect.gen(function*() {
  yield* Llm.generate({
    messages: [{ role: "user", content: "Is this email spam? 'You won a prize'" }],
    maxOutputTokens: 100
  })
  yield* Llm.generate({
    tier: "complex",
    messages: [{ role: "user", content: "Plan a zero-downtime Postgres major upgrade, step by step." }],
    maxOutputTokens: 800
  })
  for (const record of log.records) {
    console.log(
      `${record.model}: ${record.route.reason}${record.route.hops ? `; hops ${JSON.stringify(record.route.hops)}` : ""}`
    )
  }
})

const Live = Llm.layer({ require: ["router"] }).pipe(
  Layer.provide(Layer.mergeAll(
    simulatedModel({ faultsByModel: { "gpt-4o-mini": { "503": 1 } } }),
    Router.layer(),
    log.layer,
    Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: 2, base: "50 millis" }))
  ))
)

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
