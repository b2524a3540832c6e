/**
 * One input count per request: the router, the budget and the rate limiter each ask for the count of
 * the same request (the router before the model is chosen, the others on the resolved request), and
 * an exact count costs ~10 µs. The count depends only on the messages, tools and response format,
 * which the resolved request shares with the one it was made from, so it is remembered by the
 * `messages` array; a repair round sends new messages and is counted afresh.
 */
import * as Effect from "effect/Effect"
import type * as LlmRequest from "../LlmRequest.js"
import type * as Tokenizer from "../Tokenizer.js"

interface Count {
  readonly tools: LlmRequest.LlmRequest["tools"]
  readonly responseFormat: LlmRequest.LlmRequest["responseFormat"]
  readonly tokens: number
}

/** The tokenizer, with each request's count kept while its messages are alive. */
export const memoize = (tokenizer: Tokenizer.Tokenizer.Service): Tokenizer.Tokenizer.Service => {
  const counts = new WeakMap<ReadonlyArray<LlmRequest.Message>, Count>()
  return {
    name: tokenizer.name,
    load: tokenizer.load,
    input: (request) => {
      const known = counts.get(request.messages)
      if (known !== undefined && known.tools === request.tools && known.responseFormat === request.responseFormat) {
        return Effect.succeed(known.tokens)
      }
      return Effect.map(tokenizer.input(request), (tokens) => {
        counts.set(request.messages, { tools: request.tools, responseFormat: request.responseFormat, tokens })
        return tokens
      })
    }
  }
}
