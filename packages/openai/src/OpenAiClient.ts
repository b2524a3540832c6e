/**
 * The OpenAI client: the wire types and one service. Chat Completions (`POST {baseUrl}/chat/completions`,
 * the hot path) returns the checked body with the response headers; it runs over any `@effect/platform`
 * `HttpClient` (`layer`: fakes, middleware, proxies) or straight on undici (`layerUndici`: the production
 * path, about a third of the CPU per call of the other; see BENCHMARKS.md). Every other endpoint goes
 * through `http`, an `HttpClient` with the base URL, bearer auth, `User-Agent` and the error mapping already
 * applied (for `layerUndici`, on the same undici dispatcher), and `requestJson`, which decodes an answer
 * with a Schema: `listModels` is one line of it, and so are Files (multipart upload, content, delete) and
 * Batches (create, retrieve, cancel, list), which `OpenAiBatch` builds on. Every request carries `User-Agent: keel/<version>`, the
 * `onRequest` hook's headers and, when a span is active, a W3C `traceparent`. Every failure leaves here as
 * an `LlmError`, mapped once in `internal/errors.ts` and scrubbed of the API key. Any OpenAI-compatible
 * server (vLLM, Ollama, a LiteLLM proxy, OpenRouter, keel's simulator) works by base URL.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import type * as LlmError from "@keel/core/LlmError"
import type * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Crypto from "node:crypto"
import { createRequire } from "node:module"
import { decode } from "./internal/decode.js"
import * as Errors from "./internal/errors.js"
import * as Transport from "./internal/transport.js"

// ---------------------------------------------------------------------------------------------------------------
// Wire types (the subset of the OpenAPI spec keel sends and reads)
// ---------------------------------------------------------------------------------------------------------------

/** A tool call as the model wrote it (`arguments` is JSON text). */
export interface ChatCompletionMessageToolCall {
  readonly id: string
  readonly type: string
  readonly function: { readonly name: string; readonly arguments: string }
}

/** A message of the request, discriminated by `role`. */
export type ChatCompletionRequestMessage =
  | { readonly role: "system" | "developer"; readonly content: string }
  | { readonly role: "user"; readonly content: string; readonly name?: string }
  | {
    readonly role: "assistant"
    readonly content?: string | null
    readonly refusal?: string
    readonly tool_calls?: ReadonlyArray<ChatCompletionMessageToolCall>
  }
  | { readonly role: "tool"; readonly tool_call_id: string; readonly content: string }

/** A function tool; with `strict`, the model's arguments follow `parameters` exactly. */
export interface ChatCompletionTool {
  readonly type: "function"
  readonly function: {
    readonly name: string
    readonly description?: string
    readonly parameters: Readonly<Record<string, unknown>>
    readonly strict?: boolean
  }
}

export type ChatCompletionToolChoice =
  | "auto"
  | "none"
  | "required"
  | { readonly type: "function"; readonly function: { readonly name: string } }

export type ResponseFormat =
  | { readonly type: "text" }
  | { readonly type: "json_object" }
  | {
    readonly type: "json_schema"
    readonly json_schema: {
      readonly name: string
      readonly description?: string
      readonly schema: Readonly<Record<string, unknown>>
      readonly strict?: boolean
    }
  }

/** The body of `POST /chat/completions`, as keel builds it. */
export interface ChatCompletionRequest {
  readonly model: string
  readonly messages: ReadonlyArray<ChatCompletionRequestMessage>
  readonly tools?: ReadonlyArray<ChatCompletionTool>
  readonly tool_choice?: ChatCompletionToolChoice
  readonly response_format?: ResponseFormat
  readonly max_completion_tokens?: number
  readonly temperature?: number
  readonly seed?: number
  readonly metadata?: Readonly<Record<string, string>>
}

/** `CompletionUsage`, the fields keel reads. `cached_tokens` ⊂ `prompt_tokens`, `reasoning_tokens` ⊂ `completion_tokens`. */
export interface CompletionUsage {
  readonly prompt_tokens: number
  readonly completion_tokens: number
  readonly prompt_tokens_details?: { readonly cached_tokens?: number | undefined }
  readonly completion_tokens_details?: { readonly reasoning_tokens?: number | undefined }
}

