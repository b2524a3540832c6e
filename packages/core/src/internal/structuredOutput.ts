/**
 * The body of `Llm.generateObject`: build the strict tool or response format once per Schema, read
 * the model's answer through the Schema's wire decoder, and on invalid output re-ask a bounded
 * number of times (each re-ask is another `round` of the pipeline: retried, charged, counted).
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import type { GenerateObjectOptions } from "../Llm.js"
import { InvalidRequest, type LlmError, OutputInvalid } from "../LlmError.js"
import type * as LlmRequest from "../LlmRequest.js"
import type { LlmResponse } from "../LlmResponse.js"
import * as StrictSchema from "../StrictSchema.js"
import * as Tool from "../Tool.js"
import type { CallState } from "./stage.js"

export interface Prepared<A> {
  readonly mode: "tool" | "json_schema"
  readonly name: string
  readonly repair: number
  readonly strict: StrictSchema.StrictSchema<A, unknown>
  /** The request to send, as the caller's input plus the tool or response format. */
  readonly input: LlmRequest.Input
}

const defaultName = (schema: Schema.Schema.Any): string => {
  const identifier = Option.getOrUndefined(AST.getIdentifierAnnotation(schema.ast))
  return typeof identifier === "string" && Tool.namePattern.test(identifier) ? identifier : "output"
}

/** `generateObject`'s own options; the others are the request's. */
const ownOptions = new Set(["schema", "mode", "name", "description", "repair"])

/**
 * Validates the options and converts the schema (cached per Schema); a failure is `InvalidRequest` naming the field.
 * The request is copied key by key, not with an object rest and spread: those cost ~4 µs a call here, and the
 * object they build is slower to read for every stage after.
 */
export const prepare = <A, I>(options: GenerateObjectOptions<A, I>): Either.Either<Prepared<A>, InvalidRequest> => {
  const { description, mode = "tool", name: givenName, repair = 1, schema } = options
  let strict: StrictSchema.StrictSchema<A, unknown>
  let name: string
  let toolDescription = description
  if (Tool.isTool(schema)) {
    strict = (schema as Tool.Tool<A, I>).strict as StrictSchema.StrictSchema<A, unknown>
    name = givenName ?? schema.name
    toolDescription = description ?? schema.description
  } else {
    const converted = StrictSchema.makeEither(schema as Schema.Schema<A, I, never>)
    if (Either.isLeft(converted)) {
      return Either.left(
        new InvalidRequest({
          field: converted.left.path === "(root)" ? "schema" : `schema.${converted.left.path}`,
          reason: converted.left.reason
        })
      )
    }
    strict = converted.right as StrictSchema.StrictSchema<A, unknown>
    name = givenName ?? defaultName(schema as Schema.Schema.Any)
  }
  if (!Tool.namePattern.test(name)) {
    return Either.left(
      new InvalidRequest({ field: "name", reason: "must be 1 to 64 letters, digits, underscores or dashes" })
    )
  }
  if (!Number.isInteger(repair) || repair < 0) {
    return Either.left(new InvalidRequest({ field: "repair", reason: "must be a non-negative integer" }))
  }
  const input: Record<string, unknown> = {}
  for (const key of Object.keys(options)) {
    if (!ownOptions.has(key)) input[key] = options[key as keyof typeof options]
  }
  if (mode === "tool") {
    input.tools = [
      toolDescription === undefined
        ? { name, parameters: strict.jsonSchema, strict: true }
        : { name, description: toolDescription, parameters: strict.jsonSchema, strict: true }
    ]
    input.toolChoice = { tool: name }
  } else {
    input.responseFormat = toolDescription === undefined
      ? { _tag: "json_schema", name, schema: strict.jsonSchema, strict: true }
      : { _tag: "json_schema", name, description: toolDescription, schema: strict.jsonSchema, strict: true }
  }
  return Either.right({ mode, name, repair, strict, input: input as unknown as LlmRequest.Input })
}

