/**
 * The call log: one `CallRecord` per logical call, written by the pipeline when the call ends (on
 * success, failure and interruption alike) to every configured sink: a JSON-lines file
 * (`CallLog/JsonLines.ts`), the Effect logger, memory for tests, Sentry for failures
 * (`CallLog/Sentry.ts`), or any `Sink` of your own.
 *
 * Logging never fails a call: a sink that fails mid-run (a full disk) is reported once, as a
 * warning, and its lost records are counted; the counts are reported again when the layer closes.
 * A sink that cannot start (an unwritable path) fails the layer at construction instead.
 *
 * `CallLog` is a reference whose default has no sinks: without a layer the pipeline builds no
 * records at all. Provide `CallLog.layer(...)` where `Llm.layer` is built:
 *
 * ```ts
 * const CallLogLive = CallLog.layer({ sinks: [JsonLines.sink("out/calls.jsonl"), CallLog.logger()] })
 * const LlmLive = Llm.layer().pipe(Layer.provide(Layer.mergeAll(ModelLive, CallLogLive, Pricing.layer())))
 * ```
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { CallRecord } from "./CallRecord.js"

/** A sink could not write a record. */
export class SinkError extends Schema.TaggedError<SinkError>("@keel/core/CallLog/SinkError")("SinkError", {
  sink: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `Call log sink ${this.sink} could not write: ${this.reason}`
  }
}

/** A sink could not be opened when the layer was built (e.g. the log file is not writable). */
export class SinkUnavailable
  extends Schema.TaggedError<SinkUnavailable>("@keel/core/CallLog/SinkUnavailable")("SinkUnavailable", {
    sink: Schema.String,
    target: Schema.String,
    reason: Schema.String
  })
{
  override get message() {
    return `Call log sink ${this.sink} cannot write to ${this.target}: ${this.reason}`
  }
}

/** Where records go. */
export interface Sink {
  /** Names the sink in warnings, e.g. `jsonl:/var/log/keel/calls.jsonl`. */
  readonly name: string
  readonly write: (record: CallRecord) => Effect.Effect<void, SinkError>
}

/** Records written and lost by one sink so far. */
export interface SinkStats {
  readonly sink: string
  readonly written: number
  readonly lost: number
}

export declare namespace CallLog {
  export interface Service {
    /** False when there are no sinks: the pipeline then builds no records. */
    readonly enabled: boolean
    /** Whether records carry the prompt and the output (opt-in). */
    readonly content: boolean
    /** Writes a record to every sink; never fails. */
    readonly write: (record: CallRecord) => Effect.Effect<void>
    readonly stats: Effect.Effect<ReadonlyArray<SinkStats>>
  }
}

/** The call log in force; its default writes nowhere. */
export class CallLog extends Context.Reference<CallLog>()("@keel/core/CallLog", {
  defaultValue: (): CallLog.Service => disabled
}) {}

const disabled: CallLog.Service = {
  enabled: false,
  content: false,
  write: () => Effect.void,
  stats: Effect.succeed([])
}

export interface Options<E, R> {
  /** Sinks, or scoped effects that open them (a file is opened once, when the layer is built). */
  readonly sinks: ReadonlyArray<Sink | Effect.Effect<Sink, E, R>>
  /** Put the prompt messages and the answer into records. Default false. */
  readonly content?: boolean | undefined
}

/** A call log over the given sinks, reporting lost records when its scope closes. */
export const make = <E = never, R = never>(
  options: Options<E, R>
): Effect.Effect<CallLog.Service, E, R | Scope.Scope> =>
  Effect.gen(function*() {
    const sinks: Array<Sink> = []
    for (const entry of options.sinks) {
      sinks.push(Effect.isEffect(entry) ? yield* entry : entry)
    }
    if (sinks.length === 0) return { ...disabled, content: options.content ?? false }

    const counters = sinks.map((sink) => ({ sink: sink.name, written: 0, lost: 0 }))
    const guarded = sinks.map((sink, i) => {
      const counter = counters[i]!
      return (record: CallRecord) =>
        Effect.matchCauseEffect(sink.write(record), {
          onSuccess: () => {
            counter.written++
            return Effect.void
          },
          onFailure: (cause) => {
            counter.lost++
            return counter.lost === 1
              ? Effect.logWarning(
                `Call log sink ${sink.name} failed; calls go on, its lost records are counted and reported at shutdown`,
                cause
              )
              : Effect.void
          }
        })
    })

    yield* Effect.addFinalizer(() =>
      Effect.forEach(
        counters,
        (counter) =>
          counter.lost === 0 ? Effect.void : Effect.logWarning(
            `Call log sink ${counter.sink} lost ${counter.lost} of ${counter.written + counter.lost} records`
          ).pipe(Effect.annotateLogs({ sink: counter.sink, lost: counter.lost, written: counter.written })),
        { discard: true }
      )
    )

    const write = guarded.length === 1
      ? guarded[0]!
      : (record: CallRecord) => Effect.forEach(guarded, (write) => write(record), { discard: true })

    return {
      enabled: true,
      content: options.content ?? false,
      write,
      stats: Effect.sync(() => counters.map((counter) => ({ ...counter })))
    }
  })

/** The call log over the given sinks. */
export const layer = <E = never, R = never>(options: Options<E, R>): Layer.Layer<CallLog, E, Exclude<R, Scope.Scope>> =>
  Layer.scoped(CallLog, make(options))

/** Writes one record to the call log in force. */
export const write = (record: CallRecord): Effect.Effect<void> => Effect.flatMap(CallLog, (log) => log.write(record))

/** Records kept in memory, for tests. */
export interface Memory {
  readonly sink: Sink
  readonly records: ReadonlyArray<CallRecord>
  /** A call log over this sink alone. */
  readonly layer: Layer.Layer<CallLog>
}

/** A sink that keeps every record in an array. */
export const memory = (options: { readonly content?: boolean } = {}): Memory => {
  const records: Array<CallRecord> = []
  const sink: Sink = {
    name: "memory",
    write: (record) =>
      Effect.sync(() => {
        records.push(record)
      })
  }
  return { sink, records, layer: layer({ sinks: [sink], content: options.content }) }
}

/**
 * A sink that logs each record with the Effect logger: the message names model and outcome, and
 * every field is a log annotation (`route.reason`, `route.models` and `route.hops` flattened), so structured loggers (`Logger.json`,
 * OTLP logs) carry them as attributes. Successful calls log at `level` (default Info), failed ones
 * at `errorLevel` (default Warning).
 */
export const logger = (
  options: { readonly level?: LogLevel.LogLevel; readonly errorLevel?: LogLevel.LogLevel } = {}
): Sink => {
  const level = options.level ?? LogLevel.Info
  const errorLevel = options.errorLevel ?? LogLevel.Warning
  return {
    name: "logger",
    write: (record) => {
      const { output: _output, prompt: _prompt, route, ...fields } = record
      const annotations: Record<string, unknown> = { ...fields, "route.reason": route.reason }
      if (route.models !== undefined) annotations["route.models"] = route.models
      if (route.hops !== undefined) annotations["route.hops"] = route.hops
      if (record.prompt !== undefined) annotations.prompt = record.prompt
      if (record.output !== undefined) annotations.output = record.output
      const error = record.outcome === "error"
      return Effect.logWithLevel(
        error ? errorLevel : level,
        error ? `llm call ${record.model} failed: ${record.errorTag}` : `llm call ${record.model} ok`
      ).pipe(Effect.annotateLogs(annotations))
    }
  }
}
