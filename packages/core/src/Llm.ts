/**
 * The facade users call: `Llm.generate(request)`. Every logical call goes through one pipeline:
 * `call` validates the request and chooses the model; each `round` (the first ask, or a repair
 * re-ask) runs its `attempt`s under the `RetryPolicy` (per-attempt timeout, jittered backoff,
 * provider hints, deadline) against the `LanguageModel` and classifies the answer (a refusal is
 * `Refused`, a cut answer is `Truncated`). `CallState` carries what the call accumulates.
 *
 * Budget and cost are optional: with a `Budget` in context when the layer is built, each round
 * reserves its worst case before its first attempt and settles what was billed (`BudgetExceeded`
 * before anything is sent); with `Pricing` alone it only records the cost in `CallState`; with
 * neither, that stage is left out of the path entirely.
 *
 * Observation wraps each call (see `internal/observe`): a CLIENT span per call and a child span per
 * attempt, the `gen_ai.client.*` metrics (both switchable with `Telemetry.layer`), and exactly one
 * `CallRecord` per call when a `CallLog` with sinks is provided where the layer is built.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import * as CallLog from "./CallLog.js"
import * as Metering from "./internal/metering.js"
import * as Observe from "./internal/observe.js"
import * as StructuredOutput from "./internal/structuredOutput.js"
import { LanguageModel } from "./LanguageModel.js"
import { InvalidRequest, type LlmError, Refused, Truncated } from "./LlmError.js"
import * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"
import type * as Money from "./Money.js"
import * as RetryPolicy from "./RetryPolicy.js"
import * as Telemetry from "./Telemetry.js"
import type * as Tool from "./Tool.js"
import * as Usage from "./Usage.js"

export class Llm extends Context.Tag("@keel/core/Llm")<Llm, Llm.Service>() {}

export declare namespace Llm {
  export interface Service {
    /** One logical call: validated, retried as the policy says, classified. */
    readonly generate: (request: LlmRequest.Input) => Effect.Effect<LlmResponse, LlmError>
    /** One logical call whose answer is decoded with a Schema, repaired by re-asking at most `repair` times. */
    readonly generateObject: <A, I>(options: GenerateObjectOptions<A, I>) => Effect.Effect<A, LlmError>
  }
}

/**
 * A structured-output call: the request fields, plus the Schema (or a `Tool`) the answer must decode
 * with. `mode` "tool" (default) sends it as a strict tool the model is forced to call; "json_schema"
 * as a strict response format. `repair` (default 1) bounds the re-asks after invalid output.
 */
export interface GenerateObjectOptions<A, I> extends Omit<LlmRequest.Input, "tools" | "toolChoice" | "responseFormat"> {
  readonly schema: Schema.Schema<A, I, never> | Tool.Tool<A, I>
  readonly mode?: "tool" | "json_schema"
  /** The tool or response-format name; default the tool's name, the Schema's identifier, or "output". */
  readonly name?: string
  readonly description?: string
  readonly repair?: number
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
  /** Settled cost of all rounds (pico-dollars, `Money`); set when `Pricing` or `Budget` is provided. */
  cost?: Money.Money | undefined
  /** True when part of `cost` is an estimate: an attempt that may have been billed returned no usage. */
  costEstimated?: boolean | undefined
  /** True when the model's price is the configured fallback price, not a known one. */
  priceFallback?: boolean | undefined
  /** Attempts that may have been billed without an answer (timed out, interrupted or unreadable); when metered. */
  unansweredAttempts?: number | undefined
  /** Repair re-asks sent after invalid output (each one a round of its own). */
  repairs: number
  /** Why the model was chosen: "request" (named in it), "withModel", "default", or a router's reason. */
  routeReason?: string | undefined
}

