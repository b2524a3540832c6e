/**
 * The live layers of a run: the model (the simulator in-process, or OpenAI or any compatible server
 * by `OPENAI_API_KEY` / `--base-url`), the pipeline's stages (router, retry policy, circuit breaker,
 * prices, tokenizer, the client-side rate limiter), the budget on a SQLite ledger in the output
 * folder, the JSON-lines call log there (plus any extra sink, e.g. the progress counters), and, for
 * batch modes, the Batch workflow on a SQLite engine in the same folder.
 */
import * as Batch from "@keel/core/Batch"
import * as BatchEngine from "@keel/core/Batch/Engine"
import * as Budget from "@keel/core/Budget"
import * as BudgetSql from "@keel/core/Budget/Sql"
import * as CallLog from "@keel/core/CallLog"
import * as JsonLines from "@keel/core/CallLog/JsonLines"
import * as CircuitBreaker from "@keel/core/CircuitBreaker"
import * as Llm from "@keel/core/Llm"
import * as RateLimiter from "@keel/core/RateLimiter"
import * as RedisLimiter from "@keel/core/RateLimiter/Redis"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Router from "@keel/core/Router"
import * as OpenAiBatch from "@keel/openai/OpenAiBatch"
import * as OpenAiClient from "@keel/openai/OpenAiClient"
import * as OpenAiLanguageModel from "@keel/openai/OpenAiLanguageModel"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as OpenAiTokenizer from "@keel/openai/OpenAiTokenizer"
import * as Simulator from "@keel/openai/Simulator"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Path from "node:path"

/** The simulator's fault mix when the demo is not given `--faults`. */
export const lightFaults: Simulator.FaultRates = { rate_limit: 0.03, "500": 0.01, invalid_output: 0.01 }

/** The simulator's answer delay: about what gpt-4o-mini and gpt-4.1 take for short structured answers. */
export const realisticLatency = { baseMs: 250, perOutputTokenMs: 4, jitterMs: 400 }

/** Where calls go: the in-process simulator, or a server at a URL. */
export type Backend =
  | { readonly _tag: "Simulator"; readonly options: Simulator.Options }
  | { readonly _tag: "Remote"; readonly baseUrl: string; readonly apiKey: Redacted.Redacted }

/** Picks the backend: `--base-url` or `OPENAI_API_KEY` mean a real server, else the simulator. */
export const backend = (options: {
  readonly apiKey: Option.Option<Redacted.Redacted>
  readonly baseUrl: Option.Option<string>
  readonly simulator: Simulator.Options
}): Backend =>
  Option.isNone(options.apiKey) && Option.isNone(options.baseUrl)
    ? { _tag: "Simulator", options: options.simulator }
    : {
      _tag: "Remote",
      baseUrl: Option.getOrElse(options.baseUrl, () => OpenAiClient.defaultBaseUrl),
      // A local compatible server often needs no key; the client needs a non-empty one.
      apiKey: Option.getOrElse(options.apiKey, () => Redacted.make("no-key"))
    }

/** One line saying where calls go. */
export const describeBackend = (backend: Backend): string =>
  backend._tag === "Simulator"
    ? `no OPENAI_API_KEY: using the built-in simulator in-process (realistic latency, faults ${
      Object.entries(backend.options.faults ?? {}).map(([name, rate]) => `${name}=${rate}`).join(",") || "none"
    }); set OPENAI_API_KEY or --base-url for a real API`
    : `calling ${backend.baseUrl}`

export interface Options {
  readonly backend: Backend
  /** The output folder: the ledger and batch state live there, and calls.jsonl. */
  readonly out: string
  readonly modelSimple: string
  readonly modelComplex: string
  readonly scope: string
  readonly budgetUsd: Option.Option<number>
  /** Also write every call record here (the progress counters). */
  readonly sink?: CallLog.Sink | undefined
  /** Build the Batch workflow too (modes batch and auto). */
  readonly batch: boolean
  readonly limits: Limits
}

/**
 * The client-side rate limit of every model. An unset rate is learned from the provider's
 * `x-ratelimit-*` headers (and every 429 slows every call to that model); the buckets live in this
 * process, or in Redis so that several keel processes share one provider quota.
 */
export interface Limits {
  readonly requestsPerMinute: Option.Option<number>
  readonly tokensPerMinute: Option.Option<number>
  /** A `redis://[user:password@]host[:port][/db]` URL holding the shared buckets. */
  readonly redis: Option.Option<string>
}