export interface ChatCompletionChoice {
  readonly finish_reason: string | null
  readonly message: {
    readonly content?: string | null | undefined
    readonly refusal?: string | null | undefined
    readonly tool_calls?: ReadonlyArray<ChatCompletionMessageToolCall> | null | undefined
  }
}

/** A checked Chat Completions answer: the fields keel reads (others are dropped). */
export interface ChatCompletion {
  readonly id: string
  readonly model: string
  readonly choices: ReadonlyArray<ChatCompletionChoice>
  /** Absent when the server sent none (the spec marks it optional). */
  readonly usage?: CompletionUsage | undefined
}

/** A model `GET /models` lists; compatible servers may leave out `created` and `owned_by`. */
export const Model = Schema.Struct({
  id: Schema.String,
  created: Schema.optional(Schema.Number),
  owned_by: Schema.optional(Schema.String)
}).annotations({ identifier: "Model" })
export type Model = typeof Model.Type

/** The body of `GET /models`. */
export const ModelList = Schema.Struct({ data: Schema.Array(Model) }).annotations({ identifier: "ModelList" })

/** Why a file is uploaded; keel uploads batch input files (`batch`). */
export type FilePurpose = "assistants" | "batch" | "fine-tune" | "vision" | "user_data" | "evals"

/** An uploaded file (`OpenAIFile`), the fields keel reads. */
export const FileObject = Schema.Struct({
  id: Schema.String,
  bytes: Schema.optionalWith(Schema.Number, { nullable: true }),
  created_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  filename: Schema.optionalWith(Schema.String, { nullable: true }),
  purpose: Schema.optionalWith(Schema.String, { nullable: true })
}).annotations({ identifier: "FileObject" })
export type FileObject = typeof FileObject.Type

/** The body of `DELETE /files/{file_id}`. */
export const FileDeleted = Schema.Struct({ id: Schema.String, deleted: Schema.Boolean }).annotations({
  identifier: "FileDeleted"
})
export type FileDeleted = typeof FileDeleted.Type

/** Where a batch is in its life. */
export const BatchStatus = Schema.Literal(
  "validating",
  "failed",
  "in_progress",
  "finalizing",
  "completed",
  "expired",
  "cancelling",
  "cancelled"
)

/** Why a batch failed (validation errors, `token_limit_exceeded`); `line` is 1-based in the input file. */
export const BatchError = Schema.Struct({
  code: Schema.optionalWith(Schema.String, { nullable: true }),
  message: Schema.optionalWith(Schema.String, { nullable: true }),
  param: Schema.optionalWith(Schema.String, { nullable: true }),
  line: Schema.optionalWith(Schema.Number, { nullable: true })
}).annotations({ identifier: "BatchError" })

/** A batch (`Batch`), the fields keel reads; timestamps are Unix seconds. */
export const Batch = Schema.Struct({
  id: Schema.String,
  endpoint: Schema.String,
  input_file_id: Schema.String,
  completion_window: Schema.String,
  status: BatchStatus,
  created_at: Schema.Number,
  model: Schema.optionalWith(Schema.String, { nullable: true }),
  errors: Schema.optionalWith(
    Schema.Struct({ data: Schema.optionalWith(Schema.Array(BatchError), { nullable: true }) }),
    { nullable: true }
  ),
  output_file_id: Schema.optionalWith(Schema.String, { nullable: true }),
  error_file_id: Schema.optionalWith(Schema.String, { nullable: true }),
  in_progress_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  expires_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  finalizing_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  completed_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  failed_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  expired_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  cancelling_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  cancelled_at: Schema.optionalWith(Schema.Number, { nullable: true }),
  request_counts: Schema.optionalWith(
    Schema.Struct({ total: Schema.Number, completed: Schema.Number, failed: Schema.Number }),
    { nullable: true }
  ),
  metadata: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { nullable: true })
}).annotations({ identifier: "Batch" })
export type Batch = typeof Batch.Type

/** The body of `GET /batches`: newest first; pass `last_id` as `after` for the next page while `has_more`. */
export const BatchList = Schema.Struct({
  data: Schema.Array(Batch),
  last_id: Schema.optionalWith(Schema.String, { nullable: true }),
  has_more: Schema.Boolean
}).annotations({ identifier: "BatchList" })
export type BatchList = typeof BatchList.Type

