import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Llm from "../src/Llm.js"
import * as Otlp from "../src/Telemetry/Otlp.js"
import * as TestKit from "../src/TestKit.js"
import { collector } from "./utils/collector.js"

interface OtlpJsonSpan {
  readonly name: string
  readonly kind: number
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

const attribute = (span: OtlpJsonSpan, key: string) => span.attributes.find((a) => a.key === key)?.value

describe("Telemetry/Otlp", () => {
  it.effect("layerConfig exports spans as OTLP/HTTP JSON to the endpoint the OTEL_* variables name", () =>
    Effect.gen(function*() {
      const receiver = yield* collector
      const env = new Map([
        ["OTEL_EXPORTER_OTLP_ENDPOINT", `http://127.0.0.1:${receiver.port}/`],
        ["OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"],
        ["OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20collector-token,x-team=keel"],
        ["OTEL_SERVICE_NAME", "keel-test"]
      ])
      const exporter = Otlp.layerConfig.pipe(
        Layer.provide(FetchHttpClient.layer),
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(env)))
      )
      yield* Effect.gen(function*() {
        yield* Effect.void.pipe(
          Effect.withSpan("keel.attempt", { attributes: { "keel.attempt": 1 } }),
          Effect.withSpan("chat gpt-4o-mini", {
            kind: "client",
            attributes: { "gen_ai.provider.name": "openai", "gen_ai.response.finish_reasons": ["stop"] }
          })
        )
      }).pipe(Effect.provide(exporter))
      // The exporter flushed when its layer closed.
      const traces = receiver.received.filter((r) => r.path === "/v1/traces")
      assert.isAtLeast(traces.length, 1)
      assert.strictEqual(traces[0]!.headers.authorization, "Bearer collector-token")
      assert.strictEqual(traces[0]!.headers["x-team"], "keel")
      assert.include(String(traces[0]!.headers["content-type"]), "application/json")
      const payloads = traces.map((t) => JSON.parse(t.body.toString("utf8")))
      const resource = payloads[0].resourceSpans[0].resource
      assert.deepInclude(resource.attributes, { key: "service.name", value: { stringValue: "keel-test" } })
      const spans: Array<OtlpJsonSpan> = payloads.flatMap((p) =>
        p.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans))
      )
      const call = spans.find((s) => s.name === "chat gpt-4o-mini")!
      const attempt = spans.find((s) => s.name === "keel.attempt")!
      assert.strictEqual(call.kind, 3) // SPAN_KIND_CLIENT
      assert.strictEqual(attempt.parentSpanId, call.spanId)
      assert.strictEqual(attempt.traceId, call.traceId)
      assert.deepStrictEqual(attribute(call, "gen_ai.provider.name"), { stringValue: "openai" })
      assert.deepStrictEqual(attribute(call, "gen_ai.response.finish_reasons"), {
        arrayValue: { values: [{ stringValue: "stop" }] }
      })
    }).pipe(Effect.scoped))

  it.effect("the pipeline's call and attempt spans arrive with their GenAI attributes", () =>
    Effect.gen(function*() {
      const receiver = yield* collector
      const model = TestKit.scripted([
        TestKit.response({ id: "chatcmpl-otlp", usage: { inputTokens: 42, cachedInputTokens: 2, outputTokens: 7 } })
      ])
      const env = new Map([["OTEL_EXPORTER_OTLP_ENDPOINT", `http://127.0.0.1:${receiver.port}`]])
      yield* Llm.generate({ model: "otlp-model", messages: [{ role: "user", content: "hi" }] }).pipe(
        Effect.provide(Llm.layer().pipe(Layer.provide(model.layer))),
        Effect.provide(
          Otlp.layerConfig.pipe(
            Layer.provide(FetchHttpClient.layer),
            Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(env)))
          )
        )
      )
      const spans: Array<OtlpJsonSpan> = receiver.received
        .filter((r) => r.path === "/v1/traces")
        .flatMap((r) => JSON.parse(r.body.toString("utf8")).resourceSpans)
        .flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans))
      const call = spans.find((s) => s.name === "chat otlp-model")!
      assert.strictEqual(call.kind, 3)
      assert.deepStrictEqual(attribute(call, "gen_ai.provider.name"), { stringValue: "scripted" })
      assert.deepStrictEqual(attribute(call, "gen_ai.response.id"), { stringValue: "chatcmpl-otlp" })
      assert.deepStrictEqual(attribute(call, "gen_ai.usage.input_tokens"), { intValue: 42 })
      assert.deepStrictEqual(attribute(call, "gen_ai.usage.cache_read.input_tokens"), { intValue: 2 })
      assert.deepStrictEqual(attribute(call, "gen_ai.response.finish_reasons"), {
        arrayValue: { values: [{ stringValue: "stop" }] }
      })
      const attempt = spans.find((s) => s.name === "keel.attempt")!
      assert.strictEqual(attempt.parentSpanId, call.spanId)
    }).pipe(Effect.scoped))

  it.effect("the pipeline's metrics arrive at <endpoint>/v1/metrics; metrics: false sends none", () =>
    Effect.gen(function*() {
      const receiver = yield* collector
      // A model name no other test uses: Effect's metric registry is process-wide.
      const name = "otlp-metrics-model"
      const model = TestKit.scripted([], {
        otherwise: TestKit.response({ usage: { inputTokens: 42, cachedInputTokens: 0, outputTokens: 7 } })
      })
      const call = (options: Otlp.Options) =>
        Llm.generate({ model: name, messages: [{ role: "user", content: "hi" }] }).pipe(
          Effect.provide(Llm.layer().pipe(Layer.provide(model.layer))),
          Effect.provide(Otlp.layer(options).pipe(Layer.provide(FetchHttpClient.layer)))
        )
      const endpoint = `http://127.0.0.1:${receiver.port}`
      yield* call({ endpoint, metrics: false })
      assert.isFalse(receiver.received.some((r) => r.path === "/v1/metrics"))
      yield* call({ endpoint, protocol: "http/json" })
      const metrics = receiver.received
        .filter((r) => r.path === "/v1/metrics")
        .flatMap((r) => JSON.parse(r.body.toString("utf8")).resourceMetrics)
        .flatMap((rm: any) => rm.scopeMetrics.flatMap((sm: any) => sm.metrics))
      const ours = (metric: any) =>
        (metric.histogram ?? metric.sum ?? metric.gauge)?.dataPoints.filter((point: any) =>
          point.attributes.some((a: any) => a.key === "gen_ai.request.model" && a.value.stringValue === name)
        ) ?? []
      const points = (metricName: string) => metrics.filter((m: any) => m.name === metricName).flatMap(ours)
      const tokens = points("gen_ai.client.token.usage")
      const input = tokens.find((p: any) =>
        p.attributes.some((a: any) => a.key === "gen_ai.token.type" && a.value.stringValue === "input")
      )
      assert.strictEqual(Number(input.count), 2)
      assert.strictEqual(input.sum, 84)
      assert.strictEqual(Number(points("gen_ai.client.operation.duration")[0].count), 2)
    }).pipe(Effect.scoped))

  it.effect("a traces endpoint is used as given; OTEL_SDK_DISABLED exports nothing", () =>
    Effect.gen(function*() {
      const receiver = yield* collector
      const run = (env: Map<string, string>) =>
        Effect.void.pipe(
          Effect.withSpan("chat m"),
          Effect.provide(
            Otlp.layerConfig.pipe(
              Layer.provide(FetchHttpClient.layer),
              Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(env)))
            )
          )
        )
      const base = `http://127.0.0.1:${receiver.port}`
      yield* run(
        new Map([
          ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", `${base}/custom/traces`],
          ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", `${base}/custom/metrics`],
          ["OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"]
        ])
      )
      assert.isTrue(receiver.received.some((r) => r.path === "/custom/traces"))
      const before = receiver.received.length
      yield* run(new Map([["OTEL_EXPORTER_OTLP_ENDPOINT", base], ["OTEL_SDK_DISABLED", "true"]]))
      assert.strictEqual(receiver.received.length, before)
    }).pipe(Effect.scoped))

  it.effect("malformed OTEL_EXPORTER_OTLP_HEADERS is a config error naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Layer.build(Otlp.layerConfig).pipe(
          Effect.scoped,
          Effect.provide(FetchHttpClient.layer),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"]])))
        )
      )
      assert.include(String(error), "OTEL_EXPORTER_OTLP_HEADERS")
      assert.include(String(error), "no-equals-sign")
    }))

  it("parseHeaders decodes URL-encoded values and keeps them redacted", () => {
    const headers = Either.getOrThrow(Otlp.parseHeaders("api-key=s%3Dcret , x=1"))
    assert.strictEqual(Redacted.value(headers["api-key"]!), "s=cret")
    assert.notInclude(String(headers["api-key"]), "s=cret")
    assert.strictEqual(Redacted.value(headers.x!), "1")
  })
})
