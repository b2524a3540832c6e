/**
 * The last step of a chat request: what is sent back. A completion body built from the plan (tool
 * call, JSON content or text, spoiled for the `invalid_output`, `truncated` and `refusal` faults),
 * and OpenAI's error answers for limits, injected faults, outages and overload.
 */
import { type Decision as LimitDecision, goDuration, type Snapshot } from "./limits.js"
import { hashString, randomId, type Rng } from "./random.js"
import { paragraph, words } from "./text.js"
import type { CountTokens } from "./tokens.js"
import { json, type Prepared } from "./validate.js"

/** An error answer: the body's fields and extra headers. */
export interface ErrorAnswer {
  readonly status: number
  readonly message: string
  readonly type: string
  readonly param: string | null
  readonly code: string | null
  readonly headers: Record<string, string>
}

export type Mode = "ok" | "invalid_output" | "truncated" | "refusal"

const REFUSAL = "I'm sorry, but I can't help with that request."

/** The `x-ratelimit-*` headers of a snapshot. */
export const rateHeaders = (s: Snapshot): Record<string, string> => ({
  "x-ratelimit-limit-requests": String(s.limitRequests),
  "x-ratelimit-limit-tokens": String(s.limitTokens),
  "x-ratelimit-remaining-requests": String(s.remainingRequests),
  "x-ratelimit-remaining-tokens": String(s.remainingTokens),
  "x-ratelimit-reset-requests": goDuration(s.resetRequestsMs),
  "x-ratelimit-reset-tokens": goDuration(s.resetTokensMs)
})

const retryHeaders = (ms: number): Record<string, string> => ({
  "retry-after": String(Math.max(1, Math.ceil(ms / 1000))),
  "retry-after-ms": String(ms)
})

const SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
const OVERLOADED = "The engine is currently overloaded, please try again later."

/** An error of a 5xx status as OpenAI answers it. */
export const serverError = (status: number, rate: Record<string, string> = {}): ErrorAnswer =>
  status === 502
    ? { status, message: "Bad gateway.", type: "cf_bad_gateway", param: null, code: null, headers: rate }
    : status === 503
    ? { status, message: OVERLOADED, type: "server_error", param: null, code: null, headers: rate }
    : { status, message: SERVER_ERROR, type: "server_error", param: null, code: null, headers: rate }

/** The 503 past the serving capacity. */
export const overloaded: ErrorAnswer = {
  status: 503,
  message: "The server is overloaded: it serves a limited number of requests per second. Please try again later.",
  type: "server_error",
  param: null,
  code: null,
  headers: {}
}

/** The 429 of a model's requests/min or tokens/min limit. */
export const limitExceeded = (model: string, decision: Extract<LimitDecision, { ok: false }>): ErrorAnswer => {
  const s = decision.snapshot
  const rate = rateHeaders(s)
  const unit = decision.kind === "requests" ? "requests per min (RPM)" : "tokens per min (TPM)"
  const limit = decision.kind === "requests" ? s.limitRequests : s.limitTokens
  if (decision.retryAfterMs === undefined) {
    return {
      status: 429,
      message:
        `Request too large for ${model} in organization org-simulator on ${unit}: Limit ${limit}, Requested more. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.`,
      type: decision.kind,
      param: null,
      code: "rate_limit_exceeded",
      headers: rate
    }
  }
  const ms = decision.retryAfterMs
  return {
    status: 429,
    message:
      `Rate limit reached for ${model} in organization org-simulator on ${unit}: Limit ${limit}, Used ${decision.used}, Requested 1. Please try again in ${
        goDuration(ms)
      }. Visit https://platform.openai.com/account/rate-limits to learn more.`,
    type: decision.kind,
    param: null,
    code: "rate_limit_exceeded",
    headers: { ...rate, ...retryHeaders(ms) }
  }
}

