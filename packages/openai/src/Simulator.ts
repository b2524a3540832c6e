/**
 * An OpenAI-compatible HTTP server for tests, benchmarks, the demo and `keel simulate`. It answers
 * Chat Completions deterministically from (seed, request): tool calls and `json_schema` content that
 * satisfy the request's JSON Schema, plain text otherwise, with `usage` counted by OpenAI's
 * o200k_base tokenizer and OpenAI's headers (`x-request-id`, `x-ratelimit-*`). It enforces per-model
 * requests/min and tokens/min with real 429s, injects faults at configured, reproducible rates (per
 * model with `faultsByModel`; `cut` sends a 200's headers and half its body, then destroys the
 * socket), answers scheduled `outages`, and past `capacityPerSecond` answers 503 "overloaded".
 *
 * Requests are checked as OpenAI checks them, with its status, type, param, code and message:
 * strict schemas (closed objects, every property required, the supported keyword subset, an
 * object root, size limits), parameter ranges, `stream_options` without `stream`, and the model,
 * which must be one of `Options.models` (`GET /v1/models` lists them).
 *
 * What a client sees on `POST /v1/chat/completions`:
 * - with function tools (and `tool_choice` not "none"): one call of the tool `tool_choice` names, or
 *   of the first tool; finish_reason "tool_calls", or "stop" for a named tool_choice as OpenAI does.
 *   After a `tool` message (and no forcing tool_choice) it answers in content instead;
 * - `response_format` json_schema / json_object: JSON content; otherwise a few sentences of text;
 * - `usage` with `cached_tokens` (a prompt prefix of ≥ 1024 tokens seen before, in steps of 128)
 *   and `reasoning_tokens` (o-series and gpt-5 models); `max_completion_tokens` cuts with "length";
 * - the same request gets the same content every time; its fault is drawn afresh per attempt
 *   (seeded by how often that exact body was seen), so retries can succeed and a run replays;
 * - unsupported: streaming (400), audio, logprobs (always null).
 *
 * Files and Batches (`/v1/files`: multipart upload, content, delete; `/v1/batches`: create, retrieve,
 * cancel, list) run a real batch lifecycle (see `BatchOptions`): validation with OpenAI's per-line
 * codes, lines answered like synchronous calls (same content and usage for the same body and seed)
 * in a shuffled order, per-line faults, expiry with partial results, cancel, and an enqueued-token
 * allowance per model (`token_limit_exceeded`). `Stats.batches` lists every batch created.
 *
 * Time is Effect's `Clock`: rate-limit windows, latency, outages, the serving capacity and batch
 * lifecycles move with `TestClock` when the simulator is started under it.
 *
 * Endpoints plug in: `Options.routes` adds `HttpRouter` routes, which get the same Bearer auth and
 * common headers and can use `EndpointContext` (e.g. to answer chat requests of a batch). A route
 * cannot replace `POST /v1/chat/completions`, which is served before the router.
 *
 * ```ts
 * const program = Effect.gen(function*() {
 *   const { url } = yield* Simulator.Simulator
 *   // point an OpenAI client at `url` with any API key
 * }).pipe(Effect.provide(Simulator.layer({ seed: 1, faults: { rate_limit: 0.05 } })))
 * ```
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import type * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerRespondable from "@effect/platform/HttpServerRespondable"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Multipart from "@effect/platform/Multipart"
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Crypto from "node:crypto"
import * as Http from "node:http"
import { type Answer, BatchStore, LINE_FAULTS } from "./internal/simulator/batches.js"
import { Engine, FAULTS, type Outcome, type Respond } from "./internal/simulator/engine.js"
import { loadCounter } from "./internal/simulator/tokens.js"
import { badJson } from "./internal/simulator/validate.js"

/** A kind of injected fault. */
export type Fault = typeof FAULTS[number]

/** Every fault name, in the order rates are applied. */
export const faultNames: ReadonlyArray<Fault> = FAULTS

/** Probability per request of each fault; the rates of a model sum to at most 1. */
export type FaultRates = Partial<Record<Fault, number>>

/** Requests and tokens per minute; an unset limit does not bind. */
export interface Limits {
  readonly requestsPerMinute?: number
  readonly tokensPerMinute?: number
}

