import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as FakeHttp from "./utils/FakeHttp.js"
import { fakeKey } from "./utils/fakeKey.js"

const apiKey = Redacted.make(fakeKey("0123456789abcdefghijklmnopqrstuv"))
const body: OpenAiClient.ChatCompletionRequest = { model: "gpt-4.1-mini", messages: [{ role: "user", content: "hi" }] }

const send = (
  handler: (request: FakeHttp.Recorded, index: number) => FakeHttp.Answer,
  options: Partial<OpenAiClient.Options> = {}
) => {
  const http = FakeHttp.make(handler)
  return Effect.map(
    Effect.either(
      OpenAiClient.createChatCompletion(body).pipe(
        Effect.provide(OpenAiClient.layer({ apiKey, ...options }).pipe(Layer.provide(http.layer)))
      )
    ),
    (result) => ({ result, requests: http.requests })
  )
}

/** The message of a layer's construction failure. */
const constructionError = <E>(layer: Layer.Layer<OpenAiClient.OpenAiClient, E>, map: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(
      Layer.build(layer).pipe(
        Effect.scoped,
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(map))))
      )
    )
    assert(Exit.isFailure(exit))
    return Cause.pretty(exit.cause)
  })

describe("OpenAiClient", () => {
  it.effect("posts the body to {baseUrl}/chat/completions with the auth, organization and project headers", () =>
    Effect.gen(function*() {
      const { requests, result } = yield* send(() => FakeHttp.json(200, FakeHttp.completion()), {
        baseUrl: "http://127.0.0.1:9/v1/",
        organization: "org-1",
        project: "proj_1"
      })
      assert(result._tag === "Right")
      assert.strictEqual(requests.length, 1)
      const [request] = requests
      assert.strictEqual(request!.method, "POST")
      assert.strictEqual(request!.url, "http://127.0.0.1:9/v1/chat/completions")
      assert.strictEqual(request!.headers.authorization, `Bearer ${Redacted.value(apiKey)}`)
      assert.strictEqual(request!.headers["openai-organization"], "org-1")
      assert.strictEqual(request!.headers["openai-project"], "proj_1")
      assert.strictEqual(request!.headers["content-type"], "application/json")
      assert.deepStrictEqual(request!.body, body)
    }))

  it.effect("defaults to api.openai.com/v1 and sends no organization or project header unless set", () =>
    Effect.gen(function*() {
      const { requests } = yield* send(() => FakeHttp.json(200, FakeHttp.completion()))
      assert.strictEqual(requests[0]!.url, "https://api.openai.com/v1/chat/completions")
      assert.notProperty(requests[0]!.headers, "openai-organization")
      assert.notProperty(requests[0]!.headers, "openai-project")
    }))

  it.effect("returns the checked body and the response headers", () =>
    Effect.gen(function*() {
      const { result } = yield* send(() =>
        FakeHttp.json(200, FakeHttp.completion(), { "x-request-id": "req_abc", "x-ratelimit-remaining-requests": "9" })
      )
      assert(result._tag === "Right")
      assert.strictEqual(result.right.body.id, "chatcmpl-1")
      assert.strictEqual(result.right.body.choices[0]!.message.content, "hello")
      assert.strictEqual(result.right.headers["x-request-id"], "req_abc")
      assert.strictEqual(result.right.headers["x-ratelimit-remaining-requests"], "9")
    }))

  it.effect("maps an error answer through the edge mapping, with model and request id", () =>
    Effect.gen(function*() {
      const { result } = yield* send(() =>
        FakeHttp.json(
          429,
          { error: { message: "Rate limit reached", type: "requests", param: null, code: "rate_limit_exceeded" } },
          { "retry-after-ms": "250", "x-request-id": "req_429" }
        )
      )
      assert(result._tag === "Left" && result.left._tag === "RateLimited")
      assert.strictEqual(result.left.model, "gpt-4.1-mini")
      assert.strictEqual(result.left.requestId, "req_429")
      assert.include(result.left.message, "250")
    }))

  it.effect("a 200 whose body is not JSON, or not the documented shape, is a retryable ProtocolError", () =>
    Effect.gen(function*() {
      const bodies: ReadonlyArray<readonly [Response, string]> = [
        [new Response("{\"id\": \"chatcmpl-1\", \"choi", { status: 200 }), "not JSON"],
        [FakeHttp.json(200, FakeHttp.completion({ choices: [] })), "choices must be at least one choice"],
        [FakeHttp.json(200, FakeHttp.completion({ usage: "15 tokens" })), "usage must be an object"],
        [
          FakeHttp.json(200, FakeHttp.completion({}, { tool_calls: [{ id: "c", type: "function", function: {} }] })),
          "choices.0.message.tool_calls.0.function.name must be a string"
        ],
        [
          FakeHttp.json(200, FakeHttp.completion({ usage: { prompt_tokens: -1, completion_tokens: 0 } })),
          "usage.prompt_tokens must be a non-negative integer"
        ]
      ]
      for (const [response, reason] of bodies) {
        const { result } = yield* send(() => response)
        assert(result._tag === "Left" && result.left._tag === "ProtocolError", reason)
        assert.include(result.left.reason, reason)
        assert.isTrue(result.left.retryable)
      }
    }))

  it.effect("a connection failure is a retryable Transport error naming the cause", () =>
    Effect.gen(function*() {
      const { result } = yield* send(() => ({
        transport: Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" })
      }))
      assert(result._tag === "Left" && result.left._tag === "Transport")
      assert.strictEqual(result.left.reason, "UND_ERR_SOCKET: other side closed")
      assert.isTrue(result.left.retryable)
    }))

  it.effect("a body that cannot be serialised is an InvalidRequest, not a defect", () =>
    Effect.gen(function*() {
      const http = FakeHttp.make(() => FakeHttp.json(200, FakeHttp.completion()))
      const schema: Record<string, unknown> = { type: "object" }
      schema.self = schema
      const result = yield* OpenAiClient.createChatCompletion({
        ...body,
        response_format: { type: "json_schema", json_schema: { name: "x", schema } }
      }).pipe(Effect.provide(OpenAiClient.layer({ apiKey }).pipe(Layer.provide(http.layer))), Effect.flip)
      assert.strictEqual(result._tag, "InvalidRequest")
      assert.strictEqual(http.requests.length, 0)
    }))
})

