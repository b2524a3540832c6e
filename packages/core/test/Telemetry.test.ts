import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { SpanKind, SpanStatusCode } from "@opentelemetry/api"
import {
  AggregationTemporality,
  type DataPoint,
  type Histogram,
  InMemoryMetricExporter,
  PeriodicExportingMetricReader
} from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Budget from "../src/Budget.js"
import * as Llm from "../src/Llm.js"
import { QuotaExhausted, RateLimited } from "../src/LlmError.js"
import * as Money from "../src/Money.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as Telemetry from "../src/Telemetry.js"
import * as TestKit from "../src/TestKit.js"
import * as TestPrices from "./utils/prices.js"

const user = (content: string) => ({ role: "user" as const, content })

/** OpenTelemetry's SDK with in-memory span export and an on-demand metric reader, plus the pipeline. */
const setup = (model: TestKit.Scripted) => {
  const spans = new InMemorySpanExporter()
  const metrics = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 3_600_000
  })
  const layer = Layer.mergeAll(
    Llm.layer().pipe(Layer.provide(TestPrices.layer()), Layer.provide(model.layer)),
    NodeSdk.layer(() => ({
      resource: { serviceName: "keel-test" },
      spanProcessor: new SimpleSpanProcessor(spans),
      metricReader: metrics
    }))
  )
  return { spans, metrics, layer }
}

const byName = (spans: ReadonlyArray<ReadableSpan>, name: string) => spans.filter((s) => s.name === name)

/** Retries wait under TestClock; the span exporter is read before the layer (and the SDK) shut down. */
const run = <A, E, ROut, LE>(layer: Layer.Layer<ROut, LE>, self: Effect.Effect<A, E, ROut>) =>
  TestKit.runWithTestClock(Effect.either(self), { step: Duration.millis(100) }).pipe(Effect.provide(layer))

describe("Telemetry: spans", () => {
  it.effect("a CLIENT span per call named `chat <model>` with the GenAI and keel attributes, a child per attempt", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([
        new RateLimited({ model: "gpt-4o-mini", requestId: "req_0" }),
        TestKit.response({
          id: "chatcmpl-42",
          model: "gpt-4o-mini-2024-07-18",
          requestId: "req_1",
          finishReason: "tool_calls",
          usage: { inputTokens: 1000, cachedInputTokens: 400, outputTokens: 200, reasoningTokens: 50 }
        })
      ])
      const { layer, spans } = setup(model)
      const finished = yield* Effect.gen(function*() {
        yield* Effect.orDie(Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")], scope: "tenant:acme" }))
        return spans.getFinishedSpans()
      }).pipe((self) => run(layer, self), Effect.flatten)

      const [call] = byName(finished, "chat gpt-4o-mini")
      assert.isDefined(call)
      assert.strictEqual(call!.kind, SpanKind.CLIENT)
      assert.strictEqual(call!.status.code, SpanStatusCode.OK)
      const a = call!.attributes
      assert.strictEqual(a["gen_ai.operation.name"], "chat")
      assert.strictEqual(a["gen_ai.provider.name"], "scripted")
      assert.strictEqual(a["gen_ai.request.model"], "gpt-4o-mini")
      assert.strictEqual(a["gen_ai.response.model"], "gpt-4o-mini-2024-07-18")
      assert.strictEqual(a["gen_ai.response.id"], "chatcmpl-42")
      // @effect/opentelemetry 0.64 hands arrays to the OTel SDK as JSON text (its OTLP exporter sends real arrays).
      assert.deepStrictEqual(JSON.parse(a["gen_ai.response.finish_reasons"] as string), ["tool_calls"])
      assert.strictEqual(a["gen_ai.usage.input_tokens"], 1000)
      assert.strictEqual(a["gen_ai.usage.output_tokens"], 200)
      assert.strictEqual(a["gen_ai.usage.cache_read.input_tokens"], 400)
      assert.strictEqual(a["gen_ai.usage.reasoning.output_tokens"], 50)
      // gpt-4o-mini: 600 × $0.15/M + 400 × $0.075/M + 200 × $0.60/M
      assert.closeTo(a["keel.cost_usd"] as number, 0.00024, 1e-12)
      assert.strictEqual(a["keel.route.reason"], "request")
      assert.strictEqual(a["keel.budget.scope"], "tenant:acme")
      assert.strictEqual(a["keel.attempts"], 2)
      assert.match(a["keel.prompt_hash"] as string, /^sha256:[0-9a-f]{64}$/)
      assert.isUndefined(a["error.type"])

      const attempts = byName(finished, "keel.attempt").sort((x, y) =>
        (x.attributes["keel.attempt"] as number) - (y.attributes["keel.attempt"] as number)
      )
      assert.deepStrictEqual(attempts.map((s) => s.attributes["keel.attempt"]), [1, 2])
      for (const attempt of attempts) {
        assert.strictEqual(attempt.parentSpanContext?.spanId, call!.spanContext().spanId)
        assert.strictEqual(attempt.spanContext().traceId, call!.spanContext().traceId)
      }
      assert.strictEqual(attempts[0]!.attributes["error.type"], "RateLimited")
      assert.strictEqual(attempts[0]!.status.code, SpanStatusCode.ERROR)
      assert.strictEqual(attempts[1]!.attributes["gen_ai.response.id"], "chatcmpl-42")
    }))

  it.effect("a failed call's span carries error.type and an error status", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([new QuotaExhausted({ code: "insufficient_quota" })])
      const { layer, spans } = setup(model)
      const [result, finished] = yield* Effect.gen(function*() {
        const result = yield* Effect.either(Llm.generate({ model: "gpt-4o-mini", messages: [user("hi")] }))
        return [result, spans.getFinishedSpans()] as const
      }).pipe((self) => run(layer, self), Effect.flatten)
      assert.strictEqual(result._tag, "Left")
      const [call] = byName(finished, "chat gpt-4o-mini")
      assert.strictEqual(call!.attributes["error.type"], "QuotaExhausted")
      assert.strictEqual(call!.attributes["keel.attempts"], 1)
      assert.strictEqual(call!.attributes["keel.budget.scope"], "global")
      assert.strictEqual(call!.status.code, SpanStatusCode.ERROR)
      assert.isUndefined(call!.attributes["gen_ai.response.id"])
    }))

  it.effect("Telemetry.layerDisabled: no spans from the pipeline", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.response()])
      const spans = new InMemorySpanExporter()
      const layer = Layer.mergeAll(
        Llm.layer().pipe(Layer.provide(model.layer), Layer.provide(Telemetry.layerDisabled)),
        NodeSdk.layer(() => ({ resource: { serviceName: "keel-test" }, spanProcessor: new SimpleSpanProcessor(spans) }))
      )
      const finished = yield* Effect.gen(function*() {
        yield* Effect.orDie(Llm.generate({ model: "quiet-model", messages: [user("hi")] }))
        return spans.getFinishedSpans()
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(finished.map((s) => s.name), [])
    }))
})

