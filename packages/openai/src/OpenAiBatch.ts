/**
 * Core's `BatchProvider` port over OpenAI's Files and Batches (and any server that speaks them, such as keel's
 * simulator). Each line's body is built by `OpenAiLanguageModel.toWire`, the synchronous request builder, so a
 * batch asks exactly what a synchronous call would; results are read line by line as the files stream in
 * (see `internal/batchLines`), matched by `custom_id`. It only translates: chunking, budgets, durability and
 * decoding live in core.
 */
import { BatchProvider } from "@keel/core/BatchProvider"
import type * as Port from "@keel/core/BatchProvider"
import * as LlmError from "@keel/core/LlmError"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { Collector } from "./internal/batchLines.js"
import * as Errors from "./internal/errors.js"
import * as OpenAiClient from "./OpenAiClient.js"
import { toWire } from "./OpenAiLanguageModel.js"

export interface Options {
  /** The name in telemetry. Default "openai"; set it for a compatible server. */
  readonly provider?: string | undefined
  /** Names to send on the wire for keel's model names, as in `OpenAiLanguageModel.Options.modelNames`. */
  readonly modelNames?: Readonly<Record<string, string>> | undefined
}

/** The endpoint every line goes to. */
export const endpoint = "/v1/chat/completions"

/** OpenAI's limits per input file [OpenAI API reference, CreateBatchRequest.input_file_id]. */
export const maxLines = 50_000
export const maxFileBytes = 200 * 1024 * 1024

const modelName = /^\S+$/

const validate = (options: Options): Effect.Effect<Options, ConfigError.ConfigError> => {
  for (const [from, to] of Object.entries(options.modelNames ?? {})) {
    for (const name of [from, to]) {
      if (!modelName.test(name)) {
        return Effect.fail(ConfigError.InvalidData(
          ["modelNames", from],
          `${JSON.stringify(name)} is not a valid model name: a model name is non-empty and has no spaces`
        ))
      }
    }
  }
  if (options.provider !== undefined && options.provider.trim() === "") {
    return Effect.fail(ConfigError.InvalidData(["provider"], "must not be empty"))
  }
  return Effect.succeed(options)
}

/** The port's view of a wire batch. */
export const fromWire = (batch: OpenAiClient.Batch): Port.Batch => ({
  id: batch.id,
  status: batch.status,
  metadata: batch.metadata ?? {},
  requestCounts: batch.request_counts ?? { total: 0, completed: 0, failed: 0 },
  errors: (batch.errors?.data ?? []).map((e) => ({
    code: e.code ?? "unknown",
    message: e.message ?? "",
    ...(e.line === undefined ? undefined : { line: e.line })
  })),
  createdAt: batch.created_at * 1000,
  inputFileId: batch.input_file_id,
  outputFileId: batch.output_file_id,
  errorFileId: batch.error_file_id
})

const invalid = (field: string, reason: string, model?: string) => new LlmError.InvalidRequest({ model, field, reason })

