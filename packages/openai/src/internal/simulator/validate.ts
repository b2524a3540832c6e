/**
 * The first step of a chat request: check it as OpenAI does (required fields, parameter ranges, the
 * model, strict schemas) and read what the answer needs (the plan, prompt and cached tokens). A
 * refusal carries OpenAI's status, type, param, code and message. Compiled `tools` and
 * `response_format` values are cached by their JSON text.
 */
import { type CompiledSchema, compileSchema } from "./jsonSchema.js"
import { hashString } from "./random.js"
import { strictViolation } from "./strictSchema.js"
import type { CountTokens } from "./tokens.js"

export type Json = Record<string, unknown>
export const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)
export const json = (value: unknown): string => JSON.stringify(value)

/** An OpenAI error answer, before it gets headers. */
export interface Refusal {
  readonly status: number
  readonly message: string
  readonly type: string
  readonly param: string | null
  readonly code: string | null
}

export type Plan =
  | { readonly _tag: "Tool"; readonly name: string; readonly schema: CompiledSchema; readonly named: boolean }
  | { readonly _tag: "Json"; readonly schema: CompiledSchema }
  | { readonly _tag: "JsonObject" }
  | { readonly _tag: "Text" }

/** A valid request, as the answer needs it. */
export interface Prepared {
  readonly model: string
  readonly promptTokens: number
  readonly cachedTokens: number
  readonly maxTokens: number | undefined
  readonly n: number
  readonly plan: Plan
  readonly reasoning: boolean
}

export type Checked = { readonly _tag: "Valid"; readonly value: Prepared } | {
  readonly _tag: "Invalid"
  readonly refusal: Refusal
}

interface ToolEntry {
  readonly tools: ReadonlyArray<{ readonly name: string; readonly schema: CompiledSchema }>
  readonly tokens: number
  readonly error?: Refusal
}

interface FormatEntry {
  readonly kind: "text" | "json_object" | "json_schema"
  readonly schema?: CompiledSchema
  readonly tokens: number
  readonly error?: Refusal
}

/** Compiled `tools` / `response_format` values kept (each map starts over when full). */
const CACHE_MAX_ENTRIES = 2_000
/** Prompt prefixes remembered for cached_tokens. */
const SEEN_MAX_ENTRIES = 200_000
/** OpenAI caches prompt prefixes from 1024 tokens, in steps of 128. */
const CACHE_MIN_TOKENS = 1024
const CACHE_STEP = 128
/** o-series and gpt-5 models: reasoning tokens, `max_completion_tokens` only, temperature 1 only. */
const REASONING_MODEL = /^(o\d|gpt-5)/

export const setCapped = <K, V>(map: Map<K, V>, key: K, value: V, max: number): void => {
  if (map.size >= max) map.clear()
  map.set(key, value)
}

export const invalid = (message: string, param: string | null, code: string | null = null, status = 400): Refusal => ({
  status,
  message,
  type: "invalid_request_error",
  param,
  code
})

export const badJson = invalid(
  "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
  null
)

/** OpenAI's answer for a model that is not served. */
export const unknownModel = (model: string): Refusal =>
  invalid(`The model \`${model}\` does not exist or you do not have access to it.`, null, "model_not_found", 404)

/** A number parameter out of range, in OpenAI's words ("decimal above maximum value", "integer_below_min_value"). */
const range = (
  body: Json,
  name: string,
  lo: number,
  hi: number,
  integer: boolean
): Refusal | undefined => {
  const value = body[name]
  if (value === undefined || value === null) return undefined
  const kind = integer ? "integer" : "decimal"
  if (typeof value !== "number" || (integer && !Number.isInteger(value))) {
    return invalid(
      `Invalid type for '${name}': expected ${integer ? "an integer" : "a decimal"}, but got ${
        typeof value === "number" ? "a decimal" : Array.isArray(value) ? "an array" : `a ${typeof value}`
      } instead.`,
      name,
      "invalid_type"
    )
  }
  if (value > hi) {
    return invalid(
      `Invalid '${name}': ${kind} above maximum value. Expected a value <= ${hi}, but got ${value} instead.`,
      name,
      `${kind}_above_max_value`
    )
  }
  if (value < lo) {
    return invalid(
      `Invalid '${name}': ${kind} below minimum value. Expected a value >= ${lo}, but got ${value} instead.`,
      name,
      `${kind}_below_min_value`
    )
  }
  return undefined
}

