/**
 * Runs a task over a stream of JSON lines into an output folder, resumably: results.jsonl (`id`,
 * `output`) and errors.jsonl (`id` or `line`, `errorTag`, `message`) get one line per item, written
 * synchronously as each item ends, so a `kill -9` loses nothing written; a rerun with the same folder
 * skips every id (and malformed line) already there, and its calls adopt the budget reservations the
 * killed run's calls of the same items left open (`Budget.withCallKeys`). Items are taken as they are
 * pulled (bounded memory); a first SIGINT stops taking new ones and lets the calls in flight finish,
 * a second cancels them. An error no further call can escape (bad key, quota, budget, unknown price)
 * stops the run at once, leaving its item to the next run. The summary (summary.json, and text) is
 * read back from the folder's files, so it covers every run into it.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Batch from "@keel/core/Batch"
import * as Budget from "@keel/core/Budget"
import type * as CallLog from "@keel/core/CallLog"
import * as Llm from "@keel/core/Llm"
import type { LlmError } from "@keel/core/LlmError"
import * as Money from "@keel/core/Money"
import * as Pricing from "@keel/core/Pricing"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Readline from "node:readline"
import * as Report from "./Report.js"
import type * as Task from "./Task.js"

/** The output folder cannot be written (unwritable, disk full): what and why. */
export class OutputError extends Schema.TaggedError<OutputError>("@keel/cli/Runner/OutputError")("OutputError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `cannot write ${this.path}: ${this.reason}; what was written before is kept, and the same command resumes`
  }
}

/** The input file cannot be read. */
export class InputError extends Schema.TaggedError<InputError>("@keel/cli/Runner/InputError")("InputError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `--input ${this.path}: ${this.reason}`
  }
}

/** Errors after which no further call can succeed: the run stops taking items. */
export const stopsTheRun: ReadonlySet<string> = new Set([
  "AuthenticationFailed",
  "QuotaExhausted",
  "BudgetExceeded",
  "BudgetUnavailable",
  "PricingUnknown"
])

const reasonOf = (error: unknown) =>
  error instanceof Error ? ("code" in error ? `${String(error.code)}: ${error.message}` : error.message) : String(error)

export const resultsFile = (out: string) => Path.join(out, "results.jsonl")
export const errorsFile = (out: string) => Path.join(out, "errors.jsonl")
export const summaryFile = (out: string) => Path.join(out, "summary.json")

/** Creates the folder when missing and checks it can be written, naming it when not. */
export const prepare = (out: string): Effect.Effect<void, OutputError> =>
  Effect.try({
    try: () => {
      Fs.mkdirSync(out, { recursive: true })
      Fs.accessSync(out, Fs.constants.W_OK)
      for (const file of [resultsFile(out), errorsFile(out)]) {
        if (Fs.existsSync(file)) Fs.accessSync(file, Fs.constants.W_OK)
      }
    },
    catch: (error) => new OutputError({ path: out, reason: reasonOf(error) })
  })

/** A file whose last line was cut by a crash is cut back to its last whole line. */
const repairTail = (path: string) => {
  if (!Fs.existsSync(path)) return
  const size = Fs.statSync(path).size
  if (size === 0) return
  const fd = Fs.openSync(path, "r+")
  try {
    const window = Buffer.alloc(Math.min(size, 1 << 20))
    let end = size
    for (;;) {
      const start = Math.max(0, end - window.length)
      const read = Fs.readSync(fd, window, 0, end - start, start)
      const last = window.subarray(0, read).lastIndexOf(10)
      if (end === size && last === read - 1) return
      if (last >= 0) return Fs.ftruncateSync(fd, start + last + 1)
      if (start === 0) return Fs.ftruncateSync(fd, 0)
      end = start
    }
  } finally {
    Fs.closeSync(fd)
  }
}

const readLines = (path: string, onLine: (line: string) => void): Effect.Effect<void, OutputError> =>
  Fs.existsSync(path)
    ? Stream.fromAsyncIterable(
      Readline.createInterface({ input: Fs.createReadStream(path), crlfDelay: Infinity }),
      (error) => new OutputError({ path, reason: reasonOf(error) })
    ).pipe(Stream.runForEach((line) => Effect.sync(() => onLine(line))))
    : Effect.void

