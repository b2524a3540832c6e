/**
 * An in-memory `BatchProvider` for core's Batch tests, built through the port: files and batches in
 * maps, a lifecycle on Effect's `Clock` (in progress until `durationMs` after creation, then
 * completed; expired at `expireAfterMs` with the first `partial` lines answered), an enqueued-token
 * allowance (a batch past it fails with `token_limit_exceeded`), output in reverse order, and faults
 * on request: unreadable, unknown and duplicate result lines, validation failures, per-line errors,
 * and a create that fails after creating.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as BatchProvider from "../../src/BatchProvider.js"
import * as LlmError from "../../src/LlmError.js"
import type { LlmResponse } from "../../src/LlmResponse.js"
import * as Tokenizer from "../../src/Tokenizer.js"

export interface FakeOptions {
  /** The answer to a line; default: a tool call with `{ "id": <customId>, "score": 7 }`, 100 input and 20 output tokens. */
  readonly respond?: (line: BatchProvider.Line, index: number) => Either.Either<LlmResponse, LlmError.LlmError>
  readonly durationMs?: number
  /** The first batch (or every batch, with `expireEvery`) expires at this age with `partial` lines answered. */
  readonly expireAfterMs?: number
  readonly partial?: number
  readonly expireEvery?: boolean
  /** Enqueued input tokens allowed (counted with `Tokenizer.bytesUpperBound`). */
  readonly allowance?: number
  /** Results of the first batch: these output line numbers (1-based) are unreadable, and an unknown and a duplicate line are added. */
  readonly garbleFirst?: {
    readonly unreadable?: ReadonlyArray<number>
    readonly unknown?: boolean
    readonly duplicate?: boolean
  }
  /** The first batch fails validation on these input lines (1-based); `[]` fails it with no line named. */
  readonly failValidation?: ReadonlyArray<number>
  /** The first create makes the batch, then fails (the answer lost on the way back). */
  readonly loseFirstCreate?: boolean
}

export interface Stored {
  readonly id: string
  readonly fileId: string
  readonly metadata: Readonly<Record<string, string>>
  readonly createdAt: number
  readonly tokens: number
  /** Lines in its input file. */
  readonly lines: number
  readonly expireAt: number | undefined
  readonly partial: number
  readonly failed?: ReadonlyArray<{ readonly code: string; readonly message: string; readonly line?: number }>
  cancelled: boolean
}

export interface Fake {
  readonly layer: Layer.Layer<BatchProvider.BatchProvider>
  readonly service: BatchProvider.BatchProvider.Service
  readonly batches: Array<Stored>
  readonly files: Map<string, ReadonlyArray<BatchProvider.Line>>
  readonly creates: { count: number }
  /** Input files deleted once their batch was settled. */
  readonly deleted: ReadonlyArray<string>
}

export const answer = (line: BatchProvider.Line): LlmResponse => ({
  id: `chatcmpl-${line.customId}`,
  model: line.request.model,
  toolCalls: [{ id: "call_1", name: "Score", arguments: JSON.stringify({ id: line.customId, score: 7 }) }],
  finishReason: "tool_calls",
  usage: { inputTokens: 100, cachedInputTokens: 0, outputTokens: 20, reasoningTokens: 0 },
  requestId: `req_${line.customId}`
})

