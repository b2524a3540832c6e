/**
 * OpenAI's prices, as a table for core's `Pricing`: `OpenAiPricing.layer()` is `Pricing` over this
 * table, extended or overridden like any other (`models`, `fallback`, or a JSON file with
 * `layerFile`).
 *
 * The table comes from OpenAI's published prices as gathered on 2026-11-29: primary source
 * @pydantic/genai-prices 0.1.8 (its data cites platform.openai.com/docs/pricing), cross-checked as
 * noted per row. Batch prices are 50 % of the standard ones (help.openai.com Batch API FAQ); whether
 * cached input is discounted again in batch was not confirmed, so batch cached input is taken as
 * 50 % of cached input. Long-context tiers (gpt-5.4/5.5 above 272K tokens) and o3's pre-2025-06-10
 * prices are not modelled: override them from a file when they matter.
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Pricing from "@keel/core/Pricing"
import type * as Layer from "effect/Layer"

const withDate = (table: Record<string, Pricing.PriceInput>): Record<string, Pricing.PriceInput> =>
  Object.fromEntries(Object.entries(table).map(([model, price]) => [model, { asOf: "2026-11-29", ...price }]))

const facts = "OpenAI API facts §5"
const genai = `@pydantic/genai-prices 0.1.8 (${facts})`

/** USD per 1M tokens as published, read 2026-11-29; batch = 50 % (Batch API FAQ). */
export const prices: Readonly<Record<string, Pricing.PriceInput>> = withDate({
  "gpt-4o": { input: "2.50", cachedInput: "1.25", output: "10.00", maxOutputTokens: 16_384, source: genai },
  "gpt-4o-mini": { input: "0.15", cachedInput: "0.075", output: "0.60", maxOutputTokens: 16_384, source: genai },
  "gpt-4.1": { input: "2.00", cachedInput: "0.50", output: "8.00", maxOutputTokens: 32_768, source: genai },
  "gpt-4.1-mini": { input: "0.40", cachedInput: "0.10", output: "1.60", maxOutputTokens: 32_768, source: genai },
  "gpt-4.1-nano": { input: "0.10", cachedInput: "0.025", output: "0.40", maxOutputTokens: 32_768, source: genai },
  "o3": {
    input: "2.00",
    cachedInput: "0.50",
    output: "8.00",
    maxOutputTokens: 100_000,
    source: `${genai}, from 2025-06-10`
  },
  "o4-mini": { input: "1.10", cachedInput: "0.275", output: "4.40", maxOutputTokens: 100_000, source: genai },
  "gpt-5": { input: "1.25", cachedInput: "0.125", output: "10.00", maxOutputTokens: 128_000, source: genai },
  "gpt-5.1": { input: "1.25", cachedInput: "0.125", output: "10.00", maxOutputTokens: 128_000, source: genai },
  "gpt-5-mini": { input: "0.25", cachedInput: "0.025", output: "2.00", maxOutputTokens: 128_000, source: genai },
  "gpt-5-nano": { input: "0.05", cachedInput: "0.005", output: "0.40", maxOutputTokens: 128_000, source: genai },
  "gpt-5.2": {
    input: "1.75",
    cachedInput: "0.175",
    output: "14.00",
    maxOutputTokens: 128_000,
    source: `github/docs models-and-pricing.yml (${facts})`
  },
  "gpt-5.4": {
    input: "2.50",
    cachedInput: "0.25",
    output: "15.00",
    maxOutputTokens: 128_000,
    source: `api-evangelist yml, context up to 272K (${facts})`
  },
  "gpt-5.4-mini": {
    input: "0.75",
    cachedInput: "0.075",
    output: "4.50",
    maxOutputTokens: 128_000,
    source: `api-evangelist yml (${facts})`
  },
  "gpt-5.4-nano": {
    input: "0.20",
    cachedInput: "0.02",
    output: "1.25",
    maxOutputTokens: 128_000,
    source: `api-evangelist yml (${facts})`
  },
  "gpt-5.5": {
    input: "5.00",
    cachedInput: "0.50",
    output: "30.00",
    maxOutputTokens: 128_000,
    source: `api-evangelist yml, context up to 272K (${facts})`
  }
})

/** `Pricing` over OpenAI's table, extended or overridden by the options. */
export const layer = (
  options: Omit<Pricing.Options, "table"> = {}
): Layer.Layer<Pricing.Pricing, Pricing.PricingConfigError> => Pricing.layer({ ...options, table: prices })

/** `Pricing` over OpenAI's table, extended or overridden by a JSON pricing file. */
export const layerFile = (
  file: string
): Layer.Layer<Pricing.Pricing, Pricing.PricingConfigError, FileSystem.FileSystem> =>
  Pricing.layerFile(file, { table: prices })
