/**
 * `keel run --task MODULE --input FILE.jsonl`: any task over any JSON-lines file, into an output
 * folder (see `Runner`), against the simulator or a real API (see `Live`). `execute` is shared with
 * `keel demo` and `keel batch resume`; it records the run's settings in run.json in the folder.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Router from "@keel/core/Router"
import * as Simulator from "@keel/openai/Simulator"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as ClusterRun from "./ClusterRun.js"
import * as Flags from "./Flags.js"
import * as Live from "./Live.js"
import * as Runner from "./Runner.js"
import * as Task from "./Task.js"

/** A run stopped by an error no further call could escape; the folder keeps what was done. */
export class RunStopped extends Schema.TaggedError<RunStopped>("@keel/cli/RunCommand/RunStopped")("RunStopped", {
  reason: Schema.String,
  out: Schema.String
}) {
  override get message() {
    return `the run stopped: ${this.reason}. What was done is in ${this.out}; fix the cause and run the same command to resume`
  }
}

/** The flags `keel run` and `keel demo` share. */
export const shared = {
  out: Flags.out,
  mode: Options.text("mode").pipe(
    Options.mapEffect((mode) =>
      mode === "sync" || mode === "batch" || mode === "auto"
        ? Effect.succeed<"sync" | "batch" | "auto">(mode)
        : Effect.fail(Flags.invalid(`--mode must be sync, batch or auto, got ${mode}`))
    ),
    Options.withDefault("sync" as const),
    Options.withDescription("sync calls, the Batch API at half price, or auto (batch above 100 items)")
  ),
  budgetUsd: Options.float("budget-usd").pipe(
    Options.mapEffect((n) =>
      n > 0 && Number.isFinite(n)
        ? Effect.succeed(n)
        : Effect.fail(Flags.invalid(`--budget-usd must be a positive amount in USD, got ${n}`))
    ),
    Options.optional,
    Options.withDescription("stop when the run's scope has spent this much (USD, kept in the ledger across resumes)")
  ),
  concurrency: Flags.integer("concurrency", (n) => n >= 1 && n <= 1024, "an integer from 1 to 1024").pipe(
    Options.withDefault(32),
    Options.withDescription("calls in flight at once (default 32)")
  ),
  faults: Flags.faults.pipe(
    Options.optional,
    Options.withDescription(
      `the simulator's fault rates, e.g. rate_limit=0.1,500=0.05 (${
        Simulator.faultNames.join(", ")
      }); default a light mix`
    )
  ),
  seed: Options.integer("seed").pipe(
    Options.withDefault(1),
    Options.withDescription("seed of the generated listings and the simulator's answers and faults (default 1)")
  ),
  baseUrl: Flags.baseUrl.pipe(
    Options.withDescription("an OpenAI-compatible server (e.g. http://127.0.0.1:8787/v1); OPENAI_API_KEY is its key")
  ),
  modelSimple: Options.text("model-simple").pipe(
    Options.withDefault(Router.defaultTiers.simple!.model),
    Options.withDescription(`the simple tier's model (default ${Router.defaultTiers.simple!.model})`)
  ),
  modelComplex: Options.text("model-complex").pipe(
    Options.withDefault(Router.defaultTiers.complex!.model),
    Options.withDescription(`the complex tier's model (default ${Router.defaultTiers.complex!.model})`)
  ),
  requestsPerMinute: Flags.positive("requests-per-minute").pipe(
    Options.optional,
    Options.withDescription("the requests/min each model is paced to (default: learned from the provider's headers)")
  ),
  tokensPerMinute: Flags.positive("tokens-per-minute").pipe(
    Options.optional,
    Options.withDescription("the tokens/min each model is paced to (default: learned from the provider's headers)")
  ),
  redis: Flags.redisUrl.pipe(
    Options.optional,
    Options.withDescription(
      "share the rate limits with other keel processes through this Redis (default: this process)"
    )
  )
}

export interface Settings {
  readonly out: string
  readonly mode: "sync" | "batch" | "auto"
  readonly budgetUsd: Option.Option<number>
  readonly concurrency: number
  readonly faults: Option.Option<Simulator.FaultRates>
  readonly seed: number
  readonly baseUrl: Option.Option<string>
  readonly modelSimple: string
  readonly modelComplex: string
  readonly scope: string
  readonly requestsPerMinute: Option.Option<number>
  readonly tokensPerMinute: Option.Option<number>
  readonly redis: Option.Option<string>
}

/** What `keel batch resume` needs to run a folder's command again (run.json). */
export interface Recorded {
  readonly command: "run" | "demo"
  /** run: the task module and input file; demo: how many listings. */
  readonly task?: string | undefined
  readonly input?: string | undefined
  readonly count?: number | undefined
  readonly settings: {
    readonly [K in keyof Settings]: Settings[K] extends Option.Option<infer A> ? A | null : Settings[K]
  }
}