/** A scheduled outage: from `atMs` after the start, for `durationMs`, every chat request is answered `status`. */
export interface Outage {
  readonly atMs: number
  readonly durationMs: number
  /** 500, 502, 503 or 504; default 503 */
  readonly status?: number
}

/** The models served when `Options.models` is not given: OpenAI's chat models. */
export const defaultModels: ReadonlyArray<string> = [
  "gpt-3.5-turbo",
  "gpt-4",
  "gpt-4-turbo",
  "gpt-4o",
  "gpt-4o-2024-08-06",
  "gpt-4o-2024-11-20",
  "gpt-4o-mini",
  "gpt-4o-mini-2024-07-18",
  "gpt-4.1",
  "gpt-4.1-2025-04-14",
  "gpt-4.1-mini",
  "gpt-4.1-mini-2025-04-14",
  "gpt-4.1-nano",
  "gpt-4.1-nano-2025-04-14",
  "o1",
  "o1-mini",
  "o3",
  "o3-mini",
  "o4-mini",
  "gpt-5",
  "gpt-5-mini",
  "gpt-5-nano",
  "gpt-5.1",
  "gpt-5.2",
  "gpt-5.4",
  "gpt-5.4-mini",
  "gpt-5.4-nano",
  "gpt-5.5"
]

/** A fault of one batch line: an HTTP error in its `response`, or a spoiled 200 answer. */
export type LineFault = typeof LINE_FAULTS[number]

/** Every batch line fault name. */
export const lineFaultNames: ReadonlyArray<LineFault> = LINE_FAULTS

/** The batch lifecycle; every duration is on the Effect clock. */
export interface BatchOptions {
  /** time in `validating`; default 1,000 ms */
  readonly validatingMs?: number
  /** time in `in_progress`, over which the lines finish one after another; default 10,000 ms */
  readonly inProgressMs?: number
  /** time in `finalizing`; default 1,000 ms */
  readonly finalizingMs?: number
  /** time in `cancelling`; default 1,000 ms */
  readonly cancellingMs?: number
  /** the completion window ("24h" on the wire): a batch not done by then expires with partial results; default 24 h */
  readonly windowMs?: number
  /** probability per line of each line fault; default none */
  readonly lineFaults?: Partial<Record<LineFault, number>>
  /** input tokens a model may have enqueued in unfinished batches (OpenAI's batch queue limit); default unlimited */
  readonly enqueuedTokens?: number
  /** the allowance for named models, instead of `enqueuedTokens` */
  readonly enqueuedTokensByModel?: Readonly<Record<string, number>>
}

/** An endpoint plugged into the simulator (see `EndpointContext`). */
export type Route = HttpRouter.Route<unknown, EndpointContext>

export interface Options {
  /** default 0; the same seed and the same requests give the same answers and faults */
  readonly seed?: number
  /** when set, `Authorization: Bearer <apiKey>` is required; when unset any non-empty Bearer token is accepted */
  readonly apiKey?: string
  /** answer delay: base + per output token + uniform jitter in [0, jitterMs); default all 0 */
  readonly latency?: {
    readonly baseMs?: number
    readonly perOutputTokenMs?: number
    readonly jitterMs?: number
  }
  /** limits for every model (each model has its own buckets); default none */
  readonly limits?: Limits
  /** limits for named models, instead of `limits` */
  readonly limitsByModel?: Readonly<Record<string, Limits>>
  /** fault rates for every model; default none */
  readonly faults?: FaultRates
  /** fault rates for named models, instead of `faults` */
  readonly faultsByModel?: Readonly<Record<string, FaultRates>>
  /** the hint sent with injected 429s, as `retry-after-ms` and `retry-after` (whole seconds, rounded up); default 50 */
  readonly retryAfterMs?: number
  /** default 0: a free port */
  readonly port?: number
  /** more endpoints, served next to `POST /v1/chat/completions` */
  readonly routes?: ReadonlyArray<Route>
  /** the model ids served (others get OpenAI's 404 `model_not_found`); default `defaultModels`; models named in `limitsByModel` or `faultsByModel` are served too */
  readonly models?: ReadonlyArray<string>
  /** scheduled outages, relative to the start on the Effect clock */
  readonly outages?: ReadonlyArray<Outage>
  /** chat requests per second served; past it (a token bucket holding 100 ms of capacity) the answer is 503 "overloaded"; default unlimited */
  readonly capacityPerSecond?: number
  /** the Batch API's lifecycle, line faults and enqueued-token allowance */
  readonly batch?: BatchOptions
}