/** The error answer of an injected `rate_limit`, `quota`, `500`, `502` or `503` fault. */
export const faultError = (
  fault: "rate_limit" | "quota" | "500" | "502" | "503",
  model: string,
  snapshot: Snapshot,
  retryAfterMs: number
): ErrorAnswer => {
  const rate = rateHeaders(snapshot)
  switch (fault) {
    case "rate_limit":
      return {
        status: 429,
        message:
          `Rate limit reached for ${model} in organization org-simulator on requests per min (RPM): Limit ${snapshot.limitRequests}, Used ${snapshot.limitRequests}, Requested 1. Please try again in ${
            goDuration(retryAfterMs)
          }. Visit https://platform.openai.com/account/rate-limits to learn more.`,
        type: "requests",
        param: null,
        code: "rate_limit_exceeded",
        headers: {
          ...rate,
          "x-ratelimit-remaining-requests": "0",
          "x-ratelimit-reset-requests": goDuration(retryAfterMs),
          ...retryHeaders(retryAfterMs)
        }
      }
    case "quota":
      return {
        status: 429,
        message:
          "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        type: "insufficient_quota",
        param: null,
        code: "insufficient_quota",
        headers: rate
      }
    default:
      return serverError(Number(fault), rate)
  }
}

/** Builds the completion body. `rng` drives the content (stable per request), `attempt` the ids. */
export const completion = (
  p: Prepared,
  mode: Mode,
  rng: Rng,
  attempt: Rng,
  created: number,
  count: CountTokens
): { readonly body: string; readonly completionTokens: number } => {
  const choices: Array<unknown> = []
  let completionTokens = 0
  let reasoningTokens = 0
  for (let index = 0; index < p.n; index++) {
    const reasoning = p.reasoning ? 64 * rng.between(1, 8) : 0
    let visibleBudget = p.maxTokens === undefined ? Infinity : p.maxTokens - reasoning
    let choiceReasoning = reasoning
    if (visibleBudget < 0) {
      choiceReasoning = p.maxTokens!
      visibleBudget = 0
    }
    reasoningTokens += choiceReasoning
    if (mode === "refusal") {
      completionTokens += choiceReasoning + count(REFUSAL)
      choices.push({
        index,
        message: { role: "assistant", content: null, refusal: REFUSAL, annotations: [] },
        finish_reason: "stop",
        logprobs: null
      })
      continue
    }
    const plan = p.plan
    let text: string
    let isJson = true
    switch (plan._tag) {
      case "Tool":
      case "Json": {
        let value = plan.schema.generate(rng)
        if (mode === "invalid_output") value = plan.schema.spoil(value, rng) ?? value
        text = json(value)
        break
      }
      case "JsonObject":
        text = json({ answer: words(rng, rng.between(3, 12)) })
        break
      case "Text":
        text = paragraph(rng)
        isJson = false
        break
    }
    let tokens = count(text)
    let cut = false
    if (mode === "truncated") {
      const keep = Math.max(1, Math.floor(text.length * (0.3 + 0.4 * rng.next())))
      text = text.slice(0, isJson ? Math.min(keep, text.length - 1) : keep)
      tokens = p.maxTokens !== undefined ? Math.max(0, visibleBudget) : count(text)
      cut = true
    } else if (tokens > visibleBudget) {
      text = text.slice(0, Math.floor((text.length * visibleBudget) / tokens))
      tokens = visibleBudget
      cut = true
    }
    completionTokens += choiceReasoning + tokens
    if (plan._tag === "Tool") {
      completionTokens += 7 + count(plan.name)
      choices.push({
        index,
        message: {
          role: "assistant",
          content: null,
          refusal: null,
          tool_calls: [{
            id: "call_" + randomId(attempt, 24),
            type: "function",
            function: { name: plan.name, arguments: text }
          }],
          annotations: []
        },
        finish_reason: cut ? "length" : plan.named ? "stop" : "tool_calls",
        logprobs: null
      })
    } else {
      choices.push({
        index,
        message: { role: "assistant", content: text, refusal: null, annotations: [] },
        finish_reason: cut ? "length" : "stop",
        logprobs: null
      })
    }
  }
  const usage = {
    prompt_tokens: p.promptTokens,
    completion_tokens: completionTokens,
    total_tokens: p.promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: p.cachedTokens, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: reasoningTokens,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0
    }
  }
  const body = json({
    id: "chatcmpl-" + randomId(attempt, 29),
    object: "chat.completion",
    created,
    model: p.model,
    choices,
    usage,
    service_tier: "default",
    system_fingerprint: "fp_" + hashString(p.model).toString(16).padStart(8, "0").slice(0, 8) + "sim"
  })
  return { body, completionTokens }
}
