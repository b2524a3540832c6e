/**
 * The token-count port: how many input tokens a request will be billed for, before it is sent. The
 * budget reserves with it and the unanswered attempts of a call are estimated with it, so an
 * implementation must err high, never low. A provider package supplies the exact one for its models
 * (`@keel/openai`'s o200k tokenizer); a `LanguageModel` may carry its provider's tokenizer, which
 * `Llm` uses when no `Tokenizer` is provided.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as LlmRequest from "./LlmRequest.js"

export class Tokenizer extends Context.Tag("@keel/core/Tokenizer")<Tokenizer, Tokenizer.Service>() {}

export declare namespace Tokenizer {
  export interface Service {
    /** Named in the line `Llm` logs when it is built, e.g. "o200k_base". */
    readonly name: string
    /** The input tokens of a request, at least as many as the provider will bill. */
    readonly input: (request: LlmRequest.LlmRequest) => Effect.Effect<number>
    /** Loads what counting needs (an encoder's tables), so the first call does not wait for it. */
    readonly load: Effect.Effect<void>
  }
}

/** A layer holding the given tokenizer. */
export const layer = (tokenizer: Tokenizer.Service): Layer.Layer<Tokenizer> => Layer.succeed(Tokenizer, tokenizer)

const encoder = new TextEncoder()
const bytes = (text: string | undefined): number => text === undefined ? 0 : encoder.encode(text).length

/**
 * An upper bound for any byte-level BPE encoding (every token covers at least one byte): one token
 * per UTF-8 byte of everything the request sends, plus a few per message. Never low, often 3–4× high;
 * for tests and for providers without a tokenizer of their own.
 */
export const bytesUpperBound: Tokenizer.Service = {
  name: "bytes (upper bound)",
  load: Effect.void,
  input: (request) =>
    Effect.sync(() => {
      let total = 8
      for (const message of request.messages) {
        total += 8 + bytes(message.role)
        switch (message.role) {
          case "user":
            total += bytes(message.content) + bytes(message.name)
            break
          case "assistant":
            total += bytes(message.content) + bytes(message.refusal)
            for (const call of message.toolCalls ?? []) total += 8 + bytes(call.name) + bytes(call.arguments)
            break
          case "tool":
            total += bytes(message.content) + bytes(message.toolCallId)
            break
          default:
            total += bytes(message.content)
        }
      }
      for (const tool of request.tools ?? []) {
        total += 16 + bytes(tool.name) + bytes(tool.description) + bytes(JSON.stringify(tool.parameters))
      }
      if (request.responseFormat?._tag === "json_schema") {
        total += 16 + bytes(request.responseFormat.name) + bytes(request.responseFormat.description) +
          bytes(JSON.stringify(request.responseFormat.schema))
      }
      return total
    })
}