/** The body of `POST /batches`. */
export interface CreateBatchRequest {
  readonly input_file_id: string
  /** e.g. `/v1/chat/completions`: every line's `url` */
  readonly endpoint: string
  /** `24h`, the only window OpenAI offers */
  readonly completion_window: string
  /** up to 16 pairs, keys ≤ 64 and values ≤ 512 characters */
  readonly metadata?: Readonly<Record<string, string>>
}

/** A file to upload: its bytes (or text), its name and its purpose. */
export interface FileUpload {
  readonly content: string | Uint8Array
  readonly filename: string
  readonly purpose: FilePurpose
}

/** An answer with its response headers (lower-case names): `x-request-id`, `x-ratelimit-*`. */
export interface ChatCompletionResult {
  readonly body: ChatCompletion
  readonly headers: Readonly<Record<string, string | undefined>>
}

// ---------------------------------------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------------------------------------

export class OpenAiClient extends Context.Tag("@keel/openai/OpenAiClient")<OpenAiClient, OpenAiClient.Service>() {}

export declare namespace OpenAiClient {
  export interface Service {
    /** The base URL requests go to, e.g. `https://api.openai.com/v1`. */
    readonly baseUrl: string
    /** One HTTP attempt: no retries here (the pipeline's `RetryPolicy` owns them). */
    readonly createChatCompletion: (
      body: ChatCompletionRequest,
      timeout?: RetryPolicy.AttemptTimeout
    ) => Effect.Effect<ChatCompletionResult, LlmError.LlmError>
    /**
     * For every other endpoint: URLs are relative to `baseUrl` (`HttpClientRequest.get("/models")`), auth,
     * `User-Agent` and the hook's headers are added, a non-2xx answer or a failed connection is an `LlmError`.
     */
    readonly http: HttpClient.HttpClient.With<LlmError.LlmError>
    /**
     * Sends a request through `http` and decodes its JSON answer with `schema`: a body cut mid-way is a `Transport`
     * error (`afterResponse`), one that is not JSON or not the schema's shape a `ProtocolError` naming the path.
     */
    readonly requestJson: <A, I>(
      request: HttpClientRequest.HttpClientRequest,
      schema: Schema.Schema<A, I, never>
    ) => Effect.Effect<A, LlmError.LlmError>
    /** `GET /models`: the models the key can use (also a cheap "is it up, is the key right?"). */
    readonly listModels: Effect.Effect<ReadonlyArray<Model>, LlmError.LlmError>
    /** `POST /files` (multipart/form-data): uploads a file, e.g. a batch's JSONL input with purpose `batch`. */
    readonly uploadFile: (file: FileUpload) => Effect.Effect<FileObject, LlmError.LlmError>
    /** `GET /files/{file_id}/content`: a file's bytes as they arrive; a cut is a `Transport` error after the answer. */
    readonly fileContent: (fileId: string) => Stream.Stream<Uint8Array, LlmError.LlmError>
    /** `DELETE /files/{file_id}`. */
    readonly deleteFile: (fileId: string) => Effect.Effect<FileDeleted, LlmError.LlmError>
    /** `POST /batches`. */
    readonly createBatch: (body: CreateBatchRequest) => Effect.Effect<Batch, LlmError.LlmError>
    /** `GET /batches/{batch_id}`. */
    readonly retrieveBatch: (batchId: string) => Effect.Effect<Batch, LlmError.LlmError>
    /** `POST /batches/{batch_id}/cancel`: the batch goes `cancelling`, then `cancelled` with the lines it finished. */
    readonly cancelBatch: (batchId: string) => Effect.Effect<Batch, LlmError.LlmError>
    /** `GET /batches?after=&limit=`: one page, newest first (`limit` 1..100, default 20). */
    readonly listBatches: (
      page?: { readonly after?: string | undefined; readonly limit?: number | undefined }
    ) => Effect.Effect<BatchList, LlmError.LlmError>
  }
}

/** What the `onRequest` hook is told about a request: its method and full URL. */
export interface RequestInfo {
  readonly method: string
  readonly url: string
}

