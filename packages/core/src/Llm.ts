/**
 * The facade users call: `Llm.generate(request)`. Every logical call goes through one pipeline:
 * `call` validates the request and chooses the model; each `round` (the first ask, or a repair
 * re-ask) runs its `attempt`s under the `RetryPolicy` (per-attempt timeout, jittered backoff,
 * provider hints, deadline) against the `LanguageModel` and classifies the answer (a refusal is
 * `Refused`, a cut answer is `Truncated`).
 *
 * Stages wrap those three levels (`internal/stage`) and are all taken when the layer is built, from
 * what is provided to it: observation (spans, metrics, one `CallRecord` per call, see
 * `internal/observe`) around calls and attempts; cost (`internal/metering`) around rounds and
 * attempts, reserving and settling with a `Budget` (which needs `Pricing`), or only pricing with
 * `Pricing` alone; a `CircuitBreaker` (`internal/breaker`) around rounds and attempts, failing fast
 * on a model whose circuit is open; a `Router` (`internal/routing`) choosing the model of a call that
 * names none and moving the call along its chain. A stage not provided is not in the path at all.
 * The `RetryPolicy` provided to the layer is its default; `RetryPolicy.withPolicy` and `withModel`
 * override per call.
 *
 * ```ts
 * const llm = Llm.layer({ defaultModel: "gpt-4o-mini", require: ["budget"] }).pipe(
 *   Layer.provide(Layer.mergeAll(model, OpenAiPricing.layer(), budget, JsonLines.layer({ path })))
 * )
 * ```
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Budget from "./Budget.js"
import * as CallLog from "./CallLog.js"
import * as CircuitBreaker from "./CircuitBreaker.js"
import * as Breaker from "./internal/breaker.js"
import * as Counted from "./internal/counted.js"
import * as Limiting from "./internal/limiting.js"
import * as Metering from "./internal/metering.js"
import * as Observe from "./internal/observe.js"
import * as Routing from "./internal/routing.js"
import * as Stage from "./internal/stage.js"
import type { CallState } from "./internal/stage.js"
import * as StructuredOutput from "./internal/structuredOutput.js"
import { LanguageModel } from "./LanguageModel.js"
import { BudgetUnavailable, InvalidRequest, type LlmError, Refused, Truncated } from "./LlmError.js"
import * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"
import * as Pricing from "./Pricing.js"
import * as RateLimiter from "./RateLimiter.js"
import * as RetryPolicy from "./RetryPolicy.js"
import * as Router from "./Router.js"
import * as Telemetry from "./Telemetry.js"
import * as Tokenizer from "./Tokenizer.js"
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
  /**
   * Stages the app cannot run without. Building fails with `LlmConfigError` naming the first one not
   * provided to the layer, e.g. a Budget merged beside `Llm.layer` instead of provided to it.
   */
  readonly require?: ReadonlyArray<StageName>
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

/** A stage the app says it requires (`Options.require`). */
export type StageName =
  | "budget"
  | "pricing"
  | "tokenizer"
  | "callLog"
  | "telemetry"
  | "retryPolicy"
  | "router"
  | "circuitBreaker"
  | "rateLimiter"

/** `Llm.layer` was built without a stage the app requires, or with stages that cannot work together. */
export class LlmConfigError extends Schema.TaggedError<LlmConfigError>("@keel/core/Llm/LlmConfigError")(
  "LlmConfigError",
  { stage: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `Llm.layer: ${this.stage}: ${this.reason}`
  }
}

const stageTags: Record<StageName, { readonly key: string; readonly provide: string }> = {
  budget: { key: Budget.Budget.key, provide: "a Budget layer (Budget.layerMemory, BudgetSql.layer)" },
  pricing: { key: Pricing.Pricing.key, provide: "a Pricing layer (e.g. OpenAiPricing.layer())" },
  tokenizer: { key: Tokenizer.Tokenizer.key, provide: "a Tokenizer layer (e.g. OpenAiTokenizer.layer)" },
  callLog: { key: CallLog.CallLog.key, provide: "a CallLog layer (CallLog.layer, JsonLines.layer)" },
  telemetry: { key: Telemetry.Telemetry.key, provide: "a Telemetry layer (Telemetry.layer)" },
  retryPolicy: {
    key: RetryPolicy.RetryPolicy.key,
    provide: "a RetryPolicy (Layer.succeed(RetryPolicy.RetryPolicy, …))"
  },
  router: { key: Router.Router.key, provide: "a Router layer (Router.layer)" },
  circuitBreaker: { key: CircuitBreaker.CircuitBreaker.key, provide: "a CircuitBreaker layer (CircuitBreaker.layer)" },
  rateLimiter: {
    key: RateLimiter.RateLimiter.key,
    provide: "a RateLimiter layer (RateLimiter.layerMemory, or RateLimiter.layer with RateLimiter/Redis.layerStore)"
  }
}

