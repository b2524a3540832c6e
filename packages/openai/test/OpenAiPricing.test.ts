import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it } from "@effect/vitest"
import * as Money from "@keel/core/Money"
import * as Pricing from "@keel/core/Pricing"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as OpenAiPricing from "../src/OpenAiPricing.js"

const usage = (fields: Partial<{ input: number; cached: number; output: number; reasoning: number }>) => ({
  inputTokens: fields.input ?? 0,
  cachedInputTokens: fields.cached ?? 0,
  outputTokens: fields.output ?? 0,
  reasoningTokens: fields.reasoning ?? 0
})

const failure = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (error === undefined) throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
  return error
}

describe("OpenAiPricing over core Pricing", () => {
  it.effect("charges uncached input, cached input and output at their own prices", () =>
    Effect.gen(function*() {
      // gpt-4o: $2.50 input, $1.25 cached, $10 output per 1M tokens.
      const cost = yield* Pricing.cost("gpt-4o", usage({ input: 1000, cached: 400, output: 200 }))
      // 600 × 2.50 + 400 × 1.25 + 200 × 10 = 1500 + 500 + 2000 per 1M = $0.004
      assert.strictEqual(Money.format(cost), "0.004")
    }).pipe(Effect.provide(OpenAiPricing.layer())))

  it.effect("bills reasoning tokens as output tokens (they are part of the output count)", () =>
    Effect.gen(function*() {
      const withReasoning = yield* Pricing.cost("o4-mini", usage({ input: 100, output: 500, reasoning: 450 }))
      const without = yield* Pricing.cost("o4-mini", usage({ input: 100, output: 500 }))
      assert.strictEqual(withReasoning, without)
      // 100 × 1.10 + 500 × 4.40 per 1M = 0.00011 + 0.0022
      assert.strictEqual(Money.format(withReasoning), "0.00231")
    }).pipe(Effect.provide(OpenAiPricing.layer())))

  it.effect("batch costs exactly half, cached input included", () =>
    Effect.gen(function*() {
      const u = usage({ input: 3333, cached: 1111, output: 777 })
      for (const model of ["gpt-4o-mini", "gpt-4.1-nano", "gpt-5-nano", "o3"]) {
        const sync = yield* Pricing.cost(model, u, "sync")
        const batch = yield* Pricing.cost(model, u, "batch")
        assert.strictEqual(batch * 2n, sync, model)
      }
      // gpt-4o-mini cached input in batch: $0.0375 per 1M, i.e. 37.5 nano-dollars a token, still exact.
      const cachedOnly = yield* Pricing.cost("gpt-4o-mini", usage({ input: 1, cached: 1 }), "batch")
      assert.strictEqual(Money.format(cachedOnly), "0.0000000375")
    }).pipe(Effect.provide(OpenAiPricing.layer())))

  it.effect("dated snapshots resolve to their family; unknown models are an error, never $0", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* Pricing.price("gpt-4o-2024-08-06")).model, "gpt-4o")
      assert.strictEqual((yield* Pricing.price("gpt-4.1-mini-2025-04-14")).model, "gpt-4.1-mini")
      const unknown = yield* Effect.exit(Pricing.cost("my-finetune", usage({ input: 10 })))
      assert.strictEqual(failure(unknown)._tag, "PricingUnknown")
    }).pipe(Effect.provide(OpenAiPricing.layer())))

  it.effect("a configured fallback price covers unknown models and is marked", () =>
    Effect.gen(function*() {
      const price = yield* Pricing.price("my-finetune")
      assert.isTrue(price.fallback)
      assert.isFalse((yield* Pricing.price("gpt-4o")).fallback)
      assert.strictEqual(Money.format(yield* Pricing.cost("my-finetune", usage({ output: 1_000_000 }))), "3")
    }).pipe(Effect.provide(OpenAiPricing.layer({ fallback: { input: 1, output: 3 } }))))

  it.effect("a pricing file overrides and extends the built-in table", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-pricing-"))
      const file = Path.join(dir, "prices.json")
      Fs.writeFileSync(
        file,
        JSON.stringify({
          models: {
            "gpt-4o": { input: "2.00", output: 8, source: "contract 2026" },
            "acme-7b": { input: "0.000001", output: "0.000002", batchInput: "0.000001", batchOutput: "0.000001" }
          }
        })
      )
      const pricing = yield* Effect.provide(
        Pricing.Pricing,
        OpenAiPricing.layerFile(file).pipe(Layer.provide(NodeFileSystem.layer))
      )
      const gpt4o = yield* pricing.price("gpt-4o")
      assert.strictEqual(gpt4o.source, "contract 2026")
      assert.strictEqual(gpt4o.cachedInput, gpt4o.input) // no cached price given: no discount assumed
      assert.strictEqual(Money.format(yield* pricing.cost("acme-7b", usage({ input: 1, output: 1 }))), "0.000000000003")
      assert.strictEqual((yield* pricing.price("gpt-4o-mini")).model, "gpt-4o-mini")
      Fs.rmSync(dir, { recursive: true })
    }))

  describe("a malformed pricing file names the file, the line and the field", () => {
    const parse = (text: string) => Effect.runSyncExit(Pricing.parseFile("prices.json", text))

    it("a bad value", () => {
      const error = failure(parse(`{
  "models": {
    "gpt-4o": { "input": "2.50", "output": "10" },
    "acme": {
      "input": "cheap",
      "output": "1"
    }
  }
}`))
      assert.strictEqual(error._tag, "PricingConfigError")
      assert.strictEqual(error.file, "prices.json")
      assert.strictEqual(error.line, 5)
      assert.strictEqual(error.field, "models.acme.input")
      assert.match(error.message, /^prices\.json:5: invalid pricing at models\.acme\.input: /)
    })

    it("a negative price, too many decimals, an unknown field, a missing output", () => {
      const negative = failure(parse(`{"models": {\n"a": {"input": -1, "output": 1}}}`))
      assert.deepStrictEqual([negative.field, negative.line], ["models.a.input", 2])
      assert.match(negative.reason, /negative/)
      const fine = failure(parse(`{"models": {"a": {"input": 1, "output": "0.0000001"}}}`))
      assert.strictEqual(fine.field, "models.a.output")
      assert.match(fine.reason, /6 decimals/)
      const extra = failure(parse(`{"models": {"a": {"input": 1, "output": 1,\n "ouput": 2}}}`))
      assert.strictEqual(extra.field, "models.a.ouput")
      assert.strictEqual(extra.line, 2)
      const missing = failure(parse(`{"models": {"a": {"input": 1}}}`))
      assert.strictEqual(missing.field, "models.a.output")
    })

    it("a JSON syntax error", () => {
      const error = failure(parse(`{\n  "models": {\n    "a": { "input": 1, "output": 2 },,\n  }\n}`))
      assert.strictEqual(error.line, 3)
      assert.match(error.reason, /not JSON/)
    })

    it.effect("a missing file", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          Effect.provide(
            Pricing.Pricing,
            OpenAiPricing.layerFile("/nonexistent/prices.json").pipe(Layer.provide(NodeFileSystem.layer))
          )
        )
        const error = failure(exit)
        assert.strictEqual(error._tag, "PricingConfigError")
        assert.strictEqual(error.file, "/nonexistent/prices.json")
      }))
  })
})
