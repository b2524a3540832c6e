/**
 * The observation stage of `Llm`, wrapped around each logical call and each attempt: the call's
 * CLIENT span and its attempt spans, the per-call metrics, and exactly one `CallRecord` written when
 * the call ends, whatever the exit. Built once per `Llm` service; when nothing observes (no call log,
 * spans and metrics off) there is no stage. Spans are made only when the fiber's
 * tracer is not Effect's built-in one (whose spans reach no exporter): an application that provides
 * no tracer pays nothing for them.
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import * as Crypto from "node:crypto"
import type * as CallLog from "../CallLog.js"
import * as CallRecord from "../CallRecord.js"
import * as LlmError from "../LlmError.js"
import type { LlmResponse } from "../LlmResponse.js"
import * as Money from "../Money.js"
import * as Telemetry from "../Telemetry.js"
import type { CallState, Stage } from "./stage.js"

export interface Options {
  readonly provider: string
  readonly callLog: CallLog.CallLog.Service
  readonly telemetry: Telemetry.Options
}

interface Failure {
  readonly tag: string
  readonly message: string
  readonly requestId: string | undefined
}

const failureOf = (exit: Exit.Exit<unknown, unknown>): Failure | undefined => {
  if (exit._tag === "Success") return undefined
  const error = Cause.failureOption(exit.cause)
  if (Option.isSome(error)) {
    const e = error.value
    return LlmError.isLlmError(e)
      ? { tag: e._tag, message: e.message, requestId: "requestId" in e ? e.requestId : undefined }
      : { tag: "UnknownError", message: String(e), requestId: undefined }
  }
  if (Cause.isInterruptedOnly(exit.cause)) return { tag: "Interrupted", message: "interrupted", requestId: undefined }
  const defect = Cause.squash(exit.cause)
  return { tag: "Defect", message: defect instanceof Error ? defect.message : String(defect), requestId: undefined }
}

/** Span attributes of a routed call: the models it was sent to, and each model passed over with why. */

const routeOf = (state: CallState): CallRecord.CallRecord["route"] => {
  const route = state.route
  if (route === undefined) return { reason: state.routeReason }
  return route.hops.length === 0
    ? { reason: state.routeReason, models: route.tried }
    : { reason: state.routeReason, models: route.tried, hops: route.hops }
}

/** The tracer in force when the application provides none. */
const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

const callSpanOptions = { kind: "client", captureStackTrace: false } as const
const attemptSpanOptions = { kind: "internal", captureStackTrace: false } as const

