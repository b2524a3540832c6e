/**
 * Exports keel's spans and metrics over OTLP/HTTP with `@effect/opentelemetry`'s Effect-native
 * exporters (no OpenTelemetry SDK; they need only an `HttpClient`, e.g. `NodeHttpClient.layerUndici`).
 * `layerConfig` reads the standard variables through Effect `Config`, so the application's
 * `ConfigProvider` decides where they come from:
 *
 * - `OTEL_EXPORTER_OTLP_ENDPOINT`: base URL (default `http://localhost:4318`); traces go to
 *   `<base>/v1/traces`, metrics to `<base>/v1/metrics`
 * - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`: full URLs, used as given
 * - `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2` (values URL-encoded), kept `Redacted`
 * - `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/json` (keel's default) or `http/protobuf`. The specification's
 *   default is protobuf, but with this exporter JSON costs far less CPU: about 100 µs less per call
 *   (two spans) in `bench/telemetry.ts`, as `JSON.stringify` is native and the protobuf encoder is
 *   not. Every OTLP/HTTP collector accepts both.
 * - `OTEL_SERVICE_NAME` (default "keel"); `OTEL_RESOURCE_ATTRIBUTES` is read by the exporter
 * - `OTEL_SDK_DISABLED=true`: export nothing
 *
 * Requires the optional peer `@effect/opentelemetry`.
 */
import * as OtlpMetrics from "@effect/opentelemetry/OtlpMetrics"
import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"

export interface Options {
  /** Base URL of the collector; default `http://localhost:4318`. */
  readonly endpoint?: string | undefined
  /** Full URL for traces; default `<endpoint>/v1/traces`. */
  readonly tracesEndpoint?: string | undefined
  /** Full URL for metrics; default `<endpoint>/v1/metrics`. */
  readonly metricsEndpoint?: string | undefined
  /** Sent with every export (e.g. an API key of a hosted collector). */
  readonly headers?: Readonly<Record<string, Redacted.Redacted<string>>> | undefined
  /** Default "http/json": cheaper to encode here than protobuf (see the module header). */
  readonly protocol?: "http/protobuf" | "http/json" | undefined
  /** Default "keel". */
  readonly serviceName?: string | undefined
  readonly serviceVersion?: string | undefined
  /** How often batches are sent; default 5 s. Pending spans are flushed when the layer closes. */
  readonly exportInterval?: Duration.DurationInput | undefined
  /** Also export Effect's metrics (keel's `gen_ai.client.*` and `keel.*` among them). Default true. */
  readonly metrics?: boolean | undefined
}

const defaultEndpoint = "http://localhost:4318"

const join = (base: string, path: string): string => base.replace(/\/+$/, "") + path

/** Exports spans (and metrics, unless turned off) to an OTLP/HTTP collector. */
export const layer = (options: Options = {}): Layer.Layer<never, never, HttpClient.HttpClient> => {
  const endpoint = options.endpoint ?? defaultEndpoint
  const headers: Record<string, string> = {}
  for (const [key, value] of Object.entries(options.headers ?? {})) headers[key] = Redacted.value(value)
  const resource = { serviceName: options.serviceName ?? "keel", serviceVersion: options.serviceVersion }
  const tracer = OtlpTracer.layer({
    url: options.tracesEndpoint ?? join(endpoint, "/v1/traces"),
    resource,
    headers,
    exportInterval: options.exportInterval
  })
  const exporters = options.metrics === false ? tracer : Layer.merge(
    tracer,
    OtlpMetrics.layer({
      url: options.metricsEndpoint ?? join(endpoint, "/v1/metrics"),
      resource,
      headers,
      exportInterval: options.exportInterval
    })
  )
  return Layer.provide(
    exporters,
    options.protocol === "http/protobuf" ? OtlpSerialization.layerProtobuf : OtlpSerialization.layerJson
  )
}

/** Parses `OTEL_EXPORTER_OTLP_HEADERS`: comma-separated `key=value` pairs, values URL-encoded. */
export const parseHeaders = (text: string): Either.Either<Record<string, Redacted.Redacted<string>>, string> => {
  const headers: Record<string, Redacted.Redacted<string>> = {}
  for (const pair of text.split(",")) {
    if (pair.trim() === "") continue
    const eq = pair.indexOf("=")
    if (eq <= 0) return Either.left(`"${pair.trim()}" is not key=value`)
    try {
      headers[decodeURIComponent(pair.slice(0, eq).trim())] = Redacted.make(
        decodeURIComponent(pair.slice(eq + 1).trim())
      )
    } catch {
      return Either.left(`the value of "${pair.slice(0, eq).trim()}" is not valid URL encoding`)
    }
  }
  return Either.right(headers)
}

const optionalString = (name: string) =>
  Config.option(Config.string(name)).pipe(Config.map((o) => o._tag === "Some" ? o.value : undefined))

/** The standard `OTEL_*` variables, read through `Config`. */
export const config: Config.Config<Options & { readonly disabled: boolean }> = Config.all({
  disabled: Config.boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false)),
  endpoint: optionalString("OTEL_EXPORTER_OTLP_ENDPOINT"),
  tracesEndpoint: optionalString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
  metricsEndpoint: optionalString("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
  headers: Config.redacted("OTEL_EXPORTER_OTLP_HEADERS").pipe(
    Config.mapOrFail((text) =>
      Either.mapLeft(
        parseHeaders(Redacted.value(text)),
        (reason) => ConfigError.InvalidData(["OTEL_EXPORTER_OTLP_HEADERS"], reason)
      )
    ),
    Config.withDefault({})
  ),
  protocol: Config.literal("http/protobuf", "http/json")("OTEL_EXPORTER_OTLP_PROTOCOL").pipe(
    Config.withDefault("http/json" as const)
  ),
  serviceName: Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault("keel"))
})

/** `layer` configured by the standard `OTEL_*` variables (see the module header). */
export const layerConfig: Layer.Layer<never, ConfigError.ConfigError, HttpClient.HttpClient> = Layer.unwrapEffect(
  Effect.map(config, ({ disabled, ...options }) => disabled ? Layer.empty : layer(options))
)
