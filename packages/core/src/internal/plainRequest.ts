/**
 * The hot path of `LlmRequest.decode`: a request that plainly conforms is copied by hand instead of decoded
 * with the Schema, which cost about 15 µs per call, a tenth of the bare pipeline's own CPU. It accepts only
 * what the Schema accepts and builds what the Schema builds (test/LlmRequestFast.test.ts holds it to that
 * on generated requests), except that an optional key given as `undefined` is left out rather than kept.
 * Anything it is unsure of (an odd object, any failure) is left to the Schema, which stays the one source of
 * error messages.
 */
import type { LlmRequest, Message, ResponseFormat, ToolCall, ToolDefinition } from "../LlmRequest.js"
import * as StrictRules from "./strictRules.js"

type Fields = Record<string, unknown>

/**
 * A plain object (the Schema takes any non-array object) whose own keys are all strings in `allowed` (when
 * given). An own `__proto__` key is left to the Schema: its records assign keys one by one, so that key sets
 * the copy's prototype rather than a field.
 */
export const plain = (value: unknown, allowed: ReadonlySet<string> | undefined): value is Fields => {
  if (typeof value !== "object" || value === null) return false
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return false
  for (const key of Reflect.ownKeys(value)) {
    if (typeof key !== "string" || key === "__proto__" || (allowed !== undefined && !allowed.has(key))) return false
  }
  return true
}
const isString = (value: unknown): value is string => typeof value === "string"
const nonEmpty = (value: unknown): value is string => typeof value === "string" && value.length > 0
const absentOr = (value: unknown, check: (value: unknown) => boolean) => value === undefined || check(value)
const isInt = (value: unknown): value is number => typeof value === "number" && Number.isSafeInteger(value)

/** Each element converted, or `undefined` when `value` is not an array or an element does not convert. */
const each = <A>(value: unknown, convert: (element: unknown) => A | undefined): Array<A> | undefined => {
  if (!Array.isArray(value)) return undefined
  const out: Array<A> = []
  for (const element of value) {
    const converted = convert(element)
    if (converted === undefined) return undefined
    out.push(converted)
  }
  return out
}

const conformingToolCall = (call: unknown): ToolCall | undefined =>
  plain(call, toolCallKeys) && isString(call.id) && isString(call.name) && isString(call.arguments)
    ? { id: call.id, name: call.name, arguments: call.arguments }
    : undefined

const keys = (...names: Array<string>): ReadonlySet<string> => new Set(names)
const requestKeys = keys(
  "model",
  "messages",
  "tools",
  "toolChoice",
  "responseFormat",
  "maxOutputTokens",
  "temperature",
  "seed",
  "task",
  "tier",
  "scope",
  "metadata"
)
const contentKeys = keys("role", "content")
const userKeys = keys("role", "content", "name")
const assistantKeys = keys("role", "content", "toolCalls", "refusal")
const toolMessageKeys = keys("role", "toolCallId", "content")
const toolCallKeys = keys("id", "name", "arguments")
const toolKeys = keys("name", "description", "parameters", "strict")
const choiceKeys = keys("tool")
const tagKeys = keys("_tag")
const jsonSchemaFormatKeys = keys("_tag", "name", "description", "schema", "strict")
/** A model name: no spaces. The Schema's rule too. */
export const modelPattern = /^[^\s]+$/
/** A budget scope: segments of letters, digits and `_ . : @ -` separated by `/`. The Schema's rule too. */
export const scopePattern = /^[A-Za-z0-9_.:@-]+(\/[A-Za-z0-9_.:@-]+)*$/

type AssistantMessage = Extract<Message, { readonly role: "assistant" }>

const conformingMessage = (m: unknown): Message | undefined => {
  if (typeof m !== "object" || m === null) return undefined
  switch ((m as Fields).role) {
    case "system":
    case "developer":
      return plain(m, contentKeys) && isString(m.content) ? { role: m.role as "system", content: m.content } : undefined
    case "user":
      if (!plain(m, userKeys) || !isString(m.content) || !absentOr(m.name, nonEmpty)) return undefined
      return m.name === undefined
        ? { role: "user", content: m.content }
        : { role: "user", content: m.content, name: m.name as string }
    case "tool":
      return plain(m, toolMessageKeys) && nonEmpty(m.toolCallId) && isString(m.content)
        ? { role: "tool", toolCallId: m.toolCallId, content: m.content }
        : undefined
    case "assistant": {
      if (!plain(m, assistantKeys) || !absentOr(m.content, isString) || !absentOr(m.refusal, isString)) return undefined
      const out: { -readonly [K in keyof AssistantMessage]: AssistantMessage[K] } = {
        role: "assistant"
      }
      if (m.content !== undefined) out.content = m.content as string
      if (m.toolCalls !== undefined) {
        const calls = each(m.toolCalls, conformingToolCall)
        if (calls === undefined) return undefined
        out.toolCalls = calls
      }
      if (m.refusal !== undefined) out.refusal = m.refusal as string
      return out
    }
  }
  return undefined
}

