/**
 * `keel simulate`: serves the OpenAI-compatible simulator on 127.0.0.1 with chosen limits, faults,
 * outages, capacity, models and batch lifecycle, until Ctrl-C.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Simulator from "@keel/openai/Simulator"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Flags from "./Flags.js"

const parseOutage = (spec: string): Simulator.Outage | undefined => {
  const parts = spec.split(":")
  const [atMs, durationMs, status] = parts.map(Number)
  const ok = (parts.length === 2 || parts.length === 3) && Number.isInteger(atMs) && atMs! >= 0 &&
    Number.isInteger(durationMs) && durationMs! > 0 && (status === undefined || [500, 502, 503, 504].includes(status))
  return ok ? { atMs: atMs!, durationMs: durationMs!, ...(status === undefined ? {} : { status }) } : undefined
}

const outage = Options.text("outage").pipe(
  Options.repeated,
  Options.withDescription(
    "a scheduled outage, atMs:durationMs[:status] (status 500, 502, 503 or 504; default 503); repeatable"
  ),
  Options.mapEffect((specs) =>
    Effect.forEach(specs, (spec) => {
      const parsed = parseOutage(spec)
      return parsed !== undefined ? Effect.succeed(parsed) : Effect.fail(
        Flags.invalid(
          `--outage ${spec}: expected atMs:durationMs[:status], e.g. 5000:2000:503 (status 500, 502, 503 or 504)`
        )
      )
    })
  )
)

const lineFaults = Options.text("batch-line-faults").pipe(
  Options.withDescription(
    `batch line fault rates, e.g. 500=0.02,refusal=0.01 (${Simulator.lineFaultNames.join(", ")})`
  ),
  Options.mapEffect((spec) => {
    const rates: Record<string, number> = {}
    for (const part of spec.split(",").filter((p) => p !== "")) {
      const [name, value] = part.split("=")
      const rate = Number(value)
      if (!Simulator.lineFaultNames.includes(name as Simulator.LineFault)) {
        return Effect.fail(
          Flags.invalid(
            `--batch-line-faults: unknown line fault "${name}" (known: ${Simulator.lineFaultNames.join(", ")})`
          )
        )
      }
      if (value === undefined || !(rate >= 0 && rate <= 1)) {
        return Effect.fail(Flags.invalid(`--batch-line-faults: ${name} needs a rate from 0 to 1, e.g. ${name}=0.01`))
      }
      rates[name!] = rate
    }
    return Effect.succeed(rates as Partial<Record<Simulator.LineFault, number>>)
  }),
  Options.optional
)

const ms = (name: string, what: string) => Flags.nonNegative(name).pipe(Options.withDescription(what), Options.optional)

const some = <K extends string, A>(key: K, option: Option.Option<A>): { [P in K]?: A } =>
  Option.match(option, { onNone: () => ({}), onSome: (value) => ({ [key]: value }) as { [P in K]?: A } })

export const command = Command.make("simulate", {
  port: Flags.integer("port", (n) => n >= 0 && n <= 65535, "a TCP port in 0..65535 (0: any free port)").pipe(
    Options.withDefault(8787),
    Options.withDescription("TCP port on 127.0.0.1 (default 8787; 0 picks a free one)")
  ),
  seed: Options.integer("seed").pipe(
    Options.withDefault(0),
    Options.withDescription("seed of answers and faults: the same seed and requests give the same answers (default 0)")
  ),
  faults: Flags.faults.pipe(
    Options.withDefault({}),
    Options.withDescription(
      `fault rates, e.g. rate_limit=0.05,500=0.02 (${Simulator.faultNames.join(", ")}; default none)`
    )
  ),
  rpm: Flags.positive("rpm").pipe(
    Options.optional,
    Options.withDescription("requests per minute per model (default no limit)")
  ),
  tpm: Flags.positive("tpm").pipe(
    Options.optional,
    Options.withDescription("tokens per minute per model (default no limit)")
  ),
  latencyMs: Flags.nonNegative("latency-ms").pipe(
    Options.withDefault(0),
    Options.withDescription("base latency of every answer, in milliseconds (default 0)")
  ),
  outages: outage,
  capacity: Flags.positive("capacity").pipe(
    Options.optional,
    Options.withDescription("chat requests per second served; past it the answer is 503 overloaded (default no limit)")
  ),
  models: Options.text("models").pipe(
    Options.withDescription("the model ids served, comma-separated (default OpenAI's chat models)"),
    Options.mapEffect((spec) => {
      const models = spec.split(",").map((m) => m.trim()).filter((m) => m !== "")
      return models.length > 0
        ? Effect.succeed(models)
        : Effect.fail(Flags.invalid("--models: name at least one model"))
    }),
    Options.optional
  ),
  validatingMs: ms("batch-validating-ms", "time a batch spends validating (default 1000)"),
  inProgressMs: ms("batch-in-progress-ms", "time a batch spends in progress (default 10000)"),
  finalizingMs: ms("batch-finalizing-ms", "time a batch spends finalizing (default 1000)"),
  cancellingMs: ms("batch-cancelling-ms", "time a batch spends cancelling (default 1000)"),
  windowMs: Flags.positive("batch-window-ms").pipe(
    Options.withDescription("the completion window; a batch not done by then expires (default 24 h)"),
    Options.optional
  ),
  lineFaults,
  enqueuedTokens: Flags.positive("batch-enqueued-tokens").pipe(
    Options.withDescription("input tokens a model may have enqueued in unfinished batches (default unlimited)"),
    Options.optional
  )
}, (options) =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.make({
      port: options.port,
      seed: options.seed,
      faults: options.faults,
      limits: { ...some("requestsPerMinute", options.rpm), ...some("tokensPerMinute", options.tpm) },
      latency: { baseMs: options.latencyMs },
      outages: options.outages,
      ...some("capacityPerSecond", options.capacity),
      ...some("models", options.models),
      batch: {
        ...some("validatingMs", options.validatingMs),
        ...some("inProgressMs", options.inProgressMs),
        ...some("finalizingMs", options.finalizingMs),
        ...some("cancellingMs", options.cancellingMs),
        ...some("windowMs", options.windowMs),
        ...some("lineFaults", options.lineFaults),
        ...some("enqueuedTokens", options.enqueuedTokens)
      }
    }).pipe(Effect.mapError((error) =>
      new Flags.UsageError({
        message: error.reason.includes("EADDRINUSE")
          ? `--port ${options.port}: 127.0.0.1:${options.port} is already in use; choose another port (0 picks a free one)`
          : error.message
      })
    ))
    yield* Console.log(`keel simulator listening on ${simulator.url} (any Bearer key; Ctrl-C stops it)`)
    return yield* Effect.never
  }).pipe(Effect.scoped)).pipe(Command.withDescription("Serve the OpenAI-compatible simulator on 127.0.0.1"))