/** The ioredis options of a `redis://[user@]host[:port][/db]` URL (`Flags.redisUrl`), the password from `KEEL_REDIS_PASSWORD`. */
export const redisOptions = (url: string): Effect.Effect<RedisLimiter.Options> =>
  Config.option(Config.redacted("KEEL_REDIS_PASSWORD")).pipe(
    Effect.orElseSucceed(() => Option.none<Redacted.Redacted>()),
    Effect.map((password) => {
      const parsed = new URL(url)
      return {
        host: parsed.hostname || "127.0.0.1",
        port: parsed.port === "" ? 6379 : Number(parsed.port),
        ...(parsed.username === "" ? {} : { username: decodeURIComponent(parsed.username) }),
        ...(Option.isSome(password) ? { password: Redacted.value(password.value) } : {}),
        ...(parsed.pathname.length > 1 ? { db: Number(parsed.pathname.slice(1)) } : {}),
        ...(parsed.protocol === "rediss:" ? { tls: {} } : {})
      }
    })
  )

/** The rate limiter for the limits: in memory, or on Redis (limiting locally, and saying so once, while it is down). */
export const rateLimiter = (limits: Limits) => {
  const options: RateLimiter.Options = {
    limits: {
      ...Option.match(limits.requestsPerMinute, { onNone: () => ({}), onSome: (n) => ({ requestsPerMinute: n }) }),
      ...Option.match(limits.tokensPerMinute, { onNone: () => ({}), onSome: (n) => ({ tokensPerMinute: n }) })
    }
  }
  return Option.match(limits.redis, {
    onNone: () => RateLimiter.layerMemory(options),
    onSome: (url) =>
      RateLimiter.layer(options).pipe(
        Layer.provide(Layer.unwrapEffect(Effect.map(redisOptions(url), RedisLimiter.layerStore)))
      )
  })
}

export const ledgerFile = (out: string) => Path.join(out, "ledger.sqlite")
export const batchFile = (out: string) => Path.join(out, "batch.sqlite")
export const callsFile = (out: string) => Path.join(out, "calls.jsonl")

/** The OpenAI client for a backend (starting the simulator when it is the one). */
export const client = (backend: Backend) =>
  backend._tag === "Simulator"
    ? Layer.unwrapEffect(
      Effect.map(
        Simulator.Simulator,
        (simulator) => OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-simulated"), baseUrl: simulator.url })
      )
    ).pipe(Layer.provide(Simulator.layer(backend.options)))
    : OpenAiClient.layerUndici({ apiKey: backend.apiKey, baseUrl: backend.baseUrl })

/** The budget on the output folder's ledger, with its store (a batch reservation outlives the process). */
export const budget = (out: string, limits: ReadonlyArray<typeof Budget.Limit.Encoded> = []) =>
  Budget.layer({ limits }).pipe(
    Layer.provideMerge(BudgetSql.layerStore()),
    Layer.provide(BudgetSql.layerSqliteClient({ filename: ledgerFile(out) }))
  )

/** The router's two tiers for the chosen models (a default model keeps its default fallback). */
export const tiers = (
  options: { readonly modelSimple: string; readonly modelComplex: string }
): Record<string, Router.Tier> => ({
  simple: options.modelSimple === Router.defaultTiers.simple!.model
    ? Router.defaultTiers.simple!
    : { model: options.modelSimple },
  complex: options.modelComplex === Router.defaultTiers.complex!.model
    ? Router.defaultTiers.complex!
    : { model: options.modelComplex }
})

/** `Llm` with every stage, the `Budget` and `Pricing` it uses, and `Batch` when asked for. */
export const layer = (options: Options) => {
  const simulated = options.backend._tag === "Simulator"
  const clientLayer = client(options.backend)
  const policy = RetryPolicy.make(simulated ? { attemptTimeout: "10 seconds", deadline: "1 minute" } : {})
  const stages = Layer.mergeAll(
    OpenAiPricing.layer(),
    OpenAiTokenizer.layer,
    budget(
      options.out,
      Option.match(options.budgetUsd, {
        onNone: () => [],
        onSome: (usd) => [{ scope: options.scope, limit: String(usd) }]
      })
    ),
    CallLog.layer({
      sinks: [JsonLines.sink(callsFile(options.out)), ...(options.sink === undefined ? [] : [options.sink])]
    }),
    Router.layer({ tiers: tiers(options) }),
    CircuitBreaker.layer(),
    Layer.succeed(RetryPolicy.RetryPolicy, policy),
    rateLimiter(options.limits)
  )
  const model = OpenAiLanguageModel.layer().pipe(Layer.provide(clientLayer))
  const llm = Llm.layer({
    defaultModel: options.modelSimple,
    require: ["budget", "pricing", "callLog", "router", "rateLimiter"]
  })
    .pipe(Layer.provideMerge(Layer.merge(model, stages)))
  if (!options.batch) return llm
  const batch = Batch.layer({ pollEvery: simulated ? "1 second" : "1 minute" }).pipe(
    Layer.provide(Layer.mergeAll(
      OpenAiBatch.layer().pipe(Layer.provide(clientLayer)),
      BatchEngine.layerSqlite({ filename: batchFile(options.out), pollInterval: simulated ? 100 : 500 })
    ))
  )
  return batch.pipe(Layer.provideMerge(llm))
}