/** The keys of what the folder already holds: item ids and `line:N` of malformed input lines. */
export const done = (out: string): Effect.Effect<Set<string>, OutputError> =>
  Effect.gen(function*() {
    const keys = new Set<string>()
    yield* Effect.try({
      try: () => {
        repairTail(resultsFile(out))
        repairTail(errorsFile(out))
      },
      catch: (error) => new OutputError({ path: out, reason: reasonOf(error) })
    })
    const add = (line: string) => {
      if (line === "") return
      try {
        const entry = JSON.parse(line) as { id?: unknown; line?: unknown }
        if (typeof entry.id === "string") keys.add(entry.id)
        else if (typeof entry.line === "number") keys.add(`line:${entry.line}`)
      } catch {
        // a line that is not JSON was not written by keel: it names nothing to skip
      }
    }
    yield* readLines(resultsFile(out), add)
    yield* readLines(errorsFile(out), add)
    return keys
  })

/**
 * The call ids a call log already holds (its cut last line dropped first): a run reattached to the folder
 * after a crash skips them, since the crash may have come between writing calls and marking them written.
 */
export const recordedCalls = (path: string): Effect.Effect<Set<string>, OutputError> =>
  Effect.gen(function*() {
    const ids = new Set<string>()
    yield* Effect.try({
      try: () => repairTail(path),
      catch: (error) => new OutputError({ path, reason: reasonOf(error) })
    })
    yield* readLines(path, (line) => {
      if (line === "") return
      try {
        const record = JSON.parse(line) as { callId?: unknown }
        if (typeof record.callId === "string") ids.add(record.callId)
      } catch {
        // a line that is not JSON was not written by keel
      }
    })
    return ids
  })

/** Appends lines synchronously (in the operating system's hands when it returns). */
const appender = (path: string) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => Fs.openSync(path, "a"),
      catch: (error) => new OutputError({ path, reason: reasonOf(error) })
    }),
    (fd) => Effect.sync(() => Fs.closeSync(fd))
  ).pipe(Effect.map((fd) => (value: unknown) =>
    Effect.try({
      try: () => {
        const bytes = Buffer.from(JSON.stringify(value) + "\n", "utf8")
        let written = 0
        while (written < bytes.length) written += Fs.writeSync(fd, bytes, written)
      },
      catch: (error) => new OutputError({ path, reason: reasonOf(error) })
    })
  ))

/** Counters shown while the run goes: items from the writer, calls from the call log. */
export class Progress {
  results = 0
  errors = 0
  skipped = 0
  calls = 0
  retries = 0
  cost: Money.Money = 0n
  readonly startedAt = Date.now()
  total: number | undefined = undefined

  /** A call-log sink feeding the call counters. */
  readonly sink: CallLog.Sink = {
    name: "progress",
    write: (record) =>
      Effect.sync(() => {
        this.calls++
        this.retries += Math.max(0, record.attempts - 1)
        if (record.costUsd !== undefined) this.cost += Money.unsafeParse(record.costUsd)
      })
  }

  line(): string {
    const seconds = (Date.now() - this.startedAt) / 1000
    const finished = this.results + this.errors
    const rate = seconds > 0 ? finished / seconds : 0
    const left = this.total === undefined ? undefined : Math.max(0, this.total - finished - this.skipped)
    const eta = left === undefined || rate === 0 ? "" : `, ETA ${Math.ceil(left / rate)} s`
    const of = this.total === undefined ? "" : `/${(this.total - this.skipped).toLocaleString("en-US")}`
    return `${finished.toLocaleString("en-US")}${of} done, ${this.errors} failed, ${this.retries} retries, $${
      Number(Money.format(this.cost)).toFixed(4)
    } spent, ${rate.toFixed(1)}/s${eta}`
  }
}

/** Where the items come from. */
export type Input =
  | { readonly _tag: "File"; readonly path: string }
  | { readonly _tag: "Lines"; readonly lines: Stream.Stream<string>; readonly count: number }

/** Counts the lines of a file without holding it. */
const countLines = (path: string): Effect.Effect<number, InputError> =>
  Effect.try({
    try: () => {
      const fd = Fs.openSync(path, "r")
      const buffer = Buffer.alloc(1 << 20)
      let count = 0
      let last = 10
      try {
        for (;;) {
          const read = Fs.readSync(fd, buffer, 0, buffer.length, null)
          if (read === 0) break
          for (let i = buffer.indexOf(10); i >= 0 && i < read; i = buffer.indexOf(10, i + 1)) count++
          last = buffer[read - 1]!
        }
      } finally {
        Fs.closeSync(fd)
      }
      return last === 10 ? count : count + 1
    },
    catch: (error) => new InputError({ path, reason: reasonOf(error) })
  })

