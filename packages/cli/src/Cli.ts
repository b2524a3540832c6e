/**
 * The `keel` command: the root and its subcommands, one module each (`DemoCommand`, `RunCommand`,
 * `ReportCommand`, `BudgetCommand`, `BatchCommand`, `SimulateCommand`, `WorkerCommand`), each providing its own
 * layers so that `keel --help` needs no API key. `main` runs it as the binary does: a bad flag or
 * configuration prints one line on stderr naming what to fix and gives exit status 2.
 */
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Budget from "@keel/core/Budget"
import * as Pricing from "@keel/core/Pricing"
import * as Simulator from "@keel/openai/Simulator"
import * as ConfigError from "effect/ConfigError"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as BatchCommand from "./BatchCommand.js"
import * as BudgetCommand from "./BudgetCommand.js"
import * as DemoCommand from "./DemoCommand.js"
import * as Flags from "./Flags.js"
import * as ReportCommand from "./ReportCommand.js"
import * as RunCommand from "./RunCommand.js"
import * as SimulateCommand from "./SimulateCommand.js"
import * as WorkerCommand from "./WorkerCommand.js"

export { UsageError } from "./Flags.js"

/** The root command, `keel`. */
export const command = Command.make("keel").pipe(
  Command.withDescription("A reliability layer for LLM API calls"),
  Command.withSubcommands([
    DemoCommand.command,
    RunCommand.command,
    ReportCommand.command,
    BudgetCommand.command,
    BatchCommand.command,
    SimulateCommand.command,
    WorkerCommand.command
  ])
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
  error instanceof Flags.UsageError || error instanceof Simulator.StartError ||
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
