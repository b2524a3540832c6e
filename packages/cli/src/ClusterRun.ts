/**
 * `keel run --cluster URL`: submits a run to the `keel worker`s sharing that Postgres and writes its
 * outcomes into the output folder in the files of a local run (results.jsonl, errors.jsonl,
 * calls.jsonl, summary.json).
 *
 * The input's lines go in chunks of `chunkSize` lines: the items of a chunk's lines that decode become
 * one persisted message (see `Cluster`); a line that does not is written to errors.jsonl with its
 * number, as a local run does. The run's id and its chunk size are kept in the folder
 * (cluster-run.json), so the same command with the same `--out` reattaches: chunks whose items are all
 * in the folder are skipped, the rest are sent again under the same keys (run, first line), which the
 * message storage deduplicates, so nothing is called twice. Outcomes and call records are copied from
 * the store as workers write them and marked collected once in the folder; a line already in the folder
 * (an item by its id, a call by its `callId`) is never written again.
 */
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Pricing from "@keel/core/Pricing"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Cluster from "./Cluster.js"
import * as Flags from "./Flags.js"
import * as Report from "./Report.js"
import * as Runner from "./Runner.js"
import type * as Task from "./Task.js"

export interface Options {
  readonly task: Task.Any
  /** The task module as workers import it (an absolute path, or a package specifier). */
  readonly taskModule: string
  readonly input: string
  readonly out: string
  readonly scope: string
  readonly postgresUrl: string
  /** The complex tier's model, for the routing comparison in the summary. */
  readonly modelComplex: string
  /** Messages sent at once. Default 8. */
  readonly sendConcurrency?: number | undefined
  /**
   * Input lines per chunk (per message) of a new run; a run reattached keeps its own. Default: the
   * input's lines over the cluster's shards, from 1 to 16, so that every shard, and so every runner,
   * has its share of the work as long as there are lines enough.
   */
  readonly chunkSize?: number | undefined
}

const runFile = (out: string) => Path.join(out, "cluster-run.json")
const callsFile = (out: string) => Path.join(out, "calls.jsonl")

/** The folder's run id and chunk size, made and recorded on its first cluster run. */
const runOf = (out: string, chunkSize: number) =>
  Effect.try({
    try: (): { readonly run: string; readonly chunkSize: number } => {
      if (Fs.existsSync(runFile(out))) {
        const kept = JSON.parse(Fs.readFileSync(runFile(out), "utf8")) as { run: string; chunkSize?: number }
        return { run: kept.run, chunkSize: kept.chunkSize ?? chunkSize }
      }
      const run = `run-${new Date().toISOString().replace(/[:.]/g, "")}-${Crypto.randomBytes(4).toString("hex")}`
      Fs.writeFileSync(runFile(out), JSON.stringify({ run, chunkSize }) + "\n")
      return { run, chunkSize }
    },
    catch: (error) =>
      new Runner.OutputError({ path: runFile(out), reason: error instanceof Error ? error.message : String(error) })
  })

/** The input's lines, counted by their newlines (the last line may lack one). */
const countLines = (path: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    fs.stream(path, { chunkSize: FileSystem.KiB(64) }).pipe(
      Stream.runFold(1, (lines, bytes) => {
        let n = lines
        for (let i = bytes.indexOf(10); i >= 0; i = bytes.indexOf(10, i + 1)) n++
        return n
      }),
      Effect.mapError((error) => new Runner.InputError({ path, reason: error.message }))
    ))

/** Appends JSON lines synchronously to a file (open for the scope). */
const appender = (path: string) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => Fs.openSync(path, "a"),
      catch: (error) => new Runner.OutputError({ path, reason: String(error) })
    }),
    (fd) => Effect.sync(() => Fs.closeSync(fd))
  ).pipe(Effect.map((fd) => (lines: ReadonlyArray<string>) =>
    Effect.try({
      try: () => {
        if (lines.length === 0) return
        const bytes = Buffer.from(lines.join("\n") + "\n", "utf8")
        let written = 0
        while (written < bytes.length) written += Fs.writeSync(fd, bytes, written)
      },
      catch: (error) => new Runner.OutputError({ path, reason: String(error) })
    })
  ))