/** Checks an input file before the run starts: it must exist and be a readable file. */
export const checkInput = (path: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => {
      const stat = Fs.statSync(path)
      if (!stat.isFile()) throw new Error("it is not a file")
      Fs.accessSync(path, Fs.constants.R_OK)
    },
    catch: (error) =>
      new InputError({
        path,
        reason: (error as { code?: string }).code === "ENOENT"
          ? "no such file: give a JSON-lines file, one item per line"
          : reasonOf(error)
      })
  })

const numbered = (input: Input): Stream.Stream<readonly [string, number], InputError, FileSystem.FileSystem> =>
  (input._tag === "Lines" ?
    input.lines :
    Stream.unwrap(
      Effect.map(FileSystem.FileSystem, (fs) =>
        fs.stream(input.path, { chunkSize: FileSystem.KiB(64) }).pipe(
          Stream.mapError((error) => new InputError({ path: input.path, reason: error.message })),
          Stream.decodeText(),
          Stream.splitLines
        ))
    )).pipe(Stream.zipWithIndex, Stream.map(([line, index]) => [line, index + 1] as const))

/** One item's end, as written. */
type Ending =
  | { readonly _tag: "Result"; readonly id: string; readonly output: unknown }
  | {
    readonly _tag: "Error"
    readonly id?: string
    readonly line?: number
    readonly errorTag: string
    readonly message: string
  }
  | { readonly _tag: "Stop"; readonly error: LlmError }
  | { readonly _tag: "Dropped" }

export interface Options {
  readonly task: Task.Any
  readonly input: Input
  readonly out: string
  readonly mode: "sync" | "batch" | "auto"
  readonly concurrency: number
  readonly scope: string
  /** The model of each tier, for batch runs and the comparison. */
  readonly models: Readonly<Record<string, string>>
  readonly progress: Progress
  /** Where progress goes: a live line on a terminal, plain lines otherwise. */
  readonly stderr: { readonly isTTY: boolean; readonly write: (text: string) => void }
}

export interface Outcome {
  readonly summary: ReturnType<typeof summarise>
  readonly text: string
  /** Why the run stopped before the end of the input, when it did. */
  readonly stopped: string | undefined
}

const decodeError = (error: ParseResult.ParseError) =>
  ParseResult.ArrayFormatter.formatErrorSync(error).slice(0, 3).map((issue) =>
    `${issue.path.length === 0 ? "" : `${issue.path.join(".")}: `}${issue.message}`
  ).join("; ")

/** Reads the folder back into the summary: items by outcome, calls from calls.jsonl. */
const summarise = (
  stats: Report.Accumulator,
  comparison: Report.Comparison,
  items: { readonly results: number; readonly errors: number },
  run: Record<string, unknown>
) => ({ items, run, calls: stats.toJSON(comparison) })

const count = (path: string): Effect.Effect<number, OutputError> =>
  Effect.suspend(() => {
    let n = 0
    return readLines(path, (line) => {
      if (line !== "") n++
    }).pipe(Effect.map(() => n))
  })

const int = (n: number) => n.toLocaleString("en-US")

