/**
 * The `keel` command. Today it has `keel simulate`, which serves the OpenAI-compatible simulator
 * with chosen limits and faults; `demo`, `run`, `report`, `batch` and `budget` come as subcommands
 * of the same root. `main` runs it as the binary does: a bad flag or configuration prints one line
 * on stderr naming what to fix and gives exit status 2.
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Budget from "@keel/core/Budget"
import * as Pricing from "@keel/core/Pricing"
import * as Simulator from "@keel/openai/Simulator"
import * as ConfigError from "effect/ConfigError"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"

/** A configuration the command cannot run with (a port in use, a bad file): what is wrong and what to do. */
export class UsageError extends Schema.TaggedError<UsageError>("@keel/cli/Cli/UsageError")("UsageError", {
  message: Schema.String
}) {}

const invalid = (reason: string) => ValidationError.invalidValue(HelpDoc.p(reason))

const integer = (name: string, valid: (n: number) => boolean, expected: string) =>
  Options.integer(name).pipe(
    Options.mapEffect((n) =>
      valid(n) ? Effect.succeed(n) : Effect.fail(invalid(`--${name} must be ${expected}, got ${n}`))
    )
  )

const positive = (name: string) => integer(name, (n) => n > 0, "a positive integer").pipe(Options.optional)

const simulate = Command.make("simulate", {
  port: integer("port", (n) => n >= 0 && n <= 65535, "a TCP port in 0..65535 (0: any free port)").pipe(
    Options.withDefault(8787),
    Options.withDescription("TCP port on 127.0.0.1 (default 8787; 0 picks a free one)")
  ),
  seed: Options.integer("seed").pipe(
    Options.withDefault(0),
    Options.withDescription("seed of answers and faults: the same seed and requests give the same answers (default 0)")
  ),
  faults: Options.text("faults").pipe(
    Options.withDescription(
      `fault rates, e.g. rate_limit=0.05,500=0.02 (${Simulator.faultNames.join(", ")}; default none)`
    ),
    Options.mapEffect((spec) =>
      Either.match(Simulator.parseFaults(spec), {
        onLeft: (reason) => Effect.fail(invalid(`--faults: ${reason}`)),
        onRight: Effect.succeed
      })
    ),
    Options.withDefault({})
  ),
  rpm: positive("rpm").pipe(Options.withDescription("requests per minute per model (default no limit)")),
  tpm: positive("tpm").pipe(Options.withDescription("tokens per minute per model (default no limit)")),
  latencyMs: integer("latency-ms", (n) => n >= 0, "a non-negative integer").pipe(
    Options.withDefault(0),
    Options.withDescription("base latency of every answer, in milliseconds (default 0)")
  )
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
    }).pipe(Effect.mapError((error) =>
      new UsageError({
        message: error.reason.includes("EADDRINUSE")
          ? `--port ${options.port}: 127.0.0.1:${options.port} is already in use; choose another port (0 picks a free one)`
          : error.message
      })
    ))
    yield* Console.log(`keel simulator listening on ${simulator.url} (any Bearer key; Ctrl-C stops it)`)
    return yield* Effect.never
  }).pipe(Effect.scoped)).pipe(Command.withDescription("Serve the OpenAI-compatible simulator on 127.0.0.1"))

/** The root command, `keel`. */
export const command = Command.make("keel").pipe(
  Command.withDescription("A reliability layer for LLM API calls"),
  Command.withSubcommands([simulate])
)

// eslint-disable-next-line no-control-regex -- the escape character starts every ANSI colour code
const ansi = /\u001b\[[0-9;]*m/g

/**
 * @effect/cli writes help and flag errors through `Console`: drop colour codes where the stream is
 * not a terminal, show usage as `keel simulate …` (it prints `$ simulate …`), and name the flag in
 * a bad value's message (it prints `'x' is not a integer`).
 */
const plainConsole = (argv: ReadonlyArray<string>) => (base: Console.Console): Console.Console => {
  const flagOf = (value: string) => {
    const index = argv.findIndex((arg, i) =>
      arg.startsWith("-") && (argv[i + 1] === value || arg.endsWith(`=${value}`))
    )
    return index < 0 ? undefined : argv[index]!.split("=")[0]
  }
  const forStdout = (text: string) =>
    (process.stdout.isTTY ? text : text.replace(ansi, ""))
      .replace(/^\$ keel\b/gm, "keel")
      .replace(/^\$ /gm, "keel ")
  const forStderr = (text: string) =>
    (process.stderr.isTTY ? text : text.replace(ansi, ""))
      .replace(/'(.*)' is not an? (\w+)/, (line, value: string, type: string) => {
        const flag = flagOf(value)
        const article = /^[aeiou]/.test(type) ? "an" : "a"
        return flag === undefined ? line : `${flag}: '${value}' is not ${article} ${type}`
      })
  const map = (f: (text: string) => string) => (args: ReadonlyArray<unknown>) =>
    args.map((arg) => typeof arg === "string" ? f(arg) : arg)
  const out = map(forStdout)
  const err = map(forStderr)
  return {
    ...base,
    log: (...args) => base.log(...out(args)),
    error: (...args) => base.error(...err(args)),
    unsafe: {
      ...base.unsafe,
      log: (...args) => base.unsafe.log(...out(args)),
      error: (...args) => base.unsafe.error(...err(args))
    }
  }
}

const cli = Command.run(command, { name: "keel", version: "0.1.0" })

/**
 * Runs `keel` on process-style arguments (`["node", "keel", "simulate", …]`). A bad flag fails
 * with the `ValidationError` after @effect/cli has printed it.
 */
export const run = (argv: ReadonlyArray<string>) =>
  Console.consoleWith((console) => Effect.withConsole(cli(argv), plainConsole(argv)(console)))

/** True for an error the user fixes by changing flags or configuration: `keel` exits 2 on it. */
export const isConfigurationError = (error: unknown): boolean =>
  ValidationError.isValidationError(error) || ConfigError.isConfigError(error) ||
  error instanceof UsageError || error instanceof Simulator.StartError ||
  error instanceof Budget.BudgetConfigError || error instanceof Pricing.PricingConfigError

const describe = (error: unknown): string =>
  ConfigError.isConfigError(error)
    ? `configuration: ${String(error)}`
    : error instanceof Error
    ? error.message
    : String(error)

/**
 * `keel` as the binary runs it: the exit status it should end with. A configuration error gives 2,
 * any other failure 1, each with one line on stderr (flag errors are printed by @effect/cli).
 */
export const main = (argv: ReadonlyArray<string>) =>
  run(argv).pipe(
    Effect.as(0),
    Effect.catchAll((error: unknown) => {
      const code = isConfigurationError(error) ? 2 : 1
      return ValidationError.isValidationError(error)
        ? Effect.succeed(code)
        : Console.error(`keel: ${describe(error).replace(/\s*\n\s*/g, " ")}`).pipe(Effect.as(code))
    })
  )
