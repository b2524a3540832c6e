/**
 * `OpenAiBatch`, core's `BatchProvider` over OpenAI's Files and Batches: against the simulator over real HTTP on
 * 127.0.0.1 on both transports (the lines are the synchronous request builder's bodies, a batch is found again by
 * its metadata, results match synchronous answers), and against fakes for what a real provider may send: lines out
 * of order, cut or not JSON, duplicate custom ids, errors in `error` and in `response.body.error`, a cut download,
 * and listings over several pages.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { assert, describe, it } from "@effect/vitest"
import { BatchProvider } from "@keel/core/BatchProvider"
import type * as Port from "@keel/core/BatchProvider"
import { LanguageModel } from "@keel/core/LanguageModel"
import type * as LlmError from "@keel/core/LlmError"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as OpenAiBatch from "../src/OpenAiBatch.js"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as Simulator from "../src/Simulator.js"
import * as FakeHttp from "./utils/FakeHttp.js"
import { fakeKey } from "./utils/fakeKey.js"
import * as LocalServer from "./utils/LocalServer.js"

const apiKey = Redacted.make(fakeKey("batch0123456789"))

const request = (i: number, model = "gpt-4.1-mini"): LlmRequest.Resolved => ({
  model,
  messages: [{ role: "system", content: "You score job listings." }, { role: "user", content: `Listing ${i}` }],
  responseFormat: {
    _tag: "json_schema",
    name: "score",
    strict: true,
    schema: {
      type: "object",
      properties: { score: { type: "integer" }, reason: { type: "string" } },
      required: ["score", "reason"],
      additionalProperties: false
    }
  },
  maxOutputTokens: 200,
  seed: i
})

const transports = {
  "HttpClient (layer)": (baseUrl: string) =>
    OpenAiClient.layer({ apiKey, baseUrl }).pipe(Layer.provide(NodeHttpClient.layerUndici)),
  "undici (layerUndici)": (baseUrl: string) => OpenAiClient.layerUndici({ apiKey, baseUrl })
}

/** The provider, a sync model and the client, over the simulator in context. */
const overSimulator = (transport: (baseUrl: string) => Layer.Layer<OpenAiClient.OpenAiClient, unknown>) =>
  Layer.unwrapEffect(
    Effect.map(Simulator.Simulator, (sim) => {
      const client = transport(sim.url)
      return Layer.mergeAll(OpenAiBatch.layer(), OpenAiLanguageModel.layer()).pipe(
        Layer.provideMerge(client),
        Layer.orDie
      )
    })
  )

const collect = (stream: Stream.Stream<Uint8Array, LlmError.LlmError>) =>
  Effect.map(Stream.runCollect(Stream.decodeText(stream)), (chunks) => [...chunks].join(""))