/** Counters for tests and the CLI. */
export interface Stats {
  /** chat completion requests received (after authentication) */
  readonly requests: number
  /** 200 chat answers, including those spoiled by `malformed`, `invalid_output`, `truncated`, `refusal` */
  readonly completions: number
  /** 429s from the configured limits (not injected) */
  readonly rateLimited: number
  /** faults injected, by kind */
  readonly faults: Readonly<Record<Fault, number>>
  /** answers by HTTP status, over every endpoint */
  readonly byStatus: Readonly<Record<string, number>>
  /** chat requests answered by a scheduled outage */
  readonly outage: number
  /** chat requests answered 503 past the serving capacity */
  readonly overloaded: number
  /** chat requests received per 100 ms: `counts[i]` covers [startMs + 100·i, startMs + 100·(i + 1)) ms after the start (the last hour is kept) */
  readonly arrivals: { readonly startMs: number; readonly counts: ReadonlyArray<number> }
  /** every batch created, oldest first, as it is now (e.g. to check that a chunk's metadata has one batch) */
  readonly batches: ReadonlyArray<BatchSummary>
}

/** A batch as the stats show it. */
export interface BatchSummary {
  readonly id: string
  readonly status: string
  readonly model: string | undefined
  readonly metadata: Readonly<Record<string, string>>
  readonly inputFileId: string
  /** epoch ms on the simulator's clock */
  readonly createdAt: number
  readonly requestCounts: { readonly total: number; readonly completed: number; readonly failed: number }
}

/** The simulator could not start: bad options or the port could not be bound. */
export class StartError extends Schema.TaggedError<StartError>("@keel/openai/Simulator/StartError")("StartError", {
  reason: Schema.String
}) {
  override get message() {
    return `The OpenAI simulator could not start: ${this.reason}`
  }
}

/** A running simulator. */
export class Simulator extends Context.Tag("@keel/openai/Simulator")<Simulator, {
  /** base URL including /v1, e.g. "http://127.0.0.1:43121/v1" */
  readonly url: string
  readonly port: number
  /** counters since start */
  readonly stats: Effect.Effect<Stats>
}>() {}

/** What a plugged-in endpoint can use: the answers it builds get the simulator's headers. */
export class EndpointContext extends Context.Tag("@keel/openai/Simulator/EndpointContext")<EndpointContext, {
  readonly seed: number
  /** the chat completion answer for a request body, without faults, limits or latency (e.g. for a batch line) */
  readonly completeChat: (body: unknown) => { readonly status: number; readonly body: unknown }
  /** a JSON answer with `x-request-id`, `openai-version` and `openai-processing-ms` */
  readonly json: (status: number, body: unknown) => HttpServerResponse.HttpServerResponse
  /** an OpenAI error answer `{"error":{message,type,param,code}}` */
  readonly error: (
    status: number,
    message: string,
    type: string,
    param?: string | null,
    code?: string | null
  ) => HttpServerResponse.HttpServerResponse
  /** a fresh `req_…` id */
  readonly requestId: () => string
}>() {}

/**
 * Parses fault rates as the CLI takes them: `"rate_limit=0.05,500=0.02"`. The Left names the bad
 * entry and lists the valid names.
 */
export const parseFaults = (spec: string): Either.Either<FaultRates, string> => {
  const rates: Partial<Record<Fault, number>> = {}
  const valid = `valid names: ${FAULTS.join(", ")}`
  let sum = 0
  for (const raw of spec.split(",")) {
    const entry = raw.trim()
    if (entry === "") continue
    const eq = entry.indexOf("=")
    if (eq < 0) return Either.left(`fault entry "${entry}" is not name=rate (e.g. rate_limit=0.05); ${valid}`)
    const name = entry.slice(0, eq).trim()
    const value = entry.slice(eq + 1).trim()
    if (!(FAULTS as ReadonlyArray<string>).includes(name)) {
      return Either.left(`unknown fault "${name}" in "${entry}"; ${valid}`)
    }
    const rate = Number(value)
    if (value === "" || !Number.isFinite(rate) || rate < 0 || rate > 1) {
      return Either.left(`fault rate "${value}" in "${entry}" is not a number between 0 and 1`)
    }
    if (name in rates) return Either.left(`fault "${name}" is given twice ("${entry}")`)
    rates[name as Fault] = rate
    sum += rate
  }
  if (sum > 1 + 1e-9) return Either.left(`fault rates sum to ${sum}, more than 1`)
  return Either.right(rates)
}

