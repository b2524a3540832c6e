/**
 * `keel worker --postgres URL`: a cluster runner (see `Cluster`) that executes the items of every
 * `keel run --cluster` submitted to the same Postgres, until SIGINT or SIGTERM. Other runners reach it
 * at `--host:--port`. Postgres and Redis are checked first: an unreachable one is named and the
 * command exits non-zero.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Router from "@keel/core/Router"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Cluster from "./Cluster.js"
import * as Flags from "./Flags.js"
import * as Live from "./Live.js"

const apiKey = Config.option(Config.redacted("OPENAI_API_KEY")).pipe(
  Effect.map(Option.filter((key) => Redacted.value(key).trim() !== ""))
)

export const command = Command.make("worker", {
  postgres: Flags.postgresUrl("postgres").pipe(
    Options.withDescription(
      "the cluster's Postgres (messages, shards, results, budget), e.g. postgres://keel@db:5432/keel"
    )
  ),
  redis: Flags.redisUrl.pipe(
    Options.withDefault("redis://127.0.0.1:6379"),
    Options.withDescription("the Redis holding the shared provider quota (default redis://127.0.0.1:6379)")
  ),
  host: Options.text("host").pipe(
    Options.withDefault("127.0.0.1"),
    Options.withDescription("the address other runners reach this one at, and listen on (default 127.0.0.1)")
  ),
  port: Flags.integer("port", (n) => n > 0 && n <= 65535, "a TCP port in 1..65535").pipe(
    Options.withDefault(34431),
    Options.withDescription("the runner's TCP port (default 34431)")
  ),
  concurrency: Flags.integer("concurrency", (n) => n >= 1 && n <= 1024, "an integer from 1 to 1024").pipe(
    Options.withDefault(32),
    Options.withDescription("items this worker runs at once (default 32)")
  ),
  baseUrl: Flags.baseUrl.pipe(
    Options.withDescription(
      "an OpenAI-compatible server; OPENAI_API_KEY is its key (default OpenAI when the key is set)"
    )
  ),
  modelSimple: Options.text("model-simple").pipe(Options.withDefault(Router.defaultTiers.simple!.model)),
  modelComplex: Options.text("model-complex").pipe(Options.withDefault(Router.defaultTiers.complex!.model)),
  budgetUsd: Options.float("budget-usd").pipe(
    Options.mapEffect((n) =>
      n > 0 && Number.isFinite(n)
        ? Effect.succeed(n)
        : Effect.fail(Flags.invalid(`--budget-usd must be a positive amount in USD, got ${n}`))
    ),
    Options.optional,
    Options.withDescription("a spend limit on --scope, shared through Postgres: give every worker the same")
  ),
  scope: Options.text("scope").pipe(
    Options.withDefault("keel:run"),
    Options.withDescription("the scope --budget-usd limits (default keel:run)")
  ),
  requestsPerMinute: Flags.positive("requests-per-minute").pipe(
    Options.optional,
    Options.withDescription("the provider's requests/min, shared by all workers through Redis (default: learned)")
  )
}, (options) =>
  Effect.gen(function*() {
    const key = yield* apiKey
    if (Option.isNone(key) && Option.isNone(options.baseUrl)) {
      return yield* new Flags.UsageError({
        message:
          "a worker needs a provider: --base-url (e.g. a `keel simulate` server) or OPENAI_API_KEY; every worker must call the same one"
      })
    }
    const backend = Live.backend({ apiKey: key, baseUrl: options.baseUrl, simulator: {} })
    yield* Layer.launch(
      Cluster.workerLayer({
        ...options,
        prefix: Cluster.defaultPrefix,
        postgresUrl: options.postgres,
        redisUrl: options.redis,
        backend,
        budget: Option.map(options.budgetUsd, (usd) => ({ scope: options.scope, usd }))
      }).pipe(
        Layer.tap(() =>
          Effect.sync(() =>
            process.stderr.write(
              `keel: worker at ${options.host}:${options.port} on ${Cluster.redactUrl(options.postgres)}, ${
                Live.describeBackend(backend)
              }\n`
            )
          )
        )
      )
    )
  })).pipe(Command.withDescription("Run a cluster worker: executes the items of `keel run --cluster` runs"))