describe("OpenAiBatch against the simulator", () => {
  for (const [name, transport] of Object.entries(transports)) {
    it.effect(`${name}: upload, create with metadata, find, follow, results as sync answers, delete`, () =>
      Effect.gen(function*() {
        const provider = yield* BatchProvider
        const client = yield* OpenAiClient.OpenAiClient
        const lines = Array.from({ length: 12 }, (_, i) => ({ customId: `listing-${i}`, request: request(i) }))
        const fileId = yield* provider.upload(lines)

        // the input file holds the synchronous request builder's bodies, one line per item
        const input = (yield* collect(client.fileContent(fileId))).trim().split("\n").map((l) => JSON.parse(l))
        assert.deepStrictEqual(
          input,
          lines.map((l) => ({
            custom_id: l.customId,
            method: "POST",
            url: "/v1/chat/completions",
            body: JSON.parse(JSON.stringify(OpenAiLanguageModel.toWire(l.request)))
          }))
        )

        const created = yield* provider.create(fileId, { run: "run-1", chunk: "7" })
        assert.strictEqual(created.status, "validating")
        assert.strictEqual(created.inputFileId, fileId)
        yield* provider.create(yield* provider.upload(lines.slice(0, 1)), { run: "run-1", chunk: "8" })
        const found = yield* provider.find({ run: "run-1", chunk: "7" })
        assert.deepStrictEqual(found.map((b) => b.id), [created.id])
        assert.deepStrictEqual((yield* provider.find({ run: "run-1" })).length, 2)
        assert.deepStrictEqual(yield* provider.find({ run: "run-2" }), [])

        yield* TestClock.adjust("12 seconds")
        const done = yield* provider.retrieve(created.id)
        assert.strictEqual(done.status, "completed")
        assert.deepStrictEqual(done.requestCounts, { total: 12, completed: 12, failed: 0 })
        assert.deepStrictEqual(done.metadata, { run: "run-1", chunk: "7" })
        assert.isString(done.outputFileId)

        const { results, unreadable } = yield* provider.results(done)
        assert.deepStrictEqual(unreadable, [])
        assert.deepStrictEqual(results.map((r) => r.customId).sort(), lines.map((l) => l.customId).sort())
        const lm = yield* LanguageModel
        for (const { customId, result } of results) {
          assert(Either.isRight(result), customId)
          const sync = yield* lm.complete(request(Number(customId.slice(8))))
          assert.strictEqual(result.right.text, sync.text)
          assert.deepStrictEqual(result.right.usage, sync.usage)
          assert.match(result.right.requestId ?? "", /^req_/)
        }

        yield* provider.deleteFile(fileId)
        const gone = yield* Effect.flip(provider.deleteFile(fileId))
        assert.strictEqual(gone._tag, "InvalidRequest")
        assert.include(gone.message, fileId)
      }).pipe(
        Effect.provide(overSimulator(transport)),
        Effect.provide(Simulator.layer({ seed: 11, batch: { validatingMs: 1_000, inProgressMs: 10_000 } }))
      ))
  }

  it.effect("a batch past the enqueued-token allowance comes back failed with token_limit_exceeded", () =>
    Effect.gen(function*() {
      const provider = yield* BatchProvider
      const lines = Array.from({ length: 5 }, (_, i) => ({ customId: `x${i}`, request: request(i) }))
      const batch = yield* provider.create(yield* provider.upload(lines), { chunk: "0" })
      yield* TestClock.adjust("1 second")
      const failed = yield* provider.retrieve(batch.id)
      assert.strictEqual(failed.status, "failed")
      assert.strictEqual(failed.errors[0]?.code, "token_limit_exceeded")
      assert.include(failed.errors[0]?.message, "gpt-4.1-mini")
      assert.deepStrictEqual(yield* provider.results(failed), { results: [], unreadable: [] })
    }).pipe(
      Effect.provide(overSimulator(transports["undici (layerUndici)"])),
      Effect.provide(Simulator.layer({ batch: { enqueuedTokens: 100 } }))
    ))

  it.effect("expired and cancelled batches: the lines done are kept, expired ones are retryable errors", () =>
    Effect.gen(function*() {
      const provider = yield* BatchProvider
      const lines = Array.from({ length: 10 }, (_, i) => ({ customId: `x${i}`, request: request(i) }))
      const expiring = yield* provider.create(yield* provider.upload(lines), { chunk: "0" })
      yield* TestClock.adjust("3 seconds")
      const cancelling = yield* provider.cancel((yield* provider.create(yield* provider.upload(lines), {})).id)
      assert.strictEqual(cancelling.status, "cancelling")
      yield* TestClock.adjust("3 seconds")

      const expired = yield* provider.retrieve(expiring.id)
      assert.strictEqual(expired.status, "expired")
      const { results } = yield* provider.results(expired)
      const ok = results.filter((r) => Either.isRight(r.result))
      const failed = results.flatMap((r) => Either.isLeft(r.result) ? [r.result.left] : [])
      assert.strictEqual(ok.length, 5)
      assert.strictEqual(failed.length, 5)
      for (const error of failed) {
        assert.strictEqual(error._tag, "ProviderUnavailable")
        assert.isTrue(error.retryable)
        assert.include(error.message, "batch_expired")
      }

      const cancelled = yield* provider.retrieve(cancelling.id)
      assert.strictEqual(cancelled.status, "cancelled")
      assert.strictEqual((yield* provider.results(cancelled)).results.length, 0)
    }).pipe(
      Effect.provide(overSimulator(transports["HttpClient (layer)"])),
      Effect.provide(Simulator.layer({ batch: { validatingMs: 1_000, inProgressMs: 10_000, windowMs: 6_000 } }))
    ))

  it.effect("upload refuses, before sending anything, an empty chunk, a duplicate custom_id and mixed models", () =>
    Effect.gen(function*() {
      const http = FakeHttp.make(() => FakeHttp.json(500, {}))
      const provider = yield* Effect.provide(
        BatchProvider,
        OpenAiBatch.layer().pipe(Layer.provide(OpenAiClient.layer({ apiKey }).pipe(Layer.provide(http.layer))))
      )
      const empty = yield* Effect.flip(provider.upload([]))
      assert.strictEqual(empty._tag, "InvalidRequest")
      const duplicate = yield* Effect.flip(provider.upload([
        { customId: "a", request: request(1) },
        { customId: "b", request: request(2) },
        { customId: "a", request: request(3) }
      ]))
      assert.include(duplicate.message, "custom_id \"a\" is also line 0's")
      assert.include(duplicate.message, "lines[2].customId")
      const mixed = yield* Effect.flip(provider.upload([
        { customId: "a", request: request(1) },
        { customId: "b", request: request(2, "gpt-4o") }
      ]))
      assert.include(mixed.message, "one model per batch")
      assert.strictEqual(http.requests.length, 0)
    }))
})

