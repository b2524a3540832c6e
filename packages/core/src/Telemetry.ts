/**
 * Spans and metrics of model calls in the OpenTelemetry GenAI conventions (status Development, the
 * names of semantic-conventions before the GenAI move): one CLIENT span per logical call named
 * `{gen_ai.operation.name} {gen_ai.request.model}` with a child span per HTTP attempt, and the
 * `gen_ai.client.*` histograms with the conventions' bucket boundaries, plus keel's cost, retry,
 * circuit-breaker and budget metrics.
 *
 * Everything here is Effect's own `Tracer` and `Metric`: spans reach OpenTelemetry when the
 * application provides a tracer (`Telemetry/Otlp.ts`, or `@effect/opentelemetry`'s `NodeSdk`), and
 * metrics are read from Effect's registry by the same exporters. The `Telemetry` reference switches
 * spans and metrics off, or samples spans, and is read where `Llm.layer` is built:
 *
 * ```ts
 * const LlmLive = Llm.layer().pipe(Layer.provide(Layer.mergeAll(ModelLive, Telemetry.layer({ spanSampling: 0.1 }))))
 * const main = program.pipe(
 *   Effect.provide(LlmLive),
 *   Effect.provide(Otlp.layerConfig.pipe(Layer.provide(NodeHttpClient.layerUndici))) // OTEL_* variables
 * )
 * ```
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Budget from "./Budget.js"

export interface Options {
  /** A span per call and per attempt. Default true. */
  readonly spans: boolean
  /**
   * The fraction of calls traced, from 0 to 1 (default 1: every call). Exporting a call's spans costs
   * about 100 µs of CPU (see BENCHMARKS.md), so a high-volume pipeline may trace a sample.
   */
  readonly spanSampling: number
  /** The `gen_ai.client.*` and `keel.*` metrics. Default true. */
  readonly metrics: boolean
}

/** What the pipeline emits; spans and metrics are on unless a layer says otherwise. */
export class Telemetry extends Context.Reference<Telemetry>()("@keel/core/Telemetry", {
  defaultValue: (): Options => ({ spans: true, spanSampling: 1, metrics: true })
}) {}

/** Chooses what the pipeline emits. */
export const layer = (options: Partial<Options>): Layer.Layer<Telemetry> =>
  Layer.succeed(Telemetry, {
    spans: options.spans ?? true,
    spanSampling: Math.min(1, Math.max(0, options.spanSampling ?? 1)),
    metrics: options.metrics ?? true
  })

/** No spans and no metrics (the call log is separate: it writes only when sinks are provided). */
export const layerDisabled: Layer.Layer<Telemetry> = layer({ spans: false, metrics: false })

/** Attribute names: the GenAI conventions' and keel's own. */
export const Attributes = {
  operationName: "gen_ai.operation.name",
  providerName: "gen_ai.provider.name",
  requestModel: "gen_ai.request.model",
  responseModel: "gen_ai.response.model",
  responseId: "gen_ai.response.id",
  finishReasons: "gen_ai.response.finish_reasons",
  inputTokens: "gen_ai.usage.input_tokens",
  outputTokens: "gen_ai.usage.output_tokens",
  cacheReadInputTokens: "gen_ai.usage.cache_read.input_tokens",
  reasoningOutputTokens: "gen_ai.usage.reasoning.output_tokens",
  tokenType: "gen_ai.token.type",
  errorType: "error.type",
  costUsd: "keel.cost_usd",
  routeReason: "keel.route.reason",
  routeModels: "keel.route.models",
  routeHops: "keel.route.hops",
  budgetScope: "keel.budget.scope",
  attempts: "keel.attempts",
  attempt: "keel.attempt",
  promptHash: "keel.prompt_hash",
  circuitState: "keel.circuit_breaker.state"
} as const

/** The operation keel performs: a chat completion. */
export const operationName = "chat"

/** The span name of a call, `chat gpt-4o-mini`. */
export const spanName = (model: string): string => `${operationName} ${model}`

/** The span name of one HTTP attempt inside a call. */
export const attemptSpanName = "keel.attempt"

/** `gen_ai.client.token.usage` boundaries (tokens), from the conventions. */
export const tokenUsageBoundaries: ReadonlyArray<number> = [
  1,
  4,
  16,
  64,
  256,
  1024,
  4096,
  16384,
  65536,
  262144,
  1048576,
  4194304,
  16777216,
  67108864
]

/** `gen_ai.client.operation.duration` boundaries (seconds), from the conventions. */
export const durationBoundaries: ReadonlyArray<number> = [
  0.01,
  0.02,
  0.04,
  0.08,
  0.16,
  0.32,
  0.64,
  1.28,
  2.56,
  5.12,
  10.24,
  20.48,
  40.96,
  81.92
]