describe("Telemetry: span sampling", () => {
  it.effect("spanSampling traces a share of the calls, each with its attempt span; the others get none", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const spans = new InMemorySpanExporter()
      const layer = Layer.mergeAll(
        Llm.layer().pipe(Layer.provide(model.layer), Layer.provide(Telemetry.layer({ spanSampling: 0.5 }))),
        NodeSdk.layer(() => ({ resource: { serviceName: "keel-test" }, spanProcessor: new SimpleSpanProcessor(spans) }))
      )
      const finished = yield* Effect.gen(function*() {
        yield* Effect.forEach(
          Array.from({ length: 200 }),
          () => Effect.orDie(Llm.generate({ model: "sampled-model", messages: [user("hi")] })),
          { discard: true }
        )
        return spans.getFinishedSpans()
      }).pipe(Effect.provide(layer))
      const calls = byName(finished, "chat sampled-model")
      const attempts = byName(finished, "keel.attempt")
      assert.isAbove(calls.length, 50)
      assert.isBelow(calls.length, 150)
      assert.strictEqual(attempts.length, calls.length)
      const callIds = new Set(calls.map((s) => s.spanContext().spanId))
      for (const attempt of attempts) assert.isTrue(callIds.has(attempt.parentSpanContext!.spanId))
    }))

  it.effect("without a tracer the pipeline makes no spans: the model sees no parent span", () =>
    Effect.gen(function*() {
      const seen: Array<boolean> = []
      const model = TestKit.scripted([], {
        otherwise: () =>
          Effect.map(Effect.option(Effect.currentSpan), (span) => {
            seen.push(span._tag === "Some")
            return TestKit.response()
          })
      })
      yield* Llm.generate({ model: "untraced-model", messages: [user("hi")] }).pipe(
        Effect.provide(Llm.layer().pipe(Layer.provide(model.layer)))
      )
      assert.deepStrictEqual(seen, [false])
    }))
})

