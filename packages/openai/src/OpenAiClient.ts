/**
 * The OpenAI Chat Completions client: the wire types and one service that sends
 * `POST {baseUrl}/chat/completions` and returns the checked body with the response headers. It runs
 * over any `@effect/platform` `HttpClient` (`layer`: fakes, middleware, proxies) or straight on
 * undici (`layerUndici`: the production path, about a third of the CPU per call of the other; see
 * BENCHMARKS.md). Every failure leaves here as an `LlmError`, mapped once in `internal/errors.ts`
 * and scrubbed of the API key. Any OpenAI-compatible server (vLLM, Ollama, a LiteLLM proxy,
 * OpenRouter, keel's simulator) works by base URL.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as LlmError from "@keel/core/LlmError"
import type * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { decode } from "./internal/decode.js"
import * as Errors from "./internal/errors.js"
import * as Transport from "./internal/transport.js"

// ---------------------------------------------------------------------------------------------------------------
// Wire types (the subset of the OpenAPI spec keel sends and reads)
// ---------------------------------------------------------------------------------------------------------------

/** A tool call as the model wrote it (`arguments` is JSON text). */
export interface ChatCompletionMessageToolCall {
  readonly id: string
  readonly type: string
  readonly function: { readonly name: string; readonly arguments: string }
}

/** A message of the request, discriminated by `role`. */
export type ChatCompletionRequestMessage =
  | { readonly role: "system" | "developer"; readonly content: string }
  | { readonly role: "user"; readonly content: string; readonly name?: string }
  | {
    readonly role: "assistant"
    readonly content?: string | null
    readonly refusal?: string
    readonly tool_calls?: ReadonlyArray<ChatCompletionMessageToolCall>
  }
  | { readonly role: "tool"; readonly tool_call_id: string; readonly content: string }

/** A function tool; with `strict`, the model's arguments follow `parameters` exactly. */
export interface ChatCompletionTool {
  readonly type: "function"
  readonly function: {
    readonly name: string
    readonly description?: string
    readonly parameters: Readonly<Record<string, unknown>>
    readonly strict?: boolean
  }
}

export type ChatCompletionToolChoice =
  | "auto"
  | "none"
  | "required"
  | { readonly type: "function"; readonly function: { readonly name: string } }

export type ResponseFormat =
  | { readonly type: "text" }
  | { readonly type: "json_object" }
  | {
    readonly type: "json_schema"
    readonly json_schema: {
      readonly name: string
      readonly description?: string
      readonly schema: Readonly<Record<string, unknown>>
      readonly strict?: boolean
    }
  }

/** The body of `POST /chat/completions`, as keel builds it. */
export interface ChatCompletionRequest {
  readonly model: string
  readonly messages: ReadonlyArray<ChatCompletionRequestMessage>
  readonly tools?: ReadonlyArray<ChatCompletionTool>
  readonly tool_choice?: ChatCompletionToolChoice
  readonly response_format?: ResponseFormat
  readonly max_completion_tokens?: number
  readonly temperature?: number
  readonly seed?: number
  readonly metadata?: Readonly<Record<string, string>>
}

/** `CompletionUsage`, the fields keel reads. `cached_tokens` ⊂ `prompt_tokens`, `reasoning_tokens` ⊂ `completion_tokens`. */
export interface CompletionUsage {
  readonly prompt_tokens: number
  readonly completion_tokens: number
  readonly prompt_tokens_details?: { readonly cached_tokens?: number | undefined }
  readonly completion_tokens_details?: { readonly reasoning_tokens?: number | undefined }
}

export interface ChatCompletionChoice {
  readonly finish_reason: string | null
  readonly message: {
    readonly content?: string | null | undefined
    readonly refusal?: string | null | undefined
    readonly tool_calls?: ReadonlyArray<ChatCompletionMessageToolCall> | null | undefined
  }
}

/** A checked Chat Completions answer: the fields keel reads (others are dropped). */
export interface ChatCompletion {
  readonly id: string
  readonly model: string
  readonly choices: ReadonlyArray<ChatCompletionChoice>
  readonly usage: CompletionUsage
}