/** A batch whose output and error files a fake serves. */
const finished: Port.Batch = {
  id: "batch_1",
  status: "completed",
  metadata: {},
  requestCounts: { total: 9, completed: 3, failed: 6 },
  errors: [],
  createdAt: 0,
  inputFileId: "file-in",
  outputFileId: "file-out",
  errorFileId: "file-err"
}

const answerLine = (customId: string, content: string) =>
  JSON.stringify({
    id: `batch_req_${customId}`,
    custom_id: customId,
    response: {
      status_code: 200,
      request_id: `req_${customId}`,
      body: FakeHttp.completion({ id: `chatcmpl-${customId}` }, { content })
    },
    error: null
  })

const errorLine = (customId: string, status: number, error: Record<string, unknown>) =>
  JSON.stringify({
    id: `batch_req_${customId}`,
    custom_id: customId,
    response: { status_code: status, request_id: `req_${customId}`, body: { error } },
    error: null
  })

const withFiles = (files: Record<string, string>) => {
  const http = FakeHttp.make((r) => {
    const id = /\/files\/([^/]+)\/content$/.exec(new URL(r.url).pathname)?.[1]
    return id !== undefined && id in files
      ? new Response(files[id], { status: 200, headers: { "content-type": "application/octet-stream" } })
      : FakeHttp.json(404, { error: { message: "No such File object", type: "invalid_request_error" } })
  })
  return OpenAiBatch.layer().pipe(Layer.provide(OpenAiClient.layer({ apiKey }).pipe(Layer.provide(http.layer))))
}