describe("Telemetry: metrics", () => {
  it.effect("token usage and duration histograms have the conventions' buckets and attributes", () =>
    Effect.gen(function*() {
      // A model name no other test uses: Effect's metric registry is process-wide.
      const name = "metrics-model"
      const model = TestKit.scripted([
        TestKit.delayed(
          Duration.millis(300),
          TestKit.response({ usage: { inputTokens: 100, cachedInputTokens: 0, outputTokens: 20, reasoningTokens: 0 } })
        ),
        new RateLimited({}),
        TestKit.response({ usage: { inputTokens: 5000, cachedInputTokens: 0, outputTokens: 3, reasoningTokens: 0 } }),
        new QuotaExhausted({ code: "insufficient_quota" })
      ])
      const { layer, metrics } = setup(model)
      const collected = yield* Effect.gen(function*() {
        const pricing = TestPrices.layer({ models: { [name]: { input: "1", cachedInput: "0.5", output: "2" } } })
        const call = Llm.generate({ model: name, messages: [user("hi")] }).pipe(
          Effect.provide(Llm.layer().pipe(Layer.provide(pricing), Layer.provide(model.layer))),
          RetryPolicy.withPolicy(RetryPolicy.make({ jitter: "none", base: "2 seconds" }))
        )
        yield* Effect.either(call)
        yield* Effect.either(call)
        yield* Effect.either(call)
        return yield* Effect.promise(() => metrics.collect())
      }).pipe((self) => run(layer, self), Effect.flatten)

      const all = collected.resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
      const find = (metric: string) => all.find((m) => m.descriptor.name === metric)!
      const points = (metric: string) =>
        (find(metric).dataPoints as Array<DataPoint<Histogram>>).filter((p) =>
          p.attributes["gen_ai.request.model"] === name
        )

      const tokens = points("gen_ai.client.token.usage")
      assert.strictEqual(tokens.length, 2)
      for (const point of tokens) {
        assert.deepStrictEqual(point.value.buckets.boundaries, Telemetry.tokenUsageBoundaries)
        assert.strictEqual(point.attributes["gen_ai.operation.name"], "chat")
        assert.strictEqual(point.attributes["gen_ai.provider.name"], "scripted")
      }
      const input = tokens.find((p) => p.attributes["gen_ai.token.type"] === "input")!
      const output = tokens.find((p) => p.attributes["gen_ai.token.type"] === "output")!
      // Two calls were answered (100 and 5000 input tokens; 20 and 3 output); the failed one billed nothing.
      assert.strictEqual(input.value.count, 2)
      assert.strictEqual(input.value.sum, 5100)
      assert.strictEqual(input.value.buckets.counts[Telemetry.tokenUsageBoundaries.indexOf(256)], 1) // 100 ≤ 256
      assert.strictEqual(input.value.buckets.counts[Telemetry.tokenUsageBoundaries.indexOf(16384)], 1) // 5000
      assert.strictEqual(output.value.sum, 23)

      const durations = points("gen_ai.client.operation.duration")
      for (const point of durations) {
        assert.deepStrictEqual(point.value.buckets.boundaries, Telemetry.durationBoundaries)
      }
      const ok = durations.find((p) => p.attributes["error.type"] === undefined)!
      const failed = durations.find((p) => p.attributes["error.type"] === "QuotaExhausted")!
      assert.strictEqual(ok.value.count, 2)
      assert.strictEqual(failed.value.count, 1)
      // Virtual time: the first call took 0.3 s, bucket (0.16, 0.32]; the second waited 2 s to retry, (1.28, 2.56].
      assert.strictEqual(ok.value.buckets.counts[Telemetry.durationBoundaries.indexOf(0.32)], 1)
      assert.strictEqual(ok.value.buckets.counts[Telemetry.durationBoundaries.indexOf(2.56)], 1)

      const cost = (find("keel.client.cost").dataPoints as Array<DataPoint<number>>)
        .find((p) => p.attributes["gen_ai.request.model"] === name)!
      // (100 × $1 + 20 × $2 + 5000 × $1 + 3 × $2) / 1M
      assert.closeTo(cost.value, 0.005146, 1e-12)
      const retries = (find("keel.client.retries").dataPoints as Array<DataPoint<number>>)
        .find((p) => p.attributes["gen_ai.request.model"] === name)!
      assert.strictEqual(retries.value, 1)
    }))

  it.effect("the circuit-breaker gauge takes what its hook records; the budget gauge samples the Budget", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([])
      const { layer, metrics } = setup(model)
      const budgetLayer = Budget.layerMemory({ limits: [{ scope: "tenant:gauge", window: "day", limit: "12.5" }] })
      const collected = yield* Effect.gen(function*() {
        yield* Telemetry.recordCircuitState("gauge-model", "open")
        const reservation = yield* Budget.reserve("tenant:gauge", Money.unsafeParse("2"))
        yield* Effect.flatMap(Budget.Budget, (b) => b.settle(reservation, Money.unsafeParse("0.25")))
        yield* Telemetry.sampleBudgetRemaining({ every: "1 minute" })
        return yield* Effect.promise(() => metrics.collect())
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(layer, budgetLayer)))
      const all = collected.resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
      const breaker = all.find((m) => m.descriptor.name === "keel.circuit_breaker.state")!.dataPoints
        .find((p) => p.attributes["gen_ai.request.model"] === "gauge-model")!
      assert.strictEqual(breaker.value, 2)
      const budget = all.find((m) => m.descriptor.name === "keel.budget.remaining")!.dataPoints
        .find((p) => p.attributes["keel.budget.scope"] === "tenant:gauge")!
      assert.strictEqual(budget.value, 12.25)
      assert.strictEqual(budget.attributes["keel.budget.window"], "day")
    }))
})
