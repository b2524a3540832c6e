/**
 * The call record: one JSON object per logical call (its attempts and repair rounds inside it),
 * the contract for every consumer of the call log (`keel report`, dashboards, audits). Its shape is
 * plain JSON (the Schema's type and encoded form are the same), so a sink writes it with
 * `JSON.stringify` and a reader checks it with `decode`. Prompt text and model output appear only
 * when the user opts in; API keys never do.
 */
import * as Schema from "effect/Schema"
import * as Crypto from "node:crypto"
import { Message, ToolCall } from "./LlmRequest.js"
import type * as LlmRequest from "./LlmRequest.js"

const Count = Schema.Int.pipe(Schema.nonNegative())

/** An ISO-8601 UTC instant, as `Date.prototype.toISOString` writes it. */
export const Timestamp = Schema.String.pipe(
  Schema.pattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, { message: () => "must be an ISO-8601 UTC time" })
).annotations({ identifier: "Timestamp" })

/** An amount in USD as a decimal string (`"0.000123"`): exact, never a float. */
export const UsdDecimal = Schema.String.pipe(
  Schema.pattern(/^\d+(\.\d+)?$/, { message: () => "must be a non-negative decimal string" })
).annotations({ identifier: "UsdDecimal" })

/** `sha256:` and 64 hex digits. */
export const PromptHash = Schema.String.pipe(
  Schema.pattern(/^sha256:[0-9a-f]{64}$/, { message: () => "must be sha256:<64 hex digits>" })
).annotations({ identifier: "PromptHash" })

/** The model's answer, recorded only on opt-in. */
export const Output = Schema.Struct({
  text: Schema.optional(Schema.String),
  toolCalls: Schema.optional(Schema.Array(ToolCall)),
  refusal: Schema.optional(Schema.String)
}).annotations({ identifier: "CallRecordOutput" })
export type Output = typeof Output.Type

export const CallRecord = Schema.Struct({
  /** When the call started. */
  ts: Timestamp,
  callId: Schema.String,
  /** The budget scope charged ("global" when the request names none). */
  scope: Schema.String,
  task: Schema.optional(Schema.String),
  tier: Schema.optional(Schema.String),
  /**
   * Why this model was used; with a `Router`, also the models the call was sent to in order (the last
   * is `model`) and each model passed over with why (skipped before it was tried, or failed).
   */
  route: Schema.Struct({
    reason: Schema.String,
    models: Schema.optional(Schema.Array(Schema.String)),
    hops: Schema.optional(Schema.Array(Schema.Struct({ model: Schema.String, reason: Schema.String })))
  }),
  /** `gen_ai.provider.name` of the port, e.g. "openai". */
  provider: Schema.String,
  /** The model the call was sent to (the provider may answer with a dated snapshot of it). */
  model: Schema.String,
  mode: Schema.Literal("sync", "batch"),
  batchId: Schema.optional(Schema.String),
  promptHash: PromptHash,
  /** HTTP attempts over all rounds. */
  attempts: Count,
  /** Repair re-asks after output that did not decode. */
  repairs: Schema.optional(Count),
  /** Wall time of the whole call, retries and waits included. */
  latencyMs: Schema.Number.pipe(Schema.nonNegative()),
  inputTokens: Count,
  cachedInputTokens: Count,
  outputTokens: Count,
  reasoningTokens: Count,
  /** What the call cost; absent when no price was known (see `costUnknown`), never a silent "0". */
  costUsd: Schema.optional(UsdDecimal),
  /** Why `costUsd` is absent, e.g. no `Pricing` was provided. */
  costUnknown: Schema.optional(Schema.String),
  /** What the call settled above its budget reservation (an input estimate that undercounted). */
  overrunUsd: Schema.optional(UsdDecimal),
  /** The cost includes an estimate for an attempt that may have been billed without an answer. */
  estimated: Schema.optional(Schema.Boolean),
  /** The model had no known price: the cost is at the configured fallback price. */
  priceFallback: Schema.optional(Schema.Boolean),
  outcome: Schema.Literal("ok", "error"),
  /** The `LlmError` tag (or "Interrupted", "Defect") when the outcome is an error. */
  errorTag: Schema.optional(Schema.String),
  /** The error's message; provider packages scrub secrets from it at the edge. */
  errorMessage: Schema.optional(Schema.String),
  /** The provider's request id of the latest answer or error, when known. */
  requestId: Schema.optional(Schema.String),
  /** The messages sent (opt-in only). */
  prompt: Schema.optional(Schema.Array(Message)),
  /** The answer (opt-in only). */
  output: Schema.optional(Output)
}).annotations({ identifier: "CallRecord" })
export type CallRecord = typeof CallRecord.Type