/** Checks the sampling and size parameters of a chat request. */
const checkParameters = (body: Json, reasoning: boolean): Refusal | undefined => {
  const checks: ReadonlyArray<readonly [string, number, number, boolean]> = [
    ["temperature", 0, 2, false],
    ["top_p", 0, 1, false],
    ["presence_penalty", -2, 2, false],
    ["frequency_penalty", -2, 2, false],
    ["n", 1, 128, true],
    ["max_tokens", 1, Number.MAX_SAFE_INTEGER, true],
    ["max_completion_tokens", 1, Number.MAX_SAFE_INTEGER, true],
    ["top_logprobs", 0, 20, true],
    ["seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, true]
  ]
  for (const [name, lo, hi, integer] of checks) {
    const refusal = range(body, name, lo, hi, integer)
    if (refusal !== undefined) return refusal
  }
  if (body.stream_options !== undefined && body.stream_options !== null && body.stream !== true) {
    return invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
  }
  if (reasoning) {
    if (body.max_tokens !== undefined && body.max_tokens !== null) {
      return invalid(
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "max_tokens",
        "unsupported_parameter"
      )
    }
    if (typeof body.temperature === "number" && body.temperature !== 1) {
      return invalid(
        `Unsupported value: 'temperature' does not support ${body.temperature} with this model. Only the default (1) value is supported.`,
        "temperature",
        "unsupported_value"
      )
    }
  }
  return undefined
}

/** Reads and checks chat requests; remembers prompt prefixes (for cached tokens) and compiled schemas. */
export class Validator {
  private readonly toolCache = new Map<string, ToolEntry>()
  private readonly formatCache = new Map<string, FormatEntry>()
  private readonly seenPrefixes = new Set<number>()

  constructor(private readonly count: CountTokens, private readonly models: ReadonlySet<string>) {}

  /** Checks a body; with `remember` false its prompt prefix is not recorded (a count that must not change later answers). */
  prepare(body: unknown, remember = true): Checked {
    const refuse = (refusal: Refusal): Checked => ({ _tag: "Invalid", refusal })
    if (!isObject(body)) return refuse(invalid("The request body must be a JSON object.", null))
    const model = body.model
    if (typeof model !== "string" || model.length === 0) {
      return refuse(invalid("you must provide a model parameter", null))
    }
    const messages = body.messages
    if (!Array.isArray(messages)) {
      return refuse(invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter"))
    }
    if (messages.length === 0) {
      return refuse(invalid(
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        "messages",
        "empty_array"
      ))
    }
    if (!this.models.has(model)) return refuse(unknownModel(model))
    if (body.stream === true) {
      return refuse(invalid(
        "The simulator does not support streaming: 'stream' must be false.",
        "stream",
        "unsupported_value"
      ))
    }
    const reasoning = REASONING_MODEL.test(model)
    const parameters = checkParameters(body, reasoning)
    if (parameters !== undefined) return refuse(parameters)
    const n = typeof body.n === "number" ? body.n : 1
    const maxRaw = body.max_completion_tokens ?? body.max_tokens
    const maxTokens = typeof maxRaw === "number" ? maxRaw : undefined

    let extraTokens = 0
    let tools: ToolEntry | undefined
    if (body.tools !== undefined && body.tools !== null) {
      if (!Array.isArray(body.tools)) {
        return refuse(invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type"))
      }
      if (body.tools.length > 0) {
        tools = this.toolEntry(body.tools)
        if (tools.error !== undefined) return refuse(tools.error)
        extraTokens += tools.tokens
      }
    }
    let format: FormatEntry | undefined
    if (body.response_format !== undefined && body.response_format !== null) {
      format = this.formatEntry(body.response_format)
      if (format.error !== undefined) return refuse(format.error)
      extraTokens += format.tokens
    }

    let promptTokens = 3 + extraTokens
    let prefixTokens = extraTokens
    const last = messages.length - 1
    for (let i = 0; i <= last; i++) {
      const message: unknown = messages[i]
      if (!isObject(message) || typeof message.role !== "string") {
        return refuse(invalid(
          `Invalid 'messages[${i}]': expected an object with a 'role'.`,
          `messages[${i}]`,
          "invalid_type"
        ))
      }
      const t = this.messageTokens(message)
      promptTokens += t
      if (i < last) prefixTokens += t
    }
    let cachedTokens = 0
    if (prefixTokens >= CACHE_MIN_TOKENS) {
      let h = hashString(model)
      if (tools !== undefined) h = hashString(json(body.tools), h)
      for (let i = 0; i < last; i++) {
        const m = messages[i] as Json
        h = hashString(m.role as string, h)
        h = hashString(typeof m.content === "string" ? m.content : json(m.content ?? null), h)
      }
      if (this.seenPrefixes.has(h)) {
        cachedTokens = CACHE_MIN_TOKENS + Math.floor((prefixTokens - CACHE_MIN_TOKENS) / CACHE_STEP) * CACHE_STEP
      } else if (remember) {
        if (this.seenPrefixes.size >= SEEN_MAX_ENTRIES) this.seenPrefixes.clear()
        this.seenPrefixes.add(h)
      }
    }

    const plan = this.plan(body, tools, format, (messages[last] as Json).role === "tool")
    if (plan._tag === "Invalid") return plan
    return {
      _tag: "Valid",
      value: { model, promptTokens, cachedTokens, maxTokens, n, plan: plan.plan, reasoning }
    }
  }

  private plan(
    body: Json,
    tools: ToolEntry | undefined,
    format: FormatEntry | undefined,
    afterToolResult: boolean
  ): { readonly _tag: "Plan"; readonly plan: Plan } | { readonly _tag: "Invalid"; readonly refusal: Refusal } {
    const choice = body.tool_choice
    if (tools !== undefined && tools.tools.length > 0 && choice !== "none") {
      if (isObject(choice) && isObject(choice.function) && typeof choice.function.name === "string") {
        const name = choice.function.name
        const tool = tools.tools.find((t) => t.name === name)
        if (tool === undefined) {
          return {
            _tag: "Invalid",
            refusal: invalid(
              `Invalid value for 'tool_choice': no function named '${name}' was specified in the 'tools' parameter.`,
              "tool_choice",
              "invalid_value"
            )
          }
        }
        return { _tag: "Plan", plan: { _tag: "Tool", name, schema: tool.schema, named: true } }
      }
      if (choice === "required" || !afterToolResult) {
        const tool = tools.tools[0]!
        return { _tag: "Plan", plan: { _tag: "Tool", name: tool.name, schema: tool.schema, named: false } }
      }
    }
    if (format?.kind === "json_schema") return { _tag: "Plan", plan: { _tag: "Json", schema: format.schema! } }
    if (format?.kind === "json_object") return { _tag: "Plan", plan: { _tag: "JsonObject" } }
    return { _tag: "Plan", plan: { _tag: "Text" } }
  }

  private contentTokens(content: unknown): number {
    if (typeof content === "string") return this.count(content)
    if (!Array.isArray(content)) return 0
    let total = 0
    for (const part of content) {
      if (!isObject(part)) continue
      if (typeof part.text === "string") total += this.count(part.text)
      else if (typeof part.refusal === "string") total += this.count(part.refusal)
      else total += 85 // an image, audio or file part: a flat low-detail estimate
    }
    return total
  }

  private messageTokens(message: Json): number {
    let total = 4 + this.contentTokens(message.content)
    if (typeof message.name === "string") total += 1 + this.count(message.name)
    if (Array.isArray(message.tool_calls)) {
      for (const call of message.tool_calls) {
        if (isObject(call) && isObject(call.function)) {
          const fn = call.function
          total += 7 + this.count(String(fn.name ?? "")) + this.count(String(fn.arguments ?? ""))
        }
      }
    }
    return total
  }

  private toolEntry(tools: ReadonlyArray<unknown>): ToolEntry {
    const key = json(tools)
    const known = this.toolCache.get(key)
    if (known !== undefined) return known
    const compiled: Array<{ readonly name: string; readonly schema: CompiledSchema }> = []
    let entry: ToolEntry | undefined
    for (let i = 0; i < tools.length && entry === undefined; i++) {
      const tool = tools[i]
      const fn = isObject(tool) ? tool.function : undefined
      if (!isObject(fn) || typeof fn.name !== "string" || fn.name.length === 0) {
        entry = {
          tools: [],
          tokens: 0,
          error: invalid(
            `Missing required parameter: 'tools[${i}].function.name'.`,
            `tools[${i}].function.name`,
            "missing_required_parameter"
          )
        }
        break
      }
      const parameters = fn.parameters ?? { type: "object", properties: {} }
      const schemaError = (reason: string): ToolEntry => ({
        tools: [],
        tokens: 0,
        error: invalid(
          `Invalid schema for function '${fn.name}': ${reason}`,
          `tools[${i}].function.parameters`,
          "invalid_function_parameters"
        )
      })
      const violation = fn.strict === true ? strictViolation(parameters) : undefined
      if (violation !== undefined) {
        entry = schemaError(violation)
        break
      }
      try {
        compiled.push({ name: fn.name, schema: compileSchema(parameters) })
      } catch (e) {
        entry = schemaError(`${e instanceof Error ? e.message : String(e)}.`)
      }
    }
    entry ??= { tools: compiled, tokens: this.count(key) }
    setCapped(this.toolCache, key, entry, CACHE_MAX_ENTRIES)
    return entry
  }

  private formatEntry(format: unknown): FormatEntry {
    const key = json(format)
    const known = this.formatCache.get(key)
    if (known !== undefined) return known
    let entry: FormatEntry
    if (isObject(format) && format.type === "json_schema") {
      const spec = format.json_schema
      if (!isObject(spec) || typeof spec.name !== "string") {
        entry = {
          kind: "text",
          tokens: 0,
          error: invalid(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter"
          )
        }
      } else {
        const schema = spec.schema ?? { type: "object", properties: {} }
        const schemaError = (reason: string): FormatEntry => ({
          kind: "text",
          tokens: 0,
          error: invalid(`Invalid schema for response_format '${spec.name}': ${reason}`, "response_format")
        })
        // the root must be an object whether or not the schema is strict
        const violation = spec.strict === true
          ? strictViolation(schema)
          : isObject(schema) && schema.type === "object"
          ? undefined
          : strictViolation(schema)
        if (violation !== undefined) {
          entry = schemaError(violation)
        } else {
          try {
            entry = { kind: "json_schema", schema: compileSchema(schema), tokens: this.count(key) }
          } catch (e) {
            entry = schemaError(`${e instanceof Error ? e.message : String(e)}.`)
          }
        }
      }
    } else if (isObject(format) && format.type === "json_object") {
      entry = { kind: "json_object", tokens: 0 }
    } else if (isObject(format) && format.type === "text") {
      entry = { kind: "text", tokens: 0 }
    } else {
      entry = {
        kind: "text",
        tokens: 0,
        error: invalid(
          "Invalid value for 'response_format.type': expected one of 'text', 'json_object', 'json_schema'.",
          "response_format.type",
          "invalid_value"
        )
      }
    }
    setCapped(this.formatCache, key, entry, CACHE_MAX_ENTRIES)
    return entry
  }
}