/**
 * Called for each request, just before it is sent: the headers it returns are added (and win over keel's own);
 * `undefined` adds none. It runs on the hot path, so keep it cheap; if it throws, the call fails with
 * `InvalidRequest` at `onRequest` and nothing is sent.
 */
export type RequestHook = (request: RequestInfo) => Readonly<Record<string, string>> | undefined

export interface Options {
  /** The API key, sent as `Authorization: Bearer`. Required: an empty key fails at construction. */
  readonly apiKey: Redacted.Redacted
  /** Default `https://api.openai.com/v1`; any OpenAI-compatible server works. */
  readonly baseUrl?: string | undefined
  /** Sent as `OpenAI-Organization`. */
  readonly organization?: string | undefined
  /** Sent as `OpenAI-Project`. */
  readonly project?: string | undefined
  /** Adds headers to each request (a proxy's routing header, a tenant tag, a test's marker). */
  readonly onRequest?: RequestHook | undefined
}

export const defaultBaseUrl = "https://api.openai.com/v1"

/** Checks the options; a failure names the setting and says why. */
const validate = (
  options: Options
): Effect.Effect<{ readonly apiKey: Redacted.Redacted; readonly baseUrl: string }, ConfigError.ConfigError> => {
  if (!Redacted.isRedacted(options.apiKey)) {
    return Effect.fail(
      ConfigError.InvalidData(["apiKey"], "must be a Redacted value: Redacted.make(key) or Config.redacted(name)")
    )
  }
  if (Redacted.value(options.apiKey).trim() === "") {
    return Effect.fail(
      ConfigError.MissingData(["apiKey"], "is empty: the OpenAI API key is required (OPENAI_API_KEY)")
    )
  }
  const baseUrl = (options.baseUrl ?? defaultBaseUrl).replace(/\/+$/, "")
  let url: URL
  try {
    url = new URL(baseUrl)
  } catch {
    return Effect.fail(
      ConfigError.InvalidData(
        ["baseUrl"],
        `must be an absolute http(s) URL, got ${JSON.stringify(options.baseUrl)}`
      )
    )
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return Effect.fail(
      ConfigError.InvalidData(["baseUrl"], `must be an http(s) URL, got ${JSON.stringify(options.baseUrl)}`)
    )
  }
  return Effect.succeed({ apiKey: options.apiKey, baseUrl })
}

/** The `User-Agent` every request carries: `keel/<version of @keel/openai>`. */
export const userAgent = `keel/${(createRequire(import.meta.url)("../package.json") as { version: string }).version}`

/** The headers every request carries (chat adds `content-type`). */
const commonHeaders = (options: Options, apiKey: Redacted.Redacted): Record<string, string> => {
  const headers: Record<string, string> = {
    authorization: `Bearer ${Redacted.value(apiKey)}`,
    accept: "application/json",
    "user-agent": userAgent
  }
  if (options.organization !== undefined) headers["openai-organization"] = options.organization
  if (options.project !== undefined) headers["openai-project"] = options.project
  return headers
}

const chatHeaders = (options: Options, apiKey: Redacted.Redacted): Record<string, string> => ({
  ...commonHeaders(options, apiKey),
  "content-type": "application/json"
})

/**
 * `client` with the base URL, the common headers and the hook applied, and every failure mapped to an `LlmError`:
 * a failed connection is `Transport`, a non-2xx answer goes through the edge mapping.
 */