describe("OpenAiClient construction (bad input)", () => {
  const http = FakeHttp.make(() => FakeHttp.json(200, FakeHttp.completion()))

  it.effect("a base URL that is not a URL fails naming baseUrl and the value", () =>
    Effect.gen(function*() {
      const message = yield* constructionError(
        OpenAiClient.layer({ apiKey, baseUrl: "localhost:8080/v1" }).pipe(Layer.provide(http.layer))
      )
      assert.include(message, "baseUrl")
      assert.include(message, "localhost:8080/v1")
      const fromConfig = yield* constructionError(
        OpenAiClient.layerConfig({
          apiKey: Config.redacted("OPENAI_API_KEY"),
          baseUrl: Config.string("OPENAI_BASE_URL")
        }).pipe(Layer.provide(http.layer)),
        { OPENAI_API_KEY: "sk-x", OPENAI_BASE_URL: "not a url" }
      )
      assert.include(fromConfig, "baseUrl")
      assert.include(fromConfig, "not a url")
    }))

  it.effect("a missing API key fails naming the setting", () =>
    Effect.gen(function*() {
      const message = yield* constructionError(
        OpenAiClient.layerConfig({ apiKey: Config.redacted("OPENAI_API_KEY") }).pipe(Layer.provide(http.layer))
      )
      assert.include(message, "OPENAI_API_KEY")
      const empty = yield* constructionError(
        OpenAiClient.layer({ apiKey: Redacted.make("") }).pipe(Layer.provide(http.layer))
      )
      assert.include(empty, "apiKey")
    }))

  it.effect("a valid configuration builds, and the key never shows in the failure of a bad one", () =>
    Effect.gen(function*() {
      const client = yield* OpenAiClient.OpenAiClient.pipe(
        Effect.provide(
          OpenAiClient.layerConfig({
            apiKey: Config.redacted("OPENAI_API_KEY"),
            baseUrl: Config.string("OPENAI_BASE_URL")
          }).pipe(Layer.provide(http.layer))
        ),
        Effect.withConfigProvider(
          ConfigProvider.fromMap(new Map([["OPENAI_API_KEY", "sk-x"], ["OPENAI_BASE_URL", "http://127.0.0.1:1/v1"]]))
        )
      )
      assert.strictEqual(client.baseUrl, "http://127.0.0.1:1/v1")
      const message = yield* constructionError(
        OpenAiClient.layer({ apiKey, baseUrl: "ftp://example" }).pipe(Layer.provide(http.layer))
      )
      assert.include(message, "baseUrl")
      assert.notInclude(message, Redacted.value(apiKey))
    }))
})
