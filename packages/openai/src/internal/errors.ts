/**
 * The one place where an OpenAI HTTP failure becomes an `LlmError`: status, `error.code` /
 * `error.type`, `x-should-retry` and the retry hints decide the tag; every text taken from the
 * provider or the transport is scrubbed of API keys first.
 *
 * Rules, in order:
 * 1. 429/403 (or any 4xx) whose `error.code` or `error.type` is `insufficient_quota` or a billing code → `QuotaExhausted`.
 *    Billing is decided by the body, so `x-should-retry` does not override it: retrying cannot restore credit.
 * 2. `x-should-retry: true` on a status that would not be retried → `ProviderUnavailable` (retryable, with any hint).
 *    `x-should-retry: false` on 408, 409, 429 or 5xx keeps the tag with `shouldRetry: false`: the request was not
 *    wrong, the provider is down or limiting and has said a retry will not help.
 * 3. 429 → `RateLimited`; 408, 409, 5xx → `ProviderUnavailable`; 401, 403 → `AuthenticationFailed`;
 *    other 4xx → `InvalidRequest` (field from `error.param`); anything else → `ProtocolError`.
 * The hint is `retry-after-ms` (milliseconds), then `retry-after` (seconds or an HTTP date).
 * A body that is not OpenAI's `{"error": {...}}` shape (a proxy's HTML page, Prism's problem+json, plain text) is kept
 * as the detail, scrubbed and cut to `maxDetail` characters; `error.param` and `x-request-id` are scrubbed too.
 */
import * as LlmError from "@keel/core/LlmError"
import * as Duration from "effect/Duration"
import * as Redacted from "effect/Redacted"

/** What every mapped error is tied to. */
export interface Context {
  readonly model?: string | undefined
  /** The configured key, scrubbed verbatim even when it does not look like an OpenAI key. */
  readonly apiKey?: Redacted.Redacted | undefined
}

/** `error.code` values that mean billing, not pacing [OpenAI help center 6614457]. */
const billingCodes: ReadonlySet<string> = new Set([
  "insufficient_quota",
  "credit_balance_exhausted",
  "organization_spend_limit_exceeded",
  "project_spend_limit_exceeded",
  "organization_usage_limit_exceeded"
])

const keyLike = /\bsk-[A-Za-z0-9_-]{6,}/g
const bearer = /\b(Bearer\s+)[^\s"',;]+/gi

/** Removes anything that looks like an API key (`sk-…`, `Bearer …`) and the configured key itself. */
export const scrub = (text: string, apiKey?: Redacted.Redacted | undefined): string => {
  let out = text
  if (apiKey !== undefined) {
    const key = Redacted.value(apiKey)
    if (key.length > 0 && out.includes(key)) out = out.split(key).join("[redacted]")
  }
  return out.replace(keyLike, "sk-[redacted]").replace(bearer, "$1[redacted]")
}

/** Response headers by lower-case name. */
export type Headers = Readonly<Record<string, string | undefined>>

/**
 * The provider's minimum wait: `retry-after-ms` (float milliseconds), else `retry-after` as seconds or as
 * an HTTP date relative to `now`. Missing, negative or unreadable values give `undefined`.
 */
export const retryAfter = (headers: Headers, now: number): Duration.Duration | undefined => {
  const ms = headers["retry-after-ms"]
  if (ms !== undefined && ms.trim() !== "") {
    const value = Number(ms)
    if (Number.isFinite(value) && value >= 0) return Duration.millis(value)
  }
  const after = headers["retry-after"]
  if (after === undefined || after.trim() === "") return undefined
  const seconds = Number(after)
  if (Number.isFinite(seconds)) return seconds >= 0 ? Duration.millis(seconds * 1000) : undefined
  const date = Date.parse(after)
  return Number.isNaN(date) ? undefined : Duration.millis(Math.max(0, date - now))
}

/** The `error` object of an OpenAI error body, as far as it could be read. */
interface ErrorBody {
  readonly message?: string | undefined
  readonly type?: string | undefined
  readonly code?: string | undefined
  readonly param?: string | undefined
}

const stringField = (o: Record<string, unknown>, key: string): string | undefined => {
  const value = o[key]
  return typeof value === "string" ? value : typeof value === "number" ? String(value) : undefined
}

/** The longest provider text an error keeps (after scrubbing), so a large HTML page does not fill the logs. */
export const maxDetail = 500

/** Cuts a text to `maxDetail` characters. */
export const cut = (text: string): string => text.length > maxDetail ? `${text.slice(0, maxDetail)}…` : text

/** The readable text of a non-JSON body: an HTML page without its tags, scripts and styles; whitespace collapsed. */
const plainText = (text: string): string => {
  const trimmed = text.trim()
  const html = /^<(!doctype|html|head|body|\?xml|[a-z]+[\s>])/i.test(trimmed)
    ? trimmed.replace(/<(script|style)\b[\s\S]*?<\/\1\s*>/gi, " ").replace(/<[^>]*>/g, " ")
    : trimmed
  return html.replace(/\s+/g, " ").trim()
}

/**
 * Reads `{"error": {message, type, param, code}}`. Any other body (JSON of another shape, plain text, HTML) yields its
 * text as the message, uncut: the caller scrubs, then cuts.
 */
export const parseErrorBody = (text: string): ErrorBody => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    const plain = plainText(text)
    return plain === "" ? {} : { message: plain }
  }
  const error = typeof json === "object" && json !== null ? (json as Record<string, unknown>).error : undefined
  if (typeof error === "string") return { message: error }
  if (typeof error !== "object" || error === null) {
    const compact = JSON.stringify(json)
    return compact === "{}" || compact === "null" || compact === "\"\"" ? {} : { message: compact }
  }
  const o = error as Record<string, unknown>
  return {
    message: stringField(o, "message") ?? JSON.stringify(o),
    type: stringField(o, "type"),
    code: stringField(o, "code"),
    param: stringField(o, "param")
  }
}

