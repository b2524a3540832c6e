/**
 * The API key appears nowhere: calls with a known fake key go through the whole pipeline
 * (`Llm.generate` → retries → `OpenAiLanguageModel` → undici, directly and through `HttpClient`) and fail every way (401, 429, 500, a reset
 * connection, a refused connection), against a server that echoes the key back in its error bodies as
 * a careless proxy would, and against the simulator with a key it rejects. Every log line (failure
 * causes included), span (attributes, events, status), call record, error message and error JSON is
 * collected, and none contains the key.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { assert, describe, it } from "@effect/vitest"
import * as CallLog from "@keel/core/CallLog"
import { LanguageModel } from "@keel/core/LanguageModel"
import * as Llm from "@keel/core/Llm"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as Simulator from "../src/Simulator.js"
import * as FakeHttp from "./utils/FakeHttp.js"
import { fakeKey } from "./utils/fakeKey.js"
import * as LocalServer from "./utils/LocalServer.js"

const KEY = fakeKey("Zq8Lr2Vt6Wn4Xp0Yk3Hj7Gf5Ds9Aa1Bb2Cc")
const keyParts = [KEY, KEY.slice(8), Buffer.from(KEY).toString("base64")]

/** A server that answers by model name and quotes the Authorization header back in every error body. */
const echoServer = Effect.acquireRelease(
  Effect.async<Http.Server & { url: string }>((resume) => {
    const server = Http.createServer((req, res) => {
      let text = ""
      req.on("data", (chunk) => (text += chunk))
      req.on("end", () => {
        const model = (JSON.parse(text) as { model: string }).model
        const echo = `Incorrect API key provided: ${req.headers.authorization}. Header was ${req.headers.authorization}`
        const error = (status: number, code: string | null, headers: Record<string, string> = {}) => {
          res.writeHead(status, { "content-type": "application/json", "x-request-id": `req_${model}`, ...headers })
          res.end(JSON.stringify({ error: { message: echo, type: "invalid_request_error", param: null, code } }))
        }
        if (model === "m-401") return error(401, "invalid_api_key")
        if (model === "m-429") return error(429, "rate_limit_exceeded", { "retry-after-ms": "5" })
        if (model === "m-quota") return error(429, "insufficient_quota")
        if (model === "m-500") return error(500, null)
        if (model === "m-400") return error(400, null)
        if (model === "m-reset") return req.socket.destroy()
        res.writeHead(200, { "content-type": "application/json" })
        res.end(`{"id": "x", "echo": "${req.headers.authorization}"`) // truncated JSON quoting the key
      })
    })
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed(
        Object.assign(server, { url: `http://127.0.0.1:${(server.address() as Net.AddressInfo).port}/v1` })
      )))
  }),
  (server) =>
    Effect.async<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

