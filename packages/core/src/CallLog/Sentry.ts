/**
 * A call log sink that reports to Sentry each call that *ends* in an error (a retried attempt that
 * later succeeded is not an error of the call), tagged `model`, `errorTag`, `promptHash`, `scope`
 * and `provider`, with the call record as context. The prompt and the output are never sent, even
 * when the call log records them; no API key is in a record.
 *
 * It runs its own `NodeClient` on its own Sentry scope instead of `Sentry.init`: no global client,
 * no OpenTelemetry setup, no default integrations, so it does not touch Effect's tracer or the
 * application's own Sentry setup. The client is flushed and closed when the layer's scope closes.
 *
 * Requires the optional peer `@sentry/node`.
 */
import * as Sentry from "@sentry/node"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as CallLog from "../CallLog.js"
import type { CallRecord } from "../CallRecord.js"

export interface Options {
  /** The project's DSN, e.g. from `Config.redacted("SENTRY_DSN")`. */
  readonly dsn: Redacted.Redacted<string>
  readonly environment?: string | undefined
  readonly release?: string | undefined
  /** How long closing waits for pending events; default 2 s. */
  readonly closeTimeout?: Duration.DurationInput | undefined
}

/** The Sentry event for a failed call: no prompt, no output. */
export const eventOf = (record: CallRecord): Sentry.Event => {
  const { output: _output, prompt: _prompt, ...context } = record
  const errorTag = record.errorTag ?? "Error"
  return {
    level: "error",
    message: `${errorTag}: model ${record.model}`,
    exception: { values: [{ type: errorTag, value: record.errorMessage ?? errorTag }] },
    tags: {
      model: record.model,
      errorTag,
      promptHash: record.promptHash,
      scope: record.scope,
      provider: record.provider
    },
    contexts: { keel_call: context },
    fingerprint: ["keel", errorTag, record.model]
  }
}

/** Opens a Sentry client for the scope's lifetime; the sink sends failed calls only. */
export const sink = (options: Options): Effect.Effect<CallLog.Sink, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const client = new Sentry.NodeClient({
        dsn: Redacted.value(options.dsn),
        environment: options.environment,
        release: options.release,
        transport: Sentry.makeNodeTransport,
        stackParser: Sentry.defaultStackParser,
        integrations: [],
        enableOpenTelemetrySetup: false,
        enableRuntimeChannelInjection: false,
        sendClientReports: false
      })
      const scope = new Sentry.Scope()
      scope.setClient(client)
      client.init()
      return { client, scope }
    }),
    ({ client }) => Effect.promise(() => client.close(Duration.toMillis(options.closeTimeout ?? Duration.seconds(2))))
  ).pipe(Effect.map(({ scope }): CallLog.Sink => ({
    name: "sentry",
    write: (record) =>
      record.outcome === "ok" ? Effect.void : Effect.sync(() => {
        scope.captureEvent(eventOf(record))
      })
  })))

/** `sink` with options read from configuration, e.g. `{ dsn: Config.redacted("SENTRY_DSN") }`. */
export const sinkConfig = (
  options: Config.Config.Wrap<Options>
): Effect.Effect<CallLog.Sink, ConfigError.ConfigError, Scope.Scope> => Effect.flatMap(Config.unwrap(options), sink)

/** A call log whose only sink is Sentry. */
export const layer = (options: Options): Layer.Layer<CallLog.CallLog> => CallLog.layer({ sinks: [sink(options)] })

/** `layer` with options read from configuration. */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<CallLog.CallLog, ConfigError.ConfigError> => CallLog.layer({ sinks: [sinkConfig(options)] })
