/**
 * An `HttpClient` fake for the OpenAI client's unit tests: every request is recorded (URL, headers,
 * parsed JSON body) and answered by a handler with a web `Response`, or failed as a transport error.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

export interface Recorded {
  readonly method: string
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: any
}

/** What the handler returns: an answer, or a cause to fail the connection with. */
export type Answer = Response | { readonly transport: unknown }

export const make = (handler: (request: Recorded, index: number) => Answer) => {
  const requests: Array<Recorded> = []
  const client = HttpClient.make((request, url) =>
    Effect.suspend(() => {
      const raw = request.body._tag === "Raw" ? request.body.body : undefined
      const recorded: Recorded = {
        method: request.method,
        url: url.toString(),
        headers: { ...request.headers },
        body: typeof raw === "string" ? JSON.parse(raw) : undefined
      }
      const answer = handler(recorded, requests.push(recorded) - 1)
      return "transport" in answer
        ? Effect.fail(new HttpClientError.RequestError({ request, reason: "Transport", cause: answer.transport }))
        : Effect.succeed(HttpClientResponse.fromWeb(request, answer))
    })
  )
  return { layer: Layer.succeed(HttpClient.HttpClient, client), requests }
}

/** A JSON answer with the given status and headers. */
export const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } })

/** A minimal valid Chat Completions answer, fields overridable. */
export const completion = (overrides: Record<string, unknown> = {}, message: Record<string, unknown> = {}) => ({
  id: "chatcmpl-1",
  object: "chat.completion",
  created: 1_764_000_000,
  model: "gpt-4.1-mini-2025-04-14",
  choices: [{
    index: 0,
    message: { role: "assistant", content: "hello", refusal: null, ...message },
    finish_reason: "stop",
    logprobs: null
  }],
  usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 },
  ...overrides
})
