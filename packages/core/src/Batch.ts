/**
 * Bulk structured generation at batch prices: `Batch.generateObjects(items, options)` turns a stream
 * of items into a stream of results keyed by item id, each a decoded value or a typed error, exactly
 * once.
 *
 * Items are decoded with the `input` Schema and turned into requests; the valid ones are cut into
 * chunks (at most `maxLines` lines and `maxBytes` bytes each, 50,000 and 200 MB by default). Each
 * chunk lives as an `@effect/workflow` Workflow (one per chunk, keyed by run id and chunk id) whose
 * Activities reserve the chunk's worst case at batch prices, upload it, create the batch (tagged
 * with the run and chunk, and found again by that metadata when an earlier try died after creating
 * it), poll it with durable sleeps, download and decode its lines, and settle the reservation with
 * the billed usage at batch prices, writing one `CallRecord` per item (`mode: "batch"`, `batchId`).
 * Run the workflows on a durable engine (`Batch/Engine`: `@effect/cluster` on SQLite or Postgres):
 * after a crash, the same run (same `runId`, same items) attaches to the chunks already under way
 * and replays the finished ones from the engine, so nothing is submitted or paid twice.
 *
 * Lines that failed for a reason worth another try (expired or cancelled before they ran, a
 * retryable error, no readable result) are resubmitted in a new batch, or finished synchronously
 * through `Llm`, or given up, as `retry` says; the answered lines of an expired or cancelled batch
 * are kept. A chunk refused for the provider's enqueued-token limit waits for the run's other
 * batches (the allowance is configured per model or learned from the refusal), or is split when it
 * is too big alone.
 *
 * `mode: "auto"` sends the run synchronously when it has at most `autoThreshold` items (default
 * 100) or when its `deadline` is closer than the batch completion window (24 hours), and as batches
 * otherwise.
 */