/** The port over the `OpenAiClient` in context. */
export const make = (
  options: Options = {}
): Effect.Effect<BatchProvider.Service, ConfigError.ConfigError, OpenAiClient.OpenAiClient> =>
  Effect.gen(function*() {
    const { modelNames = {}, provider = "openai" } = yield* validate(options)
    const client = yield* OpenAiClient.OpenAiClient

    /** The JSONL input file for `lines`, checked as OpenAI's validation would check it. */
    const inputFile = (lines: ReadonlyArray<Port.Line>): Effect.Effect<string, LlmError.LlmError> => {
      if (lines.length === 0) {
        return Effect.fail(invalid("lines", "a batch needs at least one line; nothing was uploaded"))
      }
      if (lines.length > maxLines) {
        return Effect.fail(
          invalid("lines", `${lines.length} lines, more than the ${maxLines} OpenAI takes per batch: split the chunk`)
        )
      }
      const model = lines[0]!.request.model
      const seen = new Map<string, number>()
      const out = new Array<string>(lines.length)
      for (let i = 0; i < lines.length; i++) {
        const { customId, request } = lines[i]!
        const first = seen.get(customId)
        if (first !== undefined) {
          return Effect.fail(invalid(
            `lines[${i}].customId`,
            `custom_id ${
              JSON.stringify(customId)
            } is also line ${first}'s: OpenAI fails a batch with a duplicate custom_id`,
            request.model
          ))
        }
        seen.set(customId, i)
        if (request.model !== model) {
          return Effect.fail(invalid(
            `lines[${i}].request.model`,
            `model ${request.model} differs from line 0's ${model}: OpenAI runs one model per batch`,
            request.model
          ))
        }
        try {
          out[i] = JSON.stringify({
            custom_id: customId,
            method: "POST",
            url: endpoint,
            body: toWire(request, modelNames[request.model] ?? request.model)
          })
        } catch (cause) {
          return Effect.fail(Errors.invalidBody({ model: request.model }, cause))
        }
      }
      const text = out.join("\n") + "\n"
      const bytes = Buffer.byteLength(text)
      if (bytes > maxFileBytes) {
        return Effect.fail(invalid(
          "lines",
          `the input file is ${bytes} bytes, more than the ${maxFileBytes} OpenAI takes per batch: split the chunk`,
          model
        ))
      }
      return Effect.succeed(text)
    }

    const upload = (lines: ReadonlyArray<Port.Line>) =>
      Effect.flatMap(inputFile(lines), (content) =>
        Effect.map(
          client.uploadFile({ content, filename: "keel-batch.jsonl", purpose: "batch" }),
          (file) => file.id
        ))

    const create = (fileId: string, metadata: Readonly<Record<string, string>>) =>
      Effect.map(
        client.createBatch({ input_file_id: fileId, endpoint, completion_window: "24h", metadata }),
        fromWire
      )

    const find = (metadata: Readonly<Record<string, string>>) =>
      Effect.gen(function*() {
        const wanted = Object.entries(metadata)
        const found: Array<Port.Batch> = []
        let after: string | undefined
        while (true) {
          const page = yield* client.listBatches({ after, limit: 100 })
          for (const batch of page.data) {
            const own = batch.metadata ?? {}
            if (wanted.every(([key, value]) => own[key] === value)) found.push(fromWire(batch))
          }
          const last = page.data[page.data.length - 1]?.id ?? page.last_id
          if (!page.has_more || last === undefined || last === after) return found
          after = last
        }
      })

    const results = (batch: Port.Batch) =>
      Effect.gen(function*() {
        const collector = new Collector(yield* Clock.currentTimeMillis)
        const files = [["output file", batch.outputFileId], ["error file", batch.errorFileId]] as const
        for (const [kind, fileId] of files) {
          if (fileId === undefined) continue
          let line = 0
          yield* client.fileContent(fileId).pipe(
            Stream.decodeText(),
            Stream.splitLines,
            Stream.runForEach((text) => Effect.sync(() => collector.add(text, `${kind} ${fileId}`, ++line)))
          )
        }
        return { results: collector.results, unreadable: collector.unreadable }
      })

    return BatchProvider.of({
      provider,
      upload,
      create,
      find,
      retrieve: (batchId) => Effect.map(client.retrieveBatch(batchId), fromWire),
      cancel: (batchId) => Effect.map(client.cancelBatch(batchId), fromWire),
      results,
      deleteFile: (fileId) => Effect.asVoid(client.deleteFile(fileId))
    })
  })

/** Core's `BatchProvider` over the `OpenAiClient` you provide. */
export const layer = (
  options: Options = {}
): Layer.Layer<BatchProvider, ConfigError.ConfigError, OpenAiClient.OpenAiClient> =>
  Layer.effect(BatchProvider, make(options))

/** `layer` from configuration; a model name with spaces fails with a `ConfigError` naming it. */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<BatchProvider, ConfigError.ConfigError, OpenAiClient.OpenAiClient> =>
  Layer.effect(BatchProvider, Effect.flatMap(Config.unwrap(config), make))
