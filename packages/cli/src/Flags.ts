/**
 * What the commands share: `UsageError` (a configuration the command cannot run with, exit 2) and
 * flag constructors that refuse bad values before anything starts, naming the flag.
 */
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"

/** A configuration the command cannot run with (a port in use, a bad file): what is wrong and what to do. */
export class UsageError extends Schema.TaggedError<UsageError>("@keel/cli/Cli/UsageError")("UsageError", {
  message: Schema.String
}) {}

export const invalid = (reason: string) => ValidationError.invalidValue(HelpDoc.p(reason))

export const integer = (name: string, valid: (n: number) => boolean, expected: string) =>
  Options.integer(name).pipe(
    Options.mapEffect((n) =>
      valid(n) ? Effect.succeed(n) : Effect.fail(invalid(`--${name} must be ${expected}, got ${n}`))
    )
  )

export const positive = (name: string) => integer(name, (n) => n > 0, "a positive integer")

export const nonNegative = (name: string) => integer(name, (n) => n >= 0, "a non-negative integer")

/** `--faults rate_limit=0.05,500=0.02`, checked against the simulator's fault names. */
export const faults = Options.text("faults").pipe(
  Options.mapEffect((spec) =>
    Either.match(Simulator.parseFaults(spec), {
      onLeft: (reason) => Effect.fail(invalid(`--faults: ${reason}`)),
      onRight: Effect.succeed
    })
  )
)

/** `--out DIR`, the run's folder. */
export const out = Options.text("out").pipe(
  Options.withDefault("keel-out"),
  Options.withDescription("the output folder: results, errors, call log, ledger, summary (default ./keel-out)")
)

/** A Postgres URL (`--postgres`, `--cluster`), e.g. postgres://keel@db:5432/keel. */
export const postgresUrl = (name: string) =>
  Options.text(name).pipe(
    Options.mapEffect((url) =>
      /^postgres(ql)?:\/\/[^/]/.test(url)
        ? Effect.succeed(url)
        : Effect.fail(invalid(`--${name} must be a postgres:// URL such as postgres://127.0.0.1:5432/keel`))
    )
  )

/**
 * `--redis URL`: a `redis://[user@]host[:port][/db]` URL. A password in it is refused, since the URL shows
 * in process lists and run.json keeps it: the password comes from `KEEL_REDIS_PASSWORD` (`Live.redisOptions`).
 */
export const redisUrl = Options.text("redis").pipe(
  Options.mapEffect((url) => {
    if (!/^rediss?:\/\/[^/]/.test(url)) {
      return Effect.fail(invalid("--redis must be a redis:// URL such as redis://127.0.0.1:6379"))
    }
    return URL.canParse(url) && new URL(url).password === ""
      ? Effect.succeed(url)
      : Effect.fail(invalid("--redis must not hold a password: set it in KEEL_REDIS_PASSWORD instead"))
  })
)

/** `--base-url`: an OpenAI-compatible server, without its trailing slash. */
export const baseUrl = Options.text("base-url").pipe(
  Options.mapEffect((url) =>
    /^https?:\/\/[^/]/.test(url)
      ? Effect.succeed(url.replace(/\/+$/, ""))
      : Effect.fail(invalid(`--base-url must be an http(s) URL such as http://127.0.0.1:8787/v1, got ${url}`))
  ),
  Options.optional
)
