/**
 * `keel batch list|show|cancel` ask the provider about batches (OPENAI_API_KEY / --base-url; the
 * in-process simulator forgets its batches when a run ends, so point --base-url at `keel simulate`
 * to try them); `keel batch resume --out DIR` runs the folder's recorded command again, which
 * re-attaches to its batches through the durable engine in the folder and skips finished items.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as BatchProvider from "@keel/core/BatchProvider"
import * as OpenAiBatch from "@keel/openai/OpenAiBatch"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Fs from "node:fs"
import * as Flags from "./Flags.js"
import * as JobScoring from "./JobScoring.js"
import * as Listings from "./Listings.js"
import * as Live from "./Live.js"
import * as RunCommand from "./RunCommand.js"
import * as Task from "./Task.js"

const provider = (baseUrl: Option.Option<string>) =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const apiKey = (yield* Config.option(Config.redacted("OPENAI_API_KEY"))).pipe(
      Option.filter((key) => Redacted.value(key).trim() !== "")
    )
    if (Option.isNone(apiKey) && Option.isNone(baseUrl)) {
      return yield* new Flags.UsageError({
        message: "keel batch asks the provider: set OPENAI_API_KEY, or --base-url (e.g. of `keel simulate`)"
      })
    }
    const backend = Live.backend({ apiKey, baseUrl, simulator: {} })
    return OpenAiBatch.layer().pipe(Layer.provide(Live.client(backend)))
  }))

const baseUrl = RunCommand.shared.baseUrl

const describe = (batch: BatchProvider.Batch) =>
  `${batch.id}  ${
    batch.status.padEnd(11)
  } ${batch.requestCounts.completed}/${batch.requestCounts.total} done, ${batch.requestCounts.failed} failed  created ${
    new Date(batch.createdAt * (batch.createdAt < 1e12 ? 1000 : 1)).toISOString()
  }${
    batch.metadata.keel_run === undefined
      ? ""
      : `  run ${batch.metadata.keel_run} chunk ${batch.metadata.keel_chunk ?? "?"}`
  }`

const list = Command.make("list", {
  baseUrl,
  run: Options.text("run").pipe(Options.optional, Options.withDescription("only the batches of this keel run id"))
}, (options) =>
  Effect.gen(function*() {
    const service = yield* BatchProvider.BatchProvider
    const batches = yield* service.find(
      Option.match(options.run, { onNone: () => ({}), onSome: (run) => ({ keel_run: run }) })
    )
    yield* Console.log(batches.length === 0 ? "no batches" : batches.map(describe).join("\n"))
  }).pipe(Effect.provide(provider(options.baseUrl)))).pipe(Command.withDescription("List the provider's batches"))

const batchId = Args.text({ name: "batch-id" })

const show = Command.make("show", { baseUrl, batchId }, (options) =>
  Effect.gen(function*() {
    const service = yield* BatchProvider.BatchProvider
    const batch = yield* service.retrieve(options.batchId)
    yield* Console.log([
      describe(batch),
      ...batch.errors.map((error) =>
        `  ${error.code}${error.line === undefined ? "" : ` (line ${error.line})`}: ${error.message}`
      )
    ].join("\n"))
  }).pipe(Effect.provide(provider(options.baseUrl)))).pipe(Command.withDescription("Show one batch"))

const cancel = Command.make("cancel", { baseUrl, batchId }, (options) =>
  Effect.gen(function*() {
    const service = yield* BatchProvider.BatchProvider
    yield* Console.log(describe(yield* service.cancel(options.batchId)))
  }).pipe(Effect.provide(provider(options.baseUrl)))).pipe(
    Command.withDescription("Cancel a batch (its answered lines are kept; a resumed run finishes the rest)")
  )

const resume = Command.make("resume", { out: Flags.out }, (options) =>
  Effect.gen(function*() {
    const file = RunCommand.recordFile(options.out)
    const recorded = yield* Effect.try({
      try: () => JSON.parse(Fs.readFileSync(file, "utf8")) as RunCommand.Recorded,
      catch: () => new Flags.UsageError({ message: `--out ${options.out}: no run recorded there (${file})` })
    })
    const settings = RunCommand.fromPlain(recorded.settings)
    if (recorded.command === "demo") {
      const count = recorded.count ?? 1000
      return yield* RunCommand.execute(
        JobScoring.task,
        { _tag: "Lines", lines: Listings.lines(count, settings.seed), count },
        settings,
        { command: "demo", count }
      )
    }
    const task = yield* Task.load(recorded.task ?? "").pipe(
      Effect.mapError((e) => new Flags.UsageError({ message: e.message }))
    )
    return yield* RunCommand.execute(task, { _tag: "File", path: recorded.input ?? "" }, settings, recorded)
  })).pipe(Command.withDescription("Run an output folder's recorded command again: finished items are skipped"))

export const command = Command.make("batch").pipe(
  Command.withDescription("Inspect, cancel and resume batches"),
  Command.withSubcommands([list, show, cancel, resume])
)
