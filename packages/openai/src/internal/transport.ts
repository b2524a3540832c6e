/**
 * How the OpenAI client moves one JSON body to the server and the answer back: as status, headers and
 * text, or a connection failure. Two implementations:
 * - over any `@effect/platform` `HttpClient` (tests with a fake, user middleware, proxies);
 * - straight on an undici `Dispatcher` through its `dispatch` handler API: no `AbortSignal` (which costs
 *   more CPU than the rest of a call at high concurrency), no body stream, no per-request URL parsing.
 *   Interruption and the attempt timeout abort the request through undici's controller: the timeout
 *   is a plain timer inside the request, which costs far less than a fiber racing it.
 */
import type * as Undici from "@effect/platform-node/Undici"
import * as HttpBody from "@effect/platform/HttpBody"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as LlmError from "@keel/core/LlmError"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Effect from "effect/Effect"
import type { Headers } from "./errors.js"

/** The server's answer, whatever the status. */
export interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

/** The connection failed; `headers` when it failed after the answer had started. */
export class Failure {
  constructor(readonly cause: unknown, readonly headers?: Headers) {}
}

/** Sends one request body (JSON text), failing with `timeout.onTimeout()` when it takes too long. */
export type Send = (
  body: string,
  timeout?: RetryPolicy.AttemptTimeout
) => Effect.Effect<Answer, Failure | LlmError.Timeout>

/** Over an `HttpClient`: `url` is the full endpoint URL, `headers` are sent with every request. */
export const fromHttpClient = (
  client: HttpClient.HttpClient,
  url: string,
  headers: Readonly<Record<string, string>>
): Send => {
  // Built once; each call only attaches its body (content-type is already among the headers).
  const base = HttpClientRequest.post(url, { headers })
  return (body, timeout) => {
    const exchange = client.execute(HttpClientRequest.setBody(base, HttpBody.raw(body))).pipe(
      Effect.mapError((error) => new Failure(error.cause ?? error)),
      Effect.flatMap((response) => {
        const responseHeaders = response.headers
        return Effect.mapBoth(response.text, {
          onFailure: (error) => new Failure(error.cause ?? error, responseHeaders),
          onSuccess: (text) => ({ status: response.status, headers: responseHeaders, text })
        })
      })
    )
    return timeout === undefined ? exchange : RetryPolicy.within(exchange, timeout)
  }
}

/** Multi-valued headers (e.g. two `set-cookie`) arrive as arrays; keel reads single values, joined as HTTP does. */
const normalize = (headers: Record<string, string | Array<string> | undefined>): Headers => {
  for (const key in headers) {
    const value = headers[key]
    if (Array.isArray(value)) headers[key] = value.join(", ")
  }
  return headers as Headers
}

/** Collects one answer from undici's handler callbacks and settles the waiting fiber once. */
class Collector {
  status = 0
  headers: Headers | undefined = undefined
  chunks: Array<Buffer> = []
  controller: Undici.Dispatcher.DispatchController | undefined = undefined
  interrupted = false

  constructor(readonly resume: (effect: Effect.Effect<Answer, Failure>) => void) {}

  onRequestStart(controller: Undici.Dispatcher.DispatchController) {
    this.controller = controller
    if (this.interrupted) controller.abort(new Error("interrupted"))
  }
  onResponseStart(
    _controller: Undici.Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | Array<string> | undefined>
  ) {
    this.status = statusCode
    this.headers = normalize(headers)
  }
  onResponseData(_controller: Undici.Dispatcher.DispatchController, chunk: Buffer) {
    this.chunks.push(chunk)
  }
  onResponseEnd() {
    const chunks = this.chunks
    const text = chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8")
    this.resume(Effect.succeed({ status: this.status, headers: this.headers ?? {}, text }))
  }
  onResponseError(_controller: Undici.Dispatcher.DispatchController, error: Error) {
    if (!this.interrupted) this.resume(Effect.fail(new Failure(error, this.headers)))
  }
  interrupt() {
    this.interrupted = true
    this.controller?.abort(new Error("interrupted"))
  }
}

/** Straight on an undici dispatcher (an `Agent`): the fast path. */
export const fromUndici = (
  dispatcher: Undici.Dispatcher,
  url: string,
  headers: Readonly<Record<string, string>>
): Send => {
  const { origin, pathname, search } = new URL(url)
  const path = pathname + search
  return (body, timeout) =>
    Effect.async<Answer, Failure | LlmError.Timeout>((resume) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      let settled = false
      const settle = (effect: Effect.Effect<Answer, Failure | LlmError.Timeout>) => {
        if (settled) return
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        resume(effect)
      }
      const collector = new Collector(settle)
      if (timeout !== undefined) {
        timer = setTimeout(() => {
          collector.interrupt()
          settle(Effect.fail(timeout.onTimeout()))
        }, timeout.millis)
      }
      try {
        dispatcher.dispatch({ origin, path, method: "POST", headers, body }, collector)
      } catch (error) {
        settle(Effect.fail(new Failure(error)))
      }
      return Effect.sync(() => {
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        collector.interrupt()
      })
    })
}