/** Billable tokens per call, tagged `gen_ai.token.type` input or output. */
export const tokenUsage = Metric.histogram(
  "gen_ai.client.token.usage",
  MetricBoundaries.fromIterable(tokenUsageBoundaries),
  "Number of input and output tokens used ({token})"
)

/** Duration of each logical call in seconds, tagged `error.type` when it failed. */
export const operationDuration = Metric.histogram(
  "gen_ai.client.operation.duration",
  MetricBoundaries.fromIterable(durationBoundaries),
  "GenAI operation duration (s)"
)

/** Money spent on calls, in USD (the exact sum is the budget ledger's; this is for dashboards). */
export const cost = Metric.counter("keel.client.cost", {
  description: "Cost of model calls (USD)",
  incremental: true
})

/** Attempts beyond the first of each call. */
export const retries = Metric.counter("keel.client.retries", {
  description: "Retried attempts of model calls ({attempt})",
  incremental: true
})

/** Circuit-breaker state per model: 0 closed, 1 half-open, 2 open. */
export const circuitBreakerState = Metric.gauge("keel.circuit_breaker.state", {
  description: "Circuit breaker state per model (0 closed, 1 half-open, 2 open)"
})

/** What is left to spend in a budget scope and window, in USD. */
export const budgetRemaining = Metric.gauge("keel.budget.remaining", {
  description: "Budget remaining per scope (USD)"
})

/**
 * What calls settled above their reservations (USD): an input estimate that undercounted, or a
 * provider that bills differently. Zero in a healthy pipeline; see `Budget` for what it does to a limit.
 */
export const budgetOverrun = Metric.counter("keel.budget.overrun", {
  description: "Cost settled above what calls had reserved (USD)"
})

/** A breaker state as the gauge encodes it. */
export type CircuitState = "closed" | "half-open" | "open"

const circuitStateValue: Record<CircuitState, number> = { closed: 0, "half-open": 1, open: 2 }

/** Records a model's circuit-breaker state: the hook a circuit breaker calls on every transition. */
export const recordCircuitState = (model: string, state: CircuitState): Effect.Effect<void> =>
  Effect.sync(() =>
    circuitBreakerState.unsafeUpdate(circuitStateValue[state], labels("circuit", model, Attributes.requestModel))
  )

/**
 * Samples `keel.budget.remaining` for every scope and window with a limit in the `Budget`, now and
 * then every `every` (default 10 s), in a fiber that lives as long as the scope. Sampling keeps the
 * store reads off the call path. A failed read is logged and the next sample tried.
 */
export const sampleBudgetRemaining = (
  options: { readonly every?: Duration.DurationInput } = {}
): Effect.Effect<void, never, Budget.Budget | Scope.Scope> =>
  Effect.flatMap(Budget.Budget, (budget) => {
    const scopes = Array.from(new Set(budget.limits.map((limit) => limit.scope)))
    const sample = Effect.forEach(scopes, (scope) =>
      Effect.map(budget.status(scope), (statuses) => {
        for (const status of statuses) {
          if (status.scope !== scope || status.limit === undefined) continue
          budgetRemaining.unsafeUpdate(
            Number(status.limit - status.spent - status.reserved) / 1e12,
            labels2("budget", scope, status.window, Attributes.budgetScope, "keel.budget.window")
          )
        }
      }), { discard: true }).pipe(
        Effect.catchAll((error) => Effect.logWarning("Telemetry: could not sample the budget", error))
      )
    return Effect.zipRight(
      sample,
      Effect.asVoid(Effect.forkScoped(Effect.schedule(sample, Schedule.spaced(options.every ?? Duration.seconds(10)))))
    )
  })

/** `sampleBudgetRemaining` for the lifetime of the layer. */
export const layerBudgetRemaining = (
  options: { readonly every?: Duration.DurationInput } = {}
): Layer.Layer<never, never, Budget.Budget> => Layer.scopedDiscard(sampleBudgetRemaining(options))

// Effect caches a metric's registry hook per label array (by identity), so each distinct tag set is
// built once and reused: an update is then a map lookup and an add, with no allocation.
const labelCache = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()

const labels = (kind: string, value: string, key: string): ReadonlyArray<MetricLabel.MetricLabel> => {
  const cacheKey = kind + "\u0000" + value
  let cached = labelCache.get(cacheKey)
  if (cached === undefined) {
    cached = [MetricLabel.make(key, value)]
    labelCache.set(cacheKey, cached)
  }
  return cached
}

const labels2 = (
  kind: string,
  a: string,
  b: string,
  keyA: string,
  keyB: string
): ReadonlyArray<MetricLabel.MetricLabel> => {
  const cacheKey = kind + "\u0000" + a + "\u0000" + b
  let cached = labelCache.get(cacheKey)
  if (cached === undefined) {
    cached = [MetricLabel.make(keyA, a), MetricLabel.make(keyB, b)]
    labelCache.set(cacheKey, cached)
  }
  return cached
}
