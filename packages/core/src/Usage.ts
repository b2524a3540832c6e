/**
 * Token usage of one model answer, as billed. `cachedInputTokens` is part of `inputTokens`, and
 * `reasoningTokens` is part of `outputTokens` (billed as output), as OpenAI reports them.
 */
import * as Schema from "effect/Schema"

const Count = Schema.Int.pipe(Schema.nonNegative())

export const Usage = Schema.Struct({
  inputTokens: Count,
  cachedInputTokens: Count,
  outputTokens: Count,
  reasoningTokens: Count
}).annotations({ identifier: "Usage" })
export type Usage = typeof Usage.Type

/** No tokens: the identity of `add`. */
export const empty: Usage = { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0, reasoningTokens: 0 }

/** Sums two usages, e.g. the attempts of one call. */
export const add = (self: Usage, that: Usage): Usage => ({
  inputTokens: self.inputTokens + that.inputTokens,
  cachedInputTokens: self.cachedInputTokens + that.cachedInputTokens,
  outputTokens: self.outputTokens + that.outputTokens,
  reasoningTokens: self.reasoningTokens + that.reasoningTokens
})