const invalid = (response: LlmResponse, reason: string, path: string, raw: string) =>
  new OutputInvalid({
    ...(response.requestId === undefined ? {} : { requestId: response.requestId }),
    model: response.model,
    reason,
    path,
    raw
  })

/** The decoded value of an answer, or `OutputInvalid` with the path of the first problem and the raw text. */
export const read = <A>(prepared: Prepared<A>, response: LlmResponse): Either.Either<A, OutputInvalid> => {
  let raw: string
  if (prepared.mode === "tool") {
    const calls = response.toolCalls
    if (calls.length !== 1) {
      return Either.left(
        invalid(
          response,
          calls.length === 0
            ? `expected a call to tool "${prepared.name}", got no tool call`
            : `expected one call to tool "${prepared.name}", got ${calls.length} calls`,
          "",
          calls.length === 0 ? response.text ?? "" : JSON.stringify(calls)
        )
      )
    }
    const call = calls[0]!
    if (call.name !== prepared.name) {
      return Either.left(
        invalid(
          response,
          `expected a call to tool "${prepared.name}", got a call to "${call.name}"`,
          "",
          call.arguments
        )
      )
    }
    raw = call.arguments
  } else {
    if (response.text === undefined || response.text === "") {
      return Either.left(invalid(response, "expected JSON content, got none", "", ""))
    }
    raw = response.text
  }
  return Either.mapLeft(
    prepared.strict.decodeJson(raw),
    (problem) => invalid(response, problem.reason, problem.path, raw)
  )
}

/** The turns that show the model its invalid answer and what was wrong with it. */
const repairMessages = <A>(
  prepared: Prepared<A>,
  response: LlmResponse,
  error: OutputInvalid
): ReadonlyArray<LlmRequest.Message> => {
  const where = error.path === "" ? "" : ` at ${error.path}`
  if (prepared.mode === "tool" && response.toolCalls.length > 0) {
    const feedback = `Invalid arguments${where}: ${error.reason}. ` +
      `Call ${prepared.name} once more, with arguments that match its schema exactly.`
    return [
      { role: "assistant", toolCalls: response.toolCalls },
      ...response.toolCalls.map((call): LlmRequest.Message => ({
        role: "tool",
        toolCallId: call.id,
        content: feedback
      }))
    ]
  }
  const feedback = prepared.mode === "tool"
    ? `You did not call ${prepared.name}: ${error.reason}. Call ${prepared.name} once, with arguments that match its schema exactly.`
    : `Your answer is invalid${where}: ${error.reason}. Answer again with JSON that matches the schema exactly.`
  const previous = prepared.mode === "tool" ? response.text : error.raw
  return previous === undefined || previous === ""
    ? [{ role: "user", content: feedback }]
    : [{ role: "assistant", content: previous }, { role: "user", content: feedback }]
}

/**
 * Asks, decodes, and while the output is invalid and repairs remain, re-asks with the invalid answer
 * and its error appended. Each ask is a `round` (retry policy, budget, attempts); `state.repairs`
 * counts the re-asks. Nothing undecoded is ever returned.
 */
export const run = <A>(
  prepared: Prepared<A>,
  state: CallState,
  request: LlmRequest.Resolved,
  round: (state: CallState, request: LlmRequest.Resolved) => Effect.Effect<LlmResponse, LlmError>
): Effect.Effect<A, LlmError> => {
  const loop = (request: LlmRequest.Resolved, repairsLeft: number): Effect.Effect<A, LlmError> =>
    Effect.flatMap(round(state, request), (response) => {
      const result = read(prepared, response)
      if (Either.isRight(result)) return Effect.succeed(result.right)
      if (repairsLeft === 0) return Effect.fail(result.left)
      state.repairs++
      const next: LlmRequest.Resolved = {
        ...request,
        messages: [...request.messages, ...repairMessages(prepared, response, result.left)]
      }
      return loop(next, repairsLeft - 1)
    })
  return loop(request, prepared.repair)
}
