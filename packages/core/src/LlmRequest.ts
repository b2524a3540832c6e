/**
 * What a caller asks of a model, provider-neutral: messages of every role, tools, tool choice,
 * response format, limits and sampling, plus keel's own task, tier, budget scope and metadata.
 * `decode` validates untrusted input once, before anything is sent, and names the bad field.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
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
  name: Schema.String.pipe(
    Schema.pattern(/^[a-zA-Z0-9_-]{1,64}$/, {
      message: () => "must be 1 to 64 letters, digits, underscores or dashes"
    })
  ),
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
    name: Schema.String.pipe(Schema.pattern(/^[a-zA-Z0-9_-]{1,64}$/)),
    description: Schema.optional(Schema.String),
    schema: JsonSchema,
    strict: Schema.optionalWith(Schema.Boolean, { default: () => true })
  })
).annotations({ identifier: "ResponseFormat" })
export type ResponseFormat = typeof ResponseFormat.Type

/** A budget scope path: `global`, `tenant:acme`, `run:42`, nested with `/` (`tenant:acme/run:42`). */
export const Scope = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9_.:@-]+(\/[A-Za-z0-9_.:@-]+)*$/, {
    message: () => "must be segments of letters, digits and _ . : @ - separated by /"
  })
).annotations({ identifier: "Scope" })

/** A request to a model. `model` may be left out when the pipeline chooses it (default model, router). */
export const LlmRequest = Schema.Struct({
  model: Schema.optional(
    Schema.String.pipe(
      Schema.pattern(/^[^\s]+$/, { message: () => "must be a model name without spaces" })
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

/** The dotted path of the first problem in a parse error (`messages.0.role`), or "" for the root. */
export const issuePath = (error: ParseResult.ParseError): { readonly path: string; readonly reason: string } => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  return issue === undefined
    ? { path: "", reason: error.message }
    : { path: issue.path.map(String).join("."), reason: issue.message }
}

/** Validates untrusted input; a failure is `InvalidRequest` naming the field and what is wrong. */
export const decode = (input: unknown): Effect.Effect<LlmRequest, InvalidRequest> =>
  Either.match(decodeEither(input), {
    onLeft: (error) => {
      const { path, reason } = issuePath(error)
      return Effect.fail(new InvalidRequest({ field: path === "" ? "request" : path, reason }))
    },
    onRight: Effect.succeed
  })
