/**
 * The errors a model call can end in. Each is a `Schema.TaggedError` with the fields a caller acts
 * on and a computed message; whether to retry is a property of the error (`retryable`), never of
 * the call site. No error carries an API key: provider packages scrub text at the edge.
 */
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"

/** Fields every error may carry to tie it to a provider call. */
const context = {
  model: Schema.optional(Schema.String),
  requestId: Schema.optional(Schema.String)
}

const suffix = (self: { readonly model?: string | undefined; readonly requestId?: string | undefined }) =>
  (self.model === undefined ? "" : ` (model ${self.model})`) +
  (self.requestId === undefined ? "" : ` [request ${self.requestId}]`)

/**
 * 429 rate limit: retryable, after at least `retryAfter` when the provider gave a hint, unless the
 * provider said not to (`x-should-retry: false`, kept as `shouldRetry: false`).
 */
export class RateLimited extends Schema.TaggedError<RateLimited>("@keel/core/LlmError/RateLimited")("RateLimited", {
  ...context,
  retryAfter: Schema.optional(Schema.DurationFromMillis),
  detail: Schema.optional(Schema.String),
  shouldRetry: Schema.optional(Schema.Boolean)
}) {
  get retryable() {
    return this.shouldRetry ?? true
  }
  override get message() {
    const hint = this.retryAfter === undefined ? "" : `; retry after ${Duration.format(this.retryAfter)}`
    return `Rate limited by the provider${hint}${this.detail === undefined ? "" : `: ${this.detail}`}${suffix(this)}`
  }
}

/** Out of credits or over a spend limit: retrying cannot help, so it is attempted once. */
export class QuotaExhausted
  extends Schema.TaggedError<QuotaExhausted>("@keel/core/LlmError/QuotaExhausted")("QuotaExhausted", {
    ...context,
    code: Schema.String,
    detail: Schema.optional(Schema.String)
  })
{
  get retryable() {
    return false
  }
  override get message() {
    return `Provider quota exhausted (${this.code}): check the plan and billing${suffix(this)}`
  }
}

/**
 * 5xx, 408 or 409: the provider could not answer now. Retryable unless the provider said not to
 * (`x-should-retry: false`, kept as `shouldRetry: false`).
 */
export class ProviderUnavailable extends Schema.TaggedError<ProviderUnavailable>(
  "@keel/core/LlmError/ProviderUnavailable"
)("ProviderUnavailable", {
  ...context,
  status: Schema.Number,
  retryAfter: Schema.optional(Schema.DurationFromMillis),
  detail: Schema.optional(Schema.String),
  shouldRetry: Schema.optional(Schema.Boolean)
}) {
  get retryable() {
    return this.shouldRetry ?? true
  }
  override get message() {
    return `Provider unavailable (HTTP ${this.status})${this.detail === undefined ? "" : `: ${this.detail}`}${
      suffix(this)
    }`
  }
}

/** An attempt took longer than allowed (retryable), or the whole call reached its deadline (final). */
export class Timeout extends Schema.TaggedError<Timeout>("@keel/core/LlmError/Timeout")("Timeout", {
  ...context,
  after: Schema.DurationFromMillis,
  /** Which pipeline level ran out of time: one attempt, or the whole call with its retries. */
  level: Schema.Literal("attempt", "call")
}) {
  get retryable() {
    return this.level === "attempt"
  }
  override get message() {
    return `The ${this.level} timed out after ${Duration.format(this.after)}${suffix(this)}`
  }
}

/**
 * The connection failed: before a response arrived (refused, reset, DNS), or, with `afterResponse`,
 * while its body was arriving, when the provider had answered and may have billed the attempt.
 */
export class Transport extends Schema.TaggedError<Transport>("@keel/core/LlmError/Transport")("Transport", {
  ...context,
  reason: Schema.String,
  afterResponse: Schema.optional(Schema.Boolean)
}) {
  get retryable() {
    return true
  }
  override get message() {
    return `Transport failure: ${this.reason}${suffix(this)}`
  }
}

/** The provider answered 2xx with a body that is not the documented shape (not JSON, missing fields). */
export class ProtocolError extends Schema.TaggedError<ProtocolError>("@keel/core/LlmError/ProtocolError")(
  "ProtocolError",
  { ...context, reason: Schema.String }
) {
  get retryable() {
    return true
  }
  override get message() {
    return `The provider's response could not be read: ${this.reason}${suffix(this)}`
  }
}

/** The request is wrong (4xx, or rejected by keel before sending): fix it, do not retry. */
export class InvalidRequest
  extends Schema.TaggedError<InvalidRequest>("@keel/core/LlmError/InvalidRequest")("InvalidRequest", {
    ...context,
    field: Schema.optional(Schema.String),
    reason: Schema.String,
    status: Schema.optional(Schema.Number)
  })
{
  get retryable() {
    return false
  }
  override get message() {
    return `Invalid request${this.field === undefined ? "" : ` at ${this.field}`}: ${this.reason}${suffix(this)}`
  }
}

/** 401/403: the key is missing, wrong or lacks permission. */
export class AuthenticationFailed extends Schema.TaggedError<AuthenticationFailed>(
  "@keel/core/LlmError/AuthenticationFailed"
)("AuthenticationFailed", {
  ...context,
  status: Schema.Number,
  detail: Schema.optional(Schema.String)
}) {
  get retryable() {
    return false
  }
  override get message() {
    return `Authentication failed (HTTP ${this.status}): check the API key and its permissions${suffix(this)}`
  }
}