const forEndpoints = (
  client: HttpClient.HttpClient,
  baseUrl: string,
  options: Options,
  apiKey: Redacted.Redacted
): HttpClient.HttpClient.With<LlmError.LlmError> => {
  const context: Errors.Context = { apiKey }
  const headers = commonHeaders(options, apiKey)
  const hook = options.onRequest
  const prepared = HttpClient.mapRequestEffect(client, (request) => {
    // The request's own headers (e.g. its `accept`) win over the common ones.
    const withBase = HttpClientRequest.setHeaders(
      HttpClientRequest.setHeaders(HttpClientRequest.prependUrl(request, baseUrl), headers),
      request.headers
    )
    if (hook === undefined) return Effect.succeed(withBase)
    return Effect.try({
      try: () => {
        const extra = hook({ method: withBase.method, url: withBase.url })
        return extra === undefined ? withBase : HttpClientRequest.setHeaders(withBase, extra)
      },
      catch: (cause) =>
        new HttpClientError.RequestError({
          request: withBase,
          reason: "Encode",
          cause: new Transport.HookFailure(cause)
        })
    })
  })
  return HttpClient.transformResponse(prepared, (effect) =>
    Effect.matchEffect(effect, {
      onFailure: (error): Effect.Effect<never, LlmError.LlmError> =>
        Effect.fail(
          error.cause instanceof Transport.HookFailure
            ? Errors.hookFailed(context, error.cause.cause)
            : Errors.transport(context, error.cause ?? error)
        ),
      onSuccess: (response): Effect.Effect<HttpClientResponse.HttpClientResponse, LlmError.LlmError> => {
        if (response.status >= 200 && response.status < 300) return Effect.succeed(response)
        const { headers: responseHeaders, status } = response
        return Effect.matchEffect(response.text, {
          onFailure: (error) =>
            Effect.fail(Errors.transport(context, error.cause ?? error, responseHeaders["x-request-id"])),
          onSuccess: (body) =>
            Effect.flatMap(
              Clock.currentTimeMillis,
              (now) => Effect.fail(Errors.fromResponse(context, { status, headers: responseHeaders, body }, now))
            )
        })
      }
    }))
}

/** The first problem of a Schema decode failure: `data.0.id: Expected string, actual 1`. */
const firstIssue = (error: ParseResult.ParseError): string => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  return issue === undefined
    ? error.message
    : `${issue.path.length === 0 ? "body" : issue.path.join(".")}: ${issue.message}`
}

/** `requestJson` over a mapped client: read the body (a cut is `Transport` after the answer), parse, decode. */
const jsonRequester = (http: HttpClient.HttpClient.With<LlmError.LlmError>, apiKey: Redacted.Redacted) =>
<A, I>(
  request: HttpClientRequest.HttpClientRequest,
  schema: Schema.Schema<A, I, never>
): Effect.Effect<A, LlmError.LlmError> => {
  const context: Errors.Context = { apiKey }
  const decodeBody = Schema.decodeUnknown(schema)
  return Effect.flatMap(http.execute(request), (response) => {
    const requestId = response.headers["x-request-id"]
    return Effect.matchEffect(response.text, {
      onFailure: (error) => Effect.fail(Errors.transport(context, error.cause ?? error, requestId, true)),
      onSuccess: (text) => {
        let json: unknown
        try {
          json = JSON.parse(text)
        } catch (cause) {
          return Effect.fail(
            Errors.protocol(
              context,
              `${request.method} ${request.url}: the body is not JSON (${(cause as Error).message}): ${
                JSON.stringify(text)
              }`,
              requestId
            )
          )
        }
        return Effect.mapError(
          decodeBody(json),
          (error) => Errors.protocol(context, `${request.method} ${request.url}: ${firstIssue(error)}`, requestId)
        )
      }
    })
  })
}

const listModelsRequest = HttpClientRequest.get("/models")

