/**
 * How the OpenAI client moves one JSON body to the server and the answer back: as status, headers and
 * text, or a connection failure. Two implementations:
 * - over any `@effect/platform` `HttpClient` (tests with a fake, user middleware, proxies);
 * - straight on an undici `Dispatcher` through its `dispatch` handler API: no `AbortSignal` (which costs
 *   more CPU than the rest of a call at high concurrency), no body stream, no per-request URL parsing.
 *   Interruption and the attempt timeout abort the request through undici's controller: the timeout
 *   is a plain timer inside the request, which costs far less than a fiber racing it.
 * Each request may get extra headers: the client's `onRequest` hook, and on undici a W3C `traceparent` for the
 * active span (the `HttpClient` propagates its own; `HttpClient.withTracerPropagation(false)` /
 * `currentTracerPropagation` turn both off). With neither, the request reuses its prebuilt headers.
 */
import type * as Undici from "@effect/platform-node/Undici"
import * as HttpBody from "@effect/platform/HttpBody"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as LlmError from "@keel/core/LlmError"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Effect from "effect/Effect"
import type * as Tracer from "effect/Tracer"
import type { RequestHook, RequestInfo } from "../OpenAiClient.js"
import type { Headers } from "./errors.js"

/** The server's answer, whatever the status. */
export interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

/**
 * The connection failed: before the answer, or, with `status` and `headers`, while the body of an answer that had
 * started was arriving.
 */
export class Failure {
  constructor(readonly cause: unknown, readonly headers?: Headers, readonly status?: number) {}
}

/** The client's `onRequest` hook threw: nothing was sent. */
export class HookFailure {
  constructor(readonly cause: unknown) {}
}

/** Sends one request body (JSON text), failing with `timeout.onTimeout()` when it takes too long. */
export type Send = (
  body: string,
  timeout?: RetryPolicy.AttemptTimeout
) => Effect.Effect<Answer, Failure | HookFailure | LlmError.Timeout>

/** The W3C trace context header for a span: `00-{trace id}-{span id}-{flags}`. */
export const traceparent = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/**
 * The headers of one request: the prebuilt ones when there is no hook and no span (no allocation), else a copy with
 * `traceparent` (when `span` is given) and the hook's headers, which win. Throws what the hook throws.
 */
const withExtras = (
  headers: Readonly<Record<string, string>>,
  info: RequestInfo,
  hook: RequestHook | undefined,
  span: Tracer.AnySpan | undefined
): Readonly<Record<string, string>> => {
  const extra = hook === undefined ? undefined : hook(info)
  if (span === undefined && extra === undefined) return headers
  const out: Record<string, string> = { ...headers }
  if (span !== undefined) out.traceparent = traceparent(span)
  if (extra !== undefined) { for (const name in extra) out[name.toLowerCase()] = extra[name]! }
  return out
}

/**
 * Over an `HttpClient`: `url` is the full endpoint URL, `headers` are sent with every request, `hook` may add some
 * to each (the `HttpClient` adds `traceparent` itself).
 */
export const fromHttpClient = (
  client: HttpClient.HttpClient,
  url: string,
  headers: Readonly<Record<string, string>>,
  hook?: RequestHook
): Send => {
  // Built once; each call only attaches its body (content-type is already among the headers).
  const base = HttpClientRequest.post(url, { headers })
  const info: RequestInfo = { method: "POST", url }
  const exchange = (request: HttpClientRequest.HttpClientRequest) =>
    client.execute(request).pipe(
      Effect.mapError((error) => new Failure(error.cause ?? error)),
      Effect.flatMap((response) => {
        const responseHeaders = response.headers
        return Effect.mapBoth(response.text, {
          onFailure: (error) => new Failure(error.cause ?? error, responseHeaders, response.status),
          onSuccess: (text) => ({ status: response.status, headers: responseHeaders, text })
        })
      })
    )
  const prepare = (body: string): Effect.Effect<Answer, Failure | HookFailure> => {
    const request = HttpClientRequest.setBody(base, HttpBody.raw(body))
    if (hook === undefined) return exchange(request)
    return Effect.suspend(() => {
      let extra: Readonly<Record<string, string>> | undefined
      try {
        extra = hook(info)
      } catch (cause) {
        return Effect.fail(new HookFailure(cause))
      }
      return exchange(extra === undefined ? request : HttpClientRequest.setHeaders(request, extra))
    })
  }
  return (body, timeout) => timeout === undefined ? prepare(body) : RetryPolicy.within(prepare(body), timeout)
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
    if (!this.interrupted) {
      this.resume(Effect.fail(new Failure(error, this.headers, this.headers === undefined ? undefined : this.status)))
    }
  }
  interrupt() {
    this.interrupted = true
    this.controller?.abort(new Error("interrupted"))
  }
}

/**
 * Straight on an undici dispatcher (an `Agent`): the fast path. `hook` may add headers to each request; the active
 * span, if any, is sent as `traceparent` unless tracer propagation is off (as the `HttpClient` honours it).
 */
export const fromUndici = (
  dispatcher: Undici.Dispatcher,
  url: string,
  headers: Readonly<Record<string, string>>,
  hook?: RequestHook
): Send => {
  const { origin, pathname, search } = new URL(url)
  const path = pathname + search
  const info: RequestInfo = { method: "POST", url }
  const send = (
    requestHeaders: Readonly<Record<string, string>>,
    body: string,
    timeout: RetryPolicy.AttemptTimeout | undefined
  ) =>
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
        dispatcher.dispatch({ origin, path, method: "POST", headers: requestHeaders, body }, collector)
      } catch (error) {
        settle(Effect.fail(new Failure(error)))
      }
      return Effect.sync(() => {
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        collector.interrupt()
      })
    })
  return (body, timeout) =>
    Effect.withFiberRuntime((fiber) => {
      const active = fiber.currentSpan
      const span = active !== undefined && fiber.getFiberRef(HttpClient.currentTracerPropagation) ? active : undefined
      if (hook === undefined && span === undefined) return send(headers, body, timeout)
      let requestHeaders: Readonly<Record<string, string>>
      try {
        requestHeaders = withExtras(headers, info, hook, span)
      } catch (cause) {
        return Effect.fail(new HookFailure(cause))
      }
      return send(requestHeaders, body, timeout)
    })
}