const decodeError = (error: ParseResult.ParseError) =>
  ParseResult.ArrayFormatter.formatErrorSync(error).slice(0, 3).map((issue) =>
    `${issue.path.length === 0 ? "" : `${issue.path.join(".")}: `}${issue.message}`
  ).join("; ")

const int = (n: number) => n.toLocaleString("en-US")

/** Submits the run and collects its outcomes into the folder; see the module header. */
export const run = (options: Options) =>
  Effect.gen(function*() {
    const { out, task } = options
    const { shardsPerGroup } = yield* ShardingConfig.ShardingConfig
    const { chunkSize, run } = yield* runOf(
      out,
      options.chunkSize ?? Math.min(16, Math.max(1, Math.floor((yield* countLines(options.input)) / shardsPerGroup)))
    )
    const keys = yield* Runner.done(out)
    const writeResults = yield* appender(Runner.resultsFile(out))
    const writeErrors = yield* appender(Runner.errorsFile(out))
    const recorded = yield* Runner.recordedCalls(callsFile(out))
    const writeCalls = yield* appender(callsFile(out))
    const store = yield* Cluster.Store
    const client = yield* Cluster.ChunkEntity.client
    const entities = (yield* Cluster.shardEntities)(run)
    const startedAt = Date.now()
    const counts = { results: 0, errors: 0, skipped: 0, submitted: 0, inputLines: 0 }
    /** Items of this run not yet in the folder. */
    const waiting = new Set<string>()
    let sent = false
    process.stderr.write(`keel: run ${run} on the cluster at ${Cluster.redactUrl(options.postgresUrl)}\n`)

    const decode = Schema.decodeUnknownEither(task.input)
    const lines = Stream.unwrap(Effect.map(FileSystem.FileSystem, (fs) =>
      fs.stream(options.input, { chunkSize: FileSystem.KiB(64) }).pipe(
        Stream.mapError((error) => new Runner.InputError({ path: options.input, reason: error.message })),
        Stream.decodeText(),
        Stream.splitLines,
        Stream.zipWithIndex
      )))
    /** The line's item to send; `undefined` for a line written to errors.jsonl, blank, done or repeated. */
    const admit = (line: string, number: number): Effect.Effect<Cluster.Item | undefined, Runner.OutputError> => {
      counts.inputLines = number
      if (line.trim() === "" || keys.has(`line:${number}`)) {
        return Effect.succeed(undefined)
      }
      const invalid = (message: string) => {
        keys.add(`line:${number}`)
        counts.errors++
        return Effect.as(writeErrors([JSON.stringify({ line: number, errorTag: "InputInvalid", message })]), undefined)
      }
      let raw: unknown
      try {
        raw = JSON.parse(line)
      } catch (error) {
        return invalid(`line ${number}: not JSON (${error instanceof Error ? error.message : String(error)})`)
      }
      const decoded = decode(raw)
      if (Either.isLeft(decoded)) {
        return invalid(`line ${number}: ${decodeError(decoded.left)}`)
      }
      const id = task.id(decoded.right)
      const tier = task.tier(decoded.right)
      if (!(tier in task.outputs)) {
        return invalid(`line ${number}: the task's tier rule gave "${tier}", which has no output Schema`)
      }
      if (keys.has(id) || waiting.has(id)) {
        counts.skipped++
        return Effect.succeed(undefined)
      }
      waiting.add(id)
      counts.submitted++
      return Effect.succeed({ id, tier, input: raw })
    }
    const submit = lines.pipe(
      Stream.groupAdjacentBy(([, index]) =>
        Math.floor(index / chunkSize)
      ),
      Stream.mapEffect(([n, chunkLines]): Effect.Effect<void, Runner.OutputError | Cluster.StoreError> =>
        Effect.gen(function*() {
          const items: Array<Cluster.Item> = []
          for (const [line, index] of chunkLines) {
            const item = yield* admit(line, index + 1)
            if (item !== undefined) items.push(item)
          }
          if (items.length === 0) return
          const chunk = String(n * chunkSize + 1)
          yield* client(entities[n % entities.length]!).Process(
            { run, chunk, task: options.taskModule, scope: options.scope, items },
            { discard: true }
          ).pipe(
            // A runner that died holding the chunk's shard fails the notification with a defect; the
            // message is stored first, and sending it again is deduplicated by its key (run, chunk).
            Effect.catchAllDefect((defect) =>
              Effect.fail({ message: defect instanceof Error ? defect.message : String(defect) })
            ),
            Effect.retry({ schedule: Schedule.spaced("500 millis"), times: 120 }),
            Effect.mapError((error) =>
              new Cluster.StoreError({ operation: `send the chunk at line ${chunk}`, reason: error.message })
            )
          )
        }), { concurrency: options.sendConcurrency ?? 8 }),
      Stream.runDrain,
      Effect.zipRight(Effect.sync(() => {
        sent = true
      }))
    )

    /** Copies what the store holds for the run into the folder, then marks it collected. */
    const collectOnce = Effect.gen(function*() {
      for (;;) {
        const rows = yield* store.uncollected(run, 1_000)
        if (rows.length === 0) {
          break
        }
        const results: Array<string> = []
        const errors: Array<string> = []
        for (const row of rows) {
          waiting.delete(row.item_id)
          if (keys.has(row.item_id)) {
            continue
          }
          keys.add(row.item_id)
          if (row.kind === "result") {
            results.push(row.line)
            counts.results++
          } else {
            errors.push(row.line)
            counts.errors++
          }
        }
        // Calls first: an item's calls are stored before its outcome, so they are in this batch or earlier.
        yield* collectCalls
        yield* writeResults(results)
        yield* writeErrors(errors)
        yield* store.markCollected(
          run,
          rows.map((row) =>
            row.item_id
          )
        )
      }
    })
    const collectCalls = Effect.gen(function*() {
      for (;;) {
        const rows = yield* store.uncollectedCalls(run, 5_000)
        if (rows.length === 0) break
        yield* writeCalls(
          recorded.size === 0 ? rows.map((row) => row.record) : rows.flatMap((row) => {
            const { callId } = JSON.parse(row.record) as { readonly callId: string }
            return recorded.has(callId) ? [] : [row.record]
          })
        )
        yield* store.markCallsCollected(rows.map((row) => row.seq))
      }
    })

    const progress = () => {
      const seconds = (Date.now() - startedAt) / 1000
      const done = counts.results + counts.errors
      return `${int(done)}/${int(counts.submitted)} done, ${int(counts.errors)} failed, ${
        (done / Math.max(seconds, 0.001)).toFixed(1)
      }/s`
    }
    const ticker = Effect.gen(function*() {
      for (;;) {
        yield* Effect.sleep("5 seconds")
        process.stderr.write(`keel: ${progress()}\n`)
      }
    })

    const tick = yield* Effect.fork(ticker)
    const sender = yield* Effect.fork(submit)
    for (;;) {
      yield* collectOnce
      const failed = yield* Fiber.poll(sender)
      if (failed._tag === "Some" && failed.value._tag === "Failure") return yield* Fiber.join(sender)
      if (sent && waiting.size === 0) break
      yield* Effect.sleep("250 millis")
    }
    yield* collectCalls
    yield* Fiber.interrupt(tick)

    const pricing = yield* Pricing.Pricing
    const comparison: Report.Comparison = { lookup: pricing.lookup, complexModel: options.modelComplex }
    const { stats } = yield* Report.read(callsFile(out)).pipe(
      Effect.catchAll(() => Effect.succeed({ stats: new Report.Accumulator(), skipped: 0 }))
    )
    const count = (file: string) =>
      Fs.existsSync(file) ? Fs.readFileSync(file, "utf8").split("\n").filter((line) => line !== "").length : 0
    const items = { results: count(Runner.resultsFile(out)), errors: count(Runner.errorsFile(out)) }
    const elapsedMs = Date.now() - startedAt
    const summary = {
      items,
      run: {
        inputLines: counts.inputLines,
        results: counts.results,
        errors: counts.errors,
        skippedAsDone: counts.skipped,
        elapsedMs,
        cluster: run
      },
      calls: stats.toJSON(comparison)
    }
    yield* Effect.try({
      try: () => Fs.writeFileSync(Runner.summaryFile(out), JSON.stringify(summary, null, 2) + "\n"),
      catch: (error) => new Runner.OutputError({ path: Runner.summaryFile(out), reason: String(error) })
    })
    yield* Console.log([
      `keel: ${int(counts.results + counts.errors)} items in ${(elapsedMs / 1000).toFixed(1)} s on the cluster: ${
        int(counts.results)
      } results, ${int(counts.errors)} errors${
        counts.skipped > 0 ? `, ${int(counts.skipped)} skipped (already done)` : ""
      }; the folder holds ${int(items.results)} results and ${int(items.errors)} errors`,
      "",
      Report.text(stats, comparison),
      "",
      `files      ${Runner.resultsFile(out)}, ${Runner.errorsFile(out)}, ${callsFile(out)}, ${Runner.summaryFile(out)}`
    ].join("\n"))
    return summary
  }).pipe(
    Effect.scoped,
    Effect.provide(
      Layer.mergeAll(
        Cluster.clientLayer({ prefix: Cluster.defaultPrefix }),
        Cluster.Store.layer({ prefix: Cluster.defaultPrefix }),
        OpenAiPricing.layer()
      ).pipe(Layer.provide(Cluster.postgres(options.postgresUrl)))
    )
  )