export const make = (options: FakeOptions = {}): Fake => {
  const respond = options.respond ?? ((line) => Either.right(answer(line)))
  const duration = options.durationMs ?? 60_000
  const files = new Map<string, ReadonlyArray<BatchProvider.Line>>()
  const fileTokens = new Map<string, number>()
  const batches: Array<Stored> = []
  const creates = { count: 0 }
  const deleted: Array<string> = []
  let lostCreate = false

  const statusOf = (batch: Stored, now: number): BatchProvider.Status => {
    if (batch.failed !== undefined) return "failed"
    if (batch.cancelled) return "cancelled"
    if (batch.expireAt !== undefined && now >= batch.expireAt) return "expired"
    if (now >= batch.createdAt + duration) return "completed"
    return now >= batch.createdAt + 1000 ? "in_progress" : "validating"
  }

  const view = (batch: Stored, now: number): BatchProvider.Batch => {
    const status = statusOf(batch, now)
    const lines = batch.lines
    const done = status === "completed" ? lines : status === "expired" || status === "cancelled" ? batch.partial : 0
    return {
      id: batch.id,
      status,
      metadata: batch.metadata,
      requestCounts: { total: lines, completed: done, failed: 0 },
      errors: batch.failed ?? [],
      createdAt: batch.createdAt,
      inputFileId: batch.fileId,
      outputFileId: done > 0 ? `out-${batch.id}` : undefined
    }
  }

  const find = (id: string) => {
    const batch = batches.find((b) => b.id === id)
    return batch === undefined
      ? Effect.fail(new LlmError.InvalidRequest({ reason: `no batch ${id}`, status: 404 }))
      : Effect.succeed(batch)
  }

  const service = BatchProvider.BatchProvider.of({
    provider: "fake",
    upload: (lines) =>
      Effect.gen(function*() {
        const id = `file-${files.size + 1}`
        files.set(id, lines)
        let tokens = 0
        for (const line of lines) tokens += yield* Tokenizer.bytesUpperBound.input(line.request)
        fileTokens.set(id, tokens)
        return id
      }),
    create: (fileId, metadata) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        creates.count++
        const tokens = fileTokens.get(fileId)!
        const enqueued = batches
          .filter((b) => b.failed === undefined && !BatchProvider.isFinal(statusOf(b, now)))
          .reduce((sum, b) => sum + b.tokens, 0)
        const first = batches.length === 0
        const failed = options.allowance !== undefined && enqueued + tokens > options.allowance
          ? [{ code: "token_limit_exceeded", message: `Enqueued token limit reached: ${enqueued + tokens}` }]
          : first && options.failValidation !== undefined
          ? (options.failValidation.length === 0
            ? [{ code: "invalid_request", message: "the file is invalid" }]
            : options.failValidation.map((line) => ({ code: "invalid_url", message: "bad url", line })))
          : undefined
        const expires = options.expireAfterMs !== undefined && (first || options.expireEvery === true)
        const batch: Stored = {
          id: `batch-${batches.length + 1}`,
          fileId,
          metadata,
          createdAt: now,
          tokens,
          lines: files.get(fileId)!.length,
          expireAt: expires ? now + options.expireAfterMs! : undefined,
          partial: options.partial ?? 0,
          cancelled: false,
          ...(failed === undefined ? {} : { failed })
        }
        batches.push(batch)
        if (options.loseFirstCreate === true && !lostCreate) {
          lostCreate = true
          return yield* new LlmError.ProviderUnavailable({ status: 502, detail: "lost on the way back" })
        }
        return view(batch, now)
      }),
    find: (metadata) =>
      Effect.map(Clock.currentTimeMillis, (now) =>
        batches
          .filter((b) => Object.entries(metadata).every(([key, value]) => b.metadata[key] === value))
          .reverse()
          .map((b) => view(b, now))),
    retrieve: (id) =>
      Effect.flatMap(find(id), (batch) => Effect.map(Clock.currentTimeMillis, (now) => view(batch, now))),
    cancel: (id) =>
      Effect.flatMap(find(id), (batch) => {
        batch.cancelled = true
        return Effect.map(Clock.currentTimeMillis, (now) => view(batch, now))
      }),
    results: (batch) =>
      Effect.sync(() => {
        const lines = files.get(batch.inputFileId) ?? []
        const count = batch.status === "completed" ? lines.length : batch.requestCounts.completed
        const results: Array<BatchProvider.Result> = lines.slice(0, count).map((line, index) => ({
          customId: line.customId,
          result: respond(line, index)
        }))
        const unreadable: Array<BatchProvider.Unreadable> = []
        const garble = batches[0]?.id === batch.id ? options.garbleFirst : undefined
        if (garble !== undefined) {
          for (const number of garble.unreadable ?? []) {
            results.splice(number - 1 - unreadable.length, 1)
            unreadable.push({ line: number, reason: "not JSON: Unexpected end of JSON input" })
          }
          if (garble.unknown === true) {
            results.push({ customId: "nobody", result: Either.right(answer({ ...lines[0]!, customId: "nobody" })) })
          }
          if (garble.duplicate === true) results.push(results[0]!)
        }
        return { results: results.reverse(), unreadable }
      }),
    deleteFile: (fileId) =>
      Effect.sync(() => {
        deleted.push(fileId)
        files.delete(fileId)
      })
  })
  return { layer: Layer.succeed(BatchProvider.BatchProvider, service), service, batches, files, creates, deleted }
}