/** The service over a chat transport and an `HttpClient` for the other endpoints. */
const fromTransport = (
  baseUrl: string,
  apiKey: Redacted.Redacted,
  send: Transport.Send,
  http: HttpClient.HttpClient.With<LlmError.LlmError>
): OpenAiClient.Service => {
  const createChatCompletion = (
    body: ChatCompletionRequest,
    timeout?: RetryPolicy.AttemptTimeout
  ): Effect.Effect<ChatCompletionResult, LlmError.LlmError> => {
    const context: Errors.Context = { model: body.model, apiKey }
    let json: string
    try {
      json = JSON.stringify(body)
    } catch (cause) {
      return Effect.fail(Errors.invalidBody(context, cause))
    }
    return Effect.matchEffect(send(json, timeout), {
      onFailure: (failure) =>
        Effect.fail(
          failure instanceof Transport.Failure
            ? Errors.transport(
              context,
              failure.cause,
              failure.headers?.["x-request-id"],
              failure.status !== undefined && failure.status >= 200 && failure.status < 300
            )
            : failure instanceof Transport.HookFailure
            ? Errors.hookFailed(context, failure.cause)
            : failure
        ),
      onSuccess: ({ headers, status, text }): Effect.Effect<ChatCompletionResult, LlmError.LlmError> => {
        if (status >= 200 && status < 300) {
          const decoded = decode(text)
          if ("error" in decoded) return Effect.fail(Errors.protocol(context, decoded.error, headers["x-request-id"]))
          const requestId = headers["x-request-id"]
          const scrubbed = requestId === undefined ? undefined : Errors.scrub(requestId, apiKey)
          return Effect.succeed({
            body: decoded,
            headers: scrubbed === requestId ? headers : { ...headers, "x-request-id": scrubbed }
          })
        }
        return Effect.flatMap(
          Clock.currentTimeMillis,
          (now) => Effect.fail(Errors.fromResponse(context, { status, headers, body: text }, now))
        )
      }
    })
  }
  const requestJson = jsonRequester(http, apiKey)
  const listModels = Effect.map(requestJson(listModelsRequest, ModelList), (list) => list.data)
  return OpenAiClient.of({
    baseUrl,
    createChatCompletion,
    http,
    requestJson,
    listModels,
    ...filesAndBatches(http, requestJson, apiKey)
  })
}

/** A path segment for an id (`file-…`, `batch_…`), escaped so an odd id cannot reach another endpoint. */
const segment = (id: string): string => encodeURIComponent(id)

/**
 * A file upload as `multipart/form-data` bytes. Written here rather than as a `FormData` body because undici's
 * `request` takes only its own `FormData` class, not the global one, so one body serves both transports.
 */
