/**
 * An answer whose body is cut mid-way (the simulator's `cut` fault: a 200 with half its body, then a
 * reset) may have been billed by the provider, so the budget charges each such attempt at its
 * estimate and marks the cost estimated, never $0.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Budget from "@keel/core/Budget"
import * as CallLog from "@keel/core/CallLog"
import * as Llm from "@keel/core/Llm"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Money from "@keel/core/Money"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as OpenAiPricing from "../src/OpenAiPricing.js"
import * as OpenAiTokenizer from "../src/OpenAiTokenizer.js"
import * as Simulator from "../src/Simulator.js"
import { fakeKey } from "./utils/fakeKey.js"

const apiKey = fakeKey("cut-answer-0123456789abcdefghijklmnop")

const request: LlmRequest.LlmRequest = {
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Score this listing: senior TypeScript engineer, remote." }],
  maxOutputTokens: 200,
  scope: "run:cut"
}

describe("an answer cut mid-body", () => {
  it.live("is charged at its estimate per attempt, marked estimated, in the record and the ledger alike", () =>
    Effect.gen(function*() {
      const log = CallLog.memory()
      const stack = Layer.unwrapEffect(
        Effect.map(Simulator.Simulator, (simulator) =>
          Llm.layer({ require: ["budget"] }).pipe(
            Layer.provide(Layer.mergeAll(OpenAiLanguageModel.layer(), log.layer, OpenAiPricing.layer())),
            Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make(apiKey), baseUrl: simulator.url })),
            Layer.provideMerge(Budget.layerMemory())
          ))
      ).pipe(Layer.provideMerge(Simulator.layer({ seed: 3, apiKey, faults: { cut: 1 } })))

      const { error, spent } = yield* Effect.gen(function*() {
        const error = yield* Effect.flip(Llm.generate(request))
        const spent = (yield* Budget.status("run:cut")).find((s) => s.scope === "run:cut" && s.window === "total")!
        return { error, spent }
      }).pipe(
        RetryPolicy.withPolicy(RetryPolicy.make({ maxAttempts: 2, base: "1 millis", jitter: "none" })),
        Effect.provide(stack)
      )

      assert.isTrue(error._tag === "Transport" && error.afterResponse === true, error.message)
      // gpt-4o-mini: $0.15 per 1M input tokens, $0.60 per 1M output; every input token uncached, the whole allowance out.
      const input = yield* OpenAiTokenizer.input(request)
      const estimate = BigInt(input) * 150_000n + 200n * 600_000n
      const [record] = log.records
      assert.strictEqual(record?.attempts, 2)
      assert.strictEqual(record?.estimated, true)
      assert.strictEqual(record?.costUsd, Money.format(2n * estimate))
      assert.strictEqual(spent.spent, 2n * estimate)
      assert.strictEqual(spent.reserved, 0n)
    }))
})