const conformingTool = (t: unknown): ToolDefinition | undefined => {
  if (!plain(t, toolKeys) || !isString(t.name) || !StrictRules.namePattern.test(t.name)) return undefined
  if (!absentOr(t.description, isString) || !plain(t.parameters, undefined)) return undefined
  if (t.strict !== undefined && typeof t.strict !== "boolean") return undefined
  return t.description === undefined
    ? { name: t.name, parameters: t.parameters, strict: t.strict ?? true }
    : { name: t.name, description: t.description as string, parameters: t.parameters, strict: t.strict ?? true }
}

const conformingFormat = (f: unknown): ResponseFormat | undefined => {
  if (typeof f !== "object" || f === null) return undefined
  switch ((f as Fields)._tag) {
    case "text":
    case "json_object":
      return plain(f, tagKeys) ? { _tag: f._tag as "text" } : undefined
    case "json_schema": {
      if (!plain(f, jsonSchemaFormatKeys) || !isString(f.name) || !StrictRules.namePattern.test(f.name)) {
        return undefined
      }
      if (!absentOr(f.description, isString) || !plain(f.schema, undefined)) return undefined
      if (f.strict !== undefined && typeof f.strict !== "boolean") return undefined
      const strict = f.strict ?? true
      return f.description === undefined
        ? { _tag: "json_schema", name: f.name, schema: f.schema, strict }
        : { _tag: "json_schema", name: f.name, description: f.description as string, schema: f.schema, strict }
    }
  }
  return undefined
}

/** The decoded request when `input` plainly conforms, else `undefined` (the Schema decides). */
export const conforming = (input: unknown): LlmRequest | undefined => {
  if (!plain(input, requestKeys)) return undefined
  const messages = each(input.messages, conformingMessage)
  if (messages === undefined || messages.length === 0) return undefined
  const out: { -readonly [K in keyof LlmRequest]: LlmRequest[K] } = { messages }
  if (input.model !== undefined) {
    if (!isString(input.model) || !modelPattern.test(input.model)) return undefined
    out.model = input.model
  }
  if (input.tools !== undefined) {
    const tools = each(input.tools, conformingTool)
    if (tools === undefined) return undefined
    out.tools = tools
  }
  const choice = input.toolChoice
  if (choice !== undefined) {
    if (choice === "auto" || choice === "none" || choice === "required") out.toolChoice = choice
    else if (plain(choice, choiceKeys) && isString(choice.tool)) out.toolChoice = { tool: choice.tool }
    else return undefined
  }
  if (input.responseFormat !== undefined) {
    const format = conformingFormat(input.responseFormat)
    if (format === undefined) return undefined
    out.responseFormat = format
  }
  const { maxOutputTokens, metadata, scope, seed, task, temperature, tier } = input
  if (maxOutputTokens !== undefined) {
    if (!isInt(maxOutputTokens) || maxOutputTokens <= 0) return undefined
    out.maxOutputTokens = maxOutputTokens
  }
  if (temperature !== undefined) {
    if (typeof temperature !== "number" || !(temperature >= 0 && temperature <= 2)) return undefined
    out.temperature = temperature
  }
  if (seed !== undefined) {
    if (!isInt(seed)) return undefined
    out.seed = seed
  }
  if (task !== undefined) {
    if (!nonEmpty(task)) return undefined
    out.task = task
  }
  if (tier !== undefined) {
    if (!nonEmpty(tier)) return undefined
    out.tier = tier
  }
  if (scope !== undefined) {
    if (!isString(scope) || !scopePattern.test(scope)) return undefined
    out.scope = scope
  }
  if (metadata !== undefined) {
    if (!plain(metadata, undefined)) return undefined
    const copy: Record<string, string> = {}
    for (const key in metadata) {
      const value = metadata[key]
      if (!isString(value)) return undefined
      copy[key] = value
    }
    out.metadata = copy
  }
  return out
}
