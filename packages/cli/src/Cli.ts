/**
 * The `keel` command. Today it has `keel simulate`, which serves the OpenAI-compatible simulator
 * with chosen limits and faults; `demo`, `run`, `report`, `batch` and `budget` (DESIGN.md) come as
 * subcommands of the same root. A bad flag is a `ValidationError` naming the flag and what it takes;
 * the binary exits with status 2 on it.
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Simulator from "@keel/openai/Simulator"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"

const invalid = (reason: string) => ValidationError.invalidValue(HelpDoc.p(reason))

const positive = (name: string) =>
  Options.integer(name).pipe(
    Options.mapEffect((n) =>
      n > 0 ? Effect.succeed(n) : Effect.fail(invalid(`--${name} must be a positive integer, got ${n}`))
    ),
    Options.optional
  )

const simulate = Command.make("simulate", {
  port: Options.integer("port").pipe(Options.withDefault(8787), Options.withDescription("TCP port on 127.0.0.1")),
  seed: Options.integer("seed").pipe(Options.withDefault(0), Options.withDescription("seed of answers and faults")),
  faults: Options.text("faults").pipe(
    Options.withDescription(`fault rates, e.g. rate_limit=0.05,500=0.02 (${Simulator.faultNames.join(", ")})`),
    Options.mapEffect((spec) =>
      Either.match(Simulator.parseFaults(spec), {
        onLeft: (reason) => Effect.fail(invalid(`--faults: ${reason}`)),
        onRight: Effect.succeed
      })
    ),
    Options.withDefault({})
  ),
  rpm: positive("rpm").pipe(Options.withDescription("requests per minute per model")),
  tpm: positive("tpm").pipe(Options.withDescription("tokens per minute per model")),
  latencyMs: Options.integer("latency-ms").pipe(Options.withDefault(0), Options.withDescription("base latency"))
}, (options) =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.make({
      port: options.port,
      seed: options.seed,
      faults: options.faults,
      limits: {
        ...Option.match(options.rpm, { onNone: () => ({}), onSome: (requestsPerMinute) => ({ requestsPerMinute }) }),
        ...Option.match(options.tpm, { onNone: () => ({}), onSome: (tokensPerMinute) => ({ tokensPerMinute }) })
      },
      latency: { baseMs: options.latencyMs }
    })
    yield* Console.log(`keel simulator listening on ${simulator.url} (any Bearer key; Ctrl-C stops it)`)
    return yield* Effect.never
  }).pipe(Effect.scoped)).pipe(Command.withDescription("Serve the OpenAI-compatible simulator on 127.0.0.1"))

/** The root command, `keel`. */
export const command = Command.make("keel").pipe(Command.withSubcommands([simulate]))

/** Runs `keel` on process-style arguments (`["node", "keel", "simulate", …]`). */
export const run = Command.run(command, { name: "keel", version: "0.1.0" })