/**
 * `keel run --cluster URL`: checks that the flags apply to a cluster run (the budget, the provider
 * and the models are the workers' settings), checks the input and the folder, then runs.
 */
export const execute = (
  task: Task.Any,
  flags: {
    readonly task: string
    readonly input: string
    readonly out: string
    readonly scope: string
    readonly mode: string
    readonly modelComplex: string
    readonly budgetUsd: Option.Option<number>
    readonly faults: Option.Option<unknown>
    readonly baseUrl: Option.Option<string>
  },
  postgresUrl: string
) =>
  Effect.gen(function*() {
    const workers = [
      ...(flags.mode === "sync" ? [] : ["--mode (cluster runs are sync)"]),
      ...(Option.isSome(flags.budgetUsd) ? ["--budget-usd (give it to every `keel worker`)"] : []),
      ...(Option.isSome(flags.faults) ? ["--faults (start `keel simulate --faults` for the workers)"] : []),
      ...(Option.isSome(flags.baseUrl) ? ["--base-url (give it to every `keel worker`)"] : [])
    ]
    if (workers.length > 0) {
      return yield* new Flags.UsageError({ message: `--cluster: these do not apply: ${workers.join(", ")}` })
    }
    yield* Runner.checkInput(flags.input).pipe(Effect.mapError((e) => new Flags.UsageError({ message: e.message })))
    yield* Runner.prepare(flags.out).pipe(
      Effect.mapError((e) => new Flags.UsageError({ message: `--out ${flags.out}: cannot write there (${e.reason})` }))
    )
    const isPath = flags.task.startsWith(".") || Path.isAbsolute(flags.task)
    yield* run({
      task,
      taskModule: isPath ? Path.resolve(flags.task) : flags.task,
      input: flags.input,
      out: flags.out,
      scope: flags.scope,
      postgresUrl,
      modelComplex: flags.modelComplex
    })
  })