import * as Activity from "@effect/workflow/Activity"
import * as DurableClock from "@effect/workflow/DurableClock"
import * as Workflow from "@effect/workflow/Workflow"
import { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as BatchProvider from "./BatchProvider.js"
import * as Budget from "./Budget.js"
import * as CallLog from "./CallLog.js"
import * as CallRecord from "./CallRecord.js"
import * as BatchBudget from "./internal/batchBudget.js"
import * as Gate from "./internal/batchGate.js"
import * as StructuredOutput from "./internal/structuredOutput.js"
import * as Llm from "./Llm.js"
import {
  BudgetUnavailable,
  InvalidRequest,
  isRetryable,
  LlmError,
  OutputInvalid,
  PricingUnknown,
  Refused,
  Truncated
} from "./LlmError.js"
import * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"
import * as Money from "./Money.js"
import * as Pricing from "./Pricing.js"
import * as Tokenizer from "./Tokenizer.js"
import type * as Tool from "./Tool.js"
import { Usage } from "./Usage.js"

/** An item whose line could not be finished: resubmissions used up, or no batch could take it. */
export class BatchItemFailed extends Schema.TaggedError<BatchItemFailed>("@keel/core/Batch/BatchItemFailed")(
  "BatchItemFailed",
  { reason: Schema.String, batchId: Schema.optional(Schema.String) }
) {
  get retryable() {
    return false
  }
  override get message() {
    return `Batch item failed${this.batchId === undefined ? "" : ` in ${this.batchId}`}: ${this.reason}`
  }
}

/** Options that cannot work: the field and why. */
export class BatchConfigError extends Schema.TaggedError<BatchConfigError>("@keel/core/Batch/BatchConfigError")(
  "BatchConfigError",
  { field: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `Batch: ${this.field}: ${this.reason}`
  }
}

export type ItemError = LlmError | BatchItemFailed

/** An input item: its key (the line's `custom_id`) and its data, decoded with the `input` Schema. */
export interface Item {
  readonly id: string
  readonly input: unknown
}

/** The end of one item: its decoded value or why not, how it was run, and its batch. */
export interface ItemResult<A> {
  readonly id: string
  readonly result: Either.Either<A, ItemError>
  readonly mode: "sync" | "batch"
  readonly batchId?: string | undefined
}

/** The request fields an item's input turns into; model and scope are the run's. */
export type RequestFields = Omit<LlmRequest.Input, "model" | "scope" | "tools" | "toolChoice" | "responseFormat">

export interface GenerateObjectsOptions<A, I, In> {
  /** Names the run: stable across restarts (the same run resumes), unique across runs. */
  readonly runId: string
  /** Names the task's workflow: letters, digits, `_` and `-` (one per output Schema). */
  readonly task: string
  readonly schema: Schema.Schema<A, I, never> | Tool.Tool<A, I>
  /** Each item's input is decoded with it; an item that fails is reported with the reason. */
  readonly input: Schema.Schema<In, any, never>
  readonly request: (input: In) => RequestFields
  readonly model: string
  /** Budget scope of the whole run (default `global`). */
  readonly scope?: string | undefined
  /** "batch" (default), "sync", or "auto" (see the module's header). */
  readonly mode?: "batch" | "sync" | "auto" | undefined
  /** When the results are needed (epoch milliseconds): `auto` runs synchronously when it is near. */
  readonly deadline?: number | undefined
  /** How the Schema is sent: a strict tool (default) or a `json_schema` response format. */
  readonly format?: "tool" | "json_schema" | undefined
  readonly name?: string | undefined
  readonly description?: string | undefined
  /**
   * What becomes of lines worth another try: "resubmit" (default) in a new batch, up to
   * `maxResubmits` times (default 2); "sync" through `Llm`; "none": they fail.
   */
  readonly retry?: "resubmit" | "sync" | "none" | undefined
  readonly maxResubmits?: number | undefined
}

export interface Options {
  /** Lines per chunk, at most 50,000 (OpenAI's limit). */
  readonly maxLines?: number
  /** Bytes per input file (as estimated from each line's JSON), at most 200 MB. */
  readonly maxBytes?: number
  /** How often a batch is polled (a durable sleep between polls). Default 1 minute. */
  readonly pollEvery?: Duration.DurationInput
  /** Polling sleeps longer than this are durable clocks in the engine; shorter ones sleep in the activity. Default 60 s. */
  readonly inMemorySleepUpTo?: Duration.DurationInput
  /** Lease of a chunk's budget reservation, renewed at every poll. Default 25 hours (past the batch window). */
  readonly lease?: Duration.DurationInput
  /** Enqueued input tokens allowed per model (a number for every model); learned from refusals when absent. */
  readonly allowance?: number | Readonly<Record<string, number>>
  /** Chunks in flight at once. Default 4. */
  readonly concurrency?: number
  /** Synchronous calls at once (mode sync, or retry "sync"). Default 8. */
  readonly syncConcurrency?: number
  /** `auto` runs synchronously up to this many items. Default 100. */
  readonly autoThreshold?: number
  /** The provider's completion window. Default 24 hours. */
  readonly completionWindow?: Duration.DurationInput
}

export class Batch extends Context.Tag("@keel/core/Batch")<Batch, Batch.Service>() {}

export declare namespace Batch {
  export interface Service {
    readonly generateObjects: <A, I, In>(
      items: Stream.Stream<Item>,
      options: GenerateObjectsOptions<A, I, In>
    ) => Stream.Stream<ItemResult<A>, BatchConfigError>
  }
}

// ---------------------------------------------------------------------------------------------------
// The chunk workflow's payload and result (stored by the engine)
// ---------------------------------------------------------------------------------------------------

const Line = Schema.Struct({ customId: Schema.String, request: LlmRequest.LlmRequest })
type Line = typeof Line.Type

const ChunkPayload = Schema.Struct({
  runId: Schema.String,
  chunkId: Schema.String,
  model: Schema.String,
  scope: Schema.String,
  lines: Schema.Array(Line)
})
type ChunkPayload = typeof ChunkPayload.Type

/** How a line ended in its batch: the answer's raw JSON (it decoded), a final error, or a reason to try again. */
const LineOutcome = Schema.Struct({
  customId: Schema.String,
  raw: Schema.optional(Schema.String),
  error: Schema.optional(LlmError),
  retry: Schema.optional(Schema.String),
  usage: Schema.optional(Usage),
  requestId: Schema.optional(Schema.String)
})
type LineOutcome = typeof LineOutcome.Type

const ChunkOutcome = Schema.Union(
  Schema.TaggedStruct("Done", { batchId: Schema.String, lines: Schema.Array(LineOutcome) }),
  /** Nothing ran: every line ends with this error (a budget refusal, a provider that refused the upload). */
  Schema.TaggedStruct("Failed", { error: LlmError }),
  /** Refused for the enqueued-token limit with nothing else enqueued: split it. */
  Schema.TaggedStruct("TooLarge", { tokens: Schema.Number })
)
type ChunkOutcome = typeof ChunkOutcome.Type

const Reserved = Schema.Struct({ tokens: Schema.Number })

const BatchInfo = Schema.Struct({
  id: Schema.String,
  status: Schema.String,
  createdAt: Schema.Number,
  errors: Schema.Array(
    Schema.Struct({ code: Schema.String, message: Schema.String, line: Schema.optional(Schema.Number) })
  )
})
type BatchInfo = typeof BatchInfo.Type

const infoOf = (batch: BatchProvider.Batch): BatchInfo => ({
  id: batch.id,
  status: batch.status,
  createdAt: batch.createdAt,
  errors: batch.errors.map((error) =>
    error.line === undefined
      ? { code: error.code, message: error.message }
      : { code: error.code, message: error.message, line: error.line }
  )
})

const tokenLimit = (info: BatchInfo) => info.errors.some((error) => error.code === "token_limit_exceeded")

// ---------------------------------------------------------------------------------------------------

/** A task as a chunk's life needs it: the prepared request of a line, and how to read an answer. */
interface Task {
  readonly full: (request: LlmRequest.LlmRequest) => LlmRequest.Resolved
  readonly read: (response: LlmResponse) => Either.Either<string, LlmError>
}

const providerRetry = Schedule.exponential("1 second", 2).pipe(
  Schedule.union(Schedule.spaced("1 minute")),
  Schedule.intersect(Schedule.recurs(8))
)
const withProviderRetry = <A>(effect: Effect.Effect<A, LlmError>) =>
  Effect.retry(effect, { while: isRetryable, schedule: providerRetry })

const storeRetry = Schedule.exponential("200 millis", 2).pipe(Schedule.intersect(Schedule.recurs(5)))

const millis = (input: Duration.DurationInput) => Duration.toMillis(Duration.decode(input))

/** Builds the service over the `WorkflowEngine` and `BatchProvider` in context; see the module header. */
export const make = (
  options: Options = {}
): Effect.Effect<
  Batch.Service,
  BatchConfigError,
  WorkflowEngine | BatchProvider.BatchProvider | Pricing.Pricing | Scope.Scope
> =>
  Effect.gen(function*() {
    const maxLines = options.maxLines ?? 50_000
    const maxBytes = options.maxBytes ?? 200_000_000
    if (!Number.isInteger(maxLines) || maxLines < 1 || maxLines > 50_000) {
      return yield* new BatchConfigError({ field: "maxLines", reason: "must be an integer from 1 to 50,000" })
    }
    if (!(maxBytes > 0 && maxBytes <= 200_000_000)) {
      return yield* new BatchConfigError({ field: "maxBytes", reason: "must be positive and at most 200 MB" })
    }
    const pollEvery = Duration.decode(options.pollEvery ?? "1 minute")
    const inMemorySleepUpTo = Duration.decode(options.inMemorySleepUpTo ?? "60 seconds")
    const completionWindow = millis(options.completionWindow ?? "24 hours")
    const concurrency = options.concurrency ?? 4
    const syncConcurrency = options.syncConcurrency ?? 8
    const autoThreshold = options.autoThreshold ?? 100

    const context = yield* Effect.context<WorkflowEngine | BatchProvider.BatchProvider | Pricing.Pricing>()
    const serviceScope = yield* Effect.scope
    const engine = Context.get(context, WorkflowEngine)
    const provider = Context.get(context, BatchProvider.BatchProvider)
    const pricing = Context.get(context, Pricing.Pricing)
    const all = yield* Effect.context<never>()
    const tokenizer = Option.getOrElse(Context.getOption(all, Tokenizer.Tokenizer), () => Tokenizer.bytesUpperBound)
    const callLog = Context.get(all, CallLog.CallLog)
    const budget = Option.getOrUndefined(Context.getOption(all, Budget.Budget))
    const store = Option.getOrUndefined(Context.getOption(all, Budget.BudgetStore))
    const llm = Option.getOrUndefined(Context.getOption(all, Llm.Llm))
    if (budget !== undefined && store === undefined) {
      return yield* new BatchConfigError({
        field: "budget",
        reason:
          "a batch reservation outlives the process, so it is kept in the store: provide the BudgetStore (e.g. BudgetSql.layerStore) beside the Budget"
      })
    }
    const ledger: BatchBudget.Ledger | undefined = store === undefined ? undefined : {
      store,
      limits: budget?.limits ?? [],
      lease: millis(options.lease ?? "25 hours")
    }
    const allowance = options.allowance
    const gate = Gate.make((model) =>
      allowance === undefined ? undefined : typeof allowance === "number" ? allowance : allowance[model]
    )

    const tasks = new Map<string, Task>()
    const workflows = new Map<string, ChunkWorkflow>()

    const priceOf = (model: string) => {
      const price = pricing.lookup(model)
      return price === undefined ? Effect.fail(new PricingUnknown({ model })) : Effect.succeed(price)
    }

    /** The life of one chunk, as the engine runs (and replays) it. */
    const life = (taskName: string, payload: ChunkPayload, executionId: string) =>
      Effect.gen(function*() {
        const task = tasks.get(taskName)!
        const { chunkId, lines, model, runId, scope } = payload
        const requests = lines.map((line) => ({ customId: line.customId, request: task.full(line.request) }))
        const price = yield* Effect.orDie(priceOf(model))

        const reserved = yield* Activity.make({
          name: "reserve",
          success: Reserved,
          error: LlmError,
          execute: Effect.gen(function*() {
            let tokens = 0
            let worst = 0n
            for (const { request } of requests) {
              const input = yield* tokenizer.input(request)
              tokens += input
              worst += Pricing.worstCase(price, input, request.maxOutputTokens ?? price.maxOutputTokens, "batch")
            }
            if (ledger !== undefined) {
              const now = yield* Clock.currentTimeMillis
              yield* BatchBudget.reserve(ledger, { runId, chunkId, scope, amount: worst }, now).pipe(
                Effect.retry({ while: (error) => error._tag === "BudgetStoreError", schedule: storeRetry }),
                Effect.mapError((error) =>
                  error._tag === "BudgetExceeded"
                    ? error
                    : new BudgetUnavailable({ model, operation: error.operation, reason: error.reason })
                )
              )
            }
            return { tokens }
          })
        }).pipe(Effect.either)
        if (Either.isLeft(reserved)) return { _tag: "Failed", error: reserved.left } as const

        const closeBudget = (cost: Money.Money) =>
          ledger === undefined ? Effect.void : BatchBudget.close(ledger, runId, chunkId, cost).pipe(
            Effect.retry(storeRetry),
            Effect.catchAll((error) =>
              Effect.logWarning(
                "Batch: closing a chunk's reservation failed; it will be reclaimed at its full amount when its lease expires",
                error
              )
            )
          )

        const uploaded = yield* Activity.make({
          name: "upload",
          success: Schema.String,
          error: LlmError,
          execute: withProviderRetry(provider.upload(requests))
        }).pipe(Effect.either)
        if (Either.isLeft(uploaded)) {
          yield* Activity.make({ name: "release-upload", execute: closeBudget(0n) })
          return { _tag: "Failed", error: uploaded.left } as const
        }
        const fileId = uploaded.right
        const tokens = reserved.right.tokens

        let final: BatchInfo
        for (let attempt = 0;; attempt++) {
          yield* Activity.make({ name: `admit-${attempt}`, execute: gate.admit(model, executionId, tokens) })
          gate.hold(model, executionId, tokens)
          const metadata = { keel_run: runId, keel_chunk: chunkId, keel_try: String(attempt) }
          const created = yield* Activity.make({
            name: `create-${attempt}`,
            success: BatchInfo,
            error: LlmError,
            execute: withProviderRetry(
              Effect.flatMap(
                provider.find(metadata),
                (found) => found.length > 0 ? Effect.succeed(found[0]!) : provider.create(fileId, metadata)
              )
            ).pipe(Effect.map(infoOf))
          }).pipe(Effect.either)
          if (Either.isLeft(created)) {
            gate.release(model, executionId)
            yield* Activity.make({ name: "release-create", execute: closeBudget(0n) })
            return { _tag: "Failed", error: created.left } as const
          }
          let info = created.right
          for (let poll = 0; !BatchProvider.isFinal(info.status as BatchProvider.Status); poll++) {
            yield* DurableClock.sleep({
              name: `${attempt}-${poll}`,
              duration: pollEvery,
              inMemoryThreshold: inMemorySleepUpTo
            })
            const batchId = info.id
            const previous = info
            info = yield* Activity.make({
              name: `poll-${attempt}-${poll}`,
              success: BatchInfo,
              execute: Effect.gen(function*() {
                if (ledger !== undefined) {
                  yield* Effect.ignore(Effect.retry(BatchBudget.renew(ledger, runId), storeRetry))
                }
                // A poll that fails is another poll later: the batch is unchanged as far as we know.
                return yield* provider.retrieve(batchId).pipe(Effect.map(infoOf), Effect.orElseSucceed(() => previous))
              })
            })
          }
          gate.release(model, executionId)
          if (info.status === "failed" && tokenLimit(info)) {
            const othersEnqueued = yield* Activity.make({
              name: `refused-${attempt}`,
              success: Schema.Boolean,
              execute: Effect.sync(() => gate.refused(model, executionId, tokens))
            })
            if (othersEnqueued) continue
            yield* Activity.make({ name: "release-too-large", execute: closeBudget(0n) })
            return { _tag: "TooLarge", tokens } as const
          }
          final = info
          break
        }

        if (final.status === "failed") {
          yield* Activity.make({ name: "release-failed", execute: closeBudget(0n) })
          return { _tag: "Done", batchId: final.id, lines: failedLines(lines, final) } as const
        }

        const batchId = final.id
        const collected = yield* Activity.make({
          name: "collect",
          success: Schema.Array(LineOutcome),
          error: LlmError,
          execute: withProviderRetry(provider.retrieve(batchId)).pipe(
            Effect.flatMap((batch) => withProviderRetry(provider.results(batch))),
            Effect.map((results) => collect(task, lines, final, results))
          )
        }).pipe(Effect.either)
        if (Either.isLeft(collected)) {
          // Results that cannot be read were paid for but are lost: the lines are tried again, and the
          // reservation is left to be reclaimed at its full amount when its lease runs out.
          const reason = `results of ${batchId} could not be read: ${collected.left.message}`
          return {
            _tag: "Done",
            batchId,
            lines: lines.map((line) => ({ customId: line.customId, retry: reason }))
          } as const
        }
        const outcomes = collected.right

        yield* Activity.make({
          name: "settle",
          execute: Effect.gen(function*() {
            let cost = 0n
            for (const outcome of outcomes) {
              if (outcome.usage !== undefined) cost += Pricing.costOf(price, outcome.usage, "batch")
            }
            yield* closeBudget(cost)
            const now = yield* Clock.currentTimeMillis
            if (callLog.enabled) {
              const byId = new Map(requests.map((line) => [line.customId, line.request]))
              for (const outcome of outcomes) {
                if (outcome.retry !== undefined) continue
                yield* callLog.write(recordOf({
                  provider: provider.provider,
                  runId,
                  batchId,
                  createdAt: final.createdAt,
                  now,
                  request: byId.get(outcome.customId)!,
                  outcome,
                  price
                }))
              }
            }
            yield* Effect.ignore(provider.deleteFile(fileId))
          })
        })
        return { _tag: "Done", batchId, lines: outcomes } as const
      })

    const workflowOf = (taskName: string) =>
      Effect.gen(function*() {
        const existing = workflows.get(taskName)
        if (existing !== undefined) return existing
        const workflow = chunkWorkflow(taskName)
        workflows.set(taskName, workflow)
        yield* engine.register(workflow, (payload, executionId) => life(taskName, payload, executionId)).pipe(
          Effect.provideService(Scope.Scope, serviceScope),
          Effect.provide(context)
        )
        return workflow
      })

    const generateObjects = <A, I, In>(
      items: Stream.Stream<Item>,
      run: GenerateObjectsOptions<A, I, In>
    ): Stream.Stream<ItemResult<A>, BatchConfigError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const problem = checkRun(run)
        if (problem !== undefined) return yield* problem
        const scope = run.scope ?? Budget.root
        const format = run.format ?? "tool"
        const retry = run.retry ?? "resubmit"
        const maxResubmits = run.maxResubmits ?? 2
        if ((run.mode === "sync" || run.mode === "auto" || retry === "sync") && llm === undefined) {
          return yield* new BatchConfigError({
            field: run.mode === "sync" || run.mode === "auto" ? "mode" : "retry",
            reason: "synchronous calls need Llm: provide an Llm layer to Batch.layer"
          })
        }
        const decodeInput = Schema.decodeUnknownEither(run.input, { errors: "first" })

        // One strict tool or format for the run: a bad Schema fails every item at once.
        const probe = StructuredOutput.prepare({
          schema: run.schema,
          mode: format,
          ...(run.name === undefined ? {} : { name: run.name }),
          ...(run.description === undefined ? {} : { description: run.description }),
          messages: [{ role: "user", content: "" }]
        })
        if (Either.isLeft(probe)) {
          return yield* new BatchConfigError({ field: probe.left.field ?? "schema", reason: probe.left.reason })
        }
        const prepared = probe.right
        const extra: Pick<LlmRequest.Input, "tools" | "toolChoice" | "responseFormat"> = prepared.mode === "tool"
          ? { tools: prepared.input.tools!, toolChoice: prepared.input.toolChoice! }
          : { responseFormat: prepared.input.responseFormat! }
        const extraBytes = JSON.stringify(extra).length
        const task: Task = {
          full: (request) => ({ ...request, ...extra }) as LlmRequest.Resolved,
          read: (response) => {
            if (response.refusal !== undefined) {
              return Either.left(
                new Refused({ model: response.model, requestId: response.requestId, refusal: response.refusal })
              )
            }
            if (response.finishReason === "length") {
              return Either.left(
                new Truncated({
                  model: response.model,
                  requestId: response.requestId,
                  outputTokens: response.usage.outputTokens
                })
              )
            }
            return Either.map(StructuredOutput.read(prepared, response), () => rawOf(prepared, response))
          }
        }
        tasks.set(run.task, task)
        const workflow = yield* workflowOf(run.task)
        const decodeRaw = (raw: string) => prepared.strict.decodeJson(raw)

        // -- items → requests (or per-item errors)
        const seen = new Set<string>()
        const toLine = (item: Item): Either.Either<Line, ItemResult<A>> => {
          const fail = (error: ItemError): Either.Either<Line, ItemResult<A>> =>
            Either.left({ id: item.id, result: Either.left(error), mode: "batch" })
          if (seen.has(item.id)) {
            return fail(new InvalidRequest({ field: "id", reason: `duplicate item id "${item.id}"` }))
          }
          seen.add(item.id)
          const input = decodeInput(item.input)
          if (Either.isLeft(input)) {
            const [issue] = ParseResult.ArrayFormatter.formatErrorSync(input.left)
            return fail(
              new InvalidRequest({
                field: ["input", ...(issue?.path ?? [])].map(String).join("."),
                reason: issue?.message ?? input.left.message
              })
            )
          }
          const fields = Either.try(() => run.request(input.right))
          if (Either.isLeft(fields)) {
            return fail(new InvalidRequest({ field: "input", reason: String(fields.left) }))
          }
          const request = Schema.decodeUnknownEither(LlmRequest.LlmRequest, { errors: "first" })({
            ...fields.right,
            model: run.model,
            scope
          })
          if (Either.isLeft(request)) {
            const [issue] = ParseResult.ArrayFormatter.formatErrorSync(request.left)
            return fail(
              new InvalidRequest({
                field: (issue?.path ?? []).map(String).join(".") || "request",
                reason: issue?.message ?? request.left.message
              })
            )
          }
          return Either.right({ customId: item.id, request: request.right })
        }

        const syncOne = (line: Line): Effect.Effect<ItemResult<A>> =>
          llm!.generateObject({
            ...(line.request as LlmRequest.Input),
            schema: run.schema,
            mode: format,
            ...(run.name === undefined ? {} : { name: run.name }),
            ...(run.description === undefined ? {} : { description: run.description })
          }).pipe(
            Effect.either,
            Effect.map((result) => ({ id: line.customId, result, mode: "sync" as const }))
          )

        const syncStream = (lines: Stream.Stream<Either.Either<Line, ItemResult<A>>>) =>
          Stream.mapEffect(
            lines,
            (line) =>
              Either.isLeft(line) ? Effect.succeed({ ...line.left, mode: "sync" as const }) : syncOne(line.right),
            { concurrency: syncConcurrency, unordered: true }
          )

        /** One chunk's workflow, then its retries. */
        const runChunk = (
          chunkId: string,
          lines: ReadonlyArray<Line>,
          resubmits: number
        ): Stream.Stream<ItemResult<A>> =>
          Stream.unwrap(Effect.gen(function*() {
            const outcome = yield* workflow.execute({ runId: run.runId, chunkId, model: run.model, scope, lines }).pipe(
              Effect.provideService(WorkflowEngine, engine)
            )
            switch (outcome._tag) {
              case "Failed":
                return Stream.fromIterable(lines.map((line): ItemResult<A> => ({
                  id: line.customId,
                  result: Either.left(outcome.error),
                  mode: "batch"
                })))
              case "TooLarge": {
                if (lines.length === 1) {
                  return Stream.make<[ItemResult<A>]>({
                    id: lines[0]!.customId,
                    result: Either.left(
                      new BatchItemFailed({
                        reason: `its ${outcome.tokens} input tokens alone pass the provider's enqueued-token limit`
                      })
                    ),
                    mode: "batch"
                  })
                }
                const half = Math.ceil(lines.length / 2)
                return Stream.merge(
                  runChunk(`${chunkId}a`, lines.slice(0, half), resubmits),
                  runChunk(`${chunkId}b`, lines.slice(half), resubmits)
                )
              }
              case "Done": {
                const done: Array<ItemResult<A>> = []
                const again: Array<Line> = []
                const reasons = new Map<string, string>()
                const byId = new Map(lines.map((line) => [line.customId, line]))
                for (const line of outcome.lines) {
                  // Lines that answered no item of the chunk (unknown or repeated ids) were only charged.
                  if (!byId.has(line.customId)) continue
                  if (line.raw !== undefined) {
                    const value = decodeRaw(line.raw)
                    done.push({
                      id: line.customId,
                      result: Either.isRight(value) ? Either.right(value.right) : Either.left(
                        new OutputInvalid({
                          model: run.model,
                          reason: value.left.reason,
                          path: value.left.path,
                          raw: line.raw
                        })
                      ),
                      mode: "batch",
                      batchId: outcome.batchId
                    })
                  } else if (line.error !== undefined) {
                    done.push({
                      id: line.customId,
                      result: Either.left(line.error),
                      mode: "batch",
                      batchId: outcome.batchId
                    })
                  } else {
                    again.push(byId.get(line.customId)!)
                    reasons.set(line.customId, line.retry ?? "no result")
                  }
                }
                const finished = Stream.fromIterable(done)
                if (again.length === 0) return finished
                if (retry === "resubmit" && resubmits < maxResubmits) {
                  return Stream.concat(finished, runChunk(`${chunkId}r`, again, resubmits + 1))
                }
                if (retry === "sync") {
                  return Stream.concat(finished, syncStream(Stream.fromIterable(again.map(Either.right))))
                }
                return Stream.concat(
                  finished,
                  Stream.fromIterable(again.map((line): ItemResult<A> => ({
                    id: line.customId,
                    result: Either.left(
                      new BatchItemFailed({ reason: reasons.get(line.customId)!, batchId: outcome.batchId })
                    ),
                    mode: "batch",
                    batchId: outcome.batchId
                  })))
                )
              }
            }
          }))

        const batchStream = (lines: Stream.Stream<Either.Either<Line, ItemResult<A>>>) => {
          let chunk = 0
          let count = 0
          let bytes = 0
          // Invalid items ride in the group of the chunk being filled, so a chunk is one group.
          const tagged = Stream.map(lines, (line) => {
            if (Either.isLeft(line)) return { chunk, line }
            const size = JSON.stringify(line.right.request).length + extraBytes + line.right.customId.length + 64
            if (count > 0 && (count + 1 > maxLines || bytes + size > maxBytes)) {
              chunk++
              count = 0
              bytes = 0
            }
            count++
            bytes += size
            return { chunk, line }
          })
          return tagged.pipe(
            Stream.groupAdjacentBy((entry) => entry.chunk),
            Stream.flatMap(([chunk, group]) => {
              const entries = Chunk.toReadonlyArray(group).map((entry) => entry.line)
              const invalid = Stream.fromIterable(entries.flatMap((line) => Either.isLeft(line) ? [line.left] : []))
              const valid = entries.flatMap((line) => Either.isRight(line) ? [line.right] : [])
              return valid.length === 0 ? invalid : Stream.concat(invalid, runChunk(`c${chunk}`, valid, 0))
            }, { concurrency, bufferSize: 16 })
          )
        }

        const lines = Stream.map(items, toLine)
        const mode = run.mode ?? "batch"
        if (mode === "sync") return syncStream(lines)
        if (mode === "batch") return batchStream(lines)
        const now = yield* Clock.currentTimeMillis
        if (run.deadline !== undefined && run.deadline - now < completionWindow) return syncStream(lines)
        const [head, rest] = yield* Stream.peel(lines, Sink.take(autoThreshold + 1))
        const all = Stream.concat(Stream.fromChunk(head), rest)
        return head.length <= autoThreshold ? syncStream(all) : batchStream(all)
      }))

    return Batch.of({ generateObjects })
  })