/** A text from the provider as an error may keep it: scrubbed, then cut (so no cut can split a key past the scrub). */
const keep = (text: string | undefined, apiKey: Redacted.Redacted | undefined): string | undefined =>
  text === undefined ? undefined : cut(scrub(text, apiKey))

/** The errors an HTTP answer can map to. */
export type HttpError =
  | LlmError.RateLimited
  | LlmError.QuotaExhausted
  | LlmError.ProviderUnavailable
  | LlmError.InvalidRequest
  | LlmError.AuthenticationFailed
  | LlmError.ProtocolError

const retryableStatus = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500

/** Maps a non-2xx answer to the `LlmError` a caller acts on. `now` (epoch ms) resolves an HTTP-date `retry-after`. */
export const fromResponse = (
  context: Context,
  response: { readonly status: number; readonly headers: Headers; readonly body: string },
  now: number
): HttpError => {
  const { headers, status } = response
  const body = parseErrorBody(response.body)
  const model = context.model
  const requestId = keep(headers["x-request-id"], context.apiKey)
  const detail = keep(body.message, context.apiKey)
  const field = keep(body.param, context.apiKey)
  const billing = body.code !== undefined && billingCodes.has(body.code)
    ? body.code
    : body.type !== undefined && billingCodes.has(body.type)
    ? body.type
    : undefined

  if (billing !== undefined && status >= 400 && status < 500) {
    return new LlmError.QuotaExhausted({ model, requestId, code: billing, detail })
  }

  const shouldRetry = headers["x-should-retry"]
  if (shouldRetry === "true" && !retryableStatus(status)) {
    return new LlmError.ProviderUnavailable({ model, requestId, status, retryAfter: retryAfter(headers, now), detail })
  }
  if (shouldRetry === "false" && status === 429) {
    return new LlmError.RateLimited({
      model,
      requestId,
      retryAfter: retryAfter(headers, now),
      detail,
      shouldRetry: false
    })
  }
  if (shouldRetry === "false" && retryableStatus(status)) {
    return new LlmError.ProviderUnavailable({
      model,
      requestId,
      status,
      retryAfter: retryAfter(headers, now),
      detail,
      shouldRetry: false
    })
  }
  if (status === 429) {
    return new LlmError.RateLimited({ model, requestId, retryAfter: retryAfter(headers, now), detail })
  }
  if (retryableStatus(status)) {
    return new LlmError.ProviderUnavailable({ model, requestId, status, retryAfter: retryAfter(headers, now), detail })
  }
  if (status === 401 || status === 403) {
    return new LlmError.AuthenticationFailed({ model, requestId, status, detail })
  }
  if (status >= 400 && status < 500) {
    return new LlmError.InvalidRequest({
      model,
      requestId,
      status,
      field,
      reason: detail ?? `HTTP ${status}`
    })
  }
  return new LlmError.ProtocolError({
    model,
    requestId,
    reason: `unexpected HTTP status ${status}${detail === undefined ? "" : `: ${detail}`}`
  })
}

/** The text of an unknown failure cause, with its error code when it has one (`ECONNRESET: socket hang up`). */
const describe = (cause: unknown): string => {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code
    const inner = (cause as { cause?: unknown }).cause
    const own = typeof code === "string" ? `${code}: ${cause.message}` : cause.message
    return inner === undefined || inner === cause ? own : `${own} (${describe(inner)})`
  }
  return String(cause)
}

/**
 * A connection that failed before the answer arrived, or (`afterResponse`) while a 2xx answer's body was arriving:
 * then the provider may have billed the attempt.
 */
export const transport = (
  context: Context,
  cause: unknown,
  requestId?: string,
  afterResponse?: boolean
): LlmError.Transport =>
  new LlmError.Transport({
    model: context.model,
    requestId: keep(requestId, context.apiKey),
    reason: keep(describe(cause), context.apiKey)!,
    ...(afterResponse === true ? { afterResponse } : undefined)
  })

/** A 2xx answer whose body is not the documented shape. */
export const protocol = (context: Context, reason: string, requestId?: string): LlmError.ProtocolError =>
  new LlmError.ProtocolError({
    model: context.model,
    requestId: keep(requestId, context.apiKey),
    reason: keep(reason, context.apiKey)!
  })

/** A request body that cannot be written as JSON (a cycle or a `bigint` in a schema): keel's fault, not retried. */
export const invalidBody = (context: Context, cause: unknown): LlmError.InvalidRequest =>
  new LlmError.InvalidRequest({
    model: context.model,
    field: "request",
    reason: `the request cannot be serialised to JSON: ${scrub(describe(cause), context.apiKey)}`
  })

/** The client's `onRequest` hook threw: a fault in the caller's code, so not retried; nothing was sent. */
export const hookFailed = (context: Context, cause: unknown): LlmError.InvalidRequest =>
  new LlmError.InvalidRequest({
    model: context.model,
    field: "onRequest",
    reason: `the onRequest hook threw, so nothing was sent: ${keep(describe(cause), context.apiKey)}`
  })