const checkRates = (rates: FaultRates, where: string): string | undefined => {
  let sum = 0
  for (const [name, rate] of Object.entries(rates)) {
    if (!(FAULTS as ReadonlyArray<string>).includes(name)) {
      return `${where}: unknown fault "${name}"; valid names: ${FAULTS.join(", ")}`
    }
    if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) return `${where}: rate of ${name} must be in [0, 1]`
    sum += rate
  }
  return sum > 1 + 1e-9 ? `${where}: fault rates sum to ${sum}, more than 1` : undefined
}

const checkLimits = (limits: Limits, where: string): string | undefined => {
  for (const [name, value] of Object.entries(limits)) {
    if (value !== undefined && !(typeof value === "number" && value > 0)) return `${where}.${name} must be positive`
  }
  return undefined
}

const checkBatch = (batch: BatchOptions): string | undefined => {
  for (const name of ["validatingMs", "inProgressMs", "finalizingMs", "cancellingMs"] as const) {
    const value = batch[name]
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) return `batch.${name} must be ≥ 0`
  }
  if (batch.windowMs !== undefined && !(Number.isFinite(batch.windowMs) && batch.windowMs > 0)) {
    return "batch.windowMs must be positive"
  }
  let sum = 0
  for (const [name, rate] of Object.entries(batch.lineFaults ?? {})) {
    if (!(LINE_FAULTS as ReadonlyArray<string>).includes(name)) {
      return `batch.lineFaults: unknown line fault "${name}"; valid names: ${LINE_FAULTS.join(", ")}`
    }
    if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) return `batch.lineFaults.${name} must be in [0, 1]`
    sum += rate
  }
  if (sum > 1 + 1e-9) return `batch.lineFaults: rates sum to ${sum}, more than 1`
  const allowances = [
    ["enqueuedTokens", batch.enqueuedTokens] as const,
    ...Object.entries(batch.enqueuedTokensByModel ?? {}).map(([m, v]) => [`enqueuedTokensByModel.${m}`, v] as const)
  ]
  for (const [name, value] of allowances) {
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
      return `batch.${name} must be a positive integer`
    }
  }
  return undefined
}

const validate = (options: Options): string | undefined => {
  const checks = [
    checkRates(options.faults ?? {}, "faults"),
    ...Object.entries(options.faultsByModel ?? {}).map(([m, r]) => checkRates(r, `faultsByModel.${m}`)),
    checkLimits(options.limits ?? {}, "limits"),
    ...Object.entries(options.limitsByModel ?? {}).map(([m, l]) => checkLimits(l, `limitsByModel.${m}`))
  ]
  const latency = options.latency ?? {}
  for (const [name, value] of Object.entries(latency)) {
    if (value !== undefined && !(typeof value === "number" && value >= 0)) checks.push(`latency.${name} must be ≥ 0`)
  }
  if (options.retryAfterMs !== undefined && !(options.retryAfterMs >= 0)) checks.push("retryAfterMs must be ≥ 0")
  if (options.port !== undefined && !(Number.isInteger(options.port) && options.port >= 0 && options.port < 65536)) {
    checks.push(`port ${options.port} is not in 0..65535`)
  }
  if (options.apiKey !== undefined && options.apiKey.length === 0) checks.push("apiKey must not be empty")
  if (options.models !== undefined && options.models.some((m) => typeof m !== "string" || m.length === 0)) {
    checks.push("models must be non-empty model ids")
  }
  ;(options.outages ?? []).forEach((o, i) => {
    if (!(Number.isFinite(o.atMs) && o.atMs >= 0)) checks.push(`outages[${i}].atMs must be ≥ 0`)
    if (!(Number.isFinite(o.durationMs) && o.durationMs > 0)) checks.push(`outages[${i}].durationMs must be > 0`)
    if (o.status !== undefined && ![500, 502, 503, 504].includes(o.status)) {
      checks.push(`outages[${i}].status must be 500, 502, 503 or 504, got ${o.status}`)
    }
  })
  if (options.capacityPerSecond !== undefined && !(options.capacityPerSecond > 0)) {
    checks.push("capacityPerSecond must be positive")
  }
  checks.push(checkBatch(options.batch ?? {}))
  return checks.find((c) => c !== undefined)
}

