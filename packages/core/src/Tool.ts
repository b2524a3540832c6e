/**
 * A function the model can call, defined by an Effect Schema: `Tool.make("score_job", { description,
 * parameters })`. The parameters are converted to a strict JSON Schema once, when the tool is defined;
 * a schema strict mode cannot express, or a bad name, throws `InvalidTool` there and then (naming the
 * path), never at call time after paying. The tool carries the `ToolDefinition` to send
 * (`strict: true`) and the decoder for the arguments the model writes.
 */
import type * as Either from "effect/Either"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as StrictRules from "./internal/strictRules.js"
import type * as LlmRequest from "./LlmRequest.js"
import * as StrictSchema from "./StrictSchema.js"

export const TypeId: unique symbol = Symbol.for("@keel/core/Tool")
export type TypeId = typeof TypeId

export interface Tool<A, I = A> {
  readonly [TypeId]: TypeId
  readonly name: string
  readonly description: string | undefined
  readonly parameters: Schema.Schema<A, I, never>
  /** The converted parameters: JSON Schema and wire decoder. */
  readonly strict: StrictSchema.StrictSchema<A, I>
  /** What is sent to the provider: a strict function tool. */
  readonly definition: LlmRequest.ToolDefinition
  /** Parses and decodes the model's arguments text; a failure names the path of the first problem. */
  readonly decode: (args: string) => Either.Either<A, StrictSchema.Problem>
}

/** A tool that cannot be defined: a bad name, or parameters strict mode cannot express (`path`). */
export class InvalidTool extends Schema.TaggedError<InvalidTool>("@keel/core/Tool/InvalidTool")("InvalidTool", {
  tool: Schema.String,
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `Tool "${this.tool}" cannot be defined: ${this.path === "" ? "" : `${this.path}: `}${this.reason}`
  }
}

/** OpenAI's rule for function and response-format names. */
export const namePattern: RegExp = StrictRules.namePattern

/** Whether a value is a `Tool`. */
export const isTool = (u: unknown): u is Tool<unknown, unknown> => Predicate.hasProperty(u, TypeId)

/** Defines a tool; throws `InvalidTool` when the name or the parameters cannot be sent in strict mode. */
export const make = <A, I>(
  name: string,
  options: { readonly description?: string; readonly parameters: Schema.Schema<A, I, never> }
): Tool<A, I> => {
  if (!namePattern.test(name)) {
    throw new InvalidTool({
      tool: name,
      path: "name",
      reason: StrictRules.nameReason
    })
  }
  const converted = StrictSchema.makeEither(options.parameters)
  if (converted._tag === "Left") {
    const path = converted.left.path === "(root)" ? "parameters" : `parameters.${converted.left.path}`
    throw new InvalidTool({ tool: name, path, reason: converted.left.reason })
  }
  const strict = converted.right
  const definition: LlmRequest.ToolDefinition = options.description === undefined
    ? { name, parameters: strict.jsonSchema, strict: true }
    : { name, description: options.description, parameters: strict.jsonSchema, strict: true }
  return {
    [TypeId]: TypeId,
    name,
    description: options.description,
    parameters: options.parameters,
    strict,
    definition,
    decode: strict.decodeJson
  }
}
