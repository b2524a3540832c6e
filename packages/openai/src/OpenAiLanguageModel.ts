/**
 * The core `LanguageModel` port over OpenAI Chat Completions: translates a keel request to the wire
 * body (messages of every role, strict tools, tool choice, `json_schema` formats, limits, sampling,
 * metadata) and the answer back (text, tool calls, refusal, finish reason, usage with cached and
 * reasoning tokens, or `usageMissing` when the server sent none, `x-request-id`, the `x-ratelimit-*`
 * snapshot). It only translates: retries, budgets and telemetry live in the core pipeline.
 */
import type * as LanguageModel from "@keel/core/LanguageModel"
import { LanguageModel as LanguageModelTag, make as makeLanguageModel } from "@keel/core/LanguageModel"
import type * as LlmError from "@keel/core/LlmError"
import type * as LlmRequest from "@keel/core/LlmRequest"
import type { FinishReason, LlmResponse } from "@keel/core/LlmResponse"
import type * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Usage from "@keel/core/Usage"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as RateLimitHeaders from "./internal/rateLimitHeaders.js"
import { responseFormat, tool } from "./internal/wire.js"
import * as OpenAiClient from "./OpenAiClient.js"
import * as OpenAiTokenizer from "./OpenAiTokenizer.js"

export interface Options {
  /** The name in telemetry (`gen_ai.provider.name`). Default "openai"; set it for a compatible server. */
  readonly provider?: string | undefined
  /**
   * Names to send on the wire for keel's model names, e.g. `{ "gpt-4.1-mini": "openai/gpt-4.1-mini" }` for
   * OpenRouter or an Azure deployment name. A model not listed is sent as it is named.
   */
  readonly modelNames?: Readonly<Record<string, string>> | undefined
}

const modelName = /^\S+$/

/** Checks the model names; one with spaces (or empty) fails naming the setting. */
const validate = (options: Options): Effect.Effect<Options, ConfigError.ConfigError> => {
  for (const [from, to] of Object.entries(options.modelNames ?? {})) {
    for (const name of [from, to]) {
      if (!modelName.test(name)) {
        return Effect.fail(
          ConfigError.InvalidData(
            ["modelNames", from],
            `${JSON.stringify(name)} is not a valid model name: a model name is non-empty and has no spaces`
          )
        )
      }
    }
  }
  if (options.provider !== undefined && options.provider.trim() === "") {
    return Effect.fail(ConfigError.InvalidData(["provider"], "must not be empty"))
  }
  return Effect.succeed(options)
}

// ---------------------------------------------------------------------------------------------------------------
// keel → wire
// ---------------------------------------------------------------------------------------------------------------

const message = (m: LlmRequest.Message): OpenAiClient.ChatCompletionRequestMessage => {
  switch (m.role) {
    case "system":
    case "developer":
      return { role: m.role, content: m.content }
    case "user":
      return m.name === undefined
        ? { role: "user", content: m.content }
        : { role: "user", content: m.content, name: m.name }
    case "tool":
      return { role: "tool", tool_call_id: m.toolCallId, content: m.content }
    case "assistant": {
      const out: {
        role: "assistant"
        content?: string
        refusal?: string
        tool_calls?: Array<OpenAiClient.ChatCompletionMessageToolCall>
      } = { role: "assistant" }
      if (m.content !== undefined) out.content = m.content
      if (m.refusal !== undefined) out.refusal = m.refusal
      if (m.toolCalls !== undefined && m.toolCalls.length > 0) {
        out.tool_calls = m.toolCalls.map((call) => ({
          id: call.id,
          type: "function",
          function: { name: call.name, arguments: call.arguments }
        }))
      }
      return out
    }
  }
}

const toolChoice = (c: LlmRequest.ToolChoice): OpenAiClient.ChatCompletionToolChoice =>
  typeof c === "string" ? c : { type: "function", function: { name: c.tool } }