/** The stage, or undefined when nothing observes. */
export const make = (options: Options): Stage | undefined => {
  const { callLog, provider } = options
  const spans = options.telemetry.spans && options.telemetry.spanSampling > 0
  const sampling = options.telemetry.spanSampling
  /** The calls that got a span: only their attempts get spans too. */
  const traced = new WeakSet<CallState>()
  const metrics = options.telemetry.metrics
  const records = callLog.enabled
  const A = Telemetry.Attributes

  if (!records && !spans && !metrics) return undefined

  const finish = (
    state: CallState,
    exit: Exit.Exit<unknown, unknown>,
    startNanos: bigint,
    startMillis: number,
    hash: string,
    clock: Clock.Clock,
    span: Tracer.Span | undefined
  ): Effect.Effect<void> => {
    const latencyMs = Number(clock.unsafeCurrentTimeNanos() - startNanos) / 1e6
    const failure = failureOf(exit)
    const { cost, request, response, usage } = state
    const costUsd = cost === undefined ? undefined : Number(cost) / 1e12
    if (span !== undefined) {
      if (response !== undefined) {
        span.attribute(A.responseModel, response.model)
        span.attribute(A.responseId, response.id)
        span.attribute(A.finishReasons, [response.finishReason])
      }
      span.attribute(A.inputTokens, usage.inputTokens)
      span.attribute(A.outputTokens, usage.outputTokens)
      span.attribute(A.cacheReadInputTokens, usage.cachedInputTokens)
      span.attribute(A.reasoningOutputTokens, usage.reasoningTokens)
      if (costUsd !== undefined) span.attribute(A.costUsd, costUsd)
      span.attribute(A.attempts, state.attempts)
      if (failure !== undefined) span.attribute(A.errorType, failure.tag)
      if (state.route !== undefined) {
        span.attribute(A.routeModels, state.route.tried)
        if (state.route.hops.length > 0) {
          span.attribute(A.routeHops, state.route.hops.map((hop) => `${hop.model}: ${hop.reason}`))
        }
      }
    }
    if (metrics) {
      recordMetrics(provider, state, latencyMs / 1000, costUsd, failure?.tag)
    }
    if (!records) return Effect.void
    const record: {
      -readonly [K in keyof CallRecord.CallRecord]: CallRecord.CallRecord[K]
    } = {
      ts: new Date(startMillis).toISOString(),
      callId: Crypto.randomUUID(),
      scope: request.scope ?? "global",
      route: routeOf(state),
      provider,
      model: request.model,
      mode: "sync",
      promptHash: hash,
      attempts: state.attempts,
      latencyMs: Math.round(latencyMs * 1000) / 1000,
      inputTokens: usage.inputTokens,
      cachedInputTokens: usage.cachedInputTokens,
      outputTokens: usage.outputTokens,
      reasoningTokens: usage.reasoningTokens,
      outcome: failure === undefined ? "ok" : "error"
    }
    if (cost === undefined) record.costUnknown = "no Pricing was provided to Llm.layer"
    else record.costUsd = Money.format(cost)
    if (request.task !== undefined) record.task = request.task
    if (request.tier !== undefined) record.tier = request.tier
    if (state.repairs > 0) record.repairs = state.repairs
    if (state.costEstimated) record.estimated = true
    if (state.priceFallback) record.priceFallback = true
    if (state.overrun > 0n) record.overrunUsd = Money.format(state.overrun)
    if (failure !== undefined) {
      record.errorTag = failure.tag
      record.errorMessage = failure.message
    }
    const requestId = failure?.requestId ?? response?.requestId
    if (requestId !== undefined) record.requestId = requestId
    if (callLog.content) {
      record.prompt = request.messages
      if (response !== undefined) {
        const output: { -readonly [K in keyof CallRecord.Output]: CallRecord.Output[K] } = {}
        if (response.text !== undefined) output.text = response.text
        if (response.toolCalls.length > 0) output.toolCalls = response.toolCalls
        if (response.refusal !== undefined) output.refusal = response.refusal
        record.output = output
      }
    }
    return callLog.write(record)
  }

  const measured = <A>(
    state: CallState,
    body: Effect.Effect<A, LlmError.LlmError>,
    withSpan: boolean
  ): Effect.Effect<A, LlmError.LlmError> =>
    Effect.clockWith((clock) => {
      const startNanos = clock.unsafeCurrentTimeNanos()
      const startMillis = clock.unsafeCurrentTimeMillis()
      const request = state.request
      const hash = records || withSpan ? CallRecord.promptHash(request) : ""
      if (!withSpan) {
        return Effect.onExit(body, (exit) => finish(state, exit, startNanos, startMillis, hash, clock, undefined))
      }
      traced.add(state)
      return Effect.useSpan(Telemetry.spanName(request.model), callSpanOptions, (span) => {
        span.attribute(A.operationName, Telemetry.operationName)
        span.attribute(A.providerName, provider)
        span.attribute(A.requestModel, request.model)
        span.attribute(A.budgetScope, request.scope ?? "global")
        span.attribute(A.routeReason, state.routeReason)
        span.attribute(A.promptHash, hash)
        return Effect.onExit(
          Effect.withParentSpan(body, span),
          (exit) => finish(state, exit, startNanos, startMillis, hash, clock, span)
        )
      })
    })

  const call = <A>(state: CallState, body: Effect.Effect<A, LlmError.LlmError>): Effect.Effect<A, LlmError.LlmError> =>
    spans
      ? Effect.tracerWith((tracer) =>
        tracer !== builtInTracer && (sampling >= 1 || Math.random() < sampling)
          ? measured(state, body, true)
          : records || metrics
          ? measured(state, body, false)
          : body
      )
      : measured(state, body, false)

  const spanned = (state: CallState, attempt: Effect.Effect<LlmResponse, LlmError.LlmError>) =>
    Effect.useSpan(
      Telemetry.attemptSpanName,
      attemptSpanOptions,
      (span) =>
        Effect.onExit(Effect.withParentSpan(attempt, span), (exit) =>
          Effect.sync(() => {
            // The pipeline counts the attempt as it sends it, inside this span.
            span.attribute(A.attempt, state.attempts)
            if (exit._tag === "Success") {
              span.attribute(A.responseId, exit.value.id)
            } else {
              const failure = failureOf(exit)
              if (failure !== undefined) span.attribute(A.errorType, failure.tag)
            }
          }))
    )

  const name = [records ? "call log" : undefined, spans ? "spans" : undefined, metrics ? "metrics" : undefined]
    .filter((part) => part !== undefined).join(", ")
  return {
    name: `observe (${name})`,
    call,
    attempt: spans
      ? (state: CallState, attempt: Effect.Effect<LlmResponse, LlmError.LlmError>) =>
        traced.has(state) ? spanned(state, attempt) : attempt
      : undefined
  }
}