/** An answer with its response headers (lower-case names): `x-request-id`, `x-ratelimit-*`. */
export interface ChatCompletionResult {
  readonly body: ChatCompletion
  readonly headers: Readonly<Record<string, string | undefined>>
}

// ---------------------------------------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------------------------------------

export class OpenAiClient extends Context.Tag("@keel/openai/OpenAiClient")<OpenAiClient, OpenAiClient.Service>() {}

export declare namespace OpenAiClient {
  export interface Service {
    /** The base URL requests go to, e.g. `https://api.openai.com/v1`. */
    readonly baseUrl: string
    /** One HTTP attempt: no retries here (the pipeline's `RetryPolicy` owns them). */
    readonly createChatCompletion: (
      body: ChatCompletionRequest,
      timeout?: RetryPolicy.AttemptTimeout
    ) => Effect.Effect<ChatCompletionResult, LlmError.LlmError>
  }
}

export interface Options {
  /** The API key, sent as `Authorization: Bearer`. Required: an empty key fails at construction. */
  readonly apiKey: Redacted.Redacted
  /** Default `https://api.openai.com/v1`; any OpenAI-compatible server works. */
  readonly baseUrl?: string | undefined
  /** Sent as `OpenAI-Organization`. */
  readonly organization?: string | undefined
  /** Sent as `OpenAI-Project`. */
  readonly project?: string | undefined
}

export const defaultBaseUrl = "https://api.openai.com/v1"

/** Checks the options; a failure names the setting and says why. */
const validate = (
  options: Options
): Effect.Effect<{ readonly apiKey: Redacted.Redacted; readonly baseUrl: string }, ConfigError.ConfigError> => {
  if (!Redacted.isRedacted(options.apiKey)) {
    return Effect.fail(
      ConfigError.InvalidData(["apiKey"], "must be a Redacted value: Redacted.make(key) or Config.redacted(name)")
    )
  }
  if (Redacted.value(options.apiKey).trim() === "") {
    return Effect.fail(
      ConfigError.MissingData(["apiKey"], "is empty: the OpenAI API key is required (OPENAI_API_KEY)")
    )
  }
  const baseUrl = (options.baseUrl ?? defaultBaseUrl).replace(/\/+$/, "")
  let url: URL
  try {
    url = new URL(baseUrl)
  } catch {
    return Effect.fail(
      ConfigError.InvalidData(
        ["baseUrl"],
        `must be an absolute http(s) URL, got ${JSON.stringify(options.baseUrl)}`
      )
    )
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return Effect.fail(
      ConfigError.InvalidData(["baseUrl"], `must be an http(s) URL, got ${JSON.stringify(options.baseUrl)}`)
    )
  }
  return Effect.succeed({ apiKey: options.apiKey, baseUrl })
}

/** The headers every request carries. */
const requestHeaders = (options: Options, apiKey: Redacted.Redacted): Record<string, string> => {
  const headers: Record<string, string> = {
    authorization: `Bearer ${Redacted.value(apiKey)}`,
    "content-type": "application/json",
    accept: "application/json"
  }
  if (options.organization !== undefined) headers["openai-organization"] = options.organization
  if (options.project !== undefined) headers["openai-project"] = options.project
  return headers
}

