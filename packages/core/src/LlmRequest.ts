/**
 * What a caller asks of a model, provider-neutral: messages of every role, tools, tool choice,
 * response format, limits and sampling, plus keel's own task, tier, budget scope and metadata.
 * `decode` validates untrusted input once, before anything is sent, and names the bad field: the
 * fields themselves, a strict tool's or response format's raw JSON Schema against OpenAI's strict
 * rules (`strictSchemaProblem`), and a `toolChoice` naming a tool that is not in `tools`.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { firstIssue } from "./internal/parseIssue.js"
import * as PlainRequest from "./internal/plainRequest.js"
import * as StrictRules from "./internal/strictRules.js"
import { InvalidRequest } from "./LlmError.js"

/** A JSON Schema document, as sent to the provider. */
export const JsonSchema = Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({
  identifier: "JsonSchema"
})
export type JsonSchema = typeof JsonSchema.Type

const NonEmpty = Schema.String.pipe(Schema.minLength(1, { message: () => "must not be empty" }))

/** A tool call the model made: `arguments` is the raw JSON text the model wrote. */
export const ToolCall = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  arguments: Schema.String
}).annotations({ identifier: "ToolCall" })
export type ToolCall = typeof ToolCall.Type

export const SystemMessage = Schema.Struct({ role: Schema.Literal("system"), content: Schema.String })
export const DeveloperMessage = Schema.Struct({ role: Schema.Literal("developer"), content: Schema.String })
export const UserMessage = Schema.Struct({
  role: Schema.Literal("user"),
  content: Schema.String,
  name: Schema.optional(NonEmpty)
})
export const AssistantMessage = Schema.Struct({
  role: Schema.Literal("assistant"),
  content: Schema.optional(Schema.String),
  toolCalls: Schema.optional(Schema.Array(ToolCall)),
  refusal: Schema.optional(Schema.String)
})
export const ToolMessage = Schema.Struct({
  role: Schema.Literal("tool"),
  toolCallId: NonEmpty,
  content: Schema.String
})

/** A conversation turn, discriminated by `role`. */
export const Message = Schema.Union(SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage)
  .annotations({ identifier: "Message" })
export type Message = typeof Message.Type

/** A function the model may call. `parameters` is a JSON Schema object; `strict` asks for exact conformance. */
export const ToolDefinition = Schema.Struct({
  name: Schema.String.pipe(Schema.pattern(StrictRules.namePattern, { message: () => StrictRules.nameReason })),
  description: Schema.optional(Schema.String),
  parameters: JsonSchema,
  strict: Schema.optionalWith(Schema.Boolean, { default: () => true })
}).annotations({ identifier: "ToolDefinition" })
export type ToolDefinition = typeof ToolDefinition.Type

/** Whether and which tool the model must call. */
export const ToolChoice = Schema.Union(
  Schema.Literal("auto", "none", "required"),
  Schema.Struct({ tool: Schema.String })
).annotations({ identifier: "ToolChoice" })
export type ToolChoice = typeof ToolChoice.Type

/** The shape of the answer's content: free text, any JSON object, or JSON matching a schema. */
export const ResponseFormat = Schema.Union(
  Schema.TaggedStruct("text", {}),
  Schema.TaggedStruct("json_object", {}),
  Schema.TaggedStruct("json_schema", {
    name: Schema.String.pipe(Schema.pattern(StrictRules.namePattern)),
    description: Schema.optional(Schema.String),
    schema: JsonSchema,
    strict: Schema.optionalWith(Schema.Boolean, { default: () => true })
  })
).annotations({ identifier: "ResponseFormat" })
export type ResponseFormat = typeof ResponseFormat.Type

/** A budget scope path: `global`, `tenant:acme`, `run:42`, nested with `/` (`tenant:acme/run:42`). */
export const Scope = Schema.String.pipe(
  Schema.pattern(PlainRequest.scopePattern, {
    message: () => "must be segments of letters, digits and _ . : @ - separated by /"
  })
).annotations({ identifier: "Scope" })

/** A request to a model. `model` may be left out when the pipeline chooses it (default model, router). */
export const LlmRequest = Schema.Struct({
  model: Schema.optional(
    Schema.String.pipe(
      Schema.pattern(PlainRequest.modelPattern, { message: () => "must be a model name without spaces" })
    )
  ),
  messages: Schema.Array(Message).pipe(Schema.minItems(1, { message: () => "must hold at least one message" })),
  tools: Schema.optional(Schema.Array(ToolDefinition)),
  toolChoice: Schema.optional(ToolChoice),
  responseFormat: Schema.optional(ResponseFormat),
  maxOutputTokens: Schema.optional(Schema.Int.pipe(Schema.positive({ message: () => "must be a positive integer" }))),
  temperature: Schema.optional(Schema.Number.pipe(Schema.between(0, 2, { message: () => "must be between 0 and 2" }))),
  seed: Schema.optional(Schema.Int),
  task: Schema.optional(NonEmpty),
  tier: Schema.optional(NonEmpty),
  scope: Schema.optional(Scope),
  metadata: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String }))
}).annotations({ identifier: "LlmRequest" })
export type LlmRequest = typeof LlmRequest.Type
/** What callers write: the encoded form (optional fields with defaults may be left out). */
export type Input = typeof LlmRequest.Encoded

/** A request whose model has been chosen: what a `LanguageModel` receives. */
export type Resolved = LlmRequest & { readonly model: string }

const decodeEither = Schema.decodeUnknownEither(LlmRequest, { errors: "first", onExcessProperty: "error" })