const BEARER = /^Bearer\s+(\S+)\s*$/i
const CHAT_PATH = "/v1/chat/completions"

const MISSING_KEY =
  "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys."
const WRONG_KEY =
  "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."

/** A 401 answer when the Authorization header is missing or (with `apiKey` set) wrong; undefined when it passes. */
const authenticate = (engine: Engine, apiKey: string | undefined, header: string | undefined): Respond | undefined => {
  const match = header === undefined ? null : BEARER.exec(header)
  if (match === null) return engine.error(401, MISSING_KEY, "invalid_request_error", null, "invalid_api_key")
  if (apiKey !== undefined && match[1] !== apiKey) {
    return engine.error(401, WRONG_KEY, "invalid_request_error", null, "invalid_api_key")
  }
  return undefined
}

const toResponse = (engine: Engine, outcome: Respond): HttpServerResponse.HttpServerResponse => {
  engine.recordStatus(outcome.status)
  return HttpServerResponse.text(outcome.body, {
    status: outcome.status,
    headers: outcome.headers,
    contentType: "application/json"
  })
}

/**
 * Chat completions, served straight on node:http: the hot path of every benchmark. The same answer
 * through an HttpRouter route (a fiber and a scope per request) measured 2–3× the server CPU per
 * request (bench/simulator.ts, BENCHMARKS.md "Simulator").
 */
const serveChat = (engine: Engine, apiKey: string | undefined, clock: Clock.Clock) => {
  const send = (response: Http.ServerResponse, outcome: Omit<Respond, "_tag">) => {
    engine.recordStatus(outcome.status)
    outcome.headers["content-type"] = "application/json"
    outcome.headers["content-length"] = String(Buffer.byteLength(outcome.body))
    response.writeHead(outcome.status, outcome.headers)
  }
  /** Runs `f` after `delayMs` on the Effect clock, unless the connection closes first. */
  const later = (response: Http.ServerResponse, delayMs: number, f: () => void) => {
    const cancel = Effect.runCallback(clock.sleep(Duration.millis(delayMs)), {
      onExit: (exit) => {
        if (exit._tag === "Success") f()
      }
    })
    response.once("close", () => cancel())
  }
  const run = (request: Http.IncomingMessage, response: Http.ServerResponse, outcome: Outcome) => {
    switch (outcome._tag) {
      case "Respond": {
        const answer = () => {
          send(response, outcome)
          response.end(outcome.body)
        }
        return outcome.delayMs > 0 ? later(response, outcome.delayMs, answer) : answer()
      }
      case "Cut": {
        const cut = () => {
          send(response, outcome)
          response.write(outcome.body.slice(0, outcome.sent), () => request.socket.destroy())
        }
        return outcome.delayMs > 0 ? later(response, outcome.delayMs, cut) : cut()
      }
      case "Hang":
        // nothing is held but the socket, which the client or the server's close ends
        return
      case "Reset": {
        const reset = () => request.socket.destroy()
        return outcome.delayMs > 0 ? later(response, outcome.delayMs, reset) : reset()
      }
    }
  }
  return (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    const denied = authenticate(engine, apiKey, request.headers.authorization)
    if (denied !== undefined) {
      request.resume()
      return run(request, response, denied)
    }
    let text = ""
    request.setEncoding("utf8")
    request.on("data", (chunk: string) => {
      text += chunk
    })
    request.once("end", () => run(request, response, engine.chat(text)))
    request.once("error", () => response.destroy())
  }
}

