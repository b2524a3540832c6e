import { assert, describe, it } from "@effect/vitest"
import { LanguageModel } from "@keel/core/LanguageModel"
import * as Llm from "@keel/core/Llm"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as FakeHttp from "./utils/FakeHttp.js"
import { fakeKey } from "./utils/fakeKey.js"

const apiKey = Redacted.make(fakeKey("0123456789abcdefghijklmnopqrstuv"))

const setup = (
  handler: (request: FakeHttp.Recorded, index: number) => FakeHttp.Answer,
  options: OpenAiLanguageModel.Options = {}
) => {
  const http = FakeHttp.make(handler)
  const layer = OpenAiLanguageModel.layer(options).pipe(
    Layer.provide(OpenAiClient.layer({ apiKey, baseUrl: "http://127.0.0.1:9/v1" })),
    Layer.provide(http.layer)
  )
  return { layer, requests: http.requests }
}

const complete = (request: LlmRequest.Resolved) => Effect.flatMap(LanguageModel, (model) => model.complete(request))

const weather = {
  type: "object",
  properties: { city: { type: "string" }, unit: { type: ["string", "null"], enum: ["c", "f", null] } },
  required: ["city", "unit"],
  additionalProperties: false
}

describe("OpenAiLanguageModel: keel request → wire", () => {
  it.effect("sends messages of every role, strict tools, tool choice, format, limits, sampling and metadata", () =>
    Effect.gen(function*() {
      const { layer, requests } = setup(() => FakeHttp.json(200, FakeHttp.completion()))
      yield* complete({
        model: "gpt-4.1-mini",
        messages: [
          { role: "system", content: "be brief" },
          { role: "developer", content: "use tools" },
          { role: "user", content: "weather in Oslo?", name: "ana" },
          {
            role: "assistant",
            toolCalls: [{ id: "call_1", name: "get_weather", arguments: "{\"city\":\"Oslo\",\"unit\":null}" }]
          },
          { role: "tool", toolCallId: "call_1", content: "{\"temp\":3}" },
          { role: "assistant", content: "3 degrees" },
          { role: "assistant", refusal: "no" }
        ],
        tools: [
          { name: "get_weather", description: "Weather by city", parameters: weather, strict: true },
          { name: "loose", parameters: { type: "object" }, strict: false }
        ],
        toolChoice: { tool: "get_weather" },
        responseFormat: {
          _tag: "json_schema",
          name: "answer",
          description: "The answer",
          schema: weather,
          strict: true
        },
        maxOutputTokens: 200,
        temperature: 0.2,
        seed: 7,
        metadata: { job: "listing-42" },
        task: "score",
        tier: "simple",
        scope: "tenant:acme"
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(requests[0]!.body, {
        model: "gpt-4.1-mini",
        messages: [
          { role: "system", content: "be brief" },
          { role: "developer", content: "use tools" },
          { role: "user", content: "weather in Oslo?", name: "ana" },
          {
            role: "assistant",
            tool_calls: [{
              id: "call_1",
              type: "function",
              function: { name: "get_weather", arguments: "{\"city\":\"Oslo\",\"unit\":null}" }
            }]
          },
          { role: "tool", tool_call_id: "call_1", content: "{\"temp\":3}" },
          { role: "assistant", content: "3 degrees" },
          { role: "assistant", refusal: "no" }
        ],
        tools: [
          {
            type: "function",
            function: { name: "get_weather", description: "Weather by city", parameters: weather, strict: true }
          },
          { type: "function", function: { name: "loose", parameters: { type: "object" }, strict: false } }
        ],
        tool_choice: { type: "function", function: { name: "get_weather" } },
        response_format: {
          type: "json_schema",
          json_schema: { name: "answer", description: "The answer", schema: weather, strict: true }
        },
        max_completion_tokens: 200,
        temperature: 0.2,
        seed: 7,
        metadata: { job: "listing-42" }
      })
    }))

  it("maps every tool choice and response format", () => {
    const base: LlmRequest.Resolved = { model: "m", messages: [{ role: "user", content: "x" }] }
    for (const choice of ["auto", "none", "required"] as const) {
      assert.strictEqual(OpenAiLanguageModel.toWire({ ...base, toolChoice: choice }).tool_choice, choice)
    }
    assert.deepStrictEqual(OpenAiLanguageModel.toWire({ ...base, responseFormat: { _tag: "text" } }).response_format, {
      type: "text"
    })
    assert.deepStrictEqual(
      OpenAiLanguageModel.toWire({ ...base, responseFormat: { _tag: "json_object" } }).response_format,
      { type: "json_object" }
    )
    assert.deepStrictEqual(OpenAiLanguageModel.toWire(base), { model: "m", messages: [{ role: "user", content: "x" }] })
  })

  it.effect("sends the wire name of a renamed model, and the request's own name otherwise", () =>
    Effect.gen(function*() {
      const { layer, requests } = setup(() => FakeHttp.json(200, FakeHttp.completion()), {
        modelNames: { "gpt-4.1-mini": "openai/gpt-4.1-mini" }
      })
      yield* complete({ model: "gpt-4.1-mini", messages: [{ role: "user", content: "x" }] }).pipe(Effect.provide(layer))
      yield* complete({ model: "gpt-4.1", messages: [{ role: "user", content: "x" }] }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(requests.map((r) => r.body.model), ["openai/gpt-4.1-mini", "gpt-4.1"])
    }))
})

describe("OpenAiLanguageModel: wire → keel response", () => {
  const answer = (completion: unknown, headers: Record<string, string> = {}) =>
    complete({ model: "gpt-4.1-mini", messages: [{ role: "user", content: "x" }] }).pipe(
      Effect.provide(setup(() => FakeHttp.json(200, completion, headers)).layer)
    )

  it.effect("reads tool calls, usage with cached and reasoning tokens, request id and rate-limit snapshot", () =>
    Effect.gen(function*() {
      const response = yield* answer(
        FakeHttp.completion({
          choices: [{
            index: 0,
            finish_reason: "tool_calls",
            message: {
              role: "assistant",
              content: null,
              refusal: null,
              tool_calls: [{ id: "call_9", type: "function", function: { name: "get_weather", arguments: "{}" } }]
            }
          }],
          usage: {
            prompt_tokens: 1200,
            completion_tokens: 80,
            total_tokens: 1280,
            prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
            completion_tokens_details: { reasoning_tokens: 64, accepted_prediction_tokens: 0 }
          }
        }),
        {
          "x-request-id": "req_123",
          "x-ratelimit-limit-requests": "5000",
          "x-ratelimit-remaining-requests": "4999",
          "x-ratelimit-reset-requests": "12ms",
          "x-ratelimit-limit-tokens": "2000000",
          "x-ratelimit-remaining-tokens": "1998720",
          "x-ratelimit-reset-tokens": "1m2.5s"
        }
      )
      assert.deepStrictEqual(response, {
        id: "chatcmpl-1",
        model: "gpt-4.1-mini-2025-04-14",
        toolCalls: [{ id: "call_9", name: "get_weather", arguments: "{}" }],
        finishReason: "tool_calls",
        usage: { inputTokens: 1200, cachedInputTokens: 1024, outputTokens: 80, reasoningTokens: 64 },
        requestId: "req_123",
        rateLimit: {
          limitRequests: 5000,
          remainingRequests: 4999,
          resetRequestsMs: 12,
          limitTokens: 2_000_000,
          remainingTokens: 1_998_720,
          resetTokensMs: 62_500
        }
      })
    }))

  it.effect("reads text, and absent detail fields as zero", () =>
    Effect.gen(function*() {
      const response = yield* answer(FakeHttp.completion())
      assert.strictEqual(response.text, "hello")
      assert.strictEqual(response.finishReason, "stop")
      assert.deepStrictEqual(response.toolCalls, [])
      assert.deepStrictEqual(response.usage, {
        inputTokens: 12,
        cachedInputTokens: 0,
        outputTokens: 3,
        reasoningTokens: 0
      })
      assert.isUndefined(response.rateLimit)
      assert.isUndefined(response.requestId)
    }))

  it.effect("an answer without usage (absent or null, as compatible servers send) is zero usage marked usageMissing", () =>
    Effect.gen(function*() {
      for (const usage of [undefined, null]) {
        const response = yield* answer(FakeHttp.completion({ usage }))
        assert.strictEqual(response.text, "hello")
        assert.deepStrictEqual(response.usage, {
          inputTokens: 0,
          cachedInputTokens: 0,
          outputTokens: 0,
          reasoningTokens: 0
        })
        assert.isTrue(response.usageMissing)
      }
      const reported = yield* answer(FakeHttp.completion())
      assert.isUndefined(reported.usageMissing)
    }))

  it.effect("maps finish reasons, and a refusal", () =>
    Effect.gen(function*() {
      const finish = (finish_reason: string | null, message: Record<string, unknown> = {}) =>
        Effect.map(
          answer(FakeHttp.completion({
            choices: [{ index: 0, finish_reason, message: { role: "assistant", content: "x", ...message } }]
          })),
          (r) => r.finishReason
        )
      assert.strictEqual(yield* finish("length"), "length")
      assert.strictEqual(yield* finish("content_filter"), "content_filter")
      assert.strictEqual(yield* finish("function_call"), "tool_calls")
      assert.strictEqual(yield* finish("something_new"), "other")
      assert.strictEqual(yield* finish(null), "other")
      assert.strictEqual(yield* finish("stop", { content: null, refusal: "I can't help with that." }), "refusal")
      const refused = yield* answer(FakeHttp.completion({}, { content: null, refusal: "I can't help with that." }))
      assert.strictEqual(refused.refusal, "I can't help with that.")
      assert.isUndefined(refused.text)
    }))

  it.effect("through Llm.generate: a refusal becomes Refused and a 400 an InvalidRequest naming the field", () =>
    Effect.gen(function*() {
      const { layer } = setup((_, i) =>
        i === 0
          ? FakeHttp.json(200, FakeHttp.completion({}, { content: null, refusal: "no" }))
          : FakeHttp.json(400, {
            error: { message: "Invalid schema", type: "invalid_request_error", param: "response_format", code: null }
          })
      )
      const generate = Llm.generate({ model: "gpt-4.1-mini", messages: [{ role: "user", content: "x" }] }).pipe(
        Effect.flip,
        Effect.provide(Llm.layer().pipe(Layer.provide(layer)))
      )
      const refused = yield* generate
      assert.strictEqual(refused._tag, "Refused")
      const invalid = yield* generate
      assert(invalid._tag === "InvalidRequest")
      assert.strictEqual(invalid.field, "response_format")
      assert.strictEqual(invalid.status, 400)
    }))
})

describe("OpenAiLanguageModel construction (bad input)", () => {
  const client = OpenAiClient.layer({ apiKey }).pipe(
    Layer.provide(FakeHttp.make(() => FakeHttp.json(200, FakeHttp.completion())).layer)
  )
  const failure = <E>(layer: Layer.Layer<LanguageModel, E>) =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(layer)))
      assert(Exit.isFailure(exit))
      return Cause.pretty(exit.cause)
    })

  it.effect("a model name with spaces fails at construction, naming it", () =>
    Effect.gen(function*() {
      const message = yield* failure(
        OpenAiLanguageModel.layer({ modelNames: { "gpt-4.1-mini": "gpt 4.1 mini" } }).pipe(Layer.provide(client))
      )
      assert.include(message, "modelNames")
      assert.include(message, "\"gpt 4.1 mini\" is not a valid model name")
      const fromConfig = yield* failure(
        OpenAiLanguageModel.layerConfig({ modelNames: Config.succeed({ "my model": "gpt-4.1" }) }).pipe(
          Layer.provide(client),
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map())))
        )
      )
      assert.include(fromConfig, "\"my model\" is not a valid model name")
    }))
})