/** The model declined to answer. */
export class Refused extends Schema.TaggedError<Refused>("@keel/core/LlmError/Refused")("Refused", {
  ...context,
  refusal: Schema.String
}) {
  get retryable() {
    return false
  }
  override get message() {
    return `The model refused: ${this.refusal}${suffix(this)}`
  }
}

/** The answer stopped at the output token limit (`finish_reason: "length"`); its text is never parsed. */
export class Truncated extends Schema.TaggedError<Truncated>("@keel/core/LlmError/Truncated")("Truncated", {
  ...context,
  maxOutputTokens: Schema.optional(Schema.Number),
  outputTokens: Schema.Number
}) {
  get retryable() {
    return false
  }
  override get message() {
    return `The answer was cut at ${this.outputTokens} output tokens${
      this.maxOutputTokens === undefined ? "" : ` (limit ${this.maxOutputTokens})`
    }: raise maxOutputTokens or shorten the task${suffix(this)}`
  }
}

/** The model's output did not decode with the task's Schema. */
export class OutputInvalid
  extends Schema.TaggedError<OutputInvalid>("@keel/core/LlmError/OutputInvalid")("OutputInvalid", {
    ...context,
    reason: Schema.String,
    path: Schema.String,
    raw: Schema.String
  })
{
  get retryable() {
    return false
  }
  override get message() {
    return `The model's output is invalid at ${this.path === "" ? "the root" : this.path}: ${this.reason}${
      suffix(this)
    }`
  }
}

/** Reserving the call's worst-case cost would take a budget scope over its limit. Amounts are USD decimals. */
export class BudgetExceeded
  extends Schema.TaggedError<BudgetExceeded>("@keel/core/LlmError/BudgetExceeded")("BudgetExceeded", {
    ...context,
    scope: Schema.String,
    window: Schema.String,
    limit: Schema.String,
    spent: Schema.String,
    reserved: Schema.String,
    requested: Schema.String
  })
{
  get retryable() {
    return false
  }
  override get message() {
    return `Budget ${this.scope} (${this.window}) would be exceeded: limit $${this.limit}, spent $${this.spent}, reserved $${this.reserved}, requested $${this.requested}`
  }
}

/**
 * The budget could not be checked or kept (its store failed, or the call's reservation was reclaimed
 * after its lease ran out): the call fails closed, and nothing more is sent.
 */
export class BudgetUnavailable
  extends Schema.TaggedError<BudgetUnavailable>("@keel/core/LlmError/BudgetUnavailable")("BudgetUnavailable", {
    ...context,
    operation: Schema.String,
    reason: Schema.String
  })
{
  /** Not retried by the pipeline (nothing goes out unbudgeted); the caller may run the call again later. */
  get retryable() {
    return false
  }
  override get message() {
    return `Budget unavailable (${this.operation}): ${this.reason}; nothing was sent past this point${suffix(this)}`
  }
}

/** No price is known for the model, so its cost cannot be computed or reserved. */
export class PricingUnknown
  extends Schema.TaggedError<PricingUnknown>("@keel/core/LlmError/PricingUnknown")("PricingUnknown", {
    model: Schema.String
  })
{
  get retryable() {
    return false
  }
  override get message() {
    return `No price is known for model "${this.model}": add it to the pricing file or configure a fallback price`
  }
}

/** The model's circuit breaker is open after repeated failures; a fallback model may take the call. */
export class CircuitOpen extends Schema.TaggedError<CircuitOpen>("@keel/core/LlmError/CircuitOpen")("CircuitOpen", {
  model: Schema.String,
  retryAt: Schema.optional(Schema.DateTimeUtc)
}) {
  get retryable() {
    return false
  }
  override get message() {
    return `The circuit for model ${this.model} is open after repeated failures`
  }
}

/** Every error a model call can end in. */
export const LlmError = Schema.Union(
  RateLimited,
  QuotaExhausted,
  ProviderUnavailable,
  Timeout,
  Transport,
  ProtocolError,
  InvalidRequest,
  AuthenticationFailed,
  Refused,
  Truncated,
  OutputInvalid,
  BudgetExceeded,
  BudgetUnavailable,
  PricingUnknown,
  CircuitOpen
)
export type LlmError = typeof LlmError.Type

const members: ReadonlyArray<new(...args: Array<any>) => unknown> = LlmError.members

/** Whether a value is one of the `LlmError` family: an instance of one of the union's classes. */
export const isLlmError = (u: unknown): u is LlmError =>
  typeof u === "object" && u !== null && "_tag" in u && members.some((member) => u instanceof member)

/** Whether retrying can help: a property of the error, not of the call site. */
export const isRetryable = (error: LlmError): boolean => error.retryable

/** The provider's minimum wait before a retry, when it gave one. */
export const retryAfter = (error: LlmError): Duration.Duration | undefined =>
  error._tag === "RateLimited" || error._tag === "ProviderUnavailable" ? error.retryAfter : undefined

/**
 * Whether an attempt that failed with this error may have been billed with no usage to show for it:
 * it timed out after the request may have been sent, the answer's body was cut, or the provider
 * answered with a body that could not be read. The budget charges such an attempt at its estimate.
 */
export const mayHaveBeenBilled = (error: LlmError): boolean =>
  error._tag === "Timeout" || error._tag === "ProtocolError" ||
  (error._tag === "Transport" && error.afterResponse === true)
