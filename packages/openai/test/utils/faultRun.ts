/** What the simulator fault runs share: the fault mix, a fast retry policy, and the tool they ask for. */
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Duration from "effect/Duration"
import * as Simulator from "../../src/Simulator.js"

/** `total` in all, spread evenly over every fault kind. */
export const everyFault = (total: number): Simulator.FaultRates =>
  Object.fromEntries(Simulator.faultNames.map((name) => [name, total / Simulator.faultNames.length]))

/** Short real delays and a one-second attempt timeout, so hangs and retries resolve fast on the live clock. */
export const fastPolicy = RetryPolicy.make({
  maxAttempts: 4,
  base: Duration.millis(2),
  cap: Duration.millis(5),
  attemptTimeout: Duration.seconds(1),
  deadline: Duration.seconds(30)
})

/** A strict tool with a bounded integer and a string. */
export const scoreTool: LlmRequest.ToolDefinition = {
  name: "score",
  parameters: {
    type: "object",
    properties: { score: { type: "integer", minimum: 0, maximum: 10 }, reason: { type: "string" } },
    required: ["score", "reason"],
    additionalProperties: false
  },
  strict: true
}