const chunkWorkflow = (taskName: string) =>
  Workflow.make({
    name: `keel/Batch/${taskName}`,
    payload: ChunkPayload,
    success: ChunkOutcome,
    idempotencyKey: (payload) => `${payload.runId}/${payload.chunkId}`
  })
type ChunkWorkflow = ReturnType<typeof chunkWorkflow>

const taskPattern = /^[A-Za-z0-9_-]{1,64}$/

const checkRun = (run: GenerateObjectsOptions<any, any, any>): BatchConfigError | undefined => {
  if (!taskPattern.test(run.task)) {
    return new BatchConfigError({ field: "task", reason: "must be 1 to 64 letters, digits, underscores or dashes" })
  }
  if (run.runId.length === 0 || run.runId.length > 200) {
    return new BatchConfigError({ field: "runId", reason: "must be 1 to 200 characters" })
  }
  const resubmits = run.maxResubmits ?? 2
  if (!Number.isInteger(resubmits) || resubmits < 0) {
    return new BatchConfigError({ field: "maxResubmits", reason: "must be a non-negative integer" })
  }
  return undefined
}

/** The answer's text the Schema decodes: the tool call's arguments, or the content. */
const rawOf = <A>(prepared: StructuredOutput.Prepared<A>, response: LlmResponse): string =>
  prepared.mode === "tool" ? response.toolCalls[0]!.arguments : response.text ?? ""