/** Runs the task over the input into the folder; see the module header. */
export const run = (options: Options) =>
  Effect.gen(function*() {
    const { out, progress, task } = options
    const keys = yield* done(out)
    const writeResult = yield* appender(resultsFile(out))
    const writeError = yield* appender(errorsFile(out))
    const stop = yield* Deferred.make<void>()
    let stopped: string | undefined
    // Set at once when the run stops: items already pulled but not started are left for the next run.
    let stopping = false
    const pricing = yield* Pricing.Pricing

    const end = (ending: Ending): Effect.Effect<void, OutputError> => {
      switch (ending._tag) {
        case "Result":
          progress.results++
          return writeResult({ id: ending.id, output: ending.output })
        case "Error": {
          progress.errors++
          if (ending.line !== undefined) keys.add(`line:${ending.line}`)
          const { _tag, ...line } = ending
          return writeError(line)
        }
        case "Dropped":
          return Effect.void
        case "Stop":
          stopping = true
          if (stopped === undefined) {
            stopped = `${ending.error._tag}: ${ending.error.message}`
          }
          return Deferred.succeed(stop, undefined)
      }
    }

    type Parsed =
      | {
        readonly _tag: "Item"
        readonly id: string
        readonly input: unknown
        readonly raw: unknown
        readonly tier: string
      }
      | Extract<Ending, { _tag: "Error" }>
    const decode = Schema.decodeUnknownEither(task.input)
    const parse = ([line, number]: readonly [string, number]): Parsed | undefined => {
      if (line.trim() === "" || keys.has(`line:${number}`)) return undefined
      let raw: unknown
      try {
        raw = JSON.parse(line)
      } catch (error) {
        return {
          _tag: "Error",
          line: number,
          errorTag: "InputInvalid",
          message: `line ${number}: not JSON (${reasonOf(error)})`
        }
      }
      const decoded = decode(raw)
      if (Either.isLeft(decoded)) {
        return {
          _tag: "Error",
          line: number,
          errorTag: "InputInvalid",
          message: `line ${number}: ${decodeError(decoded.left)}`
        }
      }
      const id = task.id(decoded.right)
      const tier = task.tier(decoded.right)
      if (!(tier in task.outputs)) {
        return {
          _tag: "Error",
          id,
          line: number,
          errorTag: "InputInvalid",
          message: `line ${number}: the task's tier rule gave "${tier}", which has no output Schema`
        }
      }
      return { _tag: "Item", id, input: decoded.right, raw, tier }
    }

    const source = numbered(options.input).pipe(
      Stream.interruptWhen(Deferred.await(stop)),
      Stream.filterMap((line) => {
        const parsed = parse(line)
        if (parsed === undefined) return Option.none()
        if (parsed._tag === "Item" && options.mode === "sync") {
          if (keys.has(parsed.id)) {
            progress.skipped++
            return Option.none()
          }
          keys.add(parsed.id)
        }
        return Option.some(parsed)
      })
    )

    const syncOne = (parsed: Parsed): Effect.Effect<Ending, never, Llm.Llm> => {
      if (parsed._tag === "Error") return Effect.succeed(parsed)
      return Effect.suspend(() =>
        stopping ? Effect.succeed<Ending>({ _tag: "Dropped" }) : Llm.generateObject({
          ...task.prompt(parsed.input, parsed.tier),
          schema: task.outputs[parsed.tier]!,
          tier: parsed.tier,
          task: task.name,
          scope: options.scope
        }).pipe(
          Effect.map((output): Ending => ({ _tag: "Result", id: parsed.id, output })),
          Effect.catchAll((error): Effect.Effect<Ending> =>
            Effect.succeed(
              stopsTheRun.has(error._tag)
                ? { _tag: "Stop", error }
                : { _tag: "Error", id: parsed.id, errorTag: error._tag, message: error.message }
            )
          ),
          // The folder's ledger knows the item by these keys: a rerun after a kill -9 adopts what the
          // killed run's calls of it left open instead of leaving them to their lease.
          Budget.withCallKeys(`${task.name}/${parsed.id}`)
        )
      )
    }

    const syncRun = source.pipe(
      Stream.mapEffect(syncOne, { concurrency: options.concurrency, unordered: true }),
      Stream.runForEach(end)
    )

    const batchRun = Effect.gen(function*() {
      const service = yield* Effect.serviceOption(Batch.Batch)
      if (Option.isNone(service)) return yield* Effect.dieMessage("the Batch layer is missing in batch mode")
      const context = yield* Effect.context<FileSystem.FileSystem>()
      for (const tier of Object.keys(task.outputs)) {
        // Batch takes a stream that cannot fail: a read or write error is kept and raised after it.
        let failure: InputError | OutputError | undefined
        const valid = source.pipe(
          Stream.tap((parsed) => (parsed._tag === "Error" ? end(parsed) : Effect.void)),
          Stream.filterMap((parsed) =>
            parsed._tag === "Item" && parsed.tier === tier
              ? Option.some<Batch.Item>({ id: parsed.id, input: parsed.raw })
              : Option.none()
          ),
          Stream.provideContext(context),
          Stream.catchAll((error) => {
            failure = error
            return Stream.empty
          })
        )
        yield* service.value.generateObjects(valid, {
          runId: `keel-${task.name}-${tier}`,
          task: `${task.name}-${tier}`.replace(/[^A-Za-z0-9_-]/g, "_"),
          schema: task.outputs[tier]!,
          input: task.input,
          request: (input) => ({ ...task.prompt(input, tier), tier }),
          model: options.models[tier] ?? tier,
          scope: options.scope,
          mode: options.mode === "auto" ? "auto" : "batch"
        }).pipe(
          Stream.runForEach((result) => {
            if (keys.has(result.id)) {
              progress.skipped++
              return Effect.void
            }
            keys.add(result.id)
            return Either.match(result.result, {
              onRight: (output) => end({ _tag: "Result", id: result.id, output }),
              onLeft: (error) =>
                error._tag !== "BatchItemFailed" && stopsTheRun.has(error._tag)
                  ? end({ _tag: "Stop", error })
                  : end({ _tag: "Error", id: result.id, errorTag: error._tag, message: error.message })
            })
          })
        )
        if (failure !== undefined) return yield* failure
      }
    })

    const total = options.input._tag === "Lines" ? options.input.count : yield* countLines(options.input.path)
    progress.total = total

    const ticker = Effect.gen(function*() {
      const every = options.stderr.isTTY ? 250 : 5000
      for (;;) {
        yield* Effect.sleep(every)
        options.stderr.write(options.stderr.isTTY ? `\r\u001b[K${progress.line()}` : `${progress.line()}\n`)
      }
    })

    /** Reads the folder back into the summary, writes summary.json and prints the summary. */
    const finish = Effect.gen(function*() {
      const comparison: Report.Comparison = { lookup: pricing.lookup, complexModel: options.models.complex }
      const { stats } = yield* Report.read(Path.join(out, "calls.jsonl")).pipe(
        Effect.catchAll(() => Effect.succeed({ stats: new Report.Accumulator(), skipped: 0 }))
      )
      const items = { results: yield* count(resultsFile(out)), errors: yield* count(errorsFile(out)) }
      const elapsedMs = Date.now() - progress.startedAt
      const summary = summarise(stats, comparison, items, {
        inputLines: total,
        results: progress.results,
        errors: progress.errors,
        skippedAsDone: progress.skipped,
        elapsedMs,
        ...(stopped === undefined ? {} : { stopped })
      })
      yield* Effect.try({
        try: () => Fs.writeFileSync(summaryFile(out), JSON.stringify(summary, null, 2) + "\n"),
        catch: (error) => new OutputError({ path: summaryFile(out), reason: reasonOf(error) })
      }).pipe(Effect.catchAll((error) => Effect.sync(() => options.stderr.write(`keel: ${error.message}\n`))))
      const text = [
        `keel: ${(progress.results + progress.errors).toLocaleString("en-US")} items in ${
          (elapsedMs / 1000).toFixed(1)
        } s: ${int(progress.results)} results, ${int(progress.errors)} errors${
          progress.skipped > 0 ? `, ${int(progress.skipped)} skipped (already done)` : ""
        }; the folder holds ${int(items.results)} results and ${int(items.errors)} errors`,
        ...(stopped === undefined ? [] : [`stopped    ${stopped}`]),
        "",
        Report.text(stats, comparison),
        "",
        `files      ${resultsFile(out)}, ${errorsFile(out)}, ${Path.join(out, "calls.jsonl")}, ${summaryFile(out)}, ${
          Path.join(out, "ledger.sqlite")
        }`
      ].join("\n")
      yield* Console.log(text)
      return { summary, text, stopped } satisfies Outcome
    })

    const work = Effect.gen(function*() {
      const tick = yield* Effect.fork(ticker)
      return yield* (options.mode === "sync" ? syncRun : batchRun).pipe(
        Effect.ensuring(Fiber.interrupt(tick)),
        Effect.ensuring(Effect.sync(() => {
          if (options.stderr.isTTY) options.stderr.write(`\r\u001b[K${progress.line()}\n`)
        }))
      )
    })

    // First SIGINT or SIGTERM: stop taking items, let the calls in flight end; second: interrupt them.
    const runtime = yield* Effect.runtime<never>()
    const worker = yield* Effect.forkDaemon(work)
    // The summary is written whatever ended the work: its end, an error, or a second Ctrl-C.
    const finisher = yield* Effect.forkDaemon(Effect.gen(function*() {
      const exit = yield* Fiber.await(worker)
      const outcome = yield* finish
      if (exit._tag === "Failure" && !Cause.isInterruptedOnly(exit.cause)) return yield* Effect.failCause(exit.cause)
      return outcome
    }))
    const stopTaking = (why: string) =>
      Effect.suspend(() => {
        if (stopping) return Effect.void
        stopping = true
        stopped = stopped ?? why
        options.stderr.write(`\nkeel: stopping: no new items; the calls in flight finish (Ctrl-C again cancels them)\n`)
        return Deferred.succeed(stop, undefined)
      })
    let signals = 0
    const onSignal = () => {
      signals++
      Runtime.runFork(runtime)(
        signals === 1
          ? stopTaking("interrupted: the same command resumes")
          : Fiber.interruptFork(worker)
      )
    }
    process.on("SIGINT", onSignal)
    process.on("SIGTERM", onSignal)
    return yield* Fiber.join(finisher).pipe(
      Effect.onInterrupt(() =>
        stopTaking("interrupted: the same command resumes").pipe(Effect.zipRight(Fiber.await(finisher)))
      ),
      Effect.ensuring(Effect.sync(() => {
        process.removeListener("SIGINT", onSignal)
        process.removeListener("SIGTERM", onSignal)
      }))
    )
  }).pipe(Effect.scoped)
