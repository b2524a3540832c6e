/**
 * A model's answer, provider-neutral: text, tool calls, refusal, finish reason, usage, the
 * provider's request id and the rate-limit snapshot read from its headers (and whether usage was reported at all). Providers build these
 * as plain objects; the Schema documents the shape and serialises it.
 */
import * as Schema from "effect/Schema"
import { ToolCall } from "./LlmRequest.js"
import { Usage } from "./Usage.js"

/** Why generation stopped. */
export const FinishReason = Schema.Literal("stop", "length", "tool_calls", "content_filter", "refusal", "other")
export type FinishReason = typeof FinishReason.Type

/** The provider's rate-limit state after this request (`x-ratelimit-*` headers); resets in milliseconds. */
export const RateLimitSnapshot = Schema.Struct({
  limitRequests: Schema.optional(Schema.Number),
  remainingRequests: Schema.optional(Schema.Number),
  resetRequestsMs: Schema.optional(Schema.Number),
  limitTokens: Schema.optional(Schema.Number),
  remainingTokens: Schema.optional(Schema.Number),
  resetTokensMs: Schema.optional(Schema.Number)
}).annotations({ identifier: "RateLimitSnapshot" })
export type RateLimitSnapshot = typeof RateLimitSnapshot.Type

export const LlmResponse = Schema.Struct({
  /** The provider's id for the completion. */
  id: Schema.String,
  /** The model that answered (may be a dated snapshot of the requested one). */
  model: Schema.String,
  text: Schema.optional(Schema.String),
  toolCalls: Schema.Array(ToolCall),
  refusal: Schema.optional(Schema.String),
  finishReason: FinishReason,
  usage: Usage,
  /**
   * `true` when the provider reported no usage (some OpenAI-compatible servers omit it): `usage` is then zero, not
   * what was billed, and metering should charge the call's estimate.
   */
  usageMissing: Schema.optional(Schema.Boolean),
  requestId: Schema.optional(Schema.String),
  rateLimit: Schema.optional(RateLimitSnapshot)
}).annotations({ identifier: "LlmResponse" })
export type LlmResponse = typeof LlmResponse.Type