/** The wire body for a request; `model` is the wire name of the request's model. */
export const toWire = (
  request: LlmRequest.Resolved,
  model: string = request.model
): OpenAiClient.ChatCompletionRequest => {
  const body: { -readonly [K in keyof OpenAiClient.ChatCompletionRequest]: OpenAiClient.ChatCompletionRequest[K] } = {
    model,
    messages: request.messages.map(message)
  }
  if (request.tools !== undefined && request.tools.length > 0) body.tools = request.tools.map(tool)
  if (request.toolChoice !== undefined) body.tool_choice = toolChoice(request.toolChoice)
  if (request.responseFormat !== undefined) body.response_format = responseFormat(request.responseFormat)
  if (request.maxOutputTokens !== undefined) body.max_completion_tokens = request.maxOutputTokens
  if (request.temperature !== undefined) body.temperature = request.temperature
  if (request.seed !== undefined) body.seed = request.seed
  if (request.metadata !== undefined) body.metadata = request.metadata
  return body
}

// ---------------------------------------------------------------------------------------------------------------
// wire → keel
// ---------------------------------------------------------------------------------------------------------------

const finishReason = (reason: string | null, refusal: string | undefined): FinishReason => {
  switch (reason) {
    case "stop":
      return refusal === undefined ? "stop" : "refusal"
    case "length":
      return "length"
    case "tool_calls":
    case "function_call":
      return "tool_calls"
    case "content_filter":
      return "content_filter"
    default:
      return refusal === undefined ? "other" : "refusal"
  }
}

/** The keel answer for a checked wire answer and its headers (the first choice; keel asks for one). */
export const fromWire = (result: OpenAiClient.ChatCompletionResult): LlmResponse => {
  const { body, headers } = result
  const { message, finish_reason } = body.choices[0]!
  const refusal = message.refusal ?? undefined
  const calls = message.tool_calls
  const toolCalls = calls === undefined || calls === null
    ? []
    : calls.map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments }))
  const usage = body.usage
  const response: { -readonly [K in keyof LlmResponse]: LlmResponse[K] } = {
    id: body.id,
    model: body.model,
    toolCalls,
    finishReason: finishReason(finish_reason, refusal),
    usage: usage === undefined ? Usage.empty : {
      inputTokens: usage.prompt_tokens,
      cachedInputTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
      outputTokens: usage.completion_tokens,
      reasoningTokens: usage.completion_tokens_details?.reasoning_tokens ?? 0
    }
  }
  if (usage === undefined) response.usageMissing = true
  if (message.content !== undefined && message.content !== null) response.text = message.content
  if (refusal !== undefined) response.refusal = refusal
  const requestId = headers["x-request-id"]
  if (requestId !== undefined) response.requestId = requestId
  const rateLimit = RateLimitHeaders.fromHeaders(headers)
  if (rateLimit !== undefined) response.rateLimit = rateLimit
  return response
}

// ---------------------------------------------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------------------------------------------

/** The port over the `OpenAiClient` in context. */
export const make = (
  options: Options = {}
): Effect.Effect<LanguageModel.LanguageModel.Service, ConfigError.ConfigError, OpenAiClient.OpenAiClient> =>
  Effect.gen(function*() {
    const { modelNames = {}, provider = "openai" } = yield* validate(options)
    const client = yield* OpenAiClient.OpenAiClient
    const complete = (
      request: LlmRequest.Resolved,
      timeout?: RetryPolicy.AttemptTimeout
    ): Effect.Effect<LlmResponse, LlmError.LlmError> =>
      Effect.map(
        client.createChatCompletion(toWire(request, modelNames[request.model] ?? request.model), timeout),
        fromWire
      )
    // The client times each attempt out inside its HTTP request (see `internal/transport`).
    return makeLanguageModel({ provider, complete, timesOut: true, tokenizer: OpenAiTokenizer.tokenizer })
  })

/** The `LanguageModel` over the `OpenAiClient` you provide. */
export const layer = (
  options: Options = {}
): Layer.Layer<LanguageModelTag, ConfigError.ConfigError, OpenAiClient.OpenAiClient> =>
  Layer.effect(LanguageModelTag, make(options))

/** `layer` from configuration; a model name with spaces fails with a `ConfigError` naming it. */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<LanguageModelTag, ConfigError.ConfigError, OpenAiClient.OpenAiClient> =>
  Layer.effect(LanguageModelTag, Effect.flatMap(Config.unwrap(config), make))