/** `/v1/files` and `/v1/batches` over the batch store. */
const batchRoutes = (engine: Engine, store: BatchStore, endpoint: EndpointContext["Type"]): ReadonlyArray<Route> => {
  const answer = (a: Answer): HttpServerResponse.HttpServerResponse => {
    if (a._tag === "Json") return endpoint.json(a.status, a.body)
    const r = engine.respond(200, a.text)
    engine.recordStatus(200)
    return HttpServerResponse.text(r.body, { status: 200, headers: r.headers, contentType: "application/octet-stream" })
  }
  const withParam = (name: string, f: (value: string) => Answer) =>
    Effect.map(HttpRouter.params, (params) => answer(f(params[name] ?? "")))
  const decoder = new TextDecoder()
  const upload = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    let purpose: string | undefined
    let file: { readonly filename: string; readonly content: string } | undefined
    yield* Stream.runForEach(request.multipartStream, (part) => {
      if (part._tag === "Field") {
        if (part.key === "purpose") purpose = part.value
        if (part.key === "file") file = { filename: "file", content: part.value }
        return Effect.void
      }
      return Effect.map(part.contentEffect, (bytes) => {
        if (part.key === "file") file = { filename: part.name, content: decoder.decode(bytes) }
      })
    }).pipe(Multipart.withFieldMimeTypes([]))
    return answer(store.upload(purpose, file))
  }).pipe(Effect.catchTag("MultipartError", (e) =>
    Effect.succeed(
      endpoint.error(
        400,
        `The body could not be read as multipart/form-data (${e.reason}): send the fields 'file' and 'purpose'.`,
        "invalid_request_error"
      )
    )))
  const create = Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    Effect.match(request.json, {
      onFailure: () => toResponse(engine, engine.error(400, badJson.message, badJson.type, null, null)),
      onSuccess: (body) => answer(store.create(body))
    }))
  const first = (value: string | ReadonlyArray<string> | undefined) => typeof value === "string" ? value : value?.[0]
  const list = Effect.map(
    HttpServerRequest.ParsedSearchParams,
    (params) => answer(store.list(first(params.after), first(params.limit)))
  )
  return [
    HttpRouter.makeRoute("POST", "/v1/files", upload),
    HttpRouter.makeRoute("GET", "/v1/files/:file_id", withParam("file_id", (id) => store.file(id))),
    HttpRouter.makeRoute("GET", "/v1/files/:file_id/content", withParam("file_id", (id) => store.content(id))),
    HttpRouter.makeRoute("DELETE", "/v1/files/:file_id", withParam("file_id", (id) => store.deleteFile(id))),
    HttpRouter.makeRoute("POST", "/v1/batches", create),
    HttpRouter.makeRoute("GET", "/v1/batches", list),
    HttpRouter.makeRoute("GET", "/v1/batches/:batch_id", withParam("batch_id", (id) => store.retrieve(id))),
    HttpRouter.makeRoute("POST", "/v1/batches/:batch_id/cancel", withParam("batch_id", (id) => store.cancel(id)))
  ]
}

/** The plugged-in routes behind Bearer auth, with OpenAI-style 404 and 500 answers. */
const makeApp = (engine: Engine, store: BatchStore, options: Options, endpoint: EndpointContext["Type"]) => {
  const internalError = (cause: Cause.Cause<unknown>) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.interrupt
      : Effect.succeed(endpoint.error(500, "The server had an error while processing your request.", "server_error"))

  const guard = (route: Route): HttpRouter.Route<never, EndpointContext> =>
    HttpRouter.makeRoute(
      route.method,
      route.path,
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
        const denied = authenticate(engine, options.apiKey, request.headers["authorization"])
        return denied !== undefined
          ? Effect.succeed(toResponse(engine, denied))
          : Effect.flatMap(route.handler, HttpServerRespondable.toResponse).pipe(Effect.catchAllCause(internalError))
      }),
      { uninterruptible: route.uninterruptible }
    )

  const models: ReadonlyArray<Route> = [
    HttpRouter.makeRoute(
      "GET",
      "/v1/models",
      Effect.sync(() => endpoint.json(200, { object: "list", data: engine.listModels() }))
    ),
    HttpRouter.makeRoute(
      "GET",
      "/v1/models/:model",
      Effect.map(HttpRouter.params, (params) => {
        const model = engine.model(params.model ?? "")
        return "_tag" in model ? toResponse(engine, model) : endpoint.json(200, model)
      })
    )
  ]

  return HttpRouter.fromIterable(
    [...models, ...batchRoutes(engine, store, endpoint), ...(options.routes ?? [])].map(guard)
  ).pipe(
    Effect.catchTag("RouteNotFound", (e) =>
      Effect.succeed(
        endpoint.error(404, `Invalid URL (${e.request.method} ${e.request.url})`, "invalid_request_error")
      )),
    Effect.provideService(EndpointContext, endpoint)
  )
}