/** The lines of a batch that failed validation: those it names fail with its reason; the rest go again. */
const failedLines = (lines: ReadonlyArray<Line>, info: BatchInfo): ReadonlyArray<LineOutcome> => {
  const named = new Map<number, string>()
  for (const error of info.errors) {
    if (error.line !== undefined) named.set(error.line, `${error.code}: ${error.message}`)
  }
  const summary = info.errors.map((error) => `${error.code}: ${error.message}`).join("; ") || "no reason given"
  return lines.map((line, index): LineOutcome => {
    const reason = named.get(index + 1)
    if (reason !== undefined) {
      return { customId: line.customId, error: new InvalidRequest({ field: `batch line ${index + 1}`, reason }) }
    }
    return named.size === 0
      ? { customId: line.customId, error: new InvalidRequest({ field: "batch", reason: summary }) }
      : { customId: line.customId, retry: `batch ${info.id} failed validation on other lines: ${summary}` }
  })
}

/** Each line's outcome from a final batch's results, matched by `custom_id`. */
const collect = (
  task: Task,
  lines: ReadonlyArray<Line>,
  info: BatchInfo,
  { results, unreadable }: {
    readonly results: ReadonlyArray<BatchProvider.Result>
    readonly unreadable: ReadonlyArray<BatchProvider.Unreadable>
  }
): ReadonlyArray<LineOutcome> => {
  const first = new Map<string, BatchProvider.Result>()
  const extra: Array<LineOutcome> = []
  const expected = new Set(lines.map((line) => line.customId))
  for (const result of results) {
    if (!expected.has(result.customId) || first.has(result.customId)) {
      // Unknown or repeated: not an item's answer, but billed all the same.
      if (Either.isRight(result.result)) {
        extra.push({ customId: "", usage: result.result.right.usage, retry: "not an item of this chunk" })
      }
      continue
    }
    first.set(result.customId, result)
  }
  const missing = unreadable.length === 0
    ? `no result line in batch ${info.id} (${info.status})`
    : `no readable result line in batch ${info.id} (${info.status}); unreadable: ${
      unreadable.slice(0, 5).map((line) => `line ${line.line}: ${line.reason}`).join("; ")
    }`
  const outcomes = lines.map((line): LineOutcome => {
    const found = first.get(line.customId)
    if (found === undefined) return { customId: line.customId, retry: missing }
    if (Either.isLeft(found.result)) {
      const error = found.result.left
      return isRetryable(error)
        ? { customId: line.customId, retry: error.message }
        : { customId: line.customId, error }
    }
    const response = found.result.right
    const base = {
      customId: line.customId,
      usage: response.usage,
      ...(response.requestId === undefined ? {} : { requestId: response.requestId })
    }
    const read = task.read(response)
    return Either.isRight(read) ? { ...base, raw: read.right } : { ...base, error: read.left }
  })
  return extra.length === 0 ? outcomes : [...outcomes, ...extra]
}