// Effect caches a metric's registry hook per label array (by identity), so each distinct tag set is
// built once and reused: an update is then a map lookup and an add, with no allocation.
const labelCache = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()

const callLabels = (
  provider: string,
  model: string,
  extraKey: string | undefined,
  extraValue: string | undefined
): ReadonlyArray<MetricLabel.MetricLabel> => {
  const cacheKey = provider + "\u0000" + model + "\u0000" + (extraKey ?? "") + "\u0000" + (extraValue ?? "")
  let cached = labelCache.get(cacheKey)
  if (cached === undefined) {
    const base = [
      MetricLabel.make(Telemetry.Attributes.operationName, Telemetry.operationName),
      MetricLabel.make(Telemetry.Attributes.providerName, provider),
      MetricLabel.make(Telemetry.Attributes.requestModel, model)
    ]
    cached = extraKey === undefined || extraValue === undefined
      ? base
      : [...base, MetricLabel.make(extraKey, extraValue)]
    labelCache.set(cacheKey, cached)
  }
  return cached
}

/** Updates every per-call metric (token usage only when a billed answer arrived); synchronous, for the exit handler. */
const recordMetrics = (
  provider: string,
  state: CallState,
  durationSeconds: number,
  costUsd: number | undefined,
  errorType: string | undefined
): void => {
  const { request: { model }, usage } = state
  if (usage.inputTokens > 0 || usage.outputTokens > 0) {
    Telemetry.tokenUsage.unsafeUpdate(
      usage.inputTokens,
      callLabels(provider, model, Telemetry.Attributes.tokenType, "input")
    )
    Telemetry.tokenUsage.unsafeUpdate(
      usage.outputTokens,
      callLabels(provider, model, Telemetry.Attributes.tokenType, "output")
    )
  }
  Telemetry.operationDuration.unsafeUpdate(
    durationSeconds,
    callLabels(provider, model, errorType === undefined ? undefined : Telemetry.Attributes.errorType, errorType)
  )
  const plain = callLabels(provider, model, undefined, undefined)
  if (costUsd !== undefined && costUsd > 0) Telemetry.cost.unsafeUpdate(costUsd, plain)
  if (state.attempts > 1) Telemetry.retries.unsafeUpdate(state.attempts - 1, plain)
  if (state.overrun > 0n) Telemetry.budgetOverrun.unsafeUpdate(Number(state.overrun) / 1e12, plain)
}