/** The settings as run.json keeps them. */
export const plain = (settings: Settings): Recorded["settings"] => ({
  ...settings,
  budgetUsd: Option.getOrNull(settings.budgetUsd),
  faults: Option.getOrNull(settings.faults),
  baseUrl: Option.getOrNull(settings.baseUrl),
  requestsPerMinute: Option.getOrNull(settings.requestsPerMinute),
  tokensPerMinute: Option.getOrNull(settings.tokensPerMinute),
  redis: Option.getOrNull(settings.redis)
})

/** The settings back from run.json. */
export const fromPlain = (settings: Recorded["settings"]): Settings => ({
  ...settings,
  budgetUsd: Option.fromNullable(settings.budgetUsd),
  faults: Option.fromNullable(settings.faults),
  baseUrl: Option.fromNullable(settings.baseUrl),
  requestsPerMinute: Option.fromNullable(settings.requestsPerMinute),
  tokensPerMinute: Option.fromNullable(settings.tokensPerMinute),
  redis: Option.fromNullable(settings.redis)
})

export const recordFile = (out: string) => Path.join(out, "run.json")

const apiKey = Config.option(Config.redacted("OPENAI_API_KEY")).pipe(
  Effect.map(Option.filter((key) => Redacted.value(key).trim() !== ""))
)

/** Runs a task over an input into the folder with the live layers, printing progress and the summary. */
export const execute = (
  task: Task.Any,
  input: Runner.Input,
  settings: Settings,
  recorded: Omit<Recorded, "settings">
) =>
  Effect.gen(function*() {
    const { out } = settings
    if (input._tag === "File") {
      yield* Runner.checkInput(input.path).pipe(Effect.mapError((e) => new Flags.UsageError({ message: e.message })))
    }
    yield* Runner.prepare(out).pipe(
      Effect.mapError((e) => new Flags.UsageError({ message: `--out ${out}: cannot write there (${e.reason})` }))
    )
    yield* Effect.try({
      try: () =>
        Fs.writeFileSync(recordFile(out), JSON.stringify({ ...recorded, settings: plain(settings) }, null, 2) + "\n"),
      catch: (error) => new Flags.UsageError({ message: `--out ${out}: cannot write there (${String(error)})` })
    })
    const backend = Live.backend({
      apiKey: yield* apiKey,
      baseUrl: settings.baseUrl,
      simulator: {
        seed: settings.seed,
        faults: Option.getOrElse(settings.faults, () => Live.lightFaults),
        latency: Live.realisticLatency
      }
    })
    if (backend._tag === "Remote" && Option.isSome(settings.faults)) {
      return yield* new Flags.UsageError({
        message: "--faults only applies to the built-in simulator: unset OPENAI_API_KEY and --base-url to use it"
      })
    }
    const isTTY = process.stderr.isTTY === true
    const stderr = { isTTY, write: (text: string) => void process.stderr.write(text) }
    stderr.write(`keel: ${Live.describeBackend(backend)}\n`)
    const progress = new Runner.Progress()
    const models = { simple: settings.modelSimple, complex: settings.modelComplex }
    const outcome = yield* Runner.run({
      task,
      input,
      out,
      mode: settings.mode,
      concurrency: settings.concurrency,
      scope: settings.scope,
      models,
      progress,
      stderr
    }).pipe(
      Effect.provide(Live.layer({
        backend,
        out,
        modelSimple: settings.modelSimple,
        modelComplex: settings.modelComplex,
        scope: settings.scope,
        budgetUsd: settings.budgetUsd,
        sink: progress.sink,
        batch: settings.mode !== "sync",
        limits: {
          requestsPerMinute: settings.requestsPerMinute,
          tokensPerMinute: settings.tokensPerMinute,
          redis: settings.redis
        }
      }))
    )
    if (outcome.stopped !== undefined && !outcome.stopped.startsWith("interrupted")) {
      return yield* new RunStopped({ reason: outcome.stopped, out })
    }
  })

export const command = Command.make("run", {
  ...shared,
  task: Options.text("task").pipe(
    Options.withDescription("the task module: exports `task` (input Schema, output Schemas, prompt builder, tier rule)")
  ),
  input: Options.text("input").pipe(Options.withDescription("the JSON-lines input, one item per line")),
  scope: Options.text("scope").pipe(
    Options.withDefault("keel:run"),
    Options.withDescription("the budget scope charged, e.g. tenant:acme/run:42 (default keel:run)")
  ),
  cluster: Flags.postgresUrl("cluster").pipe(
    Options.optional,
    Options.withDescription("run on the `keel worker`s sharing this Postgres (see ClusterRun) instead of in-process")
  )
}, (options) =>
  Effect.gen(function*() {
    const task = yield* Task.load(options.task).pipe(
      Effect.mapError((e) => new Flags.UsageError({ message: e.message }))
    )
    if (Option.isSome(options.cluster)) return yield* ClusterRun.execute(task, options, options.cluster.value)
    yield* execute(task, { _tag: "File", path: options.input }, options, {
      command: "run",
      task: Path.resolve(options.task),
      input: Path.resolve(options.input)
    })
  })).pipe(Command.withDescription("Run a task over a JSON-lines file, resumably, into an output folder"))
