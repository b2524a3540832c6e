import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { assert, describe, it } from "@effect/vitest"
import * as LlmError from "@keel/core/LlmError"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as FakeHttp from "./utils/FakeHttp.js"
import { fakeKey } from "./utils/fakeKey.js"
import * as LocalServer from "./utils/LocalServer.js"

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

// Both ways of building the client, against servers on 127.0.0.1.
const transports = [
  ["layerUndici", (options: OpenAiClient.Options) => OpenAiClient.layerUndici(options)],
  [
    "layer + NodeHttpClient",
    (options: OpenAiClient.Options) => OpenAiClient.layer(options).pipe(Layer.provide(NodeHttpClient.layerUndici))
  ]
] as const

const models = { object: "list", data: [{ id: "gpt-4.1-mini", object: "model", created: 1, owned_by: "openai" }] }

describe("OpenAiClient over a real connection", () => {
  for (const [name, build] of transports) {
    it.scoped(`${name}: every request carries the User-Agent, the hook's headers and the active span as traceparent`, () =>
      Effect.gen(function*() {
        const server = yield* LocalServer.http((seen, res) => {
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify(seen.path.endsWith("/models") ? models : FakeHttp.completion()))
        })
        const seenByHook: Array<OpenAiClient.RequestInfo> = []
        const client = yield* Layer.build(build({
          apiKey,
          baseUrl: server.url,
          onRequest: (request) => {
            seenByHook.push(request)
            return { "x-tenant": "acme" }
          }
        })).pipe(Effect.map(Context.get(OpenAiClient.OpenAiClient)))
        const span = yield* client.createChatCompletion(body).pipe(
          Effect.zipRight(Effect.currentSpan),
          Effect.withSpan("caller")
        )
        yield* client.createChatCompletion(body) // no span here
        const listed = yield* client.listModels
        assert.deepStrictEqual(listed.map((model) => model.id), ["gpt-4.1-mini"])

        const [traced, plain, list] = server.requests
        for (const seen of [traced!, plain!, list!]) {
          assert.strictEqual(seen.headers["user-agent"], OpenAiClient.userAgent)
          assert.strictEqual(seen.headers["x-tenant"], "acme")
          assert.strictEqual(seen.headers.authorization, `Bearer ${Redacted.value(apiKey)}`)
        }
        assert.match(OpenAiClient.userAgent, /^keel\/\d+\.\d+\.\d+/)
        assert.strictEqual(traced!.method, "POST")
        assert.strictEqual(list!.method, "GET")
        assert.strictEqual(list!.path, "/v1/models")
        // the caller's trace continues at the server (the HttpClient adds a span of its own below the caller's)
        const traceparent = String(traced!.headers.traceparent)
        assert.match(traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
        assert.strictEqual(traceparent.split("-")[1], span.traceId)
        if (name === "layerUndici") {
          assert.strictEqual(traceparent, `00-${span.traceId}-${span.spanId}-01`)
          assert.isUndefined(plain!.headers.traceparent, "no span, no traceparent")
        }
        assert.deepStrictEqual(seenByHook.map((request) => `${request.method} ${request.url}`), [
          `POST ${server.url}/chat/completions`,
          `POST ${server.url}/chat/completions`,
          `GET ${server.url}/models`
        ])
      }))

    it.scoped(`${name}: with tracer propagation turned off, no traceparent is sent inside a span`, () =>
      Effect.gen(function*() {
        const server = yield* LocalServer.http((_seen, res) => {
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify(FakeHttp.completion()))
        })
        const client = yield* Layer.build(build({ apiKey, baseUrl: server.url })).pipe(
          Effect.map(Context.get(OpenAiClient.OpenAiClient))
        )
        yield* client.createChatCompletion(body).pipe(
          Effect.withSpan("caller"),
          Effect.locally(HttpClient.currentTracerPropagation, false)
        )
        yield* client.createChatCompletion(body).pipe(Effect.withSpan("caller"))
        const [off, on] = server.requests
        assert.isUndefined(off!.headers.traceparent)
        assert.isString(on!.headers.traceparent)
      }))

    it.scoped(`${name}: a hook that throws fails the call with InvalidRequest at onRequest, and nothing is sent`, () =>
      Effect.gen(function*() {
        const server = yield* LocalServer.http((_seen, res) => res.end("{}"))
        const client = yield* Layer.build(build({
          apiKey,
          baseUrl: server.url,
          onRequest: () => {
            throw new Error("no tenant for this request")
          }
        })).pipe(Effect.map(Context.get(OpenAiClient.OpenAiClient)))
        const calls: ReadonlyArray<Effect.Effect<unknown, LlmError.LlmError>> = [
          client.createChatCompletion(body),
          client.listModels
        ]
        for (const call of calls) {
          const error = yield* Effect.flip(call)
          assert(error._tag === "InvalidRequest")
          assert.strictEqual(error.field, "onRequest")
          assert.include(error.reason, "no tenant for this request")
          assert.isFalse(error.retryable)
        }
        assert.strictEqual(server.requests.length, 0)
      }))

    it.scoped(`${name}: a 200 whose body is cut mid-way is Transport after the response (billed: charge the estimate)`, () =>
      Effect.gen(function*() {
        const completion = JSON.stringify(FakeHttp.completion())
        const url = yield* LocalServer.raw(LocalServer.cutMidBody(completion, { "x-request-id": "req_cut" }))
        const client = yield* Layer.build(build({ apiKey, baseUrl: url })).pipe(
          Effect.map(Context.get(OpenAiClient.OpenAiClient))
        )
        const chat = yield* Effect.flip(client.createChatCompletion(body))
        assert(chat._tag === "Transport", chat.message)
        assert.isTrue(chat.afterResponse)
        assert.strictEqual(chat.requestId, "req_cut")
        assert.isTrue(LlmError.mayHaveBeenBilled(chat))
        assert.isTrue(chat.retryable)
        const listed = yield* Effect.flip(client.listModels)
        assert(listed._tag === "Transport", listed.message)
        assert.isTrue(listed.afterResponse)
      }))

    it.scoped(`${name}: a refused connection is Transport before any response (not billed)`, () =>
      Effect.gen(function*() {
        const url = yield* LocalServer.http(() => {}).pipe(Effect.map(({ url }) => url), Effect.scoped)
        const client = yield* Layer.build(build({ apiKey, baseUrl: url })).pipe(
          Effect.map(Context.get(OpenAiClient.OpenAiClient))
        )
        const error = yield* Effect.flip(client.createChatCompletion(body))
        assert(error._tag === "Transport")
        assert.isUndefined(error.afterResponse)
        assert.isFalse(LlmError.mayHaveBeenBilled(error))
      }))

    it.scoped(`${name}: listModels maps error answers and names what is wrong in a bad body`, () =>
      Effect.gen(function*() {
        const answers = [
          [401, { error: { message: "Incorrect API key", type: "invalid_request_error", code: "invalid_api_key" } }],
          [200, { object: "list", data: [{ id: 7 }] }],
          [200, "<html>not json</html>"]
        ] as const
        const server = yield* LocalServer.http((_seen, res) => {
          const [status, answer] = answers[server.requests.length - 1]!
          res.writeHead(status, { "content-type": "application/json", "x-request-id": "req_models" })
          res.end(typeof answer === "string" ? answer : JSON.stringify(answer))
        })
        const client = yield* Layer.build(build({ apiKey, baseUrl: server.url })).pipe(
          Effect.map(Context.get(OpenAiClient.OpenAiClient))
        )
        const denied = yield* Effect.flip(client.listModels)
        assert(denied._tag === "AuthenticationFailed")
        assert.strictEqual(denied.requestId, "req_models")
        const badShape = yield* Effect.flip(client.listModels)
        assert(badShape._tag === "ProtocolError")
        assert.include(badShape.reason, "GET")
        assert.include(badShape.reason, "data.0.id")
        const notJson = yield* Effect.flip(client.listModels)
        assert(notJson._tag === "ProtocolError")
        assert.include(notJson.reason, "not JSON")
      }))
  }

  it.scoped("a new endpoint is a few lines over requestJson: relative URL, base URL, auth and decoding applied", () =>
    Effect.gen(function*() {
      const server = yield* LocalServer.http((_seen, res) => {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({ id: "file-1", bytes: 12, purpose: "batch" }))
      })
      const client = yield* Layer.build(OpenAiClient.layerUndici({ apiKey, baseUrl: server.url })).pipe(
        Effect.map(Context.get(OpenAiClient.OpenAiClient))
      )
      const FileObject = Schema.Struct({ id: Schema.String, bytes: Schema.Number })
      const file = yield* client.requestJson(
        HttpClientRequest.get("/files/file-1", { headers: { accept: "application/jsonl" } }),
        FileObject
      )
      assert.deepStrictEqual(file, { id: "file-1", bytes: 12 })
      const [seen] = server.requests
      assert.strictEqual(seen!.path, "/v1/files/file-1")
      assert.strictEqual(seen!.headers.authorization, `Bearer ${Redacted.value(apiKey)}`)
      assert.strictEqual(seen!.headers.accept, "application/jsonl", "the request's own header wins")
    }))
})