const recordOf = (options: {
  readonly provider: string
  readonly runId: string
  readonly batchId: string
  readonly createdAt: number
  readonly now: number
  readonly request: LlmRequest.Resolved
  readonly outcome: LineOutcome
  readonly price: Pricing.ModelPrice
}): CallRecord.CallRecord => {
  const { outcome, request } = options
  const usage = outcome.usage ?? { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0, reasoningTokens: 0 }
  const record: { -readonly [K in keyof CallRecord.CallRecord]: CallRecord.CallRecord[K] } = {
    ts: new Date(options.createdAt).toISOString(),
    callId: `${options.runId}/${outcome.customId}/${options.batchId}`,
    scope: request.scope ?? Budget.root,
    route: { reason: "batch" },
    provider: options.provider,
    model: request.model,
    mode: "batch",
    batchId: options.batchId,
    promptHash: CallRecord.promptHash(request),
    attempts: 1,
    latencyMs: Math.max(0, options.now - options.createdAt),
    inputTokens: usage.inputTokens,
    cachedInputTokens: usage.cachedInputTokens,
    outputTokens: usage.outputTokens,
    reasoningTokens: usage.reasoningTokens,
    costUsd: Money.format(Pricing.costOf(options.price, usage, "batch")),
    outcome: outcome.error === undefined ? "ok" : "error"
  }
  if (request.task !== undefined) record.task = request.task
  if (request.tier !== undefined) record.tier = request.tier
  if (options.price.fallback) record.priceFallback = true
  if (outcome.error !== undefined) {
    record.errorTag = outcome.error._tag
    record.errorMessage = outcome.error.message
  }
  if (outcome.requestId !== undefined) record.requestId = outcome.requestId
  return record
}

/**
 * The service over the `WorkflowEngine` (see `Batch/Engine`) and `BatchProvider` in context, with
 * `Pricing`, and optionally `Tokenizer`, `CallLog`, `Budget` with its `BudgetStore`, and `Llm` (for
 * `mode: "sync"`/`"auto"` and `retry: "sync"`).
 */
export const layer = (
  options: Options = {}
): Layer.Layer<Batch, BatchConfigError, WorkflowEngine | BatchProvider.BatchProvider | Pricing.Pricing> =>
  Layer.scoped(Batch, make(options))

/** Runs `items` through the `Batch` in context; see `GenerateObjectsOptions`. */
export const generateObjects = <A, I, In>(
  items: Stream.Stream<Item>,
  options: GenerateObjectsOptions<A, I, In>
): Stream.Stream<ItemResult<A>, BatchConfigError, Batch> =>
  Stream.unwrap(Effect.map(Batch, (batch) => batch.generateObjects(items, options)))