describe("secrets: the API key never leaves the client", () => {
  it.live("no log line, span, call record, error message or error JSON contains the key", () => {
    const exporter = new InMemorySpanExporter()
    const lines: Array<string> = []
    const memory = CallLog.memory()
    return Effect.gen(function*() {
      const echo = yield* echoServer
      const simulator = yield* Simulator.make({ apiKey: fakeKey("the-simulator-wants-another-key-0000") })

      // both transports: straight on undici, and over the platform HttpClient (which records HTTP spans)
      const pipeline = (baseUrl: string, transport: "undici" | "HttpClient") => {
        const options = { apiKey: Redacted.make(KEY), baseUrl, organization: "org-1", project: "p-1" }
        return Llm.layer().pipe(
          Layer.provide(OpenAiLanguageModel.layer()),
          Layer.provide(
            transport === "undici"
              ? OpenAiClient.layerUndici(options)
              : OpenAiClient.layer(options).pipe(Layer.provide(NodeHttpClient.layerUndici))
          )
        )
      }
      // a port that was just free: nothing listens there, so the connection is refused
      const closedPort = yield* Effect.async<number>((resume) => {
        const server = Http.createServer().listen(0, "127.0.0.1", () => {
          const { port } = server.address() as Net.AddressInfo
          server.close(() => resume(Effect.succeed(port)))
        })
      })

      const calls: ReadonlyArray<readonly [string, string]> = [
        [echo.url, "m-401"],
        [echo.url, "m-429"],
        [echo.url, "m-quota"],
        [echo.url, "m-500"],
        [echo.url, "m-400"],
        [echo.url, "m-reset"],
        [echo.url, "m-garbled"],
        [`http://127.0.0.1:${closedPort}/v1`, "gpt-4.1-mini"],
        [simulator.url, "gpt-4.1-mini"]
      ]
      const errors: Array<unknown> = []
      const texts: Array<string> = []
      for (const transport of ["undici", "HttpClient"] as const) {
        for (const [baseUrl, model] of calls) {
          const exit = yield* Llm.generate({ model, messages: [{ role: "user", content: "hi" }] }).pipe(
            Effect.withSpan("test call"),
            Effect.tapErrorCause((cause) => Effect.logError("call failed", cause)),
            Effect.provide(pipeline(baseUrl, transport)),
            Effect.exit
          )
          assert(Exit.isFailure(exit), `${model} at ${baseUrl} should fail`)
          texts.push(Cause.pretty(exit.cause))
          const error = Cause.squash(exit.cause)
          errors.push(error)
          texts.push(String(error), (error as Error).message, JSON.stringify(error))
        }
      }
      const tags = errors.map((e) => (e as { _tag: string })._tag)
      const expected = [
        "AuthenticationFailed",
        "RateLimited",
        "QuotaExhausted",
        "ProviderUnavailable",
        "InvalidRequest",
        "Transport",
        "ProtocolError",
        "Transport",
        "AuthenticationFailed"
      ]
      assert.deepStrictEqual(tags, [...expected, ...expected])

      const spans = exporter.getFinishedSpans()
      assert.isAbove(spans.length, calls.length, "spans were recorded")
      const spanText = JSON.stringify(spans.map((span) => ({
        name: span.name,
        attributes: span.attributes,
        events: span.events.map((event) => ({ name: event.name, attributes: event.attributes })),
        status: span.status,
        resource: span.resource.attributes
      })))
      assert.include(spanText, "http.request.header.authorization", "the HTTP spans carry request headers")

      assert.isAbove(lines.length, 0)
      assert.isAbove(memory.records.length, 0)
      const everything = [...texts, spanText, ...lines, JSON.stringify(memory.records)].join("\n")
      for (const part of keyParts) assert.notInclude(everything, part)
      assert.include(everything, "Incorrect API key provided", "the echoed messages were kept, scrubbed")
    }).pipe(
      Effect.scoped,
      RetryPolicy.withPolicy(RetryPolicy.make({ maxAttempts: 2, base: Duration.millis(1), cap: Duration.millis(2) })),
      Effect.provide(
        Layer.mergeAll(
          NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter) })),
          CallLog.layer({ sinks: [memory.sink, CallLog.logger()], content: true }),
          Logger.replace(Logger.defaultLogger, Logger.map(Logger.logfmtLogger, (line) => lines.push(line))),
          Logger.minimumLogLevel(LogLevel.All)
        )
      )
    )
  })
})

describe("secrets: a server that echoes the key in error.param and x-request-id", () => {
  // A careless proxy: the Authorization header comes back as the request id and as the field of the error.
  const echoing = () =>
    LocalServer.http((seen, res) => {
      const auth = String(seen.headers.authorization)
      const model = (JSON.parse(seen.body) as { model: string }).model
      if (model === "ok") {
        res.writeHead(200, { "content-type": "application/json", "x-request-id": auth })
        return res.end(JSON.stringify(FakeHttp.completion()))
      }
      res.writeHead(model === "m-400" ? 400 : 500, { "content-type": "application/json", "x-request-id": auth })
      res.end(JSON.stringify({ error: { message: "bad", type: "invalid_request_error", param: auth, code: null } }))
    })

  for (const transport of ["undici", "HttpClient"] as const) {
    it.scoped(`${transport}: neither the error (field, requestId) nor the answer's request id carries the key`, () =>
      Effect.gen(function*() {
        const server = yield* echoing()
        const options = { apiKey: Redacted.make(KEY), baseUrl: server.url }
        const model = yield* Layer.build(
          OpenAiLanguageModel.layer().pipe(
            Layer.provide(
              transport === "undici"
                ? OpenAiClient.layerUndici(options)
                : OpenAiClient.layer(options).pipe(Layer.provide(NodeHttpClient.layerUndici))
            )
          )
        ).pipe(Effect.map(Context.get(LanguageModel)))
        const texts: Array<string> = []
        for (const name of ["m-400", "m-500"]) {
          const error = yield* Effect.flip(model.complete({ model: name, messages: [{ role: "user", content: "hi" }] }))
          assert(error._tag === "InvalidRequest" || error._tag === "ProviderUnavailable", error._tag)
          assert.isDefined(error.requestId)
          if (error._tag === "InvalidRequest") assert.isDefined(error.field)
          texts.push(JSON.stringify(error), error.message, String(error.requestId))
        }
        const answer = yield* model.complete({ model: "ok", messages: [{ role: "user", content: "hi" }] })
        assert.include(answer.requestId, "[redacted]")
        texts.push(JSON.stringify(answer))
        const everything = texts.join("\n")
        assert.strictEqual(server.requests.length, 3, "the key was sent, and echoed back, three times")
        for (const part of keyParts) assert.notInclude(everything, part)
      }))
  }
})