export const make = (options: Options = {}): Effect.Effect<Llm.Service, never, LanguageModel> =>
  Effect.gen(function*() {
    const languageModel = yield* LanguageModel
    /** Budget reservation and cost (see `internal/metering`); absent when neither Budget nor Pricing is provided. */
    const meter = yield* Metering.make
    /** Span, metrics and call record per call; no-ops when nothing observes. */
    const observer = Observe.make<CallState>({
      provider: languageModel.provider,
      callLog: yield* CallLog.CallLog,
      telemetry: yield* Telemetry.Telemetry,
      cost: (state) => ({
        amount: state.cost ?? 0n,
        estimated: state.costEstimated === true,
        fallback: state.priceFallback === true
      }),
      routeReason: (state) => state.routeReason ?? "request",
      repairs: (state) => state.repairs > 0 ? state.repairs : undefined
    })

    /** Chooses the model, and says why: named in the request, set by `withModel`, or the default. */
    const resolve = (
      request: LlmRequest.LlmRequest
    ): Effect.Effect<{ readonly request: LlmRequest.Resolved; readonly reason: string }, InvalidRequest> =>
      Effect.flatMap(ModelOverride, (override) => {
        if (request.model !== undefined) {
          return Effect.succeed({ request: request as LlmRequest.Resolved, reason: "request" })
        }
        if (Option.isSome(override)) {
          return Effect.succeed({ request: { ...request, model: override.value }, reason: "withModel" })
        }
        if (options.defaultModel !== undefined) {
          return Effect.succeed({ request: { ...request, model: options.defaultModel }, reason: "default" })
        }
        return Effect.fail(
          new InvalidRequest({
            field: "model",
            reason: "no model given: name one in the request, with Llm.withModel, or as the default model"
          })
        )
      })

    /** One attempt: counted, and its usage added, before anything else looks at it. */
    const attempt = (state: CallState, request: LlmRequest.Resolved) => (timeout: RetryPolicy.AttemptTimeout) => {
      const send = Effect.suspend(() => {
        state.attempts++
        return Effect.tap(observer.attempt(state, languageModel.complete(request, timeout)), (response) => {
          state.usage = Usage.add(state.usage, response.usage)
          state.response = response
        })
      })
      return meter === undefined ? send : meter.attempt(state, send)
    }

    /** One round: a request sent under the retry policy until it answers or fails for good, then classified. */
    const round = (state: CallState, request: LlmRequest.Resolved): Effect.Effect<LlmResponse, LlmError> =>
      Effect.suspend(() => {
        state.request = request
        const answer = RetryPolicy.retry(attempt(state, request), { model: request.model }).pipe(
          Effect.flatMap((response) => classify(request, response))
        )
        return meter === undefined ? answer : meter.round(state, request, answer)
      })

    /** One logical call: validate the input, choose the model, run `body` with fresh call state. */
    const call = <A>(
      input: LlmRequest.Input,
      body: (state: CallState, request: LlmRequest.Resolved) => Effect.Effect<A, LlmError>
    ): Effect.Effect<A, LlmError> =>
      LlmRequest.decode(input).pipe(
        Effect.flatMap(resolve),
        Effect.flatMap(({ reason, request }) => {
          const state: CallState = {
            request,
            attempts: 0,
            usage: Usage.empty,
            response: undefined,
            repairs: 0,
            routeReason: reason
          }
          return observer.call(state, body(state, request))
        })
      )

    return Llm.of({
      generate: (input) => call(input, round),
      generateObject: (options) =>
        Either.match(StructuredOutput.prepare(options), {
          onLeft: Effect.fail,
          onRight: (prepared) =>
            call(prepared.input, (state, request) => StructuredOutput.run(prepared, state, request, round))
        })
    })
  })

/** The facade over the `LanguageModel` in context. */
export const layer = (options: Options = {}): Layer.Layer<Llm, never, LanguageModel> => Layer.effect(Llm, make(options))

/** Sends one request through the pipeline. */
export const generate = (request: LlmRequest.Input): Effect.Effect<LlmResponse, LlmError, Llm> =>
  Effect.flatMap(Llm, (llm) => llm.generate(request))

/** Sends one request and decodes the answer with `options.schema`; see `GenerateObjectOptions`. */
export const generateObject = <A, I>(options: GenerateObjectOptions<A, I>): Effect.Effect<A, LlmError, Llm> =>
  Effect.flatMap(Llm, (llm) => llm.generateObject(options))
