/**
 * The hot-path reader of a Chat Completions answer: one `JSON.parse`, then a hand-written check of
 * the fields keel uses, in one pass, building the result as it goes; a failure names the first bad
 * field by its dotted path (`choices.0.message.tool_calls.0.function.name must be a string`).
 * Measured against `JSON.parse` + an Effect Schema decoder built once for the same shape: 3.8 µs
 * against 9.0 µs per answer (see BENCHMARKS.md, "OpenAI client"), so the check is written by hand.
 * `usage` may be absent or `null` (the spec marks it optional; some compatible servers omit it): the result then
 * has no `usage`, and the caller says so.
 */
import type * as OpenAiClient from "../OpenAiClient.js"

/** Thrown (and caught in `decode`) with the dotted path and what is wrong. */
class Bad {
  constructor(readonly path: string, readonly expected: string) {}
}

type Json = Record<string, unknown>

const object = (value: unknown, path: string): Json => {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Json
  throw new Bad(path, "an object")
}
const string = (value: unknown, path: string): string => {
  if (typeof value === "string") return value
  throw new Bad(path, "a string")
}
const nullableString = (value: unknown, path: string): string | null | undefined => {
  if (value === undefined || value === null || typeof value === "string") return value
  throw new Bad(path, "a string or null")
}
const count = (value: unknown, path: string): number => {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0) return value
  throw new Bad(path, "a non-negative integer")
}
const optionalCount = (value: unknown, path: string): number | undefined =>
  value === undefined || value === null ? undefined : count(value, path)

const toolCall = (value: unknown, path: string): OpenAiClient.ChatCompletionMessageToolCall => {
  const o = object(value, path)
  const fn = object(o.function, `${path}.function`)
  return {
    id: string(o.id, `${path}.id`),
    type: string(o.type, `${path}.type`),
    function: {
      name: string(fn.name, `${path}.function.name`),
      arguments: string(fn.arguments, `${path}.function.arguments`)
    }
  }
}

const usage = (value: unknown): OpenAiClient.CompletionUsage | undefined => {
  if (value === undefined || value === null) return undefined
  const o = object(value, "usage")
  const promptDetails = o.prompt_tokens_details
  const completionDetails = o.completion_tokens_details
  const cached = promptDetails === undefined || promptDetails === null
    ? undefined
    : optionalCount(
      object(promptDetails, "usage.prompt_tokens_details").cached_tokens,
      "usage.prompt_tokens_details.cached_tokens"
    )
  const reasoning = completionDetails === undefined || completionDetails === null
    ? undefined
    : optionalCount(
      object(completionDetails, "usage.completion_tokens_details").reasoning_tokens,
      "usage.completion_tokens_details.reasoning_tokens"
    )
  return {
    prompt_tokens: count(o.prompt_tokens, "usage.prompt_tokens"),
    completion_tokens: count(o.completion_tokens, "usage.completion_tokens"),
    ...(cached === undefined ? undefined : { prompt_tokens_details: { cached_tokens: cached } }),
    ...(reasoning === undefined ? undefined : { completion_tokens_details: { reasoning_tokens: reasoning } })
  }
}

const choice = (value: unknown, path: string): OpenAiClient.ChatCompletionChoice => {
  const o = object(value, path)
  const message = object(o.message, `${path}.message`)
  const rawCalls = message.tool_calls
  let toolCalls: Array<OpenAiClient.ChatCompletionMessageToolCall> | null | undefined
  if (rawCalls === undefined || rawCalls === null) {
    toolCalls = rawCalls
  } else if (Array.isArray(rawCalls)) {
    toolCalls = new Array(rawCalls.length)
    for (let i = 0; i < rawCalls.length; i++) toolCalls[i] = toolCall(rawCalls[i], `${path}.message.tool_calls.${i}`)
  } else {
    throw new Bad(`${path}.message.tool_calls`, "an array or null")
  }
  return {
    finish_reason: nullableString(o.finish_reason, `${path}.finish_reason`) ?? null,
    message: {
      content: nullableString(message.content, `${path}.message.content`),
      refusal: nullableString(message.refusal, `${path}.message.refusal`),
      tool_calls: toolCalls
    }
  }
}

/** Parses and checks a 2xx body; a failure is the reason to put in a `ProtocolError`. */
export const decode = (text: string): OpenAiClient.ChatCompletion | { readonly error: string } => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (cause) {
    // Uncut: the client scrubs the reason of secrets, then cuts it.
    return { error: `the body is not JSON (${(cause as Error).message}): ${JSON.stringify(text)}` }
  }
  try {
    const o = object(json, "body")
    const rawChoices = o.choices
    if (!Array.isArray(rawChoices)) throw new Bad("choices", "an array")
    if (rawChoices.length === 0) throw new Bad("choices", "at least one choice")
    const choices = new Array<OpenAiClient.ChatCompletionChoice>(rawChoices.length)
    for (let i = 0; i < rawChoices.length; i++) choices[i] = choice(rawChoices[i], `choices.${i}`)
    const id = string(o.id, "id")
    const model = string(o.model, "model")
    const used = usage(o.usage)
    return used === undefined ? { id, model, choices } : { id, model, choices, usage: used }
  } catch (e) {
    if (e instanceof Bad) return { error: `${e.path} must be ${e.expected}` }
    throw e
  }
}