describe("OpenAiBatch results", () => {
  it.effect("every line is matched by custom_id; bad lines are reported one by one and the rest kept", () =>
    Effect.gen(function*() {
      const provider = yield* BatchProvider
      const { results, unreadable } = yield* provider.results(finished)
      const byId = new Map(results.map((r) => [r.customId, r.result]))
      assert.deepStrictEqual(results.map((r) => r.customId), ["c", "a", "b", "d", "e", "f", "g", "h"])

      const a = byId.get("a")!
      assert(Either.isRight(a))
      assert.strictEqual(a.right.text, "answer a")
      assert.strictEqual(a.right.requestId, "req_a")
      assert.deepStrictEqual(a.right.usage, {
        inputTokens: 12,
        cachedInputTokens: 0,
        outputTokens: 3,
        reasoningTokens: 0
      })

      const left = (id: string) => {
        const result = byId.get(id)!
        assert(Either.isLeft(result), id)
        return result.left
      }
      // a 400 whose error hides in response.body.error (openai-openapi issue #302)
      const tooLong = left("d")
      assert(tooLong._tag === "InvalidRequest", tooLong._tag)
      assert.include(tooLong.message, "maximum context length")
      assert.strictEqual(tooLong.requestId, "req_d")
      // a 200 status with an error body is still an error
      const quota = left("e")
      assert.strictEqual(quota._tag, "QuotaExhausted")
      // a 429 line
      const limited = left("f")
      assert.strictEqual(limited._tag, "RateLimited")
      // the line's own error (non-HTTP)
      const expired = left("g")
      assert.strictEqual(expired._tag, "ProviderUnavailable")
      assert.include(expired.message, "batch_expired")
      assert.isTrue(expired.retryable)
      // a 200 whose body is not a chat completion: unreadable answer, which may have been billed
      const broken = left("h")
      assert.strictEqual(broken._tag, "ProtocolError")
      assert.include(broken.message, "choices")

      assert.deepStrictEqual(unreadable.map((u) => u.line), [3, 5, 6, 8])
      assert.include(unreadable[0]!.reason, "output file file-out, line 3: not JSON")
      assert.include(unreadable[1]!.reason, "no custom_id")
      assert.include(unreadable[2]!.reason, "custom_id \"a\" appears again (first at output file file-out, line 2)")
      assert.include(unreadable[3]!.reason, "error file file-err, line 8: not JSON")
      assert.notInclude(unreadable.map((u) => u.reason).join("\n"), Redacted.value(apiKey))
    }).pipe(Effect.provide(withFiles({
      "file-out": [
        answerLine("c", "answer c"),
        answerLine("a", "answer a"),
        "{\"id\": \"batch_req_x\", \"custom_id\": \"x\", \"respon",
        answerLine("b", "answer b"),
        JSON.stringify({ response: { status_code: 200, body: {} } }),
        answerLine("a", "answer a again"),
        ""
      ].join("\n"),
      "file-err": [
        errorLine("d", 400, {
          message: "This model's maximum context length is 128000 tokens.",
          type: "invalid_request_error",
          param: "messages",
          code: "context_length_exceeded"
        }),
        errorLine("e", 200, {
          message: "You exceeded your current quota",
          type: "insufficient_quota",
          code: "insufficient_quota"
        }),
        errorLine("f", 429, { message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" }),
        JSON.stringify({
          id: "batch_req_g",
          custom_id: "g",
          response: null,
          error: {
            code: "batch_expired",
            message: "This request could not be executed before the completion window expired."
          }
        }),
        JSON.stringify({ custom_id: "h", response: { status_code: 200, body: { id: "x", model: "m" } }, error: null }),
        "",
        "",
        `not json ${Redacted.value(apiKey)}`
      ].join("\n")
    }))))

  it.effect("a download cut mid-way is a Transport error after the answer; a missing file names it", () =>
    Effect.gen(function*() {
      const body = answerLine("a", "x").repeat(200)
      const url = yield* LocalServer.raw(LocalServer.cutMidBody(body))
      const cut = yield* Effect.flip(
        Effect.flatMap(BatchProvider, (p) => p.results({ ...finished, errorFileId: undefined })).pipe(
          Effect.provide(OpenAiBatch.layer().pipe(Layer.provide(OpenAiClient.layerUndici({ apiKey, baseUrl: url }))))
        )
      )
      assert.strictEqual(cut._tag, "Transport")
      assert(cut._tag === "Transport")
      assert.isTrue(cut.afterResponse)

      const missing = yield* Effect.flip(
        Effect.flatMap(BatchProvider, (p) => p.results({ ...finished, outputFileId: "file-gone" })).pipe(
          Effect.provide(withFiles({}))
        )
      )
      assert.strictEqual(missing._tag, "InvalidRequest")
      assert.include(missing.message, "No such File object")
    }).pipe(Effect.scoped))

  it.effect("find follows `after` over every page and keeps the batches with all the metadata entries", () =>
    Effect.gen(function*() {
      const wire = (id: string, metadata: Record<string, string> | null) => ({
        id,
        object: "batch",
        endpoint: "/v1/chat/completions",
        input_file_id: "file-in",
        completion_window: "24h",
        status: "in_progress",
        created_at: 1_800_000_000,
        metadata
      })
      const pages: Record<string, unknown> = {
        "": {
          object: "list",
          data: [wire("b5", { run: "r", chunk: "1" }), wire("b4", null)],
          has_more: true,
          last_id: "b4"
        },
        b4: {
          object: "list",
          data: [wire("b3", { run: "r", chunk: "2" }), wire("b2", { run: "r", chunk: "1", x: "y" })],
          has_more: true,
          last_id: "b2"
        },
        b2: { object: "list", data: [wire("b1", { run: "q", chunk: "1" })], has_more: false, last_id: "b1" }
      }
      const http = FakeHttp.make((r) => FakeHttp.json(200, pages[new URL(r.url).searchParams.get("after") ?? ""]))
      const provider = yield* Effect.provide(
        BatchProvider,
        OpenAiBatch.layer().pipe(Layer.provide(OpenAiClient.layer({ apiKey }).pipe(Layer.provide(http.layer))))
      )
      const found = yield* provider.find({ run: "r", chunk: "1" })
      assert.deepStrictEqual(found.map((b) => b.id), ["b5", "b2"])
      assert.deepStrictEqual(found[0]!.createdAt, 1_800_000_000_000)
      assert.deepStrictEqual(
        http.requests.map((r) => new URL(r.url).search),
        ["?limit=100", "?after=b4&limit=100", "?after=b2&limit=100"]
      )
      assert.deepStrictEqual(
        http.requests.map((r) => r.headers["authorization"]),
        Array(3).fill(`Bearer ${Redacted.value(apiKey)}`)
      )
    }))

  it.effect("a provider answering another shape is a ProtocolError naming the field", () =>
    Effect.gen(function*() {
      const http = FakeHttp.make(() => FakeHttp.json(200, { id: "batch_1", status: "paused" }))
      const provider = yield* Effect.provide(
        BatchProvider,
        OpenAiBatch.layer().pipe(Layer.provide(OpenAiClient.layer({ apiKey }).pipe(Layer.provide(http.layer))))
      )
      const error = yield* Effect.flip(provider.retrieve("batch_1"))
      assert.strictEqual(error._tag, "ProtocolError")
      assert.include(error.message, "GET /batches/batch_1: endpoint: is missing")
    }))
})