// ---------------------------------------------------------------------------------------------------
// Strict JSON Schema rules (`internal/strictRules`), for schemas given as raw JSON Schema. Schemas built
// by `StrictSchema`/`Tool.make` pass by construction.
// ---------------------------------------------------------------------------------------------------

/** The size limits a raw strict schema is held to, as `StrictSchema.defaultLimits` has them. */
export const strictLimits: StrictRules.CountLimits = {
  maxDepth: StrictRules.defaultLimits.maxDepth,
  maxProperties: StrictRules.defaultLimits.maxProperties,
  maxEnumValues: StrictRules.defaultLimits.maxEnumValues
}

/** Where a strict schema breaks a rule: the dotted path inside the schema ("" for the root) and the rule. */
export interface StrictSchemaProblem {
  readonly path: string
  readonly reason: string
}

/**
 * The first rule of OpenAI's strict mode that a raw JSON Schema breaks, or `undefined` when it follows them: the
 * root is `type: "object"` (not `anyOf`); every object has `additionalProperties: false` and lists each of its
 * properties in `required` (and nothing else); no unsupported keyword; at most 10 levels of nesting, 5,000
 * properties and 1,000 enum values in all.
 */
export const strictSchemaProblem = (schema: unknown): StrictSchemaProblem | undefined => {
  const violation = StrictRules.firstViolation(schema, strictLimits)
  return violation === undefined ? undefined : { path: violation.path.join("."), reason: violation.reason }
}

/** Schema objects already found to follow the strict rules: a schema reused across calls is walked once. */
const checkedStrict = new WeakSet<object>()

/** The strict-rule failure of a schema sent with `strict` (at `field`, naming `what`), or `undefined`. */
const checkStrict = (schema: unknown, field: string, what: string): InvalidRequest | undefined => {
  if (typeof schema === "object" && schema !== null && checkedStrict.has(schema)) return undefined
  const problem = strictSchemaProblem(schema)
  if (problem === undefined) {
    if (typeof schema === "object" && schema !== null) checkedStrict.add(schema)
    return undefined
  }
  return new InvalidRequest({
    field: problem.path === "" ? field : `${field}.${problem.path}`,
    reason: `${what} is strict, and OpenAI would refuse its schema: ${problem.reason}` +
      " (fix the schema, define the tool with Tool.make, or set strict: false)"
  })
}

/**
 * The checks that span fields, on a decoded request; `input` is what the caller passed (decoding copies objects, so
 * the strict-schema cache is keyed on the caller's, which stay the same from call to call).
 */
const checkRequest = (request: LlmRequest, input: Input): InvalidRequest | undefined => {
  const tools = request.tools
  if (tools !== undefined) {
    for (let i = 0; i < tools.length; i++) {
      const tool = tools[i]!
      if (!tool.strict) continue
      const error = checkStrict(input.tools![i]!.parameters, `tools.${i}.parameters`, `tool "${tool.name}"`)
      if (error !== undefined) return error
    }
  }
  const format = request.responseFormat
  if (format?._tag === "json_schema" && format.strict) {
    const schema = (input.responseFormat as { readonly schema: unknown }).schema
    const error = checkStrict(schema, "responseFormat.schema", `response format "${format.name}"`)
    if (error !== undefined) return error
  }
  const choice = request.toolChoice
  if (choice !== undefined && typeof choice === "object" && tools?.some((tool) => tool.name === choice.tool) !== true) {
    return new InvalidRequest({
      field: "toolChoice",
      reason: `names the tool "${choice.tool}", which is not in tools (${
        tools === undefined || tools.length === 0 ? "none given" : tools.map((tool) => `"${tool.name}"`).join(", ")
      })`
    })
  }
  return undefined
}

/**
 * The decoded request holding the caller's own JSON Schema objects: decoding copies their top level (the same keys
 * and values), and what is remembered per schema object (the strict check here, a tool's token count, its part of
 * the prompt hash) needs the object that stays the same from call to call.
 */
const withCallerSchemas = (request: LlmRequest, input: Input): LlmRequest => {
  let out = request
  if (request.tools !== undefined) {
    out = { ...out, tools: request.tools.map((tool, i) => ({ ...tool, parameters: input.tools![i]!.parameters })) }
  }
  const format = request.responseFormat
  if (format?._tag === "json_schema") {
    out = {
      ...out,
      responseFormat: { ...format, schema: (input.responseFormat as { readonly schema: JsonSchema }).schema }
    }
  }
  return out
}

/** Checks the decoded request's cross-field rules and puts the caller's schema objects back. */
const decoded = (request: LlmRequest, input: Input): Effect.Effect<LlmRequest, InvalidRequest> => {
  const error = checkRequest(request, input)
  return error === undefined ? Effect.succeed(withCallerSchemas(request, input)) : Effect.fail(error)
}

/**
 * Validates untrusted input; a failure is `InvalidRequest` naming the field and what is wrong. A request that
 * plainly conforms is copied by hand (`internal/plainRequest`), a tenth of the Schema's cost; the rest is decoded.
 */
export const decode = (input: unknown): Effect.Effect<LlmRequest, InvalidRequest> => {
  const fast = PlainRequest.conforming(input)
  if (fast !== undefined) return decoded(fast, input as Input)
  return Either.match(decodeEither(input), {
    onLeft: (error) => {
      const { path, reason } = firstIssue(error)
      return Effect.fail(new InvalidRequest({ field: path === "" ? "request" : path, reason }))
    },
    onRight: (request) => decoded(request, input as Input)
  })
}