/** Starts the simulator on 127.0.0.1 in the current scope; it stops when the scope closes. */
export const make = (options: Options = {}): Effect.Effect<Simulator["Type"], StartError, Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = validate(options)
    if (invalid !== undefined) return yield* new StartError({ reason: invalid })
    const count = yield* loadCounter
    const latency = options.latency ?? {}
    const seed = options.seed ?? 0
    const clock = yield* Effect.clock
    const nonce = Crypto.randomBytes(4).readUInt32LE(0)
    const engine = new Engine({
      seed,
      now: () => clock.unsafeCurrentTimeMillis(),
      nonce,
      models: options.models ?? defaultModels,
      outages: (options.outages ?? []).map((o) => ({ ...o, status: o.status ?? 503 })),
      capacityPerSecond: options.capacityPerSecond,
      baseMs: latency.baseMs ?? 0,
      perOutputTokenMs: latency.perOutputTokenMs ?? 0,
      jitterMs: latency.jitterMs ?? 0,
      limits: options.limits ?? {},
      limitsByModel: options.limitsByModel ?? {},
      faults: options.faults ?? {},
      faultsByModel: options.faultsByModel ?? {},
      retryAfterMs: options.retryAfterMs ?? 50
    }, count)

    const endpoint = EndpointContext.of({
      seed,
      completeChat: (body) => engine.complete(body),
      json: (status, body) => toResponse(engine, engine.respond(status, JSON.stringify(body))),
      error: (status, message, type, param = null, code = null) =>
        toResponse(engine, engine.error(status, message, type, param, code)),
      requestId: () => engine.requestId()
    })

    const batch = options.batch ?? {}
    const store = new BatchStore(
      {
        validatingMs: batch.validatingMs ?? 1_000,
        inProgressMs: batch.inProgressMs ?? 10_000,
        finalizingMs: batch.finalizingMs ?? 1_000,
        cancellingMs: batch.cancellingMs ?? 1_000,
        windowMs: batch.windowMs ?? 24 * 60 * 60 * 1_000,
        lineFaults: batch.lineFaults ?? {},
        enqueuedTokens: batch.enqueuedTokens,
        enqueuedTokensByModel: batch.enqueuedTokensByModel ?? {}
      },
      seed,
      nonce,
      {
        now: () => clock.unsafeCurrentTimeMillis(),
        serves: (model) => engine.serves(model),
        promptTokens: (body) => engine.promptTokens(body),
        complete: (body, mode) => engine.complete(body, mode),
        requestId: () => engine.requestId()
      }
    )

    const routes = yield* NodeHttpServer.makeHandler(makeApp(engine, store, options, endpoint)).pipe(
      Effect.locally(HttpMiddleware.currentTracerDisabledWhen, () => true)
    )
    const chat = serveChat(engine, options.apiKey, clock)
    const nodeServer = Http.createServer((request, response) => {
      const url = request.url ?? ""
      if (
        request.method === "POST" && url.startsWith(CHAT_PATH) &&
        (url.length === CHAT_PATH.length || url[CHAT_PATH.length] === "?")
      ) {
        chat(request, response)
      } else {
        routes(request, response)
      }
    })
    const port = options.port ?? 0
    const server = yield* NodeHttpServer.make(() => nodeServer, { host: "127.0.0.1", port }).pipe(
      Effect.mapError((e) => new StartError({ reason: `cannot listen on 127.0.0.1:${port}: ${String(e.cause)}` }))
    )
    // runs before the server's own close: ends hanging and kept-alive connections so close completes
    yield* Effect.addFinalizer(() => Effect.sync(() => nodeServer.closeAllConnections()))
    const address = server.address as HttpServer.TcpAddress
    return Simulator.of({
      url: `http://127.0.0.1:${address.port}/v1`,
      port: address.port,
      stats: Effect.sync(() => ({ ...engine.stats(), batches: store.summaries() }))
    })
  })

/** The simulator as a scoped layer: binds 127.0.0.1 only and closes with the scope. */
export const layer = (options: Options = {}): Layer.Layer<Simulator, StartError> =>
  Layer.scoped(Simulator, make(options))
