/**
 * core's `Tokenizer` for OpenAI's current models: the o200k_base encoding (gpt-tokenizer). A
 * request's input is its messages (plus the chat format's per-message overhead), its tool
 * definitions and its response format's JSON schema; the estimate errs high, never low, as a
 * reservation must cover what the provider will bill. The simulator counts `usage` with the same
 * encoder.
 *
 * The encoder's rank table takes ~200 ms and ~20 MB to load, so it is loaded once, on first use
 * (or ahead of time with `load`), and shared by every caller in the process.
 */
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Tokenizer from "@keel/core/Tokenizer"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import { responseFormat, tool } from "./internal/wire.js"

type Counter = (text: string) => number

/** Special-token text (`<|endoftext|>`) in a prompt is counted as ordinary text, not rejected. */
const encodeOptions = { disallowedSpecial: new Set<string>() }

let counter: Counter | undefined
let loading: Promise<Counter> | undefined

/**
 * Counts of recent longer texts: system prompts and tool schemas repeat on every call of a task, and
 * a map lookup is far cheaper than encoding them again. Bounded; cleared when full.
 */
const cache = new Map<string, number>()
const cacheLimit = 2048

const loadCounter = (): Promise<Counter> =>
  loading ??= import("gpt-tokenizer/encoding/o200k_base").then((encoding) => {
    counter = (text) => {
      if (text.length < 64 || text.length > 32_768) return encoding.countTokens(text, encodeOptions)
      let tokens = cache.get(text)
      if (tokens === undefined) {
        tokens = encoding.countTokens(text, encodeOptions)
        if (cache.size >= cacheLimit) cache.clear()
        cache.set(text, tokens)
      }
      return tokens
    }
    return counter
  })

const withCounter = <A>(f: (count: Counter) => A): Effect.Effect<A> =>
  counter !== undefined ? Effect.sync(() => f(counter!)) : Effect.map(Effect.promise(loadCounter), f)

/** Loads the encoder now rather than on the first count (e.g. at startup, off the first call's path). */
export const load: Effect.Effect<void> = withCounter(() => undefined)

/** The synchronous o200k_base counter, once the encoder is loaded (the simulator counts `usage` with it). */
export const syncCounter: Effect.Effect<(text: string) => number> = withCounter((count) => count)

/** Tokens of a text in o200k_base. */
export const count = (text: string): Effect.Effect<number> => withCounter((count) => count(text))

/** Tokens the chat format adds per message (role and separators), and to prime the reply (OpenAI cookbook). */
const perMessage = 3
const perName = 1
const replyPriming = 3
/** Tokens the tool preamble adds per tool, over the tool's JSON. */
const perTool = 8

/**
 * A tool's count, remembered by its `parameters` object (the same one on every call of a task, see
 * `LlmRequest.decode`): building and hashing its JSON again cost more than the rest of the count.
 */
const toolCounts = new WeakMap<object, { readonly definition: LlmRequest.ToolDefinition; readonly tokens: number }>()

const toolTokens = (count: Counter, definition: LlmRequest.ToolDefinition): number => {
  const known = toolCounts.get(definition.parameters)
  if (
    known !== undefined && known.definition.name === definition.name &&
    known.definition.description === definition.description && known.definition.strict === definition.strict
  ) return known.tokens
  const tokens = count(JSON.stringify(tool(definition)))
  toolCounts.set(definition.parameters, { definition, tokens })
  return tokens
}

/** The input tokens of a request: messages with their overhead, tool definitions, response format schema. */
export const input = (request: LlmRequest.LlmRequest): Effect.Effect<number> =>
  withCounter((count) => inputWith(count, request))

const inputWith = (count: Counter, request: LlmRequest.LlmRequest): number => {
  let total = replyPriming
  for (const message of request.messages) {
    total += perMessage + count(message.role)
    switch (message.role) {
      case "user":
        total += count(message.content) + (message.name === undefined ? 0 : perName + count(message.name))
        break
      case "assistant":
        if (message.content !== undefined) total += count(message.content)
        if (message.refusal !== undefined) total += count(message.refusal)
        for (const call of message.toolCalls ?? []) total += perTool + count(call.name) + count(call.arguments)
        break
      case "tool":
        total += count(message.content) + count(message.toolCallId)
        break
      default:
        total += count(message.content)
    }
  }
  // Tools and a response format are counted as the JSON sent, which errs high against the prompt
  // text OpenAI renders from them.
  for (const definition of request.tools ?? []) total += perTool + toolTokens(count, definition)
  if (request.responseFormat !== undefined && request.responseFormat._tag !== "text") {
    total += perTool + count(JSON.stringify(responseFormat(request.responseFormat)))
  }
  return total
}

/** The o200k_base tokenizer (the encoder loads on first use, or with `load`). */
export const tokenizer: Tokenizer.Tokenizer.Service = { name: "o200k_base", input, load }

/** Provides the o200k_base tokenizer as core's `Tokenizer`. */
export const layer: Layer.Layer<Tokenizer.Tokenizer> = Tokenizer.layer(tokenizer)
