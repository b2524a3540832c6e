import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { assert, describe, it } from "@effect/vitest"
import * as LlmError from "@keel/core/LlmError"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as Transport from "../src/internal/transport.js"

/** A server on 127.0.0.1 for the scope, answering with `handler`. */
const server = (handler: Http.RequestListener) =>
  Effect.acquireRelease(
    Effect.async<Http.Server>((resume) => {
      const s = Http.createServer(handler)
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.async<void>((resume) => {
        s.closeAllConnections()
        s.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((s) => `http://127.0.0.1:${(s.address() as Net.AddressInfo).port}/v1/chat/completions`))

describe("undici transport", () => {
  it.scoped("sends the body and headers, joins a body sent in pieces and multi-valued headers", () =>
    Effect.gen(function*() {
      let seen: { body: string; auth: string | undefined; path: string | undefined } | undefined
      const url = yield* server((req, res) => {
        let body = ""
        req.on("data", (chunk) => (body += chunk))
        req.on("end", () => {
          seen = { body, auth: req.headers.authorization, path: req.url }
          res.writeHead(201, { "x-request-id": "req_1", "set-cookie": ["a=1", "b=2"] })
          res.write("{\"hello\":")
          setTimeout(() => res.end("\"wörld\"}"), 10)
        })
      })
      const send = Transport.fromUndici(yield* NodeHttpClient.makeDispatcher, url, { authorization: "Bearer k" })
      const answer = yield* send("{\"x\":1}")
      assert.deepStrictEqual(seen, { body: "{\"x\":1}", auth: "Bearer k", path: "/v1/chat/completions" })
      assert.strictEqual(answer.status, 201)
      assert.strictEqual(answer.text, "{\"hello\":\"wörld\"}")
      assert.strictEqual(answer.headers["x-request-id"], "req_1")
      assert.strictEqual(answer.headers["set-cookie"], "a=1, b=2")
    }))

  it.scoped("interruption aborts the request: the server sees the connection close", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<void>()
      const arrived = yield* Deferred.make<void>()
      const url = yield* server((req) => {
        Deferred.unsafeDone(arrived, Effect.void)
        req.socket.on("close", () => Deferred.unsafeDone(closed, Effect.void))
      })
      const send = Transport.fromUndici(yield* NodeHttpClient.makeDispatcher, url, {})
      const fiber = yield* Effect.fork(send("{}"))
      yield* Deferred.await(arrived)
      yield* Fiber.interrupt(fiber)
      const result = yield* Deferred.await(closed).pipe(Effect.timeout(Duration.seconds(5)), Effect.either)
      assert.strictEqual(result._tag, "Right", "the connection was closed after the interruption")
    }))

  it.scoped("a connection reset mid-answer is a failure carrying the headers already received", () =>
    Effect.gen(function*() {
      const url = yield* server((_req, res) => {
        res.writeHead(200, { "x-request-id": "req_cut", "content-length": "100" })
        res.write("{\"partial\":")
        setTimeout(() => res.socket?.destroy(), 10)
      })
      const send = Transport.fromUndici(yield* NodeHttpClient.makeDispatcher, url, {})
      const failure = yield* Effect.flip(send("{}"))
      assert.instanceOf(failure, Transport.Failure)
      assert.strictEqual(failure.headers?.["x-request-id"], "req_cut")
      assert.strictEqual(failure.status, 200, "the failure knows the answer had started, with its status")
    }))

  // The timer lives inside the HTTP request (a real timer, as the request is real): 20 ms here.
  it.scoped("the attempt timeout aborts a request that never answers and fails with the timeout's error", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<void>()
      const url = yield* server((req) => {
        req.socket.on("close", () => Deferred.unsafeDone(closed, Effect.void))
      })
      const send = Transport.fromUndici(yield* NodeHttpClient.makeDispatcher, url, {})
      const timeout = {
        millis: 20,
        onTimeout: () => new LlmError.Timeout({ after: Duration.millis(20), level: "attempt" })
      }
      const failure = yield* Effect.flip(send("{}", timeout))
      assert.isTrue(failure instanceof LlmError.Timeout && failure.level === "attempt")
      yield* Deferred.await(closed)
    }))

  it.scoped("an answer before the timeout is not affected by it", () =>
    Effect.gen(function*() {
      const url = yield* server((_req, res) => res.end("{}"))
      const send = Transport.fromUndici(yield* NodeHttpClient.makeDispatcher, url, {})
      const timeout = {
        millis: 60_000,
        onTimeout: () => new LlmError.Timeout({ after: Duration.minutes(1), level: "attempt" })
      }
      assert.strictEqual((yield* send("{}", timeout)).text, "{}")
    }))
})
