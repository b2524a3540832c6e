/**
 * Retry policy: against a simulator answering 40% of requests with 429s and 503s, full-jitter
 * backoff with a per-attempt timeout and an overall deadline gets every call through; the call
 * log shows how many attempts each took.
 *
 *   npx tsx --conditions=@keel/source examples/retry-policy.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as CallLog from "@keel/core/CallLog"
import * as Llm from "@keel/core/Llm"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { simulatedModel } from "./simulated.js"

const log = CallLog.memory()
const policy = RetryPolicy.make({
  base: "100 millis",
  cap: "2 seconds",
  jitter: "full",
  attemptTimeout: "5 seconds",
  deadline: "30 seconds"
})

const program = Effect.gen(function*() {
  const answers = yield* Effect.forEach(
    Array.from({ length: 20 }, (_, i) => i),
    (i) => Llm.generate({ messages: [{ role: "user", content: `Say hello #${i}` }], maxOutputTokens: 200 }),
    { concurrency: 10 }
  )
  const attempts = log.records.map((record) => record.attempts)
  console.log(`${answers.length} answers; attempts per call: ${attempts.join(" ")}`)
})

const Live = Llm.layer({ defaultModel: "gpt-4o-mini" }).pipe(
  Layer.provide(Layer.mergeAll(
    simulatedModel({ seed: 3, faults: { rate_limit: 0.25, "503": 0.15 } }),
    log.layer,
    Layer.succeed(RetryPolicy.RetryPolicy, policy)
  ))
)

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
