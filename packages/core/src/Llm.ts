/**
 * The facade users call: `Llm.generate(request)`. Every logical call goes through one pipeline:
 * `call` validates the request and chooses the model; each `round` (the first ask, or a repair
 * re-ask) runs its `attempt`s under the `RetryPolicy` (per-attempt timeout, jittered backoff,
 * provider hints, deadline) against the `LanguageModel` and classifies the answer (a refusal is
 * `Refused`, a cut answer is `Truncated`). `CallState` carries what the call accumulates.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { LanguageModel } from "./LanguageModel.js"
import { InvalidRequest, type LlmError, Refused, Truncated } from "./LlmError.js"
import * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"
import * as RetryPolicy from "./RetryPolicy.js"
import * as Usage from "./Usage.js"

export class Llm extends Context.Tag("@keel/core/Llm")<Llm, Llm.Service>() {}

export declare namespace Llm {
  export interface Service {
    /** One logical call: validated, retried as the policy says, classified. */
    readonly generate: (request: LlmRequest.Input) => Effect.Effect<LlmResponse, LlmError>
  }
}

export interface Options {
  /** The model used when neither the request nor `withModel` names one. */
  readonly defaultModel?: string
}

/** The model set by `withModel` for the effects it wraps. */
class ModelOverride extends Context.Reference<ModelOverride>()("@keel/core/Llm/ModelOverride", {
  defaultValue: (): Option.Option<string> => Option.none()
}) {}

/** Runs an effect with every call in it sent to `model` unless the request names its own. */
export const withModel: {
  (model: string): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, model: string): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, model: string) =>
    Effect.provideService(self, ModelOverride, Option.some(model))
)

const classify = (request: LlmRequest.Resolved, response: LlmResponse): Effect.Effect<LlmResponse, LlmError> => {
  if (response.refusal !== undefined) {
    return Effect.fail(new Refused({ model: response.model, requestId: response.requestId, refusal: response.refusal }))
  }
  if (response.finishReason === "length") {
    return Effect.fail(
      new Truncated({
        model: response.model,
        requestId: response.requestId,
        maxOutputTokens: request.maxOutputTokens,
        outputTokens: response.usage.outputTokens
      })
    )
  }
  return Effect.succeed(response)
}

/**
 * What one logical call accumulates across its rounds (a repair re-ask is a second round) and their
 * attempts. Stages write to it as they go; the call log reads it once, when the call ends.
 */
export interface CallState {
  /** The request of the latest round, model chosen. */
  request: LlmRequest.Resolved
  /** HTTP attempts over all rounds. */
  attempts: number
  /** Tokens billed over all attempts that returned an answer. */
  usage: Usage.Usage
  /** The latest answer, when one arrived. */
  response: LlmResponse | undefined
}

export const make = (options: Options = {}): Effect.Effect<Llm.Service, never, LanguageModel> =>
  Effect.gen(function*() {
    const languageModel = yield* LanguageModel

    const resolve = (request: LlmRequest.LlmRequest): Effect.Effect<LlmRequest.Resolved, InvalidRequest> =>
      Effect.flatMap(ModelOverride, (override) => {
        const model = request.model ?? Option.getOrUndefined(override) ?? options.defaultModel
        return model === undefined
          ? Effect.fail(
            new InvalidRequest({
              field: "model",
              reason: "no model given: name one in the request, with Llm.withModel, or as the default model"
            })
          )
          : Effect.succeed(request.model === model ? (request as LlmRequest.Resolved) : { ...request, model })
      })

    /** One attempt: counted, and its usage added, before anything else looks at it. */
    const attempt = (state: CallState, request: LlmRequest.Resolved) =>
      Effect.suspend(() => {
        state.attempts++
        return Effect.tap(languageModel.complete(request), (response) => {
          state.usage = Usage.add(state.usage, response.usage)
          state.response = response
        })
      })

    /** One round: a request sent under the retry policy until it answers or fails for good, then classified. */
    const round = (state: CallState, request: LlmRequest.Resolved): Effect.Effect<LlmResponse, LlmError> =>
      Effect.suspend(() => {
        state.request = request
        return RetryPolicy.retry(attempt(state, request), { model: request.model }).pipe(
          Effect.flatMap((response) => classify(request, response))
        )
      })

    /** One logical call: validate the input, choose the model, run `body` with fresh call state. */
    const call = <A>(
      input: LlmRequest.Input,
      body: (state: CallState, request: LlmRequest.Resolved) => Effect.Effect<A, LlmError>
    ): Effect.Effect<A, LlmError> =>
      LlmRequest.decode(input).pipe(
        Effect.flatMap(resolve),
        Effect.flatMap((request) => body({ request, attempts: 0, usage: Usage.empty, response: undefined }, request))
      )

    return Llm.of({ generate: (input) => call(input, round) })
  })

/** The facade over the `LanguageModel` in context. */
export const layer = (options: Options = {}): Layer.Layer<Llm, never, LanguageModel> => Layer.effect(Llm, make(options))

/** Sends one request through the pipeline. */
export const generate = (request: LlmRequest.Input): Effect.Effect<LlmResponse, LlmError, Llm> =>
  Effect.flatMap(Llm, (llm) => llm.generate(request))
