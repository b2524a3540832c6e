/**
 * Literal prices for core's tests (USD per 1M tokens, as OpenAI publishes them for these models), so
 * expected costs do not come from the table under test. `@keel/openai` ships the real table.
 */
import * as Pricing from "../../src/Pricing.js"

export const table: Readonly<Record<string, Pricing.PriceInput>> = {
  "gpt-4o": { input: "2.50", cachedInput: "1.25", output: "10.00", maxOutputTokens: 16_384 },
  "gpt-4o-mini": { input: "0.15", cachedInput: "0.075", output: "0.60", maxOutputTokens: 16_384 },
  "gpt-4.1": { input: "2.00", cachedInput: "0.50", output: "8.00", maxOutputTokens: 32_768 },
  "gpt-4.1-mini": { input: "0.40", cachedInput: "0.10", output: "1.60", maxOutputTokens: 32_768 },
  "gpt-4.1-nano": { input: "0.10", cachedInput: "0.025", output: "0.40", maxOutputTokens: 32_768 },
  "o4-mini": { input: "1.10", cachedInput: "0.275", output: "4.40", maxOutputTokens: 100_000 },
  "gpt-5": { input: "1.25", cachedInput: "0.125", output: "10.00", maxOutputTokens: 128_000 },
  "gpt-5-nano": { input: "0.05", cachedInput: "0.005", output: "0.40", maxOutputTokens: 128_000 }
}

/** `Pricing` over `table`, extended by `options`. */
export const layer = (options: Omit<Pricing.Options, "table"> = {}) => Pricing.layer({ ...options, table })