const multipart = (file: FileUpload): { readonly body: Uint8Array; readonly contentType: string } => {
  const boundary = `keel-${Crypto.randomBytes(16).toString("hex")}`
  const name = file.filename.replace(/["\r\n]/g, "_")
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n${file.purpose}\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n` +
    "Content-Type: application/octet-stream\r\n\r\n"
  const body = Buffer.concat([
    Buffer.from(head),
    typeof file.content === "string" ? Buffer.from(file.content) : file.content,
    Buffer.from(`\r\n--${boundary}--\r\n`)
  ])
  return { body, contentType: `multipart/form-data; boundary=${boundary}` }
}

/** Files and Batches, all through `http` and `requestJson`. */
const filesAndBatches = (
  http: HttpClient.HttpClient.With<LlmError.LlmError>,
  requestJson: OpenAiClient.Service["requestJson"],
  apiKey: Redacted.Redacted
): Pick<
  OpenAiClient.Service,
  "uploadFile" | "fileContent" | "deleteFile" | "createBatch" | "retrieveBatch" | "cancelBatch" | "listBatches"
> => ({
  uploadFile: (file) =>
    Effect.suspend(() => {
      const { body, contentType } = multipart(file)
      return requestJson(
        HttpClientRequest.bodyUint8Array(HttpClientRequest.post("/files"), body, contentType),
        FileObject
      )
    }),
  fileContent: (fileId) => {
    // JSONL, not JSON (the spec says `application/json`; the official SDK asks for `application/binary`): take any
    const request = HttpClientRequest.get(`/files/${segment(fileId)}/content`, { headers: { accept: "*/*" } })
    return Stream.catchTag(
      HttpClientResponse.stream(http.execute(request)),
      "ResponseError",
      (error) =>
        Stream.fail(Errors.transport({ apiKey }, error.cause ?? error, error.response.headers["x-request-id"], true))
    )
  },
  deleteFile: (fileId) => requestJson(HttpClientRequest.del(`/files/${segment(fileId)}`), FileDeleted),
  createBatch: (body) =>
    Effect.flatMap(
      Effect.mapError(
        HttpClientRequest.bodyJson(HttpClientRequest.post("/batches"), body),
        (error) => Errors.invalidBody({ apiKey }, error.reason._tag === "JsonError" ? error.reason.error : error)
      ),
      (request) => requestJson(request, Batch)
    ),
  retrieveBatch: (batchId) => requestJson(HttpClientRequest.get(`/batches/${segment(batchId)}`), Batch),
  cancelBatch: (batchId) => requestJson(HttpClientRequest.post(`/batches/${segment(batchId)}/cancel`), Batch),
  listBatches: (page = {}) => {
    const urlParams: Record<string, string> = {}
    if (page.after !== undefined) urlParams.after = page.after
    if (page.limit !== undefined) urlParams.limit = String(page.limit)
    return requestJson(HttpClientRequest.get("/batches", { urlParams }), BatchList)
  }
})

/** Builds the client over the `HttpClient` in context; fails with a `ConfigError` naming a bad setting. */
export const make = (
  options: Options
): Effect.Effect<OpenAiClient.Service, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const { apiKey, baseUrl } = yield* validate(options)
    const client = yield* HttpClient.HttpClient
    const url = `${baseUrl}/chat/completions`
    const send = Transport.fromHttpClient(client, url, chatHeaders(options, apiKey), options.onRequest)
    return fromTransport(baseUrl, apiKey, send, forEndpoints(client, baseUrl, options, apiKey))
  })

/**
 * Builds the client straight on an undici `Agent` owned by the scope: the fast path (see BENCHMARKS.md,
 * "OpenAI client"). Chat skips `HttpClient`, so `HttpClient` middleware and its HTTP spans do not apply to it;
 * keel's own call and attempt spans still do. `http` is an `HttpClient` on the same `Agent`.
 */
export const makeUndici = (
  options: Options
): Effect.Effect<OpenAiClient.Service, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const { apiKey, baseUrl } = yield* validate(options)
    const dispatcher = yield* NodeHttpClient.makeDispatcher
    const url = `${baseUrl}/chat/completions`
    const send = Transport.fromUndici(dispatcher, url, chatHeaders(options, apiKey), options.onRequest)
    const http = forEndpoints(NodeHttpClient.makeUndici(dispatcher), baseUrl, options, apiKey)
    return fromTransport(baseUrl, apiKey, send, http)
  })

/** The client over the `HttpClient` you provide (e.g. `NodeHttpClient.layerUndici`, or a test fake). */
export const layer = (options: Options): Layer.Layer<OpenAiClient, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(OpenAiClient, make(options))

/**
 * The client from configuration, e.g. `{ apiKey: Config.redacted("OPENAI_API_KEY") }`: a missing key fails with a
 * `ConfigError` naming the variable, a bad base URL with one naming `baseUrl` and the value.
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<OpenAiClient, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(OpenAiClient, Effect.flatMap(Effect.mapError(Config.unwrap(config), explainSecret), make))

/** `Config.redacted` hides why a secret is missing ("<redacted>"); the only secret here is the API key, so say so. */
const explainSecret = (error: ConfigError.ConfigError): ConfigError.ConfigError => {
  switch (error._op) {
    case "And":
      return ConfigError.And(explainSecret(error.left), explainSecret(error.right))
    case "Or":
      return ConfigError.Or(explainSecret(error.left), explainSecret(error.right))
    case "MissingData":
      return error.message === "<redacted>"
        ? ConfigError.MissingData(error.path, "is not set: the OpenAI API key is required")
        : error
    default:
      return error
  }
}

/** The client straight on undici, with its own connection pool (`makeUndici`): what production should use. */
export const layerUndici = (options: Options): Layer.Layer<OpenAiClient, ConfigError.ConfigError> =>
  Layer.scoped(OpenAiClient, makeUndici(options))

/** `layerConfig` straight on undici (`makeUndici`). */
export const layerConfigUndici = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<OpenAiClient, ConfigError.ConfigError> =>
  Layer.scoped(OpenAiClient, Effect.flatMap(Effect.mapError(Config.unwrap(config), explainSecret), makeUndici))

/** Sends one Chat Completions request with the client in context. */
export const createChatCompletion = (
  body: ChatCompletionRequest
): Effect.Effect<ChatCompletionResult, LlmError.LlmError, OpenAiClient> =>
  Effect.flatMap(OpenAiClient, (client) => client.createChatCompletion(body))

/** Lists the models with the client in context (`GET /models`). */
export const listModels: Effect.Effect<ReadonlyArray<Model>, LlmError.LlmError, OpenAiClient> = Effect.flatMap(
  OpenAiClient,
  (client) => client.listModels
)