/** Checks an untrusted value (e.g. a parsed log line) against the record's shape. */
export const decodeUnknown = Schema.decodeUnknown(CallRecord, { onExcessProperty: "error" })
/** Synchronous `decodeUnknown` that throws a `ParseError`. */
export const decodeUnknownSync = Schema.decodeUnknownSync(CallRecord, { onExcessProperty: "error" })

/** JSON text with object keys sorted at every depth and undefined members left out (as `JSON.stringify`). */
export const canonicalJson = (value: unknown): string => {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value)
    case "number":
      return Number.isFinite(value) ? String(value) : "null"
    case "boolean":
      return value ? "true" : "false"
    case "object": {
      if (value === null) return "null"
      if (value instanceof Rendered) return value.json
      if (Array.isArray(value)) {
        let out = "["
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i]
          out += (i === 0 ? "" : ",") + (omitted(item) ? "null" : canonicalJson(item))
        }
        return out + "]"
      }
      const record = value as Record<string, unknown>
      const keys = Object.keys(record)
      if (keys.length > 16) keys.sort()
      else {
        // In place: the objects of a request have a few keys, often in order, and `Array#sort` allocated
        // more per call than the rest of the hash.
        for (let i = 1; i < keys.length; i++) {
          const key = keys[i]!
          let j = i - 1
          for (; j >= 0 && keys[j]! > key; j--) keys[j + 1] = keys[j]!
          keys[j + 1] = key
        }
      }
      let out = "{"
      for (const key of keys) {
        const item = record[key]
        if (omitted(item)) continue
        out += (out.length === 1 ? "" : ",") + JSON.stringify(key) + ":" + canonicalJson(item)
      }
      return out + "}"
    }
    default:
      return "null"
  }
}

const omitted = (value: unknown): boolean =>
  value === undefined || typeof value === "function" || typeof value === "symbol"

/** Canonical JSON already rendered, written as it is. */
class Rendered {
  constructor(readonly json: string) {}
}

/**
 * The canonical JSON of JSON Schemas, by object (`LlmRequest.decode` keeps the caller's, the same on every call of a
 * task): a tool's schema is most of a prompt's text, and rendering it again cost more than hashing it.
 */
const renderedSchemas = new WeakMap<object, Rendered>()

const rendered = (schema: object): Rendered => {
  let known = renderedSchemas.get(schema)
  if (known === undefined) {
    known = new Rendered(canonicalJson(schema))
    renderedSchemas.set(schema, known)
  }
  return known
}

/**
 * `sha256:<hex>` of the canonical JSON of the model-independent parts of a request (messages,
 * tools, tool choice, response format, max output tokens, temperature, seed): the same prompt sent
 * to two models hashes the same, so a consumer can group retries, fallbacks and duplicates.
 */
export const promptHash = (request: LlmRequest.LlmRequest): string =>
  "sha256:" + Crypto.hash(
    "sha256",
    canonicalJson({
      messages: request.messages,
      tools: request.tools?.map((tool) => ({ ...tool, parameters: rendered(tool.parameters) })),
      toolChoice: request.toolChoice,
      responseFormat: request.responseFormat?._tag === "json_schema"
        ? { ...request.responseFormat, schema: rendered(request.responseFormat.schema) }
        : request.responseFormat,
      maxOutputTokens: request.maxOutputTokens,
      temperature: request.temperature,
      seed: request.seed
    }),
    "hex"
  )
