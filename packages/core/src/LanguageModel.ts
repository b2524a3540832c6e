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

export class LanguageModel extends Context.Tag("@keel/core/LanguageModel")<LanguageModel, LanguageModel.Service>() {}

export declare namespace LanguageModel {
  export interface Service {
    /** The provider's name as in telemetry (`gen_ai.provider.name`), e.g. "openai". */
    readonly provider: string
    /** One attempt: the request, with its model chosen, to the provider and back. */
    readonly complete: (request: LlmRequest.Resolved) => Effect.Effect<LlmResponse, LlmError>
  }
}

/** Builds the port from a provider's implementation. Every provider, the test kit's included, goes through here. */
export const make = (service: LanguageModel.Service): LanguageModel.Service => LanguageModel.of(service)

/** A layer holding the given implementation. */
export const layer = (service: LanguageModel.Service): Layer.Layer<LanguageModel> =>
  Layer.succeed(LanguageModel, make(service))