/** The service over a transport: serialise once, send, then decode or map the failure (once, here). */
const fromTransport = (baseUrl: string, apiKey: Redacted.Redacted, send: Transport.Send): OpenAiClient.Service => {
  const createChatCompletion = (
    body: ChatCompletionRequest,
    timeout?: RetryPolicy.AttemptTimeout
  ): Effect.Effect<ChatCompletionResult, LlmError.LlmError> => {
    const context: Errors.Context = { model: body.model, apiKey }
    let json: string
    try {
      json = JSON.stringify(body)
    } catch (cause) {
      return Effect.fail(Errors.invalidBody(context, cause))
    }
    return Effect.matchEffect(send(json, timeout), {
      onFailure: (failure) =>
        Effect.fail(
          failure instanceof Transport.Failure
            ? Errors.transport(context, failure.cause, failure.headers?.["x-request-id"])
            : failure
        ),
      onSuccess: ({ headers, status, text }): Effect.Effect<ChatCompletionResult, LlmError.LlmError> => {
        if (status >= 200 && status < 300) {
          const decoded = decode(text)
          return "error" in decoded
            ? Effect.fail(Errors.protocol(context, decoded.error, headers["x-request-id"]))
            : Effect.succeed({ body: decoded, headers })
        }
        return Effect.flatMap(
          Clock.currentTimeMillis,
          (now) => Effect.fail(Errors.fromResponse(context, { status, headers, body: text }, now))
        )
      }
    })
  }
  return OpenAiClient.of({ baseUrl, createChatCompletion })
}

/** Builds the client over the `HttpClient` in context; fails with a `ConfigError` naming a bad setting. */
export const make = (
  options: Options
): Effect.Effect<OpenAiClient.Service, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const { apiKey, baseUrl } = yield* validate(options)
    const client = yield* HttpClient.HttpClient
    const send = Transport.fromHttpClient(client, `${baseUrl}/chat/completions`, requestHeaders(options, apiKey))
    return fromTransport(baseUrl, apiKey, send)
  })

/**
 * Builds the client straight on an undici `Agent` owned by the scope: the fast path (see BENCHMARKS.md,
 * "OpenAI client"). It skips `HttpClient`, so `HttpClient` middleware and its HTTP spans do not apply; keel's
 * own call and attempt spans still do.
 */
export const makeUndici = (
  options: Options
): Effect.Effect<OpenAiClient.Service, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const { apiKey, baseUrl } = yield* validate(options)
    const dispatcher = yield* NodeHttpClient.makeDispatcher
    const send = Transport.fromUndici(dispatcher, `${baseUrl}/chat/completions`, requestHeaders(options, apiKey))
    return fromTransport(baseUrl, apiKey, send)
  })

/** The client over the `HttpClient` you provide (e.g. `NodeHttpClient.layerUndici`, or a test fake). */
export const layer = (options: Options): Layer.Layer<OpenAiClient, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(OpenAiClient, make(options))

/**
 * The client from configuration, e.g. `{ apiKey: Config.redacted("OPENAI_API_KEY") }`: a missing key fails with a
 * `ConfigError` naming the variable, a bad base URL with one naming `baseUrl` and the value.
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<OpenAiClient, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(OpenAiClient, Effect.flatMap(Effect.mapError(Config.unwrap(config), explainSecret), make))

/** `Config.redacted` hides why a secret is missing ("<redacted>"); the only secret here is the API key, so say so. */
const explainSecret = (error: ConfigError.ConfigError): ConfigError.ConfigError => {
  switch (error._op) {
    case "And":
      return ConfigError.And(explainSecret(error.left), explainSecret(error.right))
    case "Or":
      return ConfigError.Or(explainSecret(error.left), explainSecret(error.right))
    case "MissingData":
      return error.message === "<redacted>"
        ? ConfigError.MissingData(error.path, "is not set: the OpenAI API key is required")
        : error
    default:
      return error
  }
}

/** The client straight on undici, with its own connection pool (`makeUndici`): what production should use. */
export const layerUndici = (options: Options): Layer.Layer<OpenAiClient, ConfigError.ConfigError> =>
  Layer.scoped(OpenAiClient, makeUndici(options))

/** `layerConfig` straight on undici (`makeUndici`). */
export const layerConfigUndici = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<OpenAiClient, ConfigError.ConfigError> =>
  Layer.scoped(OpenAiClient, Effect.flatMap(Effect.mapError(Config.unwrap(config), explainSecret), makeUndici))

/** Sends one Chat Completions request with the client in context. */
export const createChatCompletion = (
  body: ChatCompletionRequest
): Effect.Effect<ChatCompletionResult, LlmError.LlmError, OpenAiClient> =>
  Effect.flatMap(OpenAiClient, (client) => client.createChatCompletion(body))
