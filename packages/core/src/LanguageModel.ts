/**
 * The provider port: one `complete` call is one HTTP attempt to a model. Providers (OpenAI, the
 * simulator over HTTP, a scripted test model) implement it by translating only; retries, budgets,
 * decoding and telemetry live once, in the pipeline around it.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { LlmError } from "./LlmError.js"
import type * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"
import * as RetryPolicy from "./RetryPolicy.js"
import type * as Tokenizer from "./Tokenizer.js"

export class LanguageModel extends Context.Tag("@keel/core/LanguageModel")<LanguageModel, LanguageModel.Service>() {}

export declare namespace LanguageModel {
  export interface Service {
    /** The provider's name as in telemetry (`gen_ai.provider.name`), e.g. "openai". */
    readonly provider: string
    /** The provider's own token counter, used by `Llm` when no `Tokenizer` is provided. */
    readonly tokenizer?: Tokenizer.Tokenizer.Service | undefined
    /**
     * One attempt: the request, with its model chosen, to the provider and back, failing with
     * `timeout.onTimeout()` when it takes longer than `timeout.millis`.
     */
    readonly complete: (
      request: LlmRequest.Resolved,
      timeout?: RetryPolicy.AttemptTimeout
    ) => Effect.Effect<LlmResponse, LlmError>
  }

  /**
   * What a provider implements. `timesOut: true` says its `complete` honours `timeout` itself (e.g.
   * a timer inside its HTTP request, the cheapest way); otherwise `make` bounds each attempt.
   */
  export interface Implementation extends Service {
    readonly timesOut?: boolean
  }
}

/** Builds the port from a provider's implementation. Every provider, the test kit's included, goes through here. */
export const make = (implementation: LanguageModel.Implementation): LanguageModel.Service => {
  const { complete, provider, timesOut, tokenizer } = implementation
  return LanguageModel.of({
    provider,
    tokenizer,
    complete: timesOut === true
      ? complete
      : (request, timeout) => timeout === undefined ? complete(request) : RetryPolicy.within(complete(request), timeout)
  })
}

/** A layer holding the given implementation. */
export const layer = (implementation: LanguageModel.Implementation): Layer.Layer<LanguageModel> =>
  Layer.succeed(LanguageModel, make(implementation))
