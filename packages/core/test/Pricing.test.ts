/**
 * Core `Pricing` from its own sources (relative imports, so a mutation run of `Pricing.ts` reaches it):
 * costs, worst cases, defaults, lookups and the errors of a bad table or file. Expected amounts are
 * literal pico-dollars worked out by hand from the literal prices, never from `Pricing`'s functions.
 * (`@keel/openai`'s OpenAiPricing.test.ts covers the same module over OpenAI's table.)
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Pricing from "../src/Pricing.js"

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

const build = (options: Pricing.Options) => Effect.runSync(Pricing.make(options))
const buildError = (options: Pricing.Options) => failure(Effect.runSyncExit(Pricing.make(options)))
const parse = (text: string) => Effect.runSyncExit(Pricing.parseFile("prices.json", text))

// $2.50 input, $1.25 cached, $10 output per 1M tokens: 2,500,000 / 1,250,000 / 10,000,000 pico a token.
const table = { "model-a": { input: "2.50", cachedInput: "1.25", output: "10" } }

describe("Pricing costs", () => {
  it("charges uncached input, cached input and output each at its own price; reasoning is part of output", () => {
    const pricing = build({ table })
    const price = pricing.lookup("model-a")!
    // 600 × 2,500,000 + 400 × 1,250,000 + 200 × 10,000,000
    assert.strictEqual(Pricing.costOf(price, usage({ input: 1000, cached: 400, output: 200 })), 4_000_000_000n)
    assert.strictEqual(
      Pricing.costOf(price, usage({ input: 1000, cached: 400, output: 200, reasoning: 150 })),
      4_000_000_000n
    )
  })

  it("batch prices default to half of each sync price, cached input included", () => {
    const price = build({ table }).lookup("model-a")!
    assert.deepStrictEqual([price.batchInput, price.batchCachedInput, price.batchOutput], [
      1_250_000n,
      625_000n,
      5_000_000n
    ])
    // 600 × 1,250,000 + 400 × 625,000 + 200 × 5,000,000
    assert.strictEqual(Pricing.costOf(price, usage({ input: 1000, cached: 400, output: 200 }), "batch"), 2_000_000_000n)
  })

  it("explicit batch prices are taken as given", () => {
    const price = build({
      models: {
        m: { input: "2", cachedInput: "1", output: "8", batchInput: "1.5", batchCachedInput: "0.2", batchOutput: "3" }
      }
    }).lookup("m")!
    assert.deepStrictEqual([price.batchInput, price.batchCachedInput, price.batchOutput], [
      1_500_000n,
      200_000n,
      3_000_000n
    ])
  })

  it("without a cached price there is no caching discount, in sync or batch", () => {
    const price = build({ models: { m: { input: "2", output: "8" } } }).lookup("m")!
    assert.deepStrictEqual([price.cachedInput, price.batchInput, price.batchCachedInput], [
      2_000_000n,
      1_000_000n,
      1_000_000n
    ])
    // With a batch input price given and no cached price, batch cached input is that batch input price.
    const given = build({ models: { m: { input: "2", output: "8", batchInput: "0.4" } } }).lookup("m")!
    assert.strictEqual(given.batchCachedInput, 400_000n)
    // With a batch cached price and no cached price, the batch cached price is taken as given.
    const batchCached = build({ models: { m: { input: "2", output: "8", batchCachedInput: "0.3" } } }).lookup("m")!
    assert.deepStrictEqual([batchCached.cachedInput, batchCached.batchCachedInput], [2_000_000n, 300_000n])
    // With a cached price and no batch prices, batch cached input is half the cached price.
    const cached = build({ models: { m: { input: "2", cachedInput: "0.5", output: "8" } } }).lookup("m")!
    assert.strictEqual(cached.batchCachedInput, 250_000n)
  })

  it("the worst case is every input token uncached plus the whole output allowance", () => {
    const price = build({ table }).lookup("model-a")!
    // 1,000 × 2,500,000 + 300 × 10,000,000; in batch 1,000 × 1,250,000 + 300 × 5,000,000
    assert.strictEqual(Pricing.worstCase(price, 1_000, 300), 5_500_000_000n)
    assert.strictEqual(Pricing.worstCase(price, 1_000, 300, "sync"), 5_500_000_000n)
    assert.strictEqual(Pricing.worstCase(price, 1_000, 300, "batch"), 2_750_000_000n)
    assert.strictEqual(Pricing.worstCase(price, 0, 300), 3_000_000_000n)
    assert.strictEqual(Pricing.worstCase(price, 1_000, 0), 2_500_000_000n)
  })

  it("a price without maxOutputTokens, source or asOf gets the documented defaults", () => {
    const price = build({ table }).lookup("model-a")!
    assert.deepStrictEqual(
      [price.model, price.maxOutputTokens, price.source, price.asOf, price.fallback],
      ["model-a", 16_384, "configured", "", false]
    )
    const dated = build({
      models: { m: { input: 1, output: 2, maxOutputTokens: 4_096, source: "contract", asOf: "2026-11-01" } }
    }).lookup("m")!
    assert.deepStrictEqual([dated.maxOutputTokens, dated.source, dated.asOf, dated.fallback], [
      4_096,
      "contract",
      "2026-11-01",
      false
    ])
  })

  it("a price of zero is a price (free cached input), not an error", () => {
    const price = build({ models: { m: { input: "1", cachedInput: "0", output: 0 } } }).lookup("m")!
    assert.deepStrictEqual([price.cachedInput, price.output, price.batchCachedInput], [0n, 0n, 0n])
  })

  it("PriceInput encodes back to USD per 1M tokens", () => {
    const decoded = Schema.decodeUnknownSync(Pricing.PriceInput)({ input: "2.50", output: 10 })
    assert.deepStrictEqual(Schema.encodeSync(Pricing.PriceInput)(decoded), { input: "2.5", output: "10" })
  })
})

describe("Pricing lookups", () => {
  it("a dated snapshot resolves to its family; other names are taken whole", () => {
    assert.strictEqual(Pricing.family("gpt-4o-2024-08-06"), "gpt-4o")
    assert.strictEqual(Pricing.family("gpt-4o-2024-08"), "gpt-4o-2024-08")
    assert.strictEqual(Pricing.family("x-2024-08-06-beta"), "x-2024-08-06-beta")
    const pricing = build({ table })
    assert.strictEqual(pricing.lookup("model-a-2025-01-31")!.model, "model-a")
    assert.isUndefined(pricing.lookup("model-b"))
  })

  it("models add to and replace the table's prices", () => {
    const pricing = build({
      table,
      models: { "model-a": { input: "1", output: "2" }, "model-b": { input: 3, output: 4 } }
    })
    assert.deepStrictEqual([pricing.lookup("model-a")!.input, pricing.lookup("model-b")!.output], [
      1_000_000n,
      4_000_000n
    ])
    assert.deepStrictEqual([...pricing.prices.keys()], ["model-a", "model-b"])
  })

  it.effect("an unknown model is PricingUnknown naming it; a configured fallback covers it, marked", () =>
    Effect.gen(function*() {
      const unknown = yield* Effect.flip(Pricing.cost("model-z", usage({ input: 10 })))
      assert.isTrue(unknown._tag === "PricingUnknown" && unknown.model === "model-z")
      const fallback = yield* Pricing.price("model-z").pipe(
        Effect.provide(Pricing.layer({ table, fallback: { input: 1, output: 3 } }))
      )
      assert.deepStrictEqual([fallback.model, fallback.fallback, fallback.output], ["model-z", true, 3_000_000n])
      // Asked twice, the answer is the same (the lookup caches it).
      const pricing = build({ table, fallback: { input: 1, output: 3 } })
      assert.strictEqual(pricing.lookup("model-z"), pricing.lookup("model-z"))
      assert.isFalse(pricing.lookup("model-a")!.fallback)
      assert.strictEqual(
        yield* Pricing.cost("model-z", usage({ output: 1_000_000 })).pipe(
          Effect.provide(Pricing.layer({ table, fallback: { input: 1, output: 3 } }))
        ),
        3_000_000_000_000n
      )
    }).pipe(Effect.provide(Pricing.layer({ table }))))

  it.effect("cost and price read the Pricing in context", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* Pricing.price("model-a")).input, 2_500_000n)
      assert.strictEqual(yield* Pricing.cost("model-a", usage({ input: 2, output: 1 }), "batch"), 7_500_000n)
      assert.strictEqual(yield* Pricing.cost("model-a", usage({ input: 2, output: 1 })), 15_000_000n)
    }).pipe(Effect.provide(Pricing.layer({ table }))))
})

describe("a bad price table names the field", () => {
  it("in the table, the models and the fallback", () => {
    const inTable = buildError({ table: { x: { input: "cheap", output: "1" } } })
    assert.deepStrictEqual([inTable.field, inTable.file, inTable.line], ["table.x.input", undefined, undefined])
    assert.match(inTable.message, /^invalid pricing at table\.x\.input: /)
    const inModels = buildError({ models: { x: { input: "1", output: "-2" } } })
    assert.strictEqual(inModels.field, "models.x.output")
    assert.match(inModels.reason, /must not be negative/)
    const inFallback = buildError({ fallback: { input: "1", output: "0.0000001" } })
    assert.strictEqual(inFallback.field, "fallback.output")
    assert.match(inFallback.reason, /at most 6 decimals/)
  })

  it("a model name that is empty or has spaces", () => {
    for (const name of ["", " ", "gpt 4", "gpt\t4"]) {
      const error = buildError({ models: { [name]: { input: 1, output: 1 } } })
      assert.strictEqual(error.field, `models.${name}`, JSON.stringify(name))
      assert.strictEqual(error.reason, "a model name must be non-empty, without spaces")
    }
    // The same rule does not apply to a provider's table.
    assert.isDefined(build({ table: { "a b": { input: 1, output: 1 } } }).lookup("a b"))
  })

  it("a batch price half of which is below a pico-dollar must be given explicitly", () => {
    // $0.000001 per 1M tokens is 1 pico-dollar a token: its half is not a whole pico-dollar.
    for (
      const [entry, field] of [
        [{ input: "0.000001", output: "2" }, "models.m.batchInput"],
        [{ input: "2", output: "0.000001" }, "models.m.batchOutput"],
        [{ input: "2", cachedInput: "0.000001", output: "2" }, "models.m.batchCachedInput"]
      ] as const
    ) {
      const error = buildError({ models: { m: entry } })
      assert.strictEqual(error.field, field)
      assert.match(error.reason, /half of the sync price is finer than 10\^-12 USD per token: give it explicitly/)
    }
    // Given explicitly, it is fine.
    const price = build({ models: { m: { input: "0.000001", batchInput: "0.000001", output: "2" } } }).lookup("m")!
    assert.strictEqual(price.batchInput, 1n)
  })
})

describe("a pricing file", () => {
  it("a bad fallback that decodes but cannot be priced names fallback and its line", () => {
    const error = failure(parse(`{
  "models": {},
  "fallback": {
    "input": "0.000001", "output": "2"
  }
}`))
    assert.deepStrictEqual([error.field, error.line], ["fallback.batchInput", 3])
  })

  it("a V8 message with a line and column (Node 22 and later) gives that line", () => {
    // Node 20's V8 gives only a position; later ones add "(line L column C)", which wins over the position.
    const text = Array.from({ length: 20 }, (_, i) => `line ${i + 1}`).join("\n")
    const parse22 = vi.spyOn(JSON, "parse").mockImplementation(() => {
      throw new SyntaxError("Unexpected token '}' in JSON at position 3 (line 12 column 15)")
    })
    try {
      const error = failure(Effect.runSyncExit(Pricing.parseFile("prices.json", text)))
      assert.strictEqual(error.line, 12)
    } finally {
      parse22.mockRestore()
    }
  })

  it("a bad value names the file, the line and the field", () => {
    const error = failure(parse(`{
  "models": {
    "gpt-4o": { "input": "2.50", "output": "10" },
    "acme": {
      "input": "cheap",
      "output": "1"
    }
  }
}`))
    assert.deepStrictEqual([error._tag, error.file, error.line, error.field], [
      "PricingConfigError",
      "prices.json",
      5,
      "models.acme.input"
    ])
    assert.match(error.message, /^prices\.json:5: invalid pricing at models\.acme\.input: /)
  })

  it("the line of a key is found literally: a dot in a model name is not a wildcard", () => {
    const error = failure(parse(`{"models": {
  "gpt-4x1": { "input": 1, "output": 1 },
  "gpt-4.1": { "input": 1, "output": "x" }
}}`))
    assert.deepStrictEqual([error.field, error.line], ["models.gpt-4.1.output", 3])
  })

  it("a price the decoded table refuses (half below a pico-dollar) names its line too", () => {
    const error = failure(parse(`{
  "models": {
    "m": {
      "input": "0.000001", "output": "2"
    }
  }
}`))
    assert.deepStrictEqual([error.field, error.line, error.file], ["models.m.batchInput", 3, "prices.json"])
  })

  it("a bad fallback and a bad root", () => {
    const fallback = failure(parse(`{\n"fallback": {\n"input": 1}\n}`))
    assert.deepStrictEqual([fallback.field, fallback.line], ["fallback.output", 2])
    const root = failure(parse(`[1, 2]`))
    assert.strictEqual(root.field, "")
    assert.match(root.message, /^prices\.json:1: invalid pricing at the root: /)
  })

  it("a JSON syntax error names its line (V8's position), or the last line when V8 gives none", () => {
    const comma = failure(parse(`{\n  "models": {\n    "a": { "input": 1, "output": 2 },,\n  }\n}`))
    assert.deepStrictEqual([comma.line, comma.field], [3, ""])
    assert.match(comma.reason, /^not JSON: /)
    assert.match(comma.message, /^prices\.json:3: invalid pricing at the root: not JSON: /)
    const cut = failure(parse(`{\n"models": {\n`))
    assert.strictEqual(cut.line, 3)
    const after = failure(parse(`{}\n\nx`))
    assert.strictEqual(after.line, 3)
    // V8 gives no position for these: the last line is named.
    assert.strictEqual(failure(parse(`{\n"a":\n tru}`)).line, 3)
    assert.strictEqual(failure(parse(``)).line, 1)
    // A raw newline inside a key is reported at the newline itself, which ends line 1.
    assert.strictEqual(failure(parse(`{"models": {"a\nb": 1}}`)).line, 1)
  })

  it("extends the options' table, and an empty file keeps it", () => {
    const pricing = Effect.runSync(
      Pricing.parseFile(
        "prices.json",
        JSON.stringify({
          models: { "model-a": { input: "2", output: 8, source: "contract" } },
          fallback: { input: 1, output: 1 }
        }),
        { table: { ...table, "model-b": { input: 1, output: 1 } } }
      )
    )
    const a = pricing.lookup("model-a")!
    assert.deepStrictEqual([a.input, a.cachedInput, a.source], [2_000_000n, 2_000_000n, "contract"])
    assert.strictEqual(pricing.lookup("model-b")!.output, 1_000_000n)
    assert.isTrue(pricing.lookup("anything")!.fallback)
    const empty = Effect.runSync(Pricing.parseFile("prices.json", "{}", { table }))
    assert.strictEqual(empty.lookup("model-a")!.input, 2_500_000n)
    assert.isUndefined(empty.lookup("anything"))
  })

  it.effect("layerFile reads the file; a missing file is PricingConfigError naming it", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-pricing-"))
      const file = Path.join(dir, "prices.json")
      Fs.writeFileSync(file, JSON.stringify({ models: { "acme-7b": { input: "0.000002", output: "0.000004" } } }))
      const read = (path: string) =>
        Effect.provide(Pricing.Pricing, Pricing.layerFile(path, { table }).pipe(Layer.provide(NodeFileSystem.layer)))
      const pricing = yield* read(file)
      assert.strictEqual(yield* pricing.cost("acme-7b", usage({ input: 1, output: 1 })), 6n)
      assert.strictEqual(pricing.lookup("model-a")!.input, 2_500_000n)
      Fs.rmSync(dir, { recursive: true })
      const error = yield* Effect.flip(read(file))
      assert.deepStrictEqual([error._tag, error.file, error.field, error.line], [
        "PricingConfigError",
        file,
        "",
        undefined
      ])
      assert.isTrue(error.message.startsWith(`${file}: invalid pricing at the root: `), error.message)
      assert.isAbove(error.reason.length, 0)
    }))
})