/**
 * Builds the pipeline from the services in context. Every stage is taken here, once: a stage that is
 * not in context when the layer is built is not in the pipeline, so provide stages *to* the layer
 * (`Llm.layer().pipe(Layer.provide(stages))`), and list the ones the app cannot run without in
 * `require`. The stages in force are logged in one line.
 */
export const make = (options: Options = {}): Effect.Effect<Llm.Service, LlmConfigError, LanguageModel> =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const provided = (name: StageName) => context.unsafeMap.has(stageTags[name].key)
    for (const name of options.require ?? []) {
      if (!provided(name)) {
        return yield* new LlmConfigError({
          stage: name,
          reason: `required, but not provided to the layer: provide ${
            stageTags[name].provide
          } to Llm.layer (Layer.provide), not merged beside it`
        })
      }
    }
    const languageModel = yield* LanguageModel
    const budget = Option.getOrUndefined(Context.getOption(context, Budget.Budget))
    const pricing = Option.getOrUndefined(Context.getOption(context, Pricing.Pricing))
    if (budget !== undefined && pricing === undefined) {
      return yield* new LlmConfigError({
        stage: "pricing",
        reason: `a Budget needs prices to reserve with: provide ${stageTags.pricing.provide} to Llm.layer`
      })
    }
    const tokenizer = Counted.memoize(
      Option.getOrUndefined(Context.getOption(context, Tokenizer.Tokenizer)) ??
        languageModel.tokenizer ?? Tokenizer.bytesUpperBound
    )
    const policy = yield* RetryPolicy.RetryPolicy
    const router = Option.getOrUndefined(Context.getOption(context, Router.Router))
    const breaker = Option.getOrUndefined(Context.getOption(context, CircuitBreaker.CircuitBreaker))
    if (router !== undefined && budget !== undefined) {
      const unpriced = router.models.find(({ model }) => pricing!.lookup(model) === undefined)
      if (unpriced !== undefined) {
        return yield* new LlmConfigError({
          stage: "router",
          reason:
            `${unpriced.field}: model "${unpriced.model}" has no price, so the Budget cannot reserve for it: add it to the Pricing table or route to a priced model`
        })
      }
    }

    // At each level the first stage listed is the outermost: an attempt's span is inside the
    // budget's extension of its reservation, so it times the request alone. An open circuit fails
    // a round before the budget reserves for it; the router walks its chain inside the call's
    // observation, so one record and one span cover every hop.
    const stages: Array<Stage.Stage> = []
    if (breaker !== undefined) stages.push(Breaker.make(breaker))
    if (pricing !== undefined) stages.push(Metering.make({ budget, policy, pricing, tokenizer }))
    const limiter = Option.getOrUndefined(Context.getOption(context, RateLimiter.RateLimiter))
    // Reservations and tokens/min limits count tokens: load the encoder now, off the first call's path.
    if (budget !== undefined || limiter !== undefined) yield* Effect.forkDaemon(tokenizer.load)
    const observe = Observe.make({
      provider: languageModel.provider,
      callLog: yield* CallLog.CallLog,
      telemetry: yield* Telemetry.Telemetry
    })
    if (observe !== undefined) stages.push(observe)
    const routing = router === undefined ? undefined : Routing.make({ router, tokenizer, budget })
    if (routing !== undefined) stages.push(routing.stage)
    // The rate limiter is the outermost attempt wrapper: its waits fall outside every other stage's attempt.
    if (limiter !== undefined) stages.unshift(Limiting.make({ limiter, policy, tokenizer }))
    const pipeline = Stage.compose(stages)
    yield* Effect.logInfo(
      `Llm: ${languageModel.provider} model${
        options.defaultModel === undefined ? "" : ` (default ${options.defaultModel})`
      }; stages: ${[...stages.map((stage) => stage.name), `retry (${policy.description})`].join(", ")}${
        pricing === undefined ? "" : `; tokenizer ${tokenizer.name}`
      }${budget === undefined ? "; no budget" : ""}`
    )

    /**
     * Without a budget, a call whose context holds one (provided beside the layer rather than to it)
     * fails closed instead of running unlimited.
     */
    const budgetBeside = budget === undefined
      ? new BudgetUnavailable({
        operation: "configure",
        reason:
          "a Budget is provided where the call runs, but Llm.layer was built without one: provide the Budget to Llm.layer (Layer.provide), not merged beside it"
      })
      : undefined

    /**
     * Chooses the model, and says why: named in the request, set by `withModel`, else the router's
     * route or the default.
     */
    type Resolved = {
      readonly request: LlmRequest.Resolved
      readonly reason: string
      readonly route?: Stage.RouteState
    }
    const resolve = (request: LlmRequest.LlmRequest): Effect.Effect<Resolved, InvalidRequest | BudgetUnavailable> =>
      Effect.contextWithEffect((context: Context.Context<never>): Effect.Effect<
        Resolved,
        InvalidRequest | BudgetUnavailable
      > => {
        if (budgetBeside !== undefined && context.unsafeMap.has(Budget.Budget.key)) return Effect.fail(budgetBeside)
        const override = Context.get(context, ModelOverride)
        if (routing !== undefined) {
          return routing.choose(
            request,
            request.model !== undefined
              ? { model: request.model, reason: "request" }
              : Option.isSome(override)
              ? { model: override.value, reason: "withModel" }
              : undefined
          )
        }
        if (request.model !== undefined) {
          return Effect.succeed({ request: request as LlmRequest.Resolved, reason: "request" })
        }
        if (Option.isSome(override)) {
          return Effect.succeed({ request: Stage.withModel(request, override.value), reason: "withModel" })
        }
        if (options.defaultModel !== undefined) {
          return Effect.succeed({ request: Stage.withModel(request, options.defaultModel), reason: "default" })
        }
        return Effect.fail(
          new InvalidRequest({
            field: "model",
            reason: "no model given: name one in the request, with Llm.withModel, or as the default model"
          })
        )
      })

    /** One attempt: counted, and its usage added, before anything else looks at it. */
    const attempt = (state: CallState, request: LlmRequest.Resolved) => (timeout: RetryPolicy.AttemptTimeout) =>
      pipeline.attempt(
        state,
        Effect.suspend(() => {
          state.attempts++
          return Effect.tap(languageModel.complete(request, timeout), (response) => {
            state.usage = Usage.add(state.usage, response.usage)
            state.response = response
          })
        })
      )

    /** One round: a request sent under the retry policy until it answers or fails for good, then classified. */
    const round = (state: CallState, request: LlmRequest.Resolved): Effect.Effect<LlmResponse, LlmError> =>
      Effect.suspend(() => {
        state.request = request
        return pipeline.round(
          state,
          RetryPolicy.retry(attempt(state, request), { model: request.model, policy }).pipe(
            Effect.flatMap((response) => classify(request, response))
          )
        )
      })

    /** One logical call: validate the input, choose the model, run `body` with fresh call state. */
    const call = <A>(
      input: LlmRequest.Input,
      body: (state: CallState, request: LlmRequest.Resolved) => Effect.Effect<A, LlmError>
    ): Effect.Effect<A, LlmError> => {
      return LlmRequest.decode(input).pipe(
        Effect.flatMap(resolve),
        Effect.flatMap(({ reason, request, route }) => {
          const state: CallState = {
            request,
            attempts: 0,
            usage: Usage.empty,
            response: undefined,
            cost: undefined,
            costEstimated: false,
            priceFallback: false,
            unansweredAttempts: 0,
            overrun: 0n,
            repairs: 0,
            routeReason: reason,
            route
          }
          // A call-level stage (a router) may replace the request before the body reads it.
          return pipeline.wrapsCalls
            ? pipeline.call(state, Effect.suspend(() => body(state, state.request)))
            : body(state, request)
        })
      )
    }

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

/**
 * The facade over the `LanguageModel` in context, with the stages provided to it. Stages that
 * `options.require` lists must be among them, or building fails with `LlmConfigError` naming the first
 * one missing.
 */
export const layer = (options: Options = {}): Layer.Layer<Llm, LlmConfigError, LanguageModel> =>
  Layer.effect(Llm, make(options))

/** Sends one request through the pipeline. */
export const generate = (request: LlmRequest.Input): Effect.Effect<LlmResponse, LlmError, Llm> =>
  Effect.flatMap(Llm, (llm) => llm.generate(request))

/** Sends one request and decodes the answer with `options.schema`; see `GenerateObjectOptions`. */
export const generateObject = <A, I>(options: GenerateObjectOptions<A, I>): Effect.Effect<A, LlmError, Llm> =>
  Effect.flatMap(Llm, (llm) => llm.generateObject(options))
