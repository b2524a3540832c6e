/**
 * The pipeline's last stage, wrapped around each logical call and each attempt: the call's CLIENT
 * span and its attempt spans, the per-call metrics, and exactly one `CallRecord` written when the
 * call ends, whatever the exit. Built once per `Llm` service; when nothing observes (no call log,
 * spans and metrics off) it returns the effects untouched. Spans are made only when the fiber's
 * tracer is not Effect's built-in one (whose spans reach no exporter): an application that provides
 * no tracer pays nothing for them.
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import * as Crypto from "node:crypto"
import type * as CallLog from "../CallLog.js"
import * as CallRecord from "../CallRecord.js"
import * as LlmError from "../LlmError.js"
import type * as LlmRequest from "../LlmRequest.js"
import type { LlmResponse } from "../LlmResponse.js"
import * as Money from "../Money.js"
import * as Telemetry from "../Telemetry.js"
import type { Usage } from "../Usage.js"

/** What the observer reads from the pipeline's call state when the call ends. */
export interface Observed {
  readonly request: LlmRequest.Resolved
  readonly attempts: number
  readonly usage: Usage
  readonly response: LlmResponse | undefined
}

export interface Options<S extends Observed> {
  readonly provider: string
  readonly callLog: CallLog.CallLog.Service
  readonly telemetry: Telemetry.Options
  /** The call's cost so far, and whether part of it is an estimate. */
  readonly cost: (
    state: S
  ) => { readonly amount: Money.Money; readonly estimated: boolean; readonly fallback?: boolean }
  /** Why the model was chosen. */
  readonly routeReason: (state: S) => string
  /** Repair rounds, when the call had any. */
  readonly repairs: (state: S) => number | undefined
}

export interface Observer<S extends Observed> {
  readonly call: <A>(state: S, body: Effect.Effect<A, LlmError.LlmError>) => Effect.Effect<A, LlmError.LlmError>
  readonly attempt: (
    state: S,
    attempt: Effect.Effect<LlmResponse, LlmError.LlmError>
  ) => Effect.Effect<LlmResponse, LlmError.LlmError>
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

/** The tracer in force when the application provides none. */
const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

const callSpanOptions = { kind: "client", captureStackTrace: false } as const
const attemptSpanOptions = { kind: "internal", captureStackTrace: false } as const

export const make = <S extends Observed>(options: Options<S>): Observer<S> => {
  const { callLog, provider } = options
  const spans = options.telemetry.spans && options.telemetry.spanSampling > 0
  const sampling = options.telemetry.spanSampling
  /** The calls that got a span: only their attempts get spans too. */
  const traced = new WeakSet<S>()
  const metrics = options.telemetry.metrics
  const records = callLog.enabled
  const A = Telemetry.Attributes

  if (!records && !spans && !metrics) {
    return { call: (_state, body) => body, attempt: (_state, attempt) => attempt }
  }

  const finish = (
    state: S,
    exit: Exit.Exit<unknown, unknown>,
    startNanos: bigint,
    startMillis: number,
    hash: string,
    clock: Clock.Clock,
    span: Tracer.Span | undefined
  ): Effect.Effect<void> => {
    const latencyMs = Number(clock.unsafeCurrentTimeNanos() - startNanos) / 1e6
    const failure = failureOf(exit)
    const { request, response, usage } = state
    const cost = options.cost(state)
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
      span.attribute(A.costUsd, Number(cost.amount) / 1e12)
      span.attribute(A.attempts, state.attempts)
      if (failure !== undefined) span.attribute(A.errorType, failure.tag)
    }
    if (metrics) {
      Telemetry.unsafeRecordCall({
        provider,
        model: request.model,
        inputTokens: usage.inputTokens,
        outputTokens: usage.outputTokens,
        durationSeconds: latencyMs / 1000,
        attempts: state.attempts,
        costUsd: Number(cost.amount) / 1e12,
        errorType: failure?.tag
      })
    }
    if (!records) return Effect.void
    const record: {
      -readonly [K in keyof CallRecord.CallRecord]: CallRecord.CallRecord[K]
    } = {
      ts: new Date(startMillis).toISOString(),
      callId: Crypto.randomUUID(),
      scope: request.scope ?? "global",
      route: { reason: options.routeReason(state) },
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
      costUsd: Money.format(cost.amount),
      outcome: failure === undefined ? "ok" : "error"
    }
    if (request.task !== undefined) record.task = request.task
    if (request.tier !== undefined) record.tier = request.tier
    const repairs = options.repairs(state)
    if (repairs !== undefined) record.repairs = repairs
    if (cost.estimated) record.estimated = true
    if (cost.fallback === true) record.priceFallback = true
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
    state: S,
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
        span.attribute(A.routeReason, options.routeReason(state))
        span.attribute(A.promptHash, hash)
        return Effect.onExit(
          Effect.withParentSpan(body, span),
          (exit) => finish(state, exit, startNanos, startMillis, hash, clock, span)
        )
      })
    })

  const call = <A>(state: S, body: Effect.Effect<A, LlmError.LlmError>): Effect.Effect<A, LlmError.LlmError> =>
    spans
      ? Effect.tracerWith((tracer) =>
        tracer !== builtInTracer && (sampling >= 1 || Math.random() < sampling)
          ? measured(state, body, true)
          : records || metrics
          ? measured(state, body, false)
          : body
      )
      : measured(state, body, false)

  const spanned = (state: S, attempt: Effect.Effect<LlmResponse, LlmError.LlmError>) =>
    Effect.useSpan(Telemetry.attemptSpanName, attemptSpanOptions, (span) => {
      span.attribute(A.attempt, state.attempts)
      return Effect.onExit(Effect.withParentSpan(attempt, span), (exit) =>
        Effect.sync(() => {
          if (exit._tag === "Success") {
            span.attribute(A.responseId, exit.value.id)
          } else {
            const failure = failureOf(exit)
            if (failure !== undefined) span.attribute(A.errorType, failure.tag)
          }
        }))
    })

  const attempt = spans
    ? (state: S, attempt: Effect.Effect<LlmResponse, LlmError.LlmError>) =>
      traced.has(state) ? spanned(state, attempt) : attempt
    : (_state: S, attempt: Effect.Effect<LlmResponse, LlmError.LlmError>) => attempt

  return { call, attempt }
}
